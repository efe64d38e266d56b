"""``masteryhub backup`` / ``restore``: everything but the statements, as files.

Statements move with ``masteryhub statements export|import`` (exact, resumable); a backup
holds the rest — frameworks, competencies, credit rules, rule sets, learners, evidence
with the teachers' decisions, mastery, credits and their history, audit, LRS credentials
(secret hashes only), xAPI state and profile documents, LMS platforms, the tool's signing
keys, courses, memberships, goals, operator accounts — one JSON-lines file per
collection (MongoDB Extended JSON, so dates, binaries and 64-bit integers come back as
they were) and a ``manifest.json``.

Which collections: every collection of the database except those listed in
:data:`SKIPPED` (statements and what is rebuilt from them, and short-lived state), so a
collection added later is backed up without anyone remembering to list it here.

Secrets: ``lti_keys`` holds the tool's private signing keys, and credential and operator
password hashes are in others (:data:`SECRET`). Files are written owner-only (0600 in a
0700 directory, or a 0600 archive). With ``--encrypt`` those collections are encrypted
with a passphrase (scrypt + Fernet); without it the command warns.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import os
import secrets
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo.database import Database
from pymongo.errors import PyMongoError

FORMAT = "masteryhub-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PASSPHRASE_ENV = "MASTERYHUB_BACKUP_PASSPHRASE"

SKIPPED = {
    # statements: `masteryhub statements export` moves them, exactly
    "lrs_statements": "statements (use `masteryhub statements export`)",
    "lrs_counters": "statement sequence (rebuilt by the import)",
    "lrs_attachments": "statement attachments (`statements export --attachments`)",
    "lrs_activities": "activity definitions (rebuilt from the statements by the import)",
    "lrs_import_progress": "where statement imports stopped",
    # the mapper's place in the old statement sequence, and what it derives from it
    "worker_state": "the mapper's position in the old database's statement sequence",
    "mapping_dirty": "queued recomputations",
    "mapping_errors": "statements the mapper could not map (rebuilt by recompute)",
    # short-lived
    "lti_login_states": "LTI logins in flight",
    "lti_sessions": "launch sessions",
    "admin_sessions": "operator sessions",
    "admin_login_failures": "login throttling",
    "lti_platform_keysets": "cached platform key sets",
    "demo_launches": "demo launches in flight",
    "lti_access_tokens": "platform access tokens (live bearer tokens; fetched again)",
}
SECRET = {
    "lti_keys": "the tool's private signing keys",
    "lrs_credentials": "provider credential secret hashes",
    "admin_accounts": "operator password hashes",
    "demo_platform": "the demo platform's private key",
    "lti_files": "files learners submitted (personal data)",
}


class BackupError(RuntimeError):
    pass


def collections_to_back_up(db: Database) -> list[str]:
    return sorted(name for name in db.list_collection_names()
                  if name not in SKIPPED and not name.startswith("system."))


# -- encryption ---------------------------------------------------------------------------
def _fernet(passphrase: str, salt: bytes):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(key))


# -- files ----------------------------------------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _dump_collection(db: Database, name: str) -> tuple[bytes, int]:
    lines = []
    for doc in db[name].find(sort=[("_id", 1)]):
        lines.append(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS))
    body = ("\n".join(lines) + "\n" if lines else "").encode()
    return body, len(lines)


def backup(db: Database, dest: Path, *, passphrase: str | None = None) -> dict:
    """Write the backup to ``dest``: a new directory, or a ``.tar.gz``/``.tgz`` file."""
    archive = dest.name.endswith((".tar.gz", ".tgz"))
    if dest.exists() and (archive or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists; choose a new name")
    salt = secrets.token_bytes(16)
    fernet = _fernet(passphrase, salt) if passphrase else None
    manifest: dict = {"format": FORMAT, "version": FORMAT_VERSION,
                      "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                      "database": db.name, "collections": {},
                      "skipped": sorted(SKIPPED), "encryption": None}
    if fernet is not None:
        manifest["encryption"] = {"kdf": "scrypt", "n": 2**15, "r": 8, "p": 1,
                                  "salt": base64.b64encode(salt).decode(),
                                  "cipher": "fernet"}
    with _staging(dest, archive) as folder:
        for name in collections_to_back_up(db):
            body, count = _dump_collection(db, name)
            encrypted = fernet is not None and name in SECRET
            filename = f"{name}.jsonl" + (".enc" if encrypted else "")
            _write_private(folder / filename, fernet.encrypt(body) if encrypted else body)
            manifest["collections"][name] = {"file": filename, "documents": count,
                                             "encrypted": encrypted,
                                             "secret": name in SECRET}
        _write_private(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        if archive:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for path in sorted(folder.iterdir()):
                    tar.add(path, arcname=path.name)
            _write_private(dest, buffer.getvalue())
    return manifest


@contextlib.contextmanager
def _staging(dest: Path, archive: bool) -> Iterator[Path]:
    if archive:
        folder = Path(tempfile.mkdtemp(prefix="masteryhub-backup-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)
    yield dest


@contextlib.contextmanager
def _opened(source: Path) -> Iterator[Path]:
    """The backup as a directory (an archive is unpacked to a private temporary one)."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    folder = Path(tempfile.mkdtemp(prefix="masteryhub-restore-"))
    try:
        try:
            with tarfile.open(source, "r:*") as tar:
                tar.extractall(folder, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{source} is not a readable backup archive: {exc}") from None
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BackupError(f"{folder} has no readable {MANIFEST}: not a Mastery Hub "
                          "backup") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r} "
                          f"version {manifest.get('version')!r}")
    return manifest


def needs_passphrase(source: Path) -> bool:
    with _opened(source) as folder:
        return bool(read_manifest(folder).get("encryption"))


def restore(db: Database, source: Path, *, force: bool = False,
            passphrase: str | None = None) -> dict:
    """Load a backup into ``db``. Refuses when a collection it holds already has documents,
    unless ``force`` (then those collections are emptied first; others are left alone)."""
    with _opened(source) as folder:
        manifest = read_manifest(folder)
        fernet = None
        if manifest.get("encryption"):
            if not passphrase:
                raise BackupError("this backup is encrypted: give its passphrase "
                                  f"(--passphrase prompt, or {PASSPHRASE_ENV})")
            fernet = _fernet(passphrase, base64.b64decode(manifest["encryption"]["salt"]))
        names = list(manifest["collections"])
        occupied = [n for n in names if db[n].find_one({}, {"_id": 1}) is not None]
        if occupied and not force:
            raise BackupError("the database is not empty (" + ", ".join(occupied[:8])
                              + (", …" if len(occupied) > 8 else "") + " hold data); "
                              "restore into an empty database, or pass --force to replace "
                              "these collections")
        documents: dict[str, list] = {}
        for name in names:  # read (and decrypt) everything before changing anything
            entry = manifest["collections"][name]
            if "/" in entry["file"] or "\\" in entry["file"] or entry["file"].startswith("."):
                raise BackupError(f"the manifest names a file outside the backup: "
                                  f"{entry['file']!r}")
            data = (folder / entry["file"]).read_bytes()
            if entry.get("encrypted"):
                from cryptography.fernet import InvalidToken

                try:
                    data = fernet.decrypt(data)
                except InvalidToken:
                    raise BackupError("wrong passphrase (cannot decrypt "
                                      f"{entry['file']})") from None
            documents[name] = [json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS)
                               for line in data.decode().splitlines() if line.strip()]
            if len(documents[name]) != entry["documents"]:
                raise BackupError(f"{entry['file']} holds {len(documents[name])} documents, "
                                  f"the manifest says {entry['documents']}: damaged backup")
        for name in names:
            if force:
                db[name].delete_many({})
            for i in range(0, len(documents[name]), 1000):
                db[name].insert_many(documents[name][i:i + 1000], ordered=False)
    _after_restore(db)
    return {name: len(docs) for name, docs in documents.items()}


def _after_restore(db: Database) -> None:
    """Indexes (the app creates them at start too), and tell running workers that the
    catalog changed."""
    from lrs.store import StatementStore
    from lti_tool.models import ensure_indexes as ensure_lti_indexes
    from mappings import catalog
    from mappings.models import ensure_indexes
    from mappings.worker import CHECK_ALL, WORKER_ID

    StatementStore(db).ensure_indexes()
    ensure_indexes()
    ensure_lti_indexes()
    # The statements imported next were mapped before (the evidence restored): the worker
    # looks for their evidence before storing any, until a recompute has seen them all.
    db["worker_state"].update_one({"_id": WORKER_ID}, {"$set": {"checked_upto": CHECK_ALL}},
                                  upsert=True)
    catalog.bump()


# -- commands -----------------------------------------------------------------------------
def _passphrase(encrypt: bool, confirm: bool) -> str | None:
    if not encrypt:
        return None
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise click.ClickException(f"--encrypt needs a passphrase: set {PASSPHRASE_ENV} "
                                   "or run at a terminal")
    return click.prompt("Backup passphrase", hide_input=True,
                        confirmation_prompt=confirm)


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--encrypt", is_flag=True, help="Encrypt the secret-bearing collections "
              f"(signing keys, credential hashes) with a passphrase [env {PASSPHRASE_ENV}].")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def backup_command(ctx: click.Context, dest: Path, encrypt: bool, as_json: bool) -> None:
    """Back up everything but the statements to DEST: a new directory, or a file ending
    in .tar.gz. Statements: `masteryhub statements export`."""
    passphrase = _passphrase(encrypt, confirm=True)
    with ctx.find_root().obj["database"]() as db:
        try:
            manifest = backup(db, dest, passphrase=passphrase)
        except (BackupError, OSError, PyMongoError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(manifest))
        return
    total = sum(c["documents"] for c in manifest["collections"].values())
    click.echo(f"Backed up {total} document(s) from {len(manifest['collections'])} "
               f"collection(s) to {dest} (owner-only permissions).")
    secret = [n for n, c in manifest["collections"].items() if c["secret"]]
    if secret and not encrypt:
        click.echo(f"Warning: {', '.join(secret)} hold secrets (the tool's private signing "
                   "keys, credential hashes) in clear text. Keep the backup private, or use "
                   "--encrypt.", err=True)


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Restore into a database that already holds "
              "data (the backed-up collections are replaced).")
@click.option("--json", "as_json", is_flag=True, help="Print {collection: documents} as JSON.")
@click.pass_context
def restore_command(ctx: click.Context, source: Path, force: bool, as_json: bool) -> None:
    """Restore a backup made by `masteryhub backup` into an empty database. Then import
    the statements (`masteryhub statements import`); the mapping worker, or
    `masteryhub recompute`, rebuilds mastery and credits from them."""
    try:
        passphrase = _passphrase(needs_passphrase(source), confirm=False)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    with ctx.find_root().obj["database"]() as db:
        try:
            counts = restore(db, source, force=force, passphrase=passphrase)
        except (BackupError, OSError, PyMongoError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(f"Restored {sum(counts.values())} document(s) into {len(counts)} "
               "collection(s). Next: `masteryhub statements import FILE`.")


COMMANDS = (backup_command, restore_command)
