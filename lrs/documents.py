"""Document resources and the Agents / Activities resources of the LRS.

xAPI 1.0.3 Part Three (``xAPI-Communication.md`` in adlnet/xAPI-Spec):

- §2.2 Document Resources, §2.3 State, §2.6 Agent Profile, §2.7 Activity Profile:
  ``/activities/state``, ``/agents/profile``, ``/activities/profile``;
- §2.4 Agents (``/agents``, a Person object) and §2.5 Activities (``/activities``, the
  canonical Activity);
- §3.1 Concurrency (ETags, ``If-Match`` / ``If-None-Match``, 412 and 409).

Storage: one collection, ``lrs_documents``, for the three kinds of document::

    {kind, activity, agent, registration, doc_id,      # the document's identity
     content: Binary, content_type, etag, updated}

``agent`` is the agent's inverse functional identifier as one string
(:func:`lrs.keys.ifi`), so that the same learner named with or without ``name`` or
``objectType`` finds the same documents. Fields a kind does not use are stored as null.

Why one unique compound index ``(kind, activity, agent, registration, doc_id)`` and no
other: it makes a document's identity unique (two racing creations cannot both win), and
its prefixes serve every other query — the id listings and the State multiple-document
DELETE are equalities on ``(kind, activity, agent[, registration])``, with ``since`` left
as a filter over the few documents one learner keeps for one activity.

Why read-then-compare-and-swap for every write: the preconditions of §3.1 and the JSON
merge of §2.2 both depend on the stored document. Each write reads it, decides, then
writes only if the document is still the one it read (same ``etag`` and ``updated``),
and starts over if not — so a precondition is never checked against one version and
applied to another, and nothing changes when a request fails.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from bson import Binary
from flask import Blueprint, Response
from flask.blueprints import BlueprintSetupState
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError
from werkzeug.http import http_date

from lrs import keys as K
from lrs.errors import XAPIError, XAPIValidationError
from lrs.store import STATEMENTS, utcnow
from lrs.validation import is_uuid, parse_timestamp, validate_activity_id, validate_agent
from lrs.web import XRequest, resource, store

COLLECTION = "lrs_documents"
ACTIVITIES_COLLECTION = "lrs_activities"
INDEX_NAME = "document_identity"

STATE = "state"
ACTIVITY_PROFILE = "activity_profile"
AGENT_PROFILE = "agent_profile"

# MongoDB refuses documents over 16 MiB; leave room for the identity fields and refuse
# larger content ourselves with 413 (Part Three §3.2.s3.b11) rather than by accident.
MAX_DOCUMENT_BYTES = 15 * 1024 * 1024
# How often a write re-reads and retries when another write slipped in between, backing
# off a random 0..2**n ms so that writers racing for one document spread out.
_WRITE_ATTEMPTS = 16
# GET /agents looks for names in at most this many recent statements of that agent,
# within this many of the latest statement sequence numbers (a bounded window).
_NAME_SCAN_LIMIT = 20
_NAME_SCAN_WINDOW = 20_000

_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_JSON = "application/json"


# ------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class Kind:
    """What distinguishes the three document resources from each other."""

    name: str
    rule: str
    id_param: str  # "stateId" or "profileId"
    uses_activity: bool
    uses_agent: bool
    uses_registration: bool
    # Part Three §3.1.s3 / §3.1.s4.b13: only the two profile resources answer 409 to a
    # PUT without If-Match / If-None-Match on an existing document.
    put_needs_precondition: bool
    # Part Three §2.3.s5: only the State resource deletes several documents at once.
    multi_delete: bool
    label: str

    def allowed(self, with_since: bool) -> frozenset[str]:
        names = {self.id_param}
        if self.uses_activity:
            names.add("activityId")
        if self.uses_agent:
            names.add("agent")
        if self.uses_registration:
            names.add("registration")
        if with_since:
            names.add("since")
        return frozenset(names)

    def authorize(self, req: XRequest, write: bool) -> None:
        """Part Three §4.2 scopes: ``state`` / ``profile`` read-write, ``all/read`` read."""
        credential = req.credential
        assert credential is not None
        if self.name == STATE:
            allowed, scope = credential.can_use_state(write), "state"
        else:
            allowed, scope = credential.can_use_profiles(write), "profile"
        if not allowed:
            what = "write" if write else "read"
            extra = "" if write else " or 'all/read'"
            raise XAPIError(f"this credential may not {what} {self.label} documents: it needs "
                            f"the '{scope}'{extra} scope", 403)


STATE_KIND = Kind(STATE, "/activities/state", "stateId", True, True, True, False, True,
                  "state")
ACTIVITY_PROFILE_KIND = Kind(ACTIVITY_PROFILE, "/activities/profile", "profileId", True,
                             False, False, True, False, "activity profile")
AGENT_PROFILE_KIND = Kind(AGENT_PROFILE, "/agents/profile", "profileId", False, True, False,
                          True, False, "agent profile")


@dataclass(frozen=True)
class DocumentQuery:
    """The validated parameters of one document request (Part Three §2.3, §2.6, §2.7).

    ``doc_id`` None means the request addresses every document of the context (listing,
    or the State multiple-document DELETE). ``registration`` None on such a request
    means "any registration" (§2.3.s4: "Activity + Agent [+ registration if
    specified]"); on a single-document request it means "stored without one".
    """

    kind: Kind
    activity: str | None
    agent: str | None
    registration: str | None
    doc_id: str | None
    since: dt.datetime | None = None

    def identity(self) -> dict:
        """The fields of the unique index, for one document."""
        assert self.doc_id is not None
        return {"kind": self.kind.name, "activity": self.activity, "agent": self.agent,
                "registration": self.registration, "doc_id": self.doc_id}

    def context_filter(self) -> dict:
        """Every document of the context, in the field order of the index prefix."""
        query: dict = {"kind": self.kind.name, "activity": self.activity, "agent": self.agent}
        if self.registration is not None or not self.kind.uses_registration:
            query["registration"] = self.registration
        return query


log = logging.getLogger(__name__)


def ensure_indexes(db: Database) -> None:
    """The one index of ``lrs_documents``: identity, uniqueness and listing prefix."""
    db[COLLECTION].create_index(
        [("kind", 1), ("activity", 1), ("agent", 1), ("registration", 1), ("doc_id", 1)],
        unique=True, name=INDEX_NAME)


def _documents() -> Collection:
    return store().db[COLLECTION]


# ------------------------------------------------------------------------- parameters


def _check_names(args: dict[str, str], allowed: frozenset[str], where: str) -> None:
    """Part Three §3.2.s3.b7/b8: unknown parameters, and known ones in the wrong case,
    are rejected with 400."""
    unknown = sorted(set(args) - allowed)
    if not unknown:
        return
    by_lower = {name.lower(): name for name in allowed}
    name = unknown[0]
    if name.lower() in by_lower:
        raise XAPIValidationError(
            f"parameter {name!r} is not recognised for {where}; parameter names are "
            f"case-sensitive: did you mean {by_lower[name.lower()]!r}?")
    raise XAPIValidationError(
        f"parameter(s) {', '.join(repr(n) for n in unknown)} not recognised for {where}; "
        f"allowed: {', '.join(sorted(allowed))}")


def _required(args: dict[str, str], name: str, where: str) -> str:
    if name not in args:
        raise XAPIValidationError(f"missing required parameter {name!r} for {where}")
    return args[name]


def parse_agent_param(raw: str) -> dict:
    """The ``agent`` parameter: JSON of one Agent, not a Group (Part Three §2.4.s2,
    §2.6.s3 note), validated like an actor (Part Two §2.2.s4.b4)."""
    try:
        agent = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise XAPIValidationError(f"parameter 'agent' is not valid JSON: {exc}") from None
    validate_agent(agent, "agent", allow_group=False)
    return agent


def _activity_param(args: dict[str, str], where: str) -> str:
    value = _required(args, "activityId", where)
    validate_activity_id(value, "activityId")
    return value


def _registration_param(args: dict[str, str]) -> str | None:
    value = args.get("registration")
    if value is None:
        return None
    if not is_uuid(value):
        raise XAPIValidationError(
            f"parameter 'registration' must be a UUID such as "
            f"'01234567-89ab-cdef-0123-456789abcdef', got {value[:80]!r}")
    return value.lower()


def _doc_id_param(args: dict[str, str], name: str, required: bool, where: str) -> str | None:
    value = _required(args, name, where) if required else args.get(name)
    if value is not None and value == "":
        raise XAPIValidationError(f"parameter {name!r} must not be empty")
    return value


def _since_param(value: str) -> dt.datetime:
    """``since`` as UTC; an offset that pushes it past year 1 or 9999 is clamped there
    (nothing is stored that early or that late) instead of failing to encode."""
    since = parse_timestamp(value, "since")
    try:
        return since.astimezone(dt.UTC)
    except OverflowError:
        edge = dt.datetime.min if since.year < 5000 else dt.datetime.max
        return edge.replace(tzinfo=dt.UTC)


def parse_document_query(kind: Kind, req: XRequest) -> DocumentQuery:
    """Validate a document request's parameters for its method (Part Three §2.3 to §2.7)."""
    method = req.method if req.method != "HEAD" else "GET"
    args = req.args
    where = f"{method} {kind.rule}"
    single = kind.id_param in args
    listing = method == "GET" and not single
    if "since" in args and not listing:
        raise XAPIValidationError(
            f"parameter 'since' only applies when listing ids (GET without "
            f"{kind.id_param!r}), not to {where}{' of one document' if single else ''}")
    _check_names(args, kind.allowed(with_since=listing), where)
    required_id = method in ("PUT", "POST") or (method == "DELETE" and not kind.multi_delete)
    doc_id = _doc_id_param(args, kind.id_param, required_id, where)
    activity = _activity_param(args, where) if kind.uses_activity else None
    agent = None
    if kind.uses_agent:
        agent = K.ifi(parse_agent_param(_required(args, "agent", where)))
    registration = _registration_param(args) if kind.uses_registration else None
    since = _since_param(args["since"]) if "since" in args else None
    return DocumentQuery(kind, activity, agent, registration, doc_id, since)


# -------------------------------------------------------------------- ETags (§3.1)


def etag_of(content: bytes) -> str:
    """Part Three §3.1.s4.b2: the SHA-1 of the content as lower-case hex."""
    return hashlib.sha1(content).hexdigest()


def _quoted(etag: str) -> str:
    # Part Three §3.1.s4.b4: the ETag header is enclosed in quotes.
    return f'"{etag}"'


@dataclass(frozen=True)
class _TagList:
    any: bool
    strong: frozenset[str]  # opaque values of strong tags
    all: frozenset[str]  # opaque values of strong and weak tags


def _parse_tags(header: str, name: str) -> _TagList:
    """An ``If-Match`` / ``If-None-Match`` value: ``*`` or a list of entity tags.

    Unquoted tags are accepted too (some clients strip the quotes); comparison ignores
    case because an xAPI ETag is a hex digest.
    """
    value = header.strip()
    if value == "*":
        return _TagList(True, frozenset(), frozenset())
    strong: set[str] = set()
    every: set[str] = set()
    for part in value.split(","):
        tag = part.strip()
        if not tag:
            continue
        weak = tag[:2].upper() == "W/"
        if weak:
            tag = tag[2:]
        if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
            tag = tag[1:-1]
        if not tag or '"' in tag:
            raise XAPIValidationError(f"malformed {name} header: {header[:100]!r}")
        every.add(tag.lower())
        if not weak:
            strong.add(tag.lower())
    if not every:
        raise XAPIValidationError(f"the {name} header is empty; give an ETag or '*'")
    return _TagList(False, frozenset(strong), frozenset(every))


def check_preconditions(req: XRequest, current_etag: str | None, *,
                        conflict_without_headers: bool, what: str) -> None:
    """Evaluate ``If-Match`` then ``If-None-Match`` against the current document
    (RFC 7232 §6 order; Part Three §3.1.s4.b5 to b12), raising 412 when one fails.

    ``current_etag`` is None when nothing exists. With neither header and an existing
    document, ``conflict_without_headers`` raises 409 (Part Three §3.1.s4.b13 to b15).
    """
    if_match = req.headers.get("if-match")
    if_none_match = req.headers.get("if-none-match")
    if if_match is not None:
        tags = _parse_tags(if_match, "If-Match")
        if current_etag is None:
            raise XAPIError(f"If-Match failed: {what} does not exist", 412)
        # RFC 7232 §3.1: If-Match uses the strong comparison; weak tags never match.
        if not tags.any and current_etag not in tags.strong:
            raise XAPIError(f"If-Match failed: {what} has changed; its current ETag is "
                            f"{_quoted(current_etag)}. Fetch it again before changing it", 412)
    if if_none_match is not None:
        tags = _parse_tags(if_none_match, "If-None-Match")
        if current_etag is not None and (tags.any or current_etag in tags.all):
            raise XAPIError(f"If-None-Match failed: {what} already exists (ETag "
                            f"{_quoted(current_etag)})", 412)
    if (conflict_without_headers and current_etag is not None and if_match is None
            and if_none_match is None):
        raise XAPIError(
            f"{what} already exists, and this request has neither If-Match nor "
            "If-None-Match: check the current state of the document (GET it), then send "
            f"If-Match with its current ETag ({_quoted(current_etag)}) to replace it", 409)


def _not_modified(req: XRequest, etag: str) -> bool:
    """RFC 7232 §3.2: a GET whose If-None-Match matches is answered 304."""
    header = req.headers.get("if-none-match")
    if header is None:
        return False
    tags = _parse_tags(header, "If-None-Match")
    return tags.any or etag in tags.all


def _get_response(req: XRequest, body: bytes, content_type: str, etag: str,
                  updated: dt.datetime | None) -> Response:
    """A GET answer with the headers of Part Three §3.1.s4.b1 and §2.2.s6."""
    headers = {"ETag": _quoted(etag)}
    if updated is not None:
        headers["Last-Modified"] = http_date(updated)
    if _not_modified(req, etag):
        return Response(status=304, headers=headers)
    response = Response(body, status=200, content_type=content_type)
    response.headers.update(headers)
    return response


# ---------------------------------------------------------------------- JSON (§2.2)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json_object(content: bytes, what: str) -> dict:
    """Parse a document as a JSON object for the merge of Part Three §2.2.s7.

    The standard library parser, not orjson: documents may hold integers beyond 64 bits,
    which must survive a merge unchanged.
    """
    try:
        value = json.loads(content.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise XAPIValidationError(f"{what} cannot be parsed as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise XAPIValidationError(f"{what} is JSON but not a JSON object; only objects "
                                  "can be merged by POST (use PUT to replace it)")
    return value


def _is_json_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == _JSON


def _merge(current: dict | None, body: bytes, content_type: str) -> bytes:
    """Part Three §2.2.s7/s8: POST merges top-level properties of two JSON objects.

    Both the posted document and the stored one must be ``application/json`` JSON
    objects, else 400; a POST that creates a document must be one too (the consensus
    behind §2.2.s8.b1, adlnet/xAPI-Spec#641).
    """
    if not _is_json_type(content_type):
        raise XAPIValidationError(
            f"POST merges JSON documents: the Content-Type must be application/json, got "
            f"{content_type or 'none'!r}; use PUT to store other content")
    posted = _json_object(body, "the posted document")
    if current is None:
        return body
    if not _is_json_type(current["content_type"]):
        raise XAPIValidationError(
            f"cannot merge: the stored document has Content-Type "
            f"{current['content_type']!r}, not application/json; use PUT to replace it")
    stored = _json_object(bytes(current["content"]), "the stored document")
    stored.update(posted)
    return json.dumps(stored, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ------------------------------------------------------------------------ handlers


def _what(query: DocumentQuery) -> str:
    return f"{query.kind.label} document {query.doc_id!r}"


def _get(kind: Kind, req: XRequest) -> Response:
    kind.authorize(req, write=False)
    query = parse_document_query(kind, req)
    if query.doc_id is None:
        return _list_ids(query, req)
    doc = _documents().find_one(query.identity(),
                                {"content": 1, "content_type": 1, "etag": 1, "updated": 1})
    if doc is None:
        raise XAPIError(f"no {_what(query)} in this context", 404)
    return _get_response(req, bytes(doc["content"]), doc["content_type"], doc["etag"],
                         doc["updated"])


def _context_docs(query: DocumentQuery) -> list[dict]:
    filt = query.context_filter()
    if query.since is not None:
        filt["updated"] = {"$gt": query.since}
    return list(_documents().find(filt, {"doc_id": 1, "updated": 1}))


def _ids_body(docs: list[dict]) -> bytes:
    return orjson.dumps(sorted({d["doc_id"] for d in docs}))


def _list_ids(query: DocumentQuery, req: XRequest) -> Response:
    """Part Three §2.3.s4, §2.6.s4, §2.7.s4: the ids of the context, ``since`` exclusive;
    Last-Modified is the latest update among them (§2.2.s6.b2)."""
    docs = _context_docs(query)
    body = _ids_body(docs)
    updated = max((d["updated"] for d in docs), default=None)
    return _get_response(req, body, _JSON, etag_of(body), updated)


def _back_off(attempt: int) -> None:
    """Before a retry: wait a random while, longer after each lost race."""
    if attempt:
        time.sleep(random.uniform(0, 0.001 * 2 ** min(attempt, 7)))


def _write(kind: Kind, req: XRequest) -> Response:
    """PUT stores or replaces; POST merges or creates (Part Three §2.2.s7, §3.1)."""
    kind.authorize(req, write=True)
    query = parse_document_query(kind, req)
    body = req.body
    if len(body) > MAX_DOCUMENT_BYTES:
        raise XAPIError(f"document larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB", 413)
    content_type = req.content_type_header.strip() or _DEFAULT_CONTENT_TYPE
    merging = req.method == "POST"
    if merging:
        # Judge the posted document before touching the database: a bad POST is 400
        # whatever is stored.
        _merge(None, body, content_type)
    collection = _documents()
    identity = query.identity()
    projection = {"etag": 1, "updated": 1, "content_type": 1}
    if merging:
        projection["content"] = 1
    for attempt in range(_WRITE_ATTEMPTS):
        _back_off(attempt)
        current = collection.find_one(identity, projection)
        check_preconditions(req, current["etag"] if current else None,
                            conflict_without_headers=(req.method == "PUT"
                                                      and kind.put_needs_precondition),
                            what=_what(query))
        content = _merge(current, body, content_type) if merging else body
        if len(content) > MAX_DOCUMENT_BYTES:
            raise XAPIError("the merged document would be larger than "
                            f"{MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB", 413)
        fields = {"content": Binary(content), "content_type": content_type,
                  "etag": etag_of(content), "updated": utcnow()}
        if current is None:
            try:
                collection.insert_one({**identity, **fields})
            except DuplicateKeyError:
                continue  # created meanwhile: judge the request against that document
            return Response(status=204)
        result = collection.update_one(
            {"_id": current["_id"], "etag": current["etag"], "updated": current["updated"]},
            {"$set": fields})
        if result.matched_count:
            return Response(status=204)
    raise XAPIError(f"{_what(query)} kept changing while this request was applied; retry",
                    409)


def _delete(kind: Kind, req: XRequest) -> Response:
    """DELETE one document (§2.3.s3, §2.6.s3, §2.7.s3), or for State without stateId all
    documents of the context (§2.3.s5). Deleting what does not exist is a success."""
    kind.authorize(req, write=True)
    query = parse_document_query(kind, req)
    if query.doc_id is None:
        return _delete_context(query, req)
    collection = _documents()
    for attempt in range(_WRITE_ATTEMPTS):
        _back_off(attempt)
        current = collection.find_one(query.identity(), {"etag": 1, "updated": 1})
        check_preconditions(req, current["etag"] if current else None,
                            conflict_without_headers=False, what=_what(query))
        if current is None:
            return Response(status=204)
        result = collection.delete_one(
            {"_id": current["_id"], "etag": current["etag"], "updated": current["updated"]})
        if result.deleted_count:
            return Response(status=204)
    raise XAPIError(f"{_what(query)} kept changing while this request was applied; retry",
                    409)


def _delete_context(query: DocumentQuery, req: XRequest) -> Response:
    """Part Three §2.3.s5. A precondition, if sent, is judged against the ETag of the id
    list a GET of the same context returns; only the documents judged are deleted, so
    one stored meanwhile survives."""
    docs = _context_docs(query)
    if req.headers.get("if-match") is not None or req.headers.get("if-none-match") is not None:
        check_preconditions(req, etag_of(_ids_body(docs)) if docs else None,
                            conflict_without_headers=False,
                            what=f"the set of {query.kind.label} documents")
    if docs:
        _documents().delete_many({"$or": [{"_id": d["_id"], "updated": d["updated"]}
                                          for d in docs]})
    return Response(status=204)


# ------------------------------------------------------------- /agents, /activities


def _person(agent: dict, names: list[str]) -> dict:
    """Part Three §2.4.s5: a Person has arrays where an Agent has single values."""
    person: dict = {"objectType": "Person"}
    if names:
        person["name"] = names
    for prop in ("mbox", "mbox_sha1sum", "openid", "account"):
        if prop in agent:
            person[prop] = [agent[prop]]
    return person


def _agents_of(stmt: dict) -> Iterator[dict]:
    """The agents a statement is keyed under with the ``a:`` prefix (lrs.keys)."""
    for candidate in (stmt.get("actor"), stmt.get("object")):
        if isinstance(candidate, dict) and candidate.get("objectType") != "SubStatement":
            yield candidate
            for member in candidate.get("member") or ():
                if isinstance(member, dict):
                    yield member


def _names_from_statements(ident: str) -> list[str]:
    """Names the agent went by in its most recent statements, read in a bounded window
    of the statement sequence through the ``(k, _id)`` index of the statement store."""
    statements = store().db[STATEMENTS]
    latest = statements.find_one({}, {"_id": 1}, sort=[("_id", -1)])
    if latest is None:
        return []
    window = {"$gt": latest["_id"] - _NAME_SCAN_WINDOW, "$lte": latest["_id"]}
    names: list[str] = []
    cursor = statements.find({"k": K.AGENT + ident, "_id": window, "v": {"$exists": False}},
                             {"j": 1}, sort=[("_id", -1)], limit=_NAME_SCAN_LIMIT)
    for doc in cursor:
        try:
            stmt = orjson.loads(doc["j"])
        except orjson.JSONDecodeError:
            continue
        for agent in _agents_of(stmt):
            name = agent.get("name")
            if isinstance(name, str) and name not in names and K.ifi(agent) == ident:
                names.append(name)
    return names


def get_agent(req: XRequest) -> Response:
    """Part Three §2.4: the Person object for one Agent.

    It always holds the requested Agent's identifier (§2.4.s3.b3) and never links other
    identifiers to it (§2.4.s3.b1 would need extra permissions for that). Names come from
    the request and, for credentials that may read statements, from the agent's recent
    statements: a credential without statement access learns nothing new.
    """
    _check_names(req.args, frozenset({"agent"}), "GET /agents")
    agent = parse_agent_param(_required(req.args, "agent", "GET /agents"))
    assert req.credential is not None
    if not req.credential.can_read_definitions():
        raise XAPIError("this credential may not read agents: it needs a read scope "
                        "('all/read', 'statements/read', 'profile', 'state' or 'define')", 403)
    names = [agent["name"]] if isinstance(agent.get("name"), str) else []
    if req.credential.can_read_statements():
        names += [n for n in _names_from_statements(K.ifi(agent) or "") if n not in names]
    body = orjson.dumps(_person(agent, names))
    return _get_response(req, body, _JSON, etag_of(body), None)


def get_activity(req: XRequest) -> Response:
    """Part Three §2.5: the canonical Activity the statement store keeps, or a bare
    Activity object when none is known (§2.5.s2.b1)."""
    _check_names(req.args, frozenset({"activityId"}), "GET /activities")
    activity_id = _activity_param(req.args, "GET /activities")
    assert req.credential is not None
    if not req.credential.can_read_definitions():
        raise XAPIError("this credential may not read activities: it needs a read scope "
                        "('all/read', 'statements/read', 'define', 'profile' or 'state')", 403)
    doc = store().db[ACTIVITIES_COLLECTION].find_one({"_id": activity_id}, {"j": 1})
    if doc is not None:
        body = bytes(doc["j"])
    else:
        body = orjson.dumps({"objectType": "Activity", "id": activity_id})
    return _get_response(req, body, _JSON, etag_of(body), None)


# ---------------------------------------------------------------------- registration


def _handlers(kind: Kind) -> dict[str, Callable[[XRequest], Response]]:
    return {"GET": lambda req: _get(kind, req), "PUT": lambda req: _write(kind, req),
            "POST": lambda req: _write(kind, req), "DELETE": lambda req: _delete(kind, req)}


def register(bp: Blueprint) -> None:
    """Register the three document resources, /agents and /activities on the blueprint,
    and create the documents' index when the blueprint joins an app."""

    def _indexes(state: BlueprintSetupState) -> None:
        lrs_store = state.app.extensions.get("lrs.store")
        if lrs_store is not None:
            try:
                ensure_indexes(lrs_store.db)
            except PyMongoError as exc:  # start anyway; /healthz reports the outage
                log.warning("database unavailable at start: %s", exc)

    bp.record_once(_indexes)
    for kind in (STATE_KIND, ACTIVITY_PROFILE_KIND, AGENT_PROFILE_KIND):
        resource(bp, kind.rule, _handlers(kind))
    resource(bp, "/agents", {"GET": get_agent})
    resource(bp, "/activities", {"GET": get_activity})
