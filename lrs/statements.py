"""The Statements resource, ``/xapi/statements`` (xAPI 1.0.3 Part Three §2.1)."""

from __future__ import annotations

import datetime as dt

import orjson
from flask import Blueprint, Response, current_app
from itsdangerous import BadSignature, URLSafeSerializer

from lrs import keys as K
from lrs.errors import XAPIError, XAPIValidationError
from lrs.formats import parse_accept_language, to_canonical, to_ids
from lrs.jsonio import dumps_json
from lrs.store import MAX_PAGE, TIME_SLACK_SEQ, StatementStore, Stored, iso
from lrs.validation import (
    is_iri,
    is_uuid,
    parse_timestamp,
    validate_agent,
    validate_statement,
    validate_statements,
)
from lrs.web import XRequest, authority_of, json_response, resource, store

QUERY_PARAMS = frozenset({
    "agent", "verb", "activity", "registration", "related_activities", "related_agents",
    "since", "until", "limit", "format", "attachments", "ascending",
})
SINGLE_PARAMS = frozenset({"statementId", "voidedStatementId", "format", "attachments"})
FORMATS = ("exact", "ids", "canonical")


# -- parameters ------------------------------------------------------------------------
def _bool(args: dict[str, str], name: str) -> bool:
    value = args.get(name, "false")
    if value not in ("true", "false"):
        raise XAPIValidationError(f"parameter {name!r} must be 'true' or 'false', got {value!r}")
    return value == "true"


def _uuid(value: str, name: str) -> str:
    if not is_uuid(value):
        raise XAPIValidationError(f"parameter {name!r} must be a UUID, got {value!r}")
    return value.lower()


def _format(args: dict[str, str]) -> str:
    fmt = args.get("format", "exact")
    if fmt not in FORMATS:
        raise XAPIValidationError(f"parameter 'format' must be one of {', '.join(FORMATS)}")
    return fmt


def _query_from_args(req: XRequest) -> dict:
    """Validate query parameters into the plain dict that also travels in `more` tokens."""
    args = req.args
    unknown = sorted(set(args) - QUERY_PARAMS)
    if unknown:
        raise XAPIValidationError(f"unknown parameter(s) for GET statements: "
                                  f"{', '.join(unknown)}")
    filters: list[list[str]] = []
    if "agent" in args:
        try:
            agent = orjson.loads(args["agent"])
        except orjson.JSONDecodeError:
            raise XAPIValidationError("parameter 'agent' must be a JSON Agent or Group") from None
        validate_agent(agent, "agent")
        ident = K.ifi(agent)
        if ident is None:
            raise XAPIValidationError("parameter 'agent' must identify an Agent or an "
                                      "identified Group (mbox, mbox_sha1sum, openid or account)")
        prefixes = (K.AGENT, K.RELATED_AGENT) if _bool(args, "related_agents") else (K.AGENT,)
        filters.append([p + ident for p in prefixes])
    else:
        _bool(args, "related_agents")
    if "verb" in args:
        if not is_iri(args["verb"]):
            raise XAPIValidationError("parameter 'verb' must be an IRI")
        filters.append([K.VERB + args["verb"]])
    if "activity" in args:
        if not is_iri(args["activity"]):
            raise XAPIValidationError("parameter 'activity' must be an IRI")
        related = _bool(args, "related_activities")
        prefixes = (K.ACTIVITY, K.RELATED_ACTIVITY) if related else (K.ACTIVITY,)
        filters.append([p + args["activity"] for p in prefixes])
    else:
        _bool(args, "related_activities")
    if "registration" in args:
        filters.append([K.REGISTRATION + _uuid(args["registration"], "registration")])
    since = _time_param(args, "since")
    until = _time_param(args, "until")
    limit = args.get("limit", "0")
    if not (limit.isascii() and limit.isdigit()):
        raise XAPIValidationError(f"parameter 'limit' must be a non-negative integer, "
                                  f"got {limit!r}")
    return {
        "f": filters, "since": since, "until": until,
        "limit": min(int(limit), MAX_PAGE) or MAX_PAGE,
        "format": _format(args), "attachments": _bool(args, "attachments"),
        "asc": _bool(args, "ascending"),
    }


_SELECTIVITY = (K.REGISTRATION, K.AGENT, K.ACTIVITY, K.VERB)


def _selectivity(alternatives: list[str]) -> int:
    """Most selective filter first: it is the one the database's index serves."""
    prefix = alternatives[0][:2]
    return _SELECTIVITY.index(prefix) if prefix in _SELECTIVITY else len(_SELECTIVITY)


def _time_param(args: dict[str, str], name: str) -> str | None:
    if name not in args:
        return None
    try:
        return iso(parse_timestamp(args[name], name))
    except OverflowError:
        raise XAPIValidationError(f"parameter {name!r} is out of the representable range "
                                  "(years 1 to 9999 in UTC)") from None


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="xapi-more")


# -- GET -------------------------------------------------------------------------------
def get_statements(req: XRequest) -> Response:
    credential = req.credential
    assert credential is not None
    if not credential.can_read_own_statements():
        raise XAPIError("this credential may not read statements "
                        "(needs statements/read, statements/read/mine or all/read)", 403)
    lrs_store: StatementStore = store()
    watermark = lrs_store.watermark()
    headers = {"X-Experience-API-Consistent-Through": iso(watermark.time)}
    if "statementId" in req.args or "voidedStatementId" in req.args:
        return _get_single(req, lrs_store, headers)

    if "more" in req.args:
        if set(req.args) != {"more"}:
            raise XAPIValidationError("a 'more' request takes no other parameters")
        try:
            query = _serializer().loads(req.args["more"])
        except BadSignature:
            raise XAPIValidationError("parameter 'more' is not a valid continuation") from None
        if query.get("cred") != credential.key:
            raise XAPIError("this 'more' link was issued to another credential", 403)
    else:
        query = _query_from_args(req)
        query["cred"] = credential.key
        query["hi"] = lrs_store.last_seq()
        query["lo"] = 0

    filters = sorted(query["f"], key=_selectivity)
    if not credential.can_read_statements():  # statements/read/mine
        filters.append([K.MINE + credential.key])
    since = parse_timestamp(query["since"], "since") if query["since"] else None
    until = parse_timestamp(query["until"], "until") if query["until"] else None
    lo, hi = query["lo"], query["hi"]
    if since is not None and "more" not in req.args:
        lo = max(lo, lrs_store.seq_after(since) - TIME_SLACK_SEQ)
    if until is not None and "more" not in req.args:
        hi = min(hi, lrs_store.seq_after(until) + TIME_SLACK_SEQ)
    found = lrs_store.find(filters, hi=hi, lo=lo, limit=query["limit"] + 1,
                           ascending=query["asc"], since=since, until=until)
    more = ""
    if len(found) > query["limit"]:
        found = found[:query["limit"]]
        last = found[-1].seq
        follow = dict(query, lo=last, hi=hi) if query["asc"] else dict(query, lo=lo, hi=last - 1)
        more = f"/xapi/statements?more={_serializer().dumps(follow)}"
    body = _statement_result(found, query["format"], req, more)
    if query["attachments"]:
        return _multipart(body, [orjson.loads(s.json) for s in found], lrs_store, headers)
    return json_response(body, headers=headers)


def _get_single(req: XRequest, lrs_store: StatementStore, headers: dict) -> Response:
    """Part Three §2.1.3: a single statement by statementId or voidedStatementId."""
    unknown = sorted(set(req.args) - SINGLE_PARAMS)
    if unknown or ("statementId" in req.args and "voidedStatementId" in req.args):
        raise XAPIValidationError("with statementId or voidedStatementId, only 'format' and "
                                  "'attachments' may be given"
                                  + (f" (got {', '.join(unknown)})" if unknown else ""))
    voided_wanted = "voidedStatementId" in req.args
    name = "voidedStatementId" if voided_wanted else "statementId"
    sid = _uuid(req.args[name], name)
    fmt = _format(req.args)
    with_attachments = _bool(req.args, "attachments")
    found = lrs_store.get(sid)
    credential = req.credential
    assert credential is not None
    if found is not None and not credential.can_read_statements():
        stmt = found.statement()
        if stmt.get("authority", {}).get("account", {}).get("name") != credential.key:
            found = None  # read/mine: others' statements do not exist for this credential
    if found is None or found.voided != voided_wanted:
        hint = (" (it is voided: ask with voidedStatementId)" if found and found.voided
                else " (it is not voided: ask with statementId)" if found else "")
        raise XAPIError(f"no statement with {name}={sid}{hint}", 404)
    body = _formatted(found, fmt, req)
    headers = dict(headers, **{"Last-Modified": _http_date(found.stored)})
    if with_attachments:
        return _multipart(body, [orjson.loads(found.json)], lrs_store, headers)
    return json_response(body, headers=headers)


def _http_date(value: dt.datetime) -> str:
    from email.utils import format_datetime

    return format_datetime(value.astimezone(dt.UTC), usegmt=True)


def _formatted(found: Stored, fmt: str, req: XRequest) -> bytes:
    if fmt == "exact":
        return found.json
    stmt = found.statement()
    if fmt == "ids":
        return dumps_json(to_ids(stmt))
    return dumps_json(to_canonical(stmt, parse_accept_language(
        req.headers.get("accept-language"))))


def _statement_result(found: list[Stored], fmt: str, req: XRequest, more: str) -> bytes:
    """A StatementResult built from the stored JSON without re-encoding it (exact format)."""
    parts = b",".join(_formatted(s, fmt, req) for s in found)
    return b'{"statements":[' + parts + b'],"more":' + orjson.dumps(more) + b"}"


def _multipart(body: bytes, statements: list[dict], lrs_store: StatementStore,
               headers: dict) -> Response:
    wanted: dict[str, None] = {}
    for stmt in statements:
        for item in _all_attachments(stmt):
            wanted[item["sha2"].lower()] = None
    files = []
    for sha2 in wanted:
        found = lrs_store.attachment(sha2)
        if found is not None:
            files.append((sha2, found[0], found[1]))
    from lrs.attachments import build_multipart

    payload, content_type = build_multipart(body, files)
    response = Response(payload, status=200, content_type=content_type)
    for key, value in headers.items():
        response.headers[key] = value
    return response


def _all_attachments(stmt: dict) -> list[dict]:
    items = list(stmt.get("attachments") or ())
    if stmt.get("object", {}).get("objectType") == "SubStatement":
        items.extend(stmt["object"].get("attachments") or ())
    return items


# -- PUT / POST ------------------------------------------------------------------------
def _read_statements(req: XRequest) -> tuple[object, list | None]:
    """The request's JSON and, for multipart/mixed (Part Three §1.5.2), its parts."""
    if req.mimetype == "multipart/mixed":
        from lrs.attachments import parse_multipart

        return parse_multipart(req.body, req.content_type_header)
    if req.mimetype not in ("application/json", ""):
        raise XAPIError(f"Content-Type {req.mimetype!r} is not accepted for statements: "
                        "send application/json or multipart/mixed", 400)
    return req.json(), None


def _check_and_collect(statements: list[dict], parts: list | None
                       ) -> dict[str, tuple[str, bytes]]:
    """Part Three §1.5.2: every declared attachment without fileUrl has its part; signed
    statements verify (Part Two §2.6). Imported lazily: JSON-only ingest never needs it."""
    from lrs.attachments import check_attachments, require_no_raw_attachments
    from lrs.signature import verify_statement_signatures

    if parts is None:
        if any(_all_attachments(s) for s in statements):
            require_no_raw_attachments(statements)
        return {}
    by_sha = check_attachments(statements, parts)  # keyed by lower-cased sha2
    verify_statement_signatures(statements, by_sha)
    return {sha2: (part.content_type, part.data) for sha2, part in by_sha.items()}


def _require_write(req: XRequest) -> None:
    assert req.credential is not None
    if not req.credential.can_write_statements():
        raise XAPIError("this credential may not write statements "
                        "(needs statements/write or all)", 403)


def put_statement(req: XRequest) -> Response:
    _require_write(req)
    unknown = sorted(set(req.args) - {"statementId"})
    if unknown:
        raise XAPIValidationError(f"unknown parameter(s) for PUT statements: "
                                  f"{', '.join(unknown)}")
    if "statementId" not in req.args:
        raise XAPIValidationError("PUT statements requires the statementId parameter")
    sid = _uuid(req.args["statementId"], "statementId")
    body, parts = _read_statements(req)
    validate_statement(body, version=req.version)
    assert isinstance(body, dict)
    if "id" in body and body["id"].lower() != sid:
        raise XAPIValidationError(f"statement.id {body['id']!r} differs from the statementId "
                                  f"parameter {sid!r}")
    body = dict(body, id=sid)
    files = _check_and_collect([body], parts) if parts or body.get("attachments") else {}
    store().insert([body], authority=authority_of(req), credential_key=req.credential.key,
                   version=req.version, attachments=files)
    return Response(status=204)


def post_statements(req: XRequest) -> Response:
    if req.args:
        # Part Three §2.1.2: POST takes no parameters (a GET tunnelled as POST is handled
        # by the alternate syntax before this point).
        raise XAPIValidationError(f"unknown parameter(s) for POST statements: "
                                  f"{', '.join(sorted(req.args))}")
    _require_write(req)
    body, parts = _read_statements(req)
    statements = validate_statements(body, version=req.version)
    if not statements:
        return json_response([])
    files = (_check_and_collect(statements, parts)
             if parts or any(_all_attachments(s) for s in statements) else {})
    ids = store().insert(statements, authority=authority_of(req),
                         credential_key=req.credential.key, version=req.version,
                         attachments=files)
    return json_response(ids)


def register(bp: Blueprint) -> None:
    resource(bp, "/statements", {"GET": get_statements, "PUT": put_statement,
                                 "POST": post_statements})
