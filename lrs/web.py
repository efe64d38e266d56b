"""The HTTP face of the LRS: one request model for normal and alternate syntax, version
header, authentication, CORS and error mapping, shared by every resource under /xapi.

Why a request model of our own: xAPI's alternate request syntax (Part Three §1.3) lets a
browser tunnel any method, header and body through a form POST. Normalising both forms into
one :class:`XRequest` at the edge means no resource handler ever has to know about it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from pymongo.errors import DocumentTooLarge, PyMongoError
from werkzeug.exceptions import HTTPException

from lrs.auth import REALM, Credential, authenticate
from lrs.errors import XAPIError
from lrs.jsonio import loads_json

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("1.0.3", "2.0.0")
_VERSION_1 = re.compile(r"^1\.0(\.[0-9])?$")
_VERSION_2 = re.compile(r"^2\.0(\.0)?$")
MAX_BODY_BYTES = 32 * 1024 * 1024

# Part Three §1.3: headers that may travel as form fields in the alternate syntax.
_FORM_HEADERS = {
    "authorization": "authorization",
    "x-experience-api-version": "x-experience-api-version",
    "content-type": "content-type",
    "content-length": "content-length",
    "if-match": "if-match",
    "if-none-match": "if-none-match",
}
_CORS_HEADERS = {
    "Access-Control-Allow-Methods": "HEAD, GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Experience-API-Version, "
                                    "If-Match, If-None-Match, Accept-Language",
    "Access-Control-Expose-Headers": "ETag, Last-Modified, Content-Type, "
                                     "X-Experience-API-Version, "
                                     "X-Experience-API-Consistent-Through",
    "Access-Control-Max-Age": "86400",
}


@dataclass
class XRequest:
    """One xAPI request, whichever syntax carried it."""

    method: str
    args: dict[str, str]
    headers: dict[str, str]
    body: bytes
    credential: Credential | None = None
    version: str = "1.0.3"
    extras: dict = field(default_factory=dict)

    @property
    def content_type_header(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def mimetype(self) -> str:
        return self.content_type_header.split(";", 1)[0].strip().lower()

    def json(self) -> object:
        """The body as JSON; 400 naming the problem when it is not."""
        if not self.body:
            raise XAPIError("the request body is empty; a JSON document is required")
        return loads_json(self.body)


def xreq() -> XRequest:
    return g.xapi_request


def _single_args(source) -> dict[str, str]:
    args: dict[str, str] = {}
    for key in source:
        values = source.getlist(key) if hasattr(source, "getlist") else source[key]
        if isinstance(values, str):
            values = [values]
        if len(values) > 1:
            raise XAPIError(f"parameter {key!r} was given {len(values)} times; give it once")
        args[key] = values[0]
    return args


def _build_request() -> XRequest:
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise XAPIError(f"request body larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB", 413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    if request.method == "POST" and "method" in request.args:
        return _alternate_request(headers)
    return XRequest(method=request.method, args=_single_args(request.args), headers=headers,
                    body=request.get_data(cache=True))


def _alternate_request(headers: dict[str, str]) -> XRequest:
    """Part Three §1.3 "Alternate Request Syntax"."""
    if set(request.args) != {"method"}:
        raise XAPIError("alternate request syntax: the query string may hold only 'method'")
    if len(request.args.getlist("method")) > 1:
        raise XAPIError("alternate request syntax: give 'method' once")
    method = request.args["method"].upper()
    if method not in ("GET", "PUT", "POST", "DELETE", "HEAD"):
        raise XAPIError(f"alternate request syntax: unsupported method {method!r}", 400)
    if not headers.get("content-type", "").lower().startswith(
            "application/x-www-form-urlencoded"):
        raise XAPIError("alternate request syntax requires Content-Type "
                        "application/x-www-form-urlencoded")
    try:
        form = parse_qs(request.get_data(cache=True).decode("utf-8"), keep_blank_values=True,
                        strict_parsing=False)
    except UnicodeDecodeError:
        raise XAPIError("alternate request syntax: the form body is not UTF-8") from None
    args: dict[str, str] = {}
    new_headers = {k: v for k, v in headers.items() if k not in ("content-type",
                                                                  "content-length")}
    body = b""
    for key, values in form.items():
        if len(values) > 1:
            raise XAPIError(f"form field {key!r} was given {len(values)} times; give it once")
        lowered = key.lower()
        if lowered in _FORM_HEADERS:
            new_headers[_FORM_HEADERS[lowered]] = values[0]
        elif key == "content":
            body = values[0].encode("utf-8")
        else:
            args[key] = values[0]
    return XRequest(method=method, args=args, headers=new_headers, body=body,
                    extras={"alternate": True})


def _negotiate_version(value: str | None) -> str:
    """Part Three §3.3: every request but /about must name a version the LRS supports."""
    if value is None:
        raise XAPIError("missing X-Experience-API-Version header (use 1.0.3 or 2.0.0)")
    value = value.strip()
    if _VERSION_1.match(value):
        return "1.0.3"
    if _VERSION_2.match(value):
        return "2.0.0"
    raise XAPIError(f"unsupported X-Experience-API-Version {value!r}; this LRS speaks "
                    f"{', '.join(SUPPORTED_VERSIONS)}")


def json_response(payload: object | bytes, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    response = Response(body, status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(status: int, message: str, *, realm: str = REALM) -> Response:
    """The JSON error every Mastery Hub endpoint answers: {"error": {status, message}}."""
    response = json_response({"error": {"status": status, "message": message}}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
    return response


Handler = Callable[[XRequest], Response]


def resource(bp: Blueprint, rule: str, handlers: dict[str, Handler], *,
             public: bool = False) -> None:
    """Route every method of one resource through the same view, so the alternate syntax's
    tunnelled method reaches the right handler."""
    allowed = sorted(set(handlers) | {"HEAD"} if "GET" in handlers else set(handlers))

    def view() -> Response:
        req = xreq()
        method = "GET" if req.method == "HEAD" and "GET" in handlers else req.method
        handler = handlers.get(method)
        if handler is None:
            response = error_response(405, f"{req.method} is not allowed on {rule}; "
                                            f"use {', '.join(allowed)}")
            response.headers["Allow"] = ", ".join(allowed)
            return response
        if not public:
            req.credential = authenticate(req.headers.get("authorization"))
        response = handler(req)
        if req.method == "HEAD" and request.method != "HEAD":
            # A HEAD tunnelled through POST: werkzeug only strips bodies of real HEADs.
            length = response.calculate_content_length()
            response.set_data(b"")
            if length is not None:
                response.headers["Content-Length"] = str(length)
        return response

    endpoint = rule.strip("/").replace("/", "_") or "root"
    bp.add_url_rule(rule, endpoint=endpoint, view_func=view,
                    methods=["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"],
                    provide_automatic_options=False)


def create_blueprint() -> Blueprint:
    """The /xapi blueprint with every resource registered."""
    from lrs import about, documents, statements

    bp = Blueprint("xapi", __name__, url_prefix="/xapi")

    @bp.before_request
    def _prepare() -> Response | None:
        if request.method == "OPTIONS":  # CORS preflight: no credentials are sent with it
            return Response(status=204)
        req = _build_request()
        g.xapi_request = req
        if request.path.rstrip("/") != f"{bp.url_prefix}/about":
            req.version = _negotiate_version(req.headers.get("x-experience-api-version"))
        return None

    @bp.after_request
    def _decorate(response: Response) -> Response:
        req = g.get("xapi_request")
        response.headers["X-Experience-API-Version"] = req.version if req else "1.0.3"
        origin = request.headers.get("Origin")
        response.headers["Access-Control-Allow-Origin"] = origin or "*"
        if origin:
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers.add("Vary", "Origin")
        for key, value in _CORS_HEADERS.items():
            response.headers[key] = value
        return response

    @bp.errorhandler(XAPIError)
    def _xapi_error(exc: XAPIError) -> Response:
        return error_response(exc.status, exc.message)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @bp.errorhandler(DocumentTooLarge)
    def _too_large(exc: DocumentTooLarge) -> Response:
        return error_response(413, "document too large to store")

    @bp.errorhandler(PyMongoError)
    def _database_error(exc: PyMongoError) -> Response:
        log.exception("database error")
        return error_response(503, "the database is unavailable; retry later")

    statements.register(bp)
    documents.register(bp)
    about.register(bp)
    return bp


def init_app(app: Flask, store_factory: Callable[[], object], *, base_url: str) -> None:
    """Attach the LRS to an app. ``store_factory`` builds the statement store once;
    ``base_url`` is the public URL, the home page of the credentials' authority accounts."""
    app.extensions["lrs.store"] = store_factory()
    app.extensions["lrs.base_url"] = base_url
    app.register_blueprint(create_blueprint())

    def _xapi_routing_error(exc: HTTPException) -> Response:
        """404/405 under /xapi answer like every other xAPI error; elsewhere, unchanged."""
        if not request.path.startswith("/xapi"):
            return exc  # type: ignore[return-value]
        message = (f"{request.method} is not allowed on {request.path}" if exc.code == 405
                   else f"no xAPI resource at {request.path}")
        response = error_response(exc.code or 404, message)
        response.headers["X-Experience-API-Version"] = "1.0.3"
        return response

    app.register_error_handler(404, _xapi_routing_error)
    app.register_error_handler(405, _xapi_routing_error)


def store():
    """The statement store of the current app."""
    return current_app.extensions["lrs.store"]


def authority_of(req: XRequest) -> dict:
    """The `authority` Agent for statements written with this request's credential."""
    assert req.credential is not None
    return req.credential.authority(current_app.extensions["lrs.base_url"])
