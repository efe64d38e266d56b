"""``masteryhub statements import|export``: move xAPI statements between Mastery Hubs, or
in from another LRS (the logic is in :mod:`lrs.transfer`; docs/migration.md explains the
choices). Progress bars go to stderr when it is a terminal; ``--json`` prints a summary.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from pathlib import Path

import click
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

REMOTE_TIMEOUT_S = 60.0


def _progress(total: bool) -> Progress:
    columns = ([SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                DownloadColumn(), TimeRemainingColumn()] if total else
               [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()])
    return Progress(*columns, console=Console(stderr=True), transient=False,
                    disable=not sys.stderr.isatty())


def _timestamp(ctx, param, value: str | None):
    if value is None:
        return None
    from lrs.errors import XAPIError
    from lrs.validation import parse_timestamp

    try:
        return parse_timestamp(value, param.name)
    except XAPIError as exc:
        raise click.BadParameter(exc.message) from None


@click.group()
def statements() -> None:
    """Move xAPI statements in and out: NDJSON files, or another LRS over HTTP."""


@statements.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="NDJSON file to write [default: stdout].")
@click.option("--agent", help="Only this learner's statements: an email address or an xAPI "
                              "Agent as JSON.")
@click.option("--provider", help="Only statements stored with this credential key.")
@click.option("--since", callback=_timestamp, help="Only statements stored after this time.")
@click.option("--until", callback=_timestamp, help="Only statements stored at or before it.")
@click.option("--attachments", "attachments_dir", type=click.Path(file_okay=False),
              help="Also write attachment contents to this directory.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stderr.")
@click.pass_context
def export(ctx: click.Context, output: str | None, agent: str | None, provider: str | None,
           since, until, attachments_dir: str | None, as_json: bool) -> None:
    """Write statements as NDJSON, one per line, oldest stored first, exactly as
    GET /xapi/statements?format=exact serves them (voided and voiding ones included)."""
    from lrs.store import StatementStore
    from lrs.transfer import agent_filter, export_statements

    try:
        agent_key = agent_filter(agent) if agent else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent") from None
    err = Console(stderr=True)
    with ctx.find_root().obj["database"]() as db, _handled():
        store = StatementStore(db)
        with contextlib.ExitStack() as stack:
            out = (stack.enter_context(open(output, "wb")) if output
                   else sys.stdout.buffer)
            bar = stack.enter_context(_progress(total=False))
            task = bar.add_task("exported 0", total=None)
            summary = export_statements(
                store, out, agent=agent_key, provider=provider, since=since, until=until,
                attachments_dir=Path(attachments_dir) if attachments_dir else None,
                progress=lambda n: bar.update(task, description=f"exported {n}"))
            out.flush()
    if as_json:
        click.echo(json.dumps(summary), err=True)
    else:
        err.print(f"Exported {summary['statements']} statement(s)"
                  + (f" and {summary['attachments']} attachment(s)" if attachments_dir else "")
                  + (f" to {output}." if output else "."))


@statements.command("import")
@click.argument("source")
@click.option("--username", "--key", "username", envvar="MASTERYHUB_IMPORT_USERNAME",
              help="For an LRS URL: the Basic auth key [env MASTERYHUB_IMPORT_USERNAME].")
@click.option("--password", "--secret", "password", envvar="MASTERYHUB_IMPORT_PASSWORD",
              help="For an LRS URL: the secret [env MASTERYHUB_IMPORT_PASSWORD].")
@click.option("--xapi-version", default="1.0.3", show_default=True,
              help="X-Experience-API-Version to speak to the other LRS.")
@click.option("--page-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="For an LRS URL: statements asked for per page.")
@click.option("--max-pages", type=click.IntRange(1), help="For an LRS URL: stop after this "
              "many pages (run again to continue where it stopped).")
@click.option("--restart", is_flag=True, help="For an LRS URL: forget the saved place and "
              "start from the first statement (what is stored is still skipped).")
@click.option("--strict", is_flag=True, help="For a file: stop at the first bad line "
              "(default: report it and go on).")
@click.option("--provider", help="Record the statements as stored by this credential key "
              "[default: the key in each statement's authority account].")
@click.option("--attachments", "attachments_dir", type=click.Path(file_okay=False,
              exists=True), help="For a file: attachment contents written by export.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def import_(ctx: click.Context, source: str, username: str | None, password: str | None,
            xapi_version: str, page_size: int, max_pages: int | None, restart: bool,
            strict: bool, provider: str | None, attachments_dir: str | None,
            as_json: bool) -> None:
    """Import statements from SOURCE: an NDJSON file ('-' for stdin) or another LRS's
    endpoint URL (e.g. https://lrs.example.org/xapi/).

    Each statement keeps its id, timestamp, stored and authority. Statements already
    stored are skipped, so a run can be repeated or resumed; an id stored with other
    content is reported as a conflict. Exit code 0: everything is in; 1: some statements
    were not imported (conflicts, bad lines; see the summary); 2: the run stopped."""
    from lrs.store import StatementStore
    from lrs.transfer import ImportAborted, RemoteError, import_ndjson, import_remote

    remote = source.startswith(("http://", "https://"))
    if not remote and source != "-" and not Path(source).is_file():
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    with ctx.find_root().obj["database"]() as db, _handled():
        store = StatementStore(db)
        store.ensure_indexes()
        try:
            if remote:
                report = _import_remote(store, import_remote, source, username, password,
                                        xapi_version, page_size, max_pages, restart, provider)
            else:
                report = _import_file(store, import_ndjson, source, strict, provider,
                                      attachments_dir)
        except ImportAborted as exc:
            click.echo(f"Import stopped at a bad line ({exc}); the statements before it are "
                       "stored. Fix the line and run the import again.", err=True)
            sys.exit(2)
        except RemoteError as exc:
            raise click.ClickException(str(exc)) from None
    _report(report, source, as_json)
    if report.conflicts or report.bad_lines or report.rejected:
        sys.exit(1)


def _import_file(store, import_ndjson, source: str, strict: bool, provider: str | None,
                 attachments_dir: str | None):
    size = None if source == "-" else Path(source).stat().st_size
    with contextlib.ExitStack() as stack:
        stream = (sys.stdin.buffer if source == "-"
                  else stack.enter_context(open(source, "rb")))
        bar = stack.enter_context(_progress(total=size is not None))
        task = bar.add_task("importing", total=size)

        def progress(report) -> None:
            bar.update(task, completed=report.bytes_read,
                       description=f"{report.read} read, {report.stored} new")

        return import_ndjson(store, stream, strict=strict, credential_key=provider,
                             attachments_dir=Path(attachments_dir) if attachments_dir else None,
                             progress=progress)


def _import_remote(store, import_remote, source, username, password, xapi_version, page_size,
                   max_pages, restart, provider):
    # tincan's connections have no timeout of their own: a silent server must not hang us.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(REMOTE_TIMEOUT_S)
    try:
        with _progress(total=False) as bar:
            task = bar.add_task("connecting", total=None)

            def progress(report) -> None:
                bar.update(task, description=f"page {report.pages}: {report.read} read, "
                                             f"{report.stored} new")

            return import_remote(store, source, username=username, password=password,
                                 version=xapi_version, page_size=page_size,
                                 max_pages=max_pages, restart=restart, credential_key=provider,
                                 progress=progress)
    finally:
        socket.setdefaulttimeout(previous)


def _report(report, source: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(dict(report.as_dict(), source=source)))
        return
    click.echo(f"Read {report.read} statement(s): {report.stored} stored, {report.present} "
               f"already present, {len(report.conflicts)} conflict(s)"
               + (f", {report.attachments} attachment(s)" if report.attachments else "")
               + (f", {report.pages} page(s)" if report.pages else "") + ".")
    for sid in report.conflicts[:20]:
        click.echo(f"  conflict: {sid} is stored with different content (kept as it was)")
    for bad in report.bad_lines[:20]:
        click.echo(f"  line {bad['line']}: {bad['message']}")
    for item in report.rejected[:20]:
        click.echo(f"  rejected {item.get('id') or item.get('where')}: {item['message']}")
    hidden = (max(0, len(report.conflicts) - 20) + max(0, len(report.bad_lines) - 20)
              + max(0, len(report.rejected) - 20))
    if hidden:
        click.echo(f"  … and {hidden} more (use --json for the full list)")
    if not report.complete:
        click.echo("Stopped before the end (page limit): run the same command again to "
                   "continue where it stopped.")


@contextlib.contextmanager
def _handled():
    """Database and file problems as one-line messages, never a traceback."""
    try:
        yield
    except PyMongoError as exc:
        raise click.ClickException(f"database error: {exc}") from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = (statements,)
