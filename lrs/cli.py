"""``masteryhub credentials``: issue, list and revoke provider credentials for the LRS.

The commands get the database from the composition root through ``ctx.obj["database"]``
(a context manager), so this package never needs to know how the database is found.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from lrs.auth import SCOPES, Credential, create_credential, parse_scopes, revoke_credential


def _scopes(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    try:
        return parse_scopes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def credentials() -> None:
    """Provider credentials for the xAPI LRS (HTTP Basic key and secret).

    \b
    Scopes (xAPI 1.0.3 Part Three §4.1):
      statements/write      store statements
      statements/read/mine  read statements this credential stored
      statements/read       read every statement
      state, profile        read and write state / profile documents
      define                read activity and agent definitions
      all/read, all         read everything / everything
    """


@credentials.command("create")
@click.option("--name", required=True, help="The provider, e.g. 'Algebra Online Course'.")
@click.option("--scopes", default="statements/write,statements/read/mine,state,profile",
              show_default=True, callback=_scopes, help=f"Comma-separated: {', '.join(SCOPES)}")
@click.option("--json", "as_json", is_flag=True, help="Print {key, secret, scopes} as JSON.")
@click.pass_context
def create(ctx: click.Context, name: str, scopes: list[str], as_json: bool) -> None:
    """Create a credential. The secret is shown once and only its hash is kept."""
    with ctx.obj["database"]():
        try:
            credential, secret = create_credential(name, scopes)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--name") from None
    if as_json:
        click.echo(json.dumps({"key": credential.key, "secret": secret,
                               "scopes": list(credential.scopes), "name": credential.name}))
        return
    click.echo(f"Created credential for {credential.name!r}")
    click.echo(f"  key:    {credential.key}")
    click.echo(f"  secret: {secret}")
    click.echo(f"  scopes: {', '.join(credential.scopes)}")
    click.echo("The secret is not stored and cannot be shown again.")


@credentials.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked credentials.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List credentials (never their secrets)."""
    with ctx.obj["database"]():
        query = Credential.objects if show_all else Credential.objects(revoked_at=None)
        rows = [{"key": c.key, "name": c.name, "scopes": list(c.scopes),
                 "created_at": c.created_at.isoformat(),
                 "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None}
                for c in query.order_by("created_at")]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("key", "name", "scopes", "created", "revoked")
    for row in rows:
        table.add_row(row["key"], row["name"], ", ".join(row["scopes"]),
                      row["created_at"][:19], (row["revoked_at"] or "")[:19])
    Console().print(table)


@credentials.command("revoke")
@click.argument("key")
@click.pass_context
def revoke(ctx: click.Context, key: str) -> None:
    """Revoke a credential: its requests are refused with 401 within 2 seconds."""
    with ctx.obj["database"]():
        try:
            credential = revoke_credential(key)
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from None
    click.echo(f"Revoked {credential.key} ({credential.name}).")
