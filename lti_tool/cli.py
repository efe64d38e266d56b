"""``masteryhub platforms`` (LMS registrations, invitations for dynamic registration) and
``masteryhub keys`` (the tool's signing keys).

Like the other product commands these get the database from the composition root through
``ctx.obj["database"]`` and the settings (for BASE_URL) through ``ctx.obj["settings"]``.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import click

from lti_tool import invites, keys
from lti_tool.dynamic_registration import ToolUrls, is_http_url
from lti_tool.models import Platform, ToolKey
from lti_tool.registry import RegistrationError, add_deployment, add_platform
from mappings.models import utcnow

CANVAS = {  # Instructure-hosted Canvas (self-hosted Canvas: pass its own URLs instead)
    "issuer": "https://canvas.instructure.com",
    "auth_login_url": "https://sso.canvaslms.com/api/lti/authorize_redirect",
    "auth_token_url": "https://sso.canvaslms.com/login/oauth2/token",
    "key_set_url": "https://sso.canvaslms.com/api/lti/security/jwks",
}
MOODLE_PATHS = {"auth_login_url": "/mod/lti/auth.php", "auth_token_url": "/mod/lti/token.php",
                "key_set_url": "/mod/lti/certs.php"}
OPTION_OF = {"issuer": "--issuer", "client_id": "--client-id",
             "auth_login_url": "--auth-login-url", "auth_token_url": "--auth-token-url",
             "key_set_url": "--key-set-url"}


def _settings(ctx: click.Context):
    load = (ctx.obj or {}).get("settings")
    if load is not None:
        return load()
    from masteryhub.config import ConfigError, Settings

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _urls(ctx: click.Context) -> ToolUrls:
    return ToolUrls(_settings(ctx).base_url)


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())


def _platform_dict(platform: Platform) -> dict:
    return {"id": platform.identifier, "name": platform.name, "product": platform.product,
            "status": platform.status, "issuer": platform.issuer,
            "client_id": platform.client_id, "deployments": list(platform.deployments),
            "auto_deployments": platform.auto_deployments,
            "auth_login_url": platform.auth_login_url,
            "auth_token_url": platform.auth_token_url, "key_set_url": platform.key_set_url,
            "auth_audience": platform.auth_audience,
            "created_at": _iso(platform.created_at)}


def _find(identifier: str) -> Platform:
    platform = Platform.objects(identifier=identifier).first()
    if platform is None:
        raise click.ClickException(f"no platform {identifier!r} (see `masteryhub platforms "
                                   "list`)")
    return platform


def _echo_tool_urls(urls: ToolUrls) -> None:
    click.echo("Tool URLs for the LMS admin:")
    click.echo(f"  OIDC login initiation URL:   {urls.login}")
    click.echo(f"  Redirect / launch URL:       {urls.launch}")
    click.echo(f"  Target link URI:             {urls.launch}")
    click.echo(f"  Public keyset (JWKS) URL:    {urls.jwks}")
    click.echo(f"  Canvas developer-key JSON:   {urls.canvas_json}")


@click.group()
def platforms() -> None:
    """LMS registrations (Canvas, Moodle, ...) the tool accepts launches from.

    \b
    Dynamic registration (recommended): `masteryhub platforms invite` prints a one-time
    URL for the LMS admin to paste into Moodle or Canvas.
    Manual registration: `masteryhub platforms add --canvas ...` or `--moodle-site URL`.
    """


@platforms.command("add")
@click.option("--name", help="Shown to admins (default: from the preset or the issuer).")
@click.option("--issuer", help="The platform's issuer (iss), e.g. https://moodle.school.edu.")
@click.option("--client-id", required=True, help="The client ID the LMS gave the tool.")
@click.option("--auth-login-url", help="The platform's OIDC authentication request URL.")
@click.option("--auth-token-url", help="The platform's OAuth2 access token URL.")
@click.option("--key-set-url", help="The platform's public keyset (JWKS) URL.")
@click.option("--deployment", "deployments", multiple=True, metavar="ID",
              help="A deployment ID (repeatable; more are recorded at launch).")
@click.option("--audience", help="Token endpoint audience, when it differs from its URL.")
@click.option("--canvas", is_flag=True,
              help="Preset for Instructure-hosted Canvas (issuer, login, token, JWKS URLs).")
@click.option("--moodle-site", metavar="URL",
              help="Preset for a Moodle site: issuer = the site URL, Moodle's "
                   "/mod/lti/auth.php, token.php and certs.php.")
@click.option("--json", "as_json", is_flag=True, help="Print the registration as JSON.")
@click.pass_context
def platforms_add(ctx: click.Context, name: str | None, issuer: str | None, client_id: str,
                  auth_login_url: str | None, auth_token_url: str | None,
                  key_set_url: str | None, deployments: tuple[str, ...],
                  audience: str | None, canvas: bool, moodle_site: str | None,
                  as_json: bool) -> None:
    """Register a platform manually (or add deployments to an existing registration of the
    same issuer and client ID). Prints the tool's URLs the LMS admin needs."""
    given = {"issuer": issuer, "auth_login_url": auth_login_url,
             "auth_token_url": auth_token_url, "key_set_url": key_set_url}
    product = None
    if canvas and moodle_site:
        raise click.UsageError("--canvas and --moodle-site are two different presets: "
                               "give one of them.")
    preset: dict[str, str] = {}
    if canvas:
        preset, product, name = dict(CANVAS), "canvas", name or "Canvas"
    elif moodle_site:
        site = moodle_site.strip().rstrip("/")
        parts = urlsplit(site)
        if not is_http_url(site) or parts.query or parts.fragment:
            raise click.BadParameter(f"{moodle_site!r} is not the http(s) URL of a Moodle "
                                     "site, e.g. https://moodle.school.edu",
                                     param_hint="--moodle-site")
        preset = {"issuer": site} | {k: site + path for k, path in MOODLE_PATHS.items()}
        product, name = "moodle", name or f"Moodle ({parts.netloc})"
    values = {k: v if v is not None else preset.get(k) for k, v in given.items()}
    missing = [OPTION_OF[k] for k, v in values.items() if not v]
    if missing:
        raise click.UsageError(f"Missing option(s) {', '.join(missing)} (or use a preset: "
                               "--canvas, or --moodle-site URL).")
    if not client_id.strip():
        raise click.BadParameter("must not be empty", param_hint="--client-id")
    with ctx.obj["database"]():
        existed = Platform.objects(issuer=values["issuer"], client_id=client_id).first()
        try:
            platform = add_platform(name=name or values["issuer"], client_id=client_id,
                                    deployments=list(deployments), auth_audience=audience,
                                    product=product or (existed.product if existed else None),
                                    **values)
        except RegistrationError as exc:
            field, _, problem = str(exc).partition(": ")
            raise click.BadParameter(problem or str(exc),
                                     param_hint=OPTION_OF.get(field, field)) from None
        info = _platform_dict(platform)
    urls = _urls(ctx)
    if as_json:
        _echo_json({"platform": info, "tool": urls.as_dict()})
        return
    click.echo(f"{'Updated' if existed else 'Registered'} platform {platform.identifier!r}: "
               f"{platform.name}")
    click.echo(f"  issuer:      {platform.issuer}")
    click.echo(f"  client ID:   {platform.client_id}")
    click.echo(f"  deployments: {', '.join(platform.deployments) or '(recorded at launch)'}")
    _echo_tool_urls(urls)


@platforms.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def platforms_list(ctx: click.Context, as_json: bool) -> None:
    """List registered platforms."""
    with ctx.obj["database"]():
        rows = [_platform_dict(p) for p in Platform.objects.order_by("created_at")]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No platforms registered. Use `masteryhub platforms invite` (dynamic "
                   "registration) or `masteryhub platforms add`.")
        return
    _table(("id", "name", "product", "status", "issuer", "client id", "deployments"),
           [(r["id"], r["name"], r["product"] or "", r["status"], r["issuer"],
             r["client_id"], str(len(r["deployments"]))) for r in rows])


@platforms.command("show")
@click.argument("identifier", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def platforms_show(ctx: click.Context, identifier: str, as_json: bool) -> None:
    """Show one platform's registration."""
    with ctx.obj["database"]():
        info = _platform_dict(_find(identifier))
    if as_json:
        _echo_json(info)
        return
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value) or "(none yet)"
        click.echo(f"{key + ':':18} {'' if value is None else value}")
    _echo_tool_urls(_urls(ctx))


@platforms.group("deployments")
def platforms_deployments() -> None:
    """Deployment IDs of a platform (Canvas: one per installation of the app)."""


@platforms_deployments.command("add")
@click.argument("identifier", metavar="ID")
@click.argument("deployment")
@click.pass_context
def deployments_add(ctx: click.Context, identifier: str, deployment: str) -> None:
    """Record a deployment ID for platform ID."""
    if not deployment.strip():
        raise click.BadParameter("must not be empty", param_hint="DEPLOYMENT")
    with ctx.obj["database"]():
        added = add_deployment(_find(identifier), deployment.strip())
    click.echo(f"Deployment {deployment.strip()!r} "
               f"{'added to' if added else 'was already recorded for'} {identifier!r}.")


def _set_status(ctx: click.Context, identifier: str, status: str) -> None:
    with ctx.obj["database"]():
        platform = _find(identifier)
        platform.update(set__status=status)
    click.echo(f"Platform {identifier!r} is now {status}.")


@platforms.command("disable")
@click.argument("identifier", metavar="ID")
@click.pass_context
def platforms_disable(ctx: click.Context, identifier: str) -> None:
    """Refuse launches from platform ID (its registration is kept)."""
    _set_status(ctx, identifier, "disabled")


@platforms.command("enable")
@click.argument("identifier", metavar="ID")
@click.pass_context
def platforms_enable(ctx: click.Context, identifier: str) -> None:
    """Accept launches from platform ID again."""
    _set_status(ctx, identifier, "active")


@platforms.command("invite")
@click.option("--expires-days", type=click.IntRange(1, 90), default=7, show_default=True,
              help="Days until the invitation expires.")
@click.option("--note", help="Who it is for (shown nowhere but the database).")
@click.option("--json", "as_json", is_flag=True, help="Print {url, expires_at} as JSON.")
@click.pass_context
def platforms_invite(ctx: click.Context, expires_days: int, note: str | None,
                     as_json: bool) -> None:
    """Print a one-time dynamic registration URL for an LMS admin.

    The admin pastes it into Moodle (Manage tools > Tool URL > Add LTI Advantage) or
    Canvas (Developer Keys > + LTI Registration). It works once and expires.
    """
    urls = _urls(ctx)
    with ctx.obj["database"]():
        invite, token = invites.create_invite(dt.timedelta(days=expires_days), note)
    url = f"{urls.register}?invite={token}"
    if as_json:
        _echo_json({"url": url, "expires_at": _iso(invite.expires_at)})
        return
    click.echo("Registration URL (works once; give it only to the LMS admin):")
    click.echo(f"  {url}")
    click.echo(f"Expires {_iso(invite.expires_at)}. Paste it into Moodle (Site administration "
               "> Plugins > Activity modules > External tool > Manage tools > Tool URL) or "
               "Canvas (Admin > Developer Keys > + Developer Key > + LTI Registration).")


@click.group("keys")
def keys_group() -> None:
    """The tool's signing keys, published at BASE_URL/lti/jwks."""


def _key_dict(key: ToolKey, now: dt.datetime) -> dict:
    retire = key.retire_after
    if retire is not None and retire.tzinfo is None:
        retire = retire.replace(tzinfo=dt.UTC)
    return {"kid": key.kid, "active": key.active, "created_at": _iso(key.created_at),
            "published": key.active or bool(retire and retire > now),
            "retire_after": _iso(key.retire_after)}


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List the keys: the active one (signs) and superseded ones (published until their
    retire time, then removed by `keys prune`)."""
    now = utcnow()
    with ctx.obj["database"]():
        rows = [_key_dict(k, now) for k in ToolKey.objects.order_by("-created_at")]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No keys yet: the first one is created when it is first needed.")
        return
    _table(("kid", "state", "created", "published until"),
           [(r["kid"], "active" if r["active"] else
             ("published" if r["published"] else "retired"), r["created_at"] or "",
             "-" if r["active"] else r["retire_after"] or "") for r in rows])


@keys_group.command("rotate")
@click.option("--keep-days", type=click.IntRange(0, 365), default=7, show_default=True,
              help="Days the previous key stays published at /lti/jwks (platforms cache it).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def keys_rotate(ctx: click.Context, keep_days: int, as_json: bool) -> None:
    """Create a new signing key; the previous one stops signing but stays published."""
    with ctx.obj["database"]():
        new, old = keys.rotate(dt.timedelta(days=keep_days))
        until = _iso(ToolKey.objects(kid=old[0].kid).first().retire_after) if old else None
    if as_json:
        _echo_json({"kid": new.kid, "previous": [k.kid for k in old],
                    "previous_published_until": until})
        return
    click.echo(f"New signing key: {new.kid}")
    for key in old:
        click.echo(f"Previous key {key.kid} stays published at /lti/jwks until {until}; "
                   "run `masteryhub keys prune` after that to delete it.")
    if not old:
        click.echo("There was no previous key.")


@keys_group.command("prune")
@click.option("--json", "as_json", is_flag=True, help="Print {removed} as JSON.")
@click.pass_context
def keys_prune(ctx: click.Context, as_json: bool) -> None:
    """Delete superseded keys whose publication time is over."""
    with ctx.obj["database"]():
        removed = keys.prune()
    if as_json:
        _echo_json({"removed": removed})
        return
    click.echo(f"Removed {removed} retired key(s).")


COMMANDS = (platforms, keys_group)
