"""Moving statements in and out of the LRS: NDJSON export, and import from an NDJSON file
or from another LRS over xAPI (see docs/migration.md).

- **Export** writes one statement per line, in sequence (``stored``) order, as the exact
  JSON the LRS serves with ``format=exact``; voided and voiding statements included, so
  that an import rebuilds the same store. Attachment contents, when asked for, go to a
  side directory (``<sha2>`` files and ``index.json`` with their content types).
- **Import** keeps each statement's ``id``, ``timestamp``, ``stored`` and ``authority``
  (:meth:`lrs.store.StatementStore.insert_imported`). It is idempotent: a statement
  already stored with the same content is skipped, one whose id is stored with different
  content is reported as a conflict, and neither stops the run. A bad NDJSON line is
  reported with its line number, then skipped (or the run stops, ``strict``).
- **Remote import** pages through another LRS's ``GET /statements`` (``ascending``,
  ``format=exact``) with ``tincan``'s ``RemoteLRS``, following ``more`` links, and keeps
  its place in ``lrs_import_progress`` so that an interrupted run continues where it
  stopped. Voided statements are not listed by an LRS (Part Three §2.1.3, voided
  statements), so each one is fetched by ``voidedStatementId`` when the statement that
  voids it comes by, and stored just before it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from lrs import keys as K
from lrs.errors import XAPIError
from lrs.jsonio import loads_json
from lrs.store import TIME_SLACK_SEQ, StatementStore, _aware, iso, utcnow
from lrs.validation import parse_timestamp, validate_statement

PROGRESS_COLLECTION = "lrs_import_progress"
# Ids for statements without one: derived from the line, so a re-run finds them again.
ID_NAMESPACE = uuid.UUID("0b9f3f8e-3f7e-4f4e-9d53-6a1c8b7e2f10")
BATCH = 200
ATTACHMENT_INDEX = "index.json"


class ImportAborted(RuntimeError):
    """A bad line with ``strict``: nothing after it was stored."""


@dataclass
class ImportReport:
    read: int = 0
    stored: int = 0
    present: int = 0
    conflicts: list[str] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {line|id, message}
    bad_lines: list[dict] = field(default_factory=list)  # {line, message}
    pages: int = 0
    bytes_read: int = 0
    attachments: int = 0
    complete: bool = True  # False: stopped early (page limit, abort); run again to finish

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, outcome) -> None:
        self.stored += len(outcome.stored)
        self.present += len(outcome.present)
        self.conflicts.extend(outcome.conflicts)
        self.rejected.extend({"id": sid, "message": why} for sid, why in outcome.rejected)


# -- export ------------------------------------------------------------------------------
def agent_filter(text: str) -> str:
    """The query key of ``--agent``: an xAPI Agent as JSON, an email, or a mailto: IRI."""
    text = text.strip()
    if text.startswith("{"):
        try:
            agent = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--agent is not valid JSON: {exc}") from None
        ident = K.ifi(agent) if isinstance(agent, dict) else None
        if ident is None:
            raise ValueError("--agent must identify an agent (mbox, mbox_sha1sum, openid "
                             "or account)")
        return K.AGENT + ident
    if "@" not in text:
        raise ValueError("--agent must be an email address or an xAPI Agent as JSON")
    return K.AGENT + "mbox|" + (text if text.startswith("mailto:") else "mailto:" + text)


def iter_export(store: StatementStore, *, agent: str | None = None,
                provider: str | None = None, since: dt.datetime | None = None,
                until: dt.datetime | None = None) -> Iterator[dict]:
    """Stored statement documents (voided included) in sequence order, up to the
    watermark (so no statement whose write is still running is skipped or half-seen).
    ``agent`` is a query key (:func:`agent_filter`), ``provider`` a credential key."""
    keys = [k for k in (agent, K.MINE + provider if provider else None) if k]
    first = keys[0] if keys else K.ALL
    rest = keys[1:]
    hi = store.watermark().seq
    lo = 0
    if since is not None:
        lo = max(0, store.seq_after(since) - TIME_SLACK_SEQ)
    if until is not None:
        hi = min(hi, store.seq_after(until) + TIME_SLACK_SEQ)
    window = 2000 if first == K.ALL else 50_000
    while lo < hi:
        upper = min(hi, lo + window)
        for doc in store.statements.find({"k": first, "_id": {"$gt": lo, "$lte": upper}},
                                         sort=[("_id", 1)]):
            if rest and not all(k in doc["k"] for k in rest):
                continue
            stored = _aware(doc["st"])
            if (since is not None and stored <= since) or (until is not None and stored > until):
                continue
            yield doc
        lo = upper


def export_statements(store: StatementStore, out: BinaryIO, *,
                      attachments_dir: Path | None = None,
                      progress: Callable[[int], None] | None = None, **filters) -> dict:
    """Write NDJSON to ``out``; returns {statements, attachments}."""
    count = 0
    wanted: set[str] = set()
    for doc in iter_export(store, **filters):
        exact = bytes(doc["j"])
        out.write(exact + b"\n")
        count += 1
        if attachments_dir is not None and b'"attachments"' in exact:
            wanted.update(_attachment_hashes(loads_json(exact)))
        if progress and count % 500 == 0:
            progress(count)
    if progress:
        progress(count)
    written = 0
    if attachments_dir is not None:
        attachments_dir.mkdir(parents=True, exist_ok=True)
        index: dict[str, str] = {}
        for sha2 in sorted(wanted):
            found = store.attachment(sha2)
            if found is None:  # declared with a fileUrl, or never sent
                continue
            (attachments_dir / sha2).write_bytes(found[1])
            index[sha2] = found[0]
            written += 1
        (attachments_dir / ATTACHMENT_INDEX).write_text(json.dumps(index, indent=1))
    return {"statements": count, "attachments": written}


def _attachment_hashes(stmt: dict) -> Iterable[str]:
    items = list(stmt.get("attachments") or ())
    obj = stmt.get("object") or {}
    if obj.get("objectType") == "SubStatement":
        items.extend(obj.get("attachments") or ())
    return [item["sha2"].lower() for item in items if isinstance(item.get("sha2"), str)]


# -- import --------------------------------------------------------------------------------
class _Batcher:
    """Collects statements into batches for :meth:`StatementStore.insert_imported`; a
    voiding statement whose target is in the pending batch starts a new one, so the
    target is stored (and then voided) first."""

    def __init__(self, store: StatementStore, report: ImportReport,
                 credential_key: str | None, size: int = BATCH):
        self.store = store
        self.report = report
        self.credential_key = credential_key
        self.size = size
        self.items: list[tuple[dict, bytes | None]] = []
        self.ids: set[str] = set()

    def add(self, stmt: dict, raw: bytes | None) -> None:
        if stmt["verb"]["id"] == K.VOIDED_VERB and \
                stmt["object"].get("id", "").lower() in self.ids:
            self.flush()
        self.items.append((stmt, raw))
        self.ids.add(stmt["id"].lower())
        if len(self.items) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items, self.ids = self.items, [], set()
        self.report.add(self.store.insert_imported(items, credential_key=self.credential_key))


def parse_line(raw: bytes) -> tuple[dict, bool]:
    """One NDJSON line as a validated statement with an id, and whether the id was made
    here (from the line's text, so a re-run makes the same); XAPIError says what is wrong."""
    stmt = loads_json(raw)
    if not isinstance(stmt, dict):
        raise XAPIError("not a JSON object (one statement per line)")
    validate_statement(stmt)
    if "id" in stmt:
        return stmt, False
    stmt["id"] = str(uuid.uuid5(ID_NAMESPACE, raw.decode("utf-8", "replace")))
    return stmt, True


def import_ndjson(store: StatementStore, stream: BinaryIO, *, strict: bool = False,
                  credential_key: str | None = None, attachments_dir: Path | None = None,
                  batch: int = BATCH,
                  progress: Callable[[ImportReport], None] | None = None) -> ImportReport:
    """Import an NDJSON stream (one statement per line, in the order to store them)."""
    report = ImportReport()
    batcher = _Batcher(store, report, credential_key, batch)
    for number, line in enumerate(stream, start=1):
        report.bytes_read += len(line)
        raw = line.strip()
        if not raw:
            continue
        try:
            stmt, made_id = parse_line(raw)
        except XAPIError as exc:
            report.bad_lines.append({"line": number, "message": exc.message})
            if strict:
                batcher.flush()
                report.complete = False
                raise ImportAborted(f"line {number}: {exc.message}") from None
            continue
        report.read += 1
        batcher.add(stmt, None if made_id else raw)
        if progress and report.read % batch == 0:
            progress(report)
    batcher.flush()
    if attachments_dir is not None:
        report.attachments = import_attachments(store, attachments_dir)
    store.flush()
    if progress:
        progress(report)
    return report


def import_attachments(store: StatementStore, directory: Path) -> int:
    """Attachment contents written by :func:`export_statements` (``index.json`` lists
    them); a file whose SHA-256 does not match its name is skipped."""
    import hashlib

    index_path = directory / ATTACHMENT_INDEX
    if not index_path.is_file():
        return 0
    index = json.loads(index_path.read_text())
    found: dict[str, tuple[str, bytes]] = {}
    for sha2, content_type in index.items():
        path = directory / sha2
        if path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == sha2.lower():
                found[sha2.lower()] = (content_type, data)
    if found:
        store._store_attachments(found)  # same storage as attachments received over HTTP
    return len(found)


# -- remote import ---------------------------------------------------------------------------
class RemoteError(RuntimeError):
    pass


def _remote(endpoint: str, username: str | None, password: str | None, version: str):
    import tincan

    return tincan.RemoteLRS(endpoint=endpoint, username=username, password=password,
                            version=version)


def _get(lrs, resource: str, params: dict | None = None) -> tuple[int, bytes]:
    """A GET through tincan's transport (auth and version headers), body unparsed:
    tincan's own Statement classes would rewrite timestamps and drop unknown content."""
    from tincan.http_request import HTTPRequest

    request = HTTPRequest(method="GET", resource=resource)
    if params:
        request.query_params = params
    try:
        response = lrs._send_request(request)
    except OSError as exc:
        raise RemoteError(f"cannot reach {lrs.endpoint}: {exc}") from None
    data = response.data or ""
    return response.response.status, data.encode("utf-8") if isinstance(data, str) else data


def import_remote(store: StatementStore, endpoint: str, *, username: str | None,
                  password: str | None, version: str = "1.0.3", page_size: int = 500,
                  max_pages: int | None = None, restart: bool = False,
                  credential_key: str | None = None,
                  progress: Callable[[ImportReport], None] | None = None) -> ImportReport:
    """Import every statement of another LRS (resumable; see the module docstring)."""
    lrs = _remote(endpoint, username, password, version)
    progress_id = f"{lrs.endpoint}|{username or ''}"
    places = store.db[PROGRESS_COLLECTION]
    if restart:
        places.delete_one({"_id": progress_id})
    place = places.find_one({"_id": progress_id}) or {}
    report = ImportReport()
    batcher = _Batcher(store, report, credential_key)
    more: str | None = place.get("more")
    since: str | None = place.get("since")
    while True:
        if max_pages is not None and report.pages >= max_pages:
            report.complete = False
            break
        status, body = (None, b"")
        if more:
            url = more if more.startswith("http") else lrs.get_endpoint_server_root() + more
            # The credentials go only to the LRS we were given, whatever a `more` link says.
            status, body = _get(lrs, url) if _same_origin(url, lrs.endpoint) else (None, b"")
            if status != 200:  # an expired or foreign `more` link: start again from `since`
                more = None
        if not more:
            params = {"ascending": "true", "format": "exact", "limit": page_size}
            if since:
                params["since"] = since
            status, body = _get(lrs, "statements", params)
        if status != 200:
            raise RemoteError(f"GET statements from {lrs.endpoint} answered {status}: "
                              f"{body[:300].decode('utf-8', 'replace')}")
        try:
            page = loads_json(body)
            statements = page["statements"]
        except (XAPIError, KeyError, TypeError):
            raise RemoteError(f"{lrs.endpoint} did not answer a StatementResult") from None
        report.pages += 1
        seen_here: set[str] = set()
        for position, stmt in enumerate(statements):
            where = f"page {report.pages} item {position}"
            try:
                validate_statement(stmt)
                if "id" not in stmt:
                    raise XAPIError("a statement from an LRS without an id")
            except XAPIError as exc:
                report.rejected.append({"where": where, "message": exc.message})
                continue
            report.read += 1
            if stmt["verb"]["id"] == K.VOIDED_VERB:
                _fetch_voided_target(lrs, store, batcher, stmt, seen_here, report)
            batcher.add(stmt, None)
            seen_here.add(stmt["id"].lower())
        batcher.flush()
        if statements:
            last = statements[-1].get("stored")
            if isinstance(last, str):
                since = _just_before(last)
        more = page.get("more") or None
        places.update_one({"_id": progress_id}, {"$set": {
            "more": more, "since": since, "updated_at": utcnow()},
            "$inc": {"pages": 1, "statements": len(statements)}}, upsert=True)
        if progress:
            progress(report)
        if not more:
            break
    store.flush()
    return report


def _fetch_voided_target(lrs, store: StatementStore, batcher: _Batcher, voiding: dict,
                         seen_here: set[str], report: ImportReport) -> None:
    target = voiding["object"].get("id", "").lower()
    if target in seen_here or target in batcher.ids or store.get(target) is not None:
        return
    status, body = _get(lrs, "statements", {"voidedStatementId": target, "format": "exact"})
    if status != 200:
        return  # the target never reached that LRS: the void is stored as an orphan
    try:
        stmt = loads_json(body)
        validate_statement(stmt)
    except XAPIError as exc:
        report.rejected.append({"id": target, "message": exc.message})
        return
    report.read += 1
    batcher.add(stmt, None)
    seen_here.add(target)


def _just_before(stored: str) -> str:
    """``since`` is exclusive: step back a millisecond so statements stored in the same
    millisecond as the last one read are listed again (and skipped as present)."""
    try:
        moment = parse_timestamp(stored, "stored")
    except XAPIError:
        return stored
    return iso(moment - dt.timedelta(milliseconds=1))


def _same_origin(a: str, b: str) -> bool:
    from urllib.parse import urlsplit

    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)
