"""The ``masteryhub`` command line: serve the app, manage the embedded database, and (from
the product packages) credentials, frameworks and the rest."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from masteryhub import __version__
from masteryhub.config import PREFIX, SETTINGS, ConfigError, Settings
from masteryhub.embedded import AlreadyRunning, EmbeddedError, EmbeddedServer


def load_settings() -> Settings:
    """Settings from the environment, or exit 2 with every problem listed."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _settings_epilog() -> str:
    lines = ["\b", "Configuration (environment variables):"]
    for s in SETTINGS:
        lines.append(f"  {PREFIX}{s.name}")
    return "\n".join(lines)


@click.group(epilog=_settings_epilog(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="masteryhub")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Mastery Hub: competency-based credit from xAPI evidence, inside Canvas and Moodle.

    Run `masteryhub serve` to start the app (and, unless MASTERYHUB_MONGODB_URI is set, the
    embedded database with its data in MASTERYHUB_DATA_DIR).
    """
    ctx.obj = {"database": open_database, "settings": load_settings}


@contextlib.contextmanager
def open_database() -> Iterator[object]:
    """For commands that need the database: the configured one, the embedded server running
    for DATA_DIR, or one started for the duration of the command."""
    from masteryhub.database import connect, database_name
    from masteryhub.embedded import database_uri

    settings = load_settings()
    try:
        with database_uri(settings.data_dir, settings.mongodb_uri) as uri:
            yield connect(uri, database_name(uri, settings.db_name), settings.db_timeout_ms)
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from None


@contextlib.contextmanager
def _serving_database(settings: Settings) -> Iterator[str]:
    """The database `serve` uses: the configured URI, a detached embedded server started by
    `masteryhub db start`, or one we start now and stop when serving ends."""
    if settings.mongodb_uri:
        yield settings.mongodb_uri
        return
    server = EmbeddedServer(settings.data_dir)
    state = server.running()
    if state is not None and state.owner_pid is None:
        click.echo(f"Using the embedded database started by `masteryhub db start` ({state.uri})")
        yield state.uri
        return
    try:
        state = server.start()
    except AlreadyRunning as exc:
        raise click.ClickException(str(exc)) from None
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Embedded database running (pid {state.pid}), data in {server.storage}")
    try:
        yield state.uri
    finally:
        click.echo("Stopping the embedded database…")
        server.stop()


@contextlib.contextmanager
def _mapping_worker(settings: Settings, uri: str) -> Iterator[None]:
    """The mapping worker as a thread of this process, unless MASTERYHUB_WORKER=off."""
    if settings.worker != "thread":
        yield
        return
    from mappings.worker import start_thread
    from masteryhub.database import connect, database_name

    db = connect(uri, database_name(uri, settings.db_name), settings.db_timeout_ms)
    if not settings.production:
        from masteryhub.demo import seed_if_empty

        if seed_if_empty():
            click.echo("Demo data: imported the sample Algebra I framework, its rules and a "
                       f"demo class's statements. Try {settings.base_url}/demo")
    thread, stop = start_thread(lambda: db)
    from lti_tool.sync import start_thread as start_lms_sync

    sync_thread, sync_stop = start_lms_sync(lambda: db)  # grades to LMSs, rosters in
    try:
        yield
    finally:
        stop.set()
        sync_stop.set()
        thread.join(10)
        sync_thread.join(10)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"Cannot listen on {host}:{port} ({exc.strerror}). Another program uses it: "
                f"stop it or choose another port with --port or {PREFIX}PORT.") from None


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@main.command()
@click.option("--host", help=f"Address to listen on [default: {PREFIX}HOST or 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535),
              help=f"Port to listen on [default: {PREFIX}PORT or 8000]")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Serve with gunicorn and this many worker processes "
                   "(default: the single-process development server)")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Start the web app (and the embedded database when no MongoDB URI is configured)."""
    settings = load_settings()
    if host or port:
        overrides = {f"{PREFIX}{k}": str(v) for k, v in (("HOST", host), ("PORT", port)) if v}
        os.environ.update(overrides)
        settings = load_settings()
    _check_port_free(settings.host, settings.port)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with _serving_database(settings) as uri, _mapping_worker(settings, uri):
        if workers:
            _serve_gunicorn(settings, uri, workers)
        else:
            _serve_development(settings, uri)


def _serve_development(settings: Settings, uri: str) -> None:
    from werkzeug.serving import make_server

    from masteryhub.app import create_app

    app = create_app(settings, mongodb_uri=uri)
    server = make_server(settings.host, settings.port, app, threaded=True)
    click.echo(f"Mastery Hub {__version__} is running: open {settings.base_url}/ "
               f"(health: {settings.base_url}/healthz). Press Ctrl-C to stop.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("\nShutting down…")
    finally:
        server.server_close()


def _serve_gunicorn(settings: Settings, uri: str, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    from masteryhub import observability

    # The worker processes share request metrics through files here (see observability).
    metrics_dir = observability.prepare_multiprocess_metrics()

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{settings.host}:{settings.port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", 4)
            self.cfg.set("worker_class", "gthread")
            # No gunicorn access log: the app logs each request (with its request id, and
            # without the tokens that raw request lines carry).
            self.cfg.set("proc_name", "masteryhub")
            self.cfg.set("child_exit", lambda server, worker: observability.worker_exited(
                worker.pid))

        def load(self):
            # Called in each worker after fork: pymongo clients must not cross a fork.
            from masteryhub.app import create_app

            return create_app(settings, mongodb_uri=uri)

    click.echo(f"Mastery Hub {__version__} under gunicorn with {workers} workers: "
               f"open {settings.base_url}/. Press Ctrl-C to stop.")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # gunicorn installs its own handlers
    try:
        with contextlib.suppress(SystemExit):  # gunicorn's master exits this way on a signal
            Gunicorn().run()
    finally:
        observability.cleanup_multiprocess_metrics(metrics_dir)


@main.group()
def db() -> None:
    """Start, stop or inspect the embedded database of MASTERYHUB_DATA_DIR."""


@db.command("start")
def db_start() -> None:
    """Start the embedded database in the background (it keeps running after this command)."""
    settings = load_settings()
    server = EmbeddedServer(settings.data_dir)
    try:
        state = server.start(detached=True)
    except EmbeddedError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Embedded database started: pid {state.pid}, {state.uri}, data in {state.storage}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded database of this DATA_DIR, whoever started it."""
    settings = load_settings()
    server = EmbeddedServer(settings.data_dir)
    if server.stop():
        click.echo("Embedded database stopped.")
    else:
        click.echo("The embedded database is not running.")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def db_status(as_json: bool) -> None:
    """Say whether the database answers, and where it is. Exit code 1 when it is not running."""
    settings = load_settings()
    if settings.mongodb_uri:
        info = {"mode": "external", "running": _ping(settings.mongodb_uri)}
    else:
        state = EmbeddedServer(settings.data_dir).running()
        info = {"mode": "embedded", "running": state is not None and _ping(state.uri),
                "data_dir": str(settings.data_dir)}
        if state is not None:
            info.update(pid=state.pid, uri=state.uri, started_at=time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.started_at)),
                storage_bytes=_dir_size(Path(state.storage)))
    if as_json:
        click.echo(json.dumps(info))
    elif info["running"]:
        details = ", ".join(f"{k}: {v}" for k, v in info.items() if k != "running")
        click.echo(f"running ({details})")
    else:
        click.echo(f"not running ({info['mode']})")
    sys.exit(0 if info["running"] else 1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--max-lag", type=click.IntRange(0), metavar="N",
              help="Also fail when the mapping worker is more than N statements behind.")
def health(as_json: bool, max_lag: int | None) -> None:
    """Check the database answers (a health check for `masteryhub worker` containers) and
    show the mapping worker's lag. Exit code 1 when unhealthy. Starts nothing."""
    from masteryhub.app import DatabaseNotRunning, resolve_mongodb_uri
    from masteryhub.observability import health_report

    settings = load_settings()
    try:
        uri = resolve_mongodb_uri(settings)
    except DatabaseNotRunning as exc:
        report = {"status": "unavailable",
                  "database": {"status": "unavailable", "reason": str(exc)}}
    else:
        report = health_report(uri, settings, max_lag=max_lag)
    if as_json:
        click.echo(json.dumps(report, default=str))
    else:
        database = report["database"]
        line = f"{report['status']}: database {database['status']}"
        if "reason" in database:
            line += f" ({database['reason']})"
        if "worker" in report:
            w = report["worker"]
            line += (f"; mapping worker at {w['position']} of {w['watermark']} "
                     f"(lag {w['lag']}), lease {'held' if w['lease_active'] else 'free'}")
        click.echo(line)
    sys.exit(0 if report["status"] == "ok" else 1)


def _ping(uri: str) -> bool:
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000)
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _register_product_commands() -> None:
    from lrs.cli import credentials
    from lti_tool.admin_auth import COMMANDS as ADMIN_COMMANDS
    from lti_tool.cli import COMMANDS as LTI_COMMANDS
    from lti_tool.sync_cli import COMMANDS as SYNC_COMMANDS
    from lti_tool.sync_cli import alongside_worker
    from mappings.cli import COMMANDS
    from masteryhub.backup import COMMANDS as BACKUP_COMMANDS
    from masteryhub.migrate import COMMANDS as MIGRATE_COMMANDS

    main.add_command(credentials)
    for command in (*COMMANDS, *LTI_COMMANDS, *SYNC_COMMANDS, *ADMIN_COMMANDS,
                    *MIGRATE_COMMANDS, *BACKUP_COMMANDS):
        main.add_command(alongside_worker(command) if command.name == "worker" else command)


_register_product_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
