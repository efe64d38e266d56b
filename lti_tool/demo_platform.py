"""A real LTI 1.3 platform (``lti1p3platform``) behind ``/demo``: newcomers launch the tool
as a demo learner, teacher or mentor without an LMS, and the tests drive the same platform.

lti1p3platform ships Django/FastAPI adapters only; this is the small Flask adapter, plus
what 0.1.8 leaves to the host: key ids on its keys, the AGS line-item and score endpoints,
the NRPS membership endpoint and the deep-linking return endpoint, kept in MongoDB
(collections ``demo_*``). Development only: ``create_app`` does not register it in
production.
"""

from __future__ import annotations

import secrets
import time
import typing as t
from urllib.parse import urlencode

import jwt
import orjson
from flask import Blueprint, Response, abort, current_app, jsonify, request
from jwcrypto import jwk
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.registration import Registration as PlatformRegistration
from lti1p3platform.request import Request as PlatformRequest
from markupsafe import escape
from mongoengine.connection import get_db

LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
ROLES = {
    "learner": [LIS + "Learner"],
    "teacher": [LIS + "Instructor"],
    "mentor": [LIS + "Mentor"],
    "admin": ["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator",
              LIS + "Instructor"],
}
CLIENT_ID = "masteryhub-demo"
DEPLOYMENT_ID = "demo-deployment"
CONTEXT = {"id": "algebra-1-cbe", "title": "Algebra I (competency-based)",
           "label": "ALG1-CBE"}
# The demo course's people; learners' emails match the demo statements' actors.
USERS = {
    "demo-learner-ana": {"name": "Ana Alvarez", "email": "ana@school.example.edu",
                         "role": "learner"},
    "demo-learner-ben": {"name": "Ben Brooks", "email": "ben@school.example.edu",
                         "role": "learner"},
    "demo-teacher": {"name": "Dana Teacher", "email": "dana.teacher@school.example.edu",
                     "role": "teacher"},
    "demo-mentor": {"name": "Maria Alvarez (parent)", "email": "maria@home.example.org",
                    "role": "mentor", "mentees": ["demo-learner-ana"]},
}
DEFAULT_USER = {"learner": "demo-learner-ana", "teacher": "demo-teacher",
                "mentor": "demo-mentor", "admin": "demo-teacher"}


class KeyedRegistration(PlatformRegistration):
    """lti1p3platform's registration, but its keys carry a ``kid`` (0.1.8 omits it, and
    the tool rightly rejects tokens without one)."""

    def get_kid(self) -> str | None:
        key = self.get_platform_public_key()
        return jwk.JWK.from_pem(key.encode()).thumbprint() if key else None

    def get_jwks(self) -> list[dict]:
        key = self.get_platform_public_key()
        if not key:
            return []
        return [PlatformRegistration.get_jwk(key) | {"kid": self.get_kid()}]


class _PlatformConf(LTI1P3PlatformConfAbstract):
    def init_platform_config(self, **kwargs: t.Any) -> None:
        self._registration = kwargs["registration"]

    def get_registration_by_params(self, **kwargs: t.Any) -> PlatformRegistration:
        return self._registration


class _FlaskRequest(PlatformRequest):
    def build_metadata(self, req) -> dict:
        return {"method": req.method, "form_data": req.form.to_dict(),
                "get_data": req.args.to_dict(), "headers": req.headers,
                "content_type": req.content_type, "path": req.path,
                "json": req.get_json(silent=True)}


class _Launch(LTIAdvantageMessageLaunchAbstract):
    def render_launch_form(self, launch_data: dict, **kwargs: t.Any) -> Response:
        fields = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                         for k, v in launch_data.items() if k != "launch_url")
        return Response(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Launching…</title></head><body>"
            f'<form id="launch" method="post" action="{escape(launch_data["launch_url"])}">'
            f"{fields}<noscript><button>Continue</button></noscript></form>"
            "<script>document.getElementById('launch').submit()</script></body></html>")


class DemoPlatform:
    """The platform's identity and keys, and the launches it prepares.

    ``base`` is where the platform lives (``BASE_URL/demo``); ``tool`` is the tool's base.
    """

    def __init__(self, base: str, tool: str, db=None):
        self.base = base.rstrip("/")
        self.tool = tool.rstrip("/")
        self.db = db if db is not None else get_db()
        doc = self.db["demo_platform"].find_one({"_id": "key"})
        if doc is None:
            key = jwk.JWK.generate(kty="RSA", size=2048)
            doc = {"_id": "key", "private": key.export_to_pem(True, None).decode(),
                   "public": key.export_to_pem().decode()}
            self.db["demo_platform"].update_one({"_id": "key"}, {"$setOnInsert": doc},
                                                upsert=True)
            doc = self.db["demo_platform"].find_one({"_id": "key"})
        self.private_key, self.public_key = doc["private"], doc["public"]
        self.issuer = self.base
        self.registration = (
            KeyedRegistration().set_iss(self.issuer).set_client_id(CLIENT_ID)
            .set_deployment_id(DEPLOYMENT_ID).set_oidc_login_url(self.tool + "/lti/login")
            .set_launch_url(self.tool + "/lti/launch")
            .set_deeplink_launch_url(self.tool + "/lti/launch")
            .set_tool_key_set_url(self.tool + "/lti/jwks")
            .set_platform_public_key(self.public_key)
            .set_platform_private_key(self.private_key))

    @property
    def kid(self) -> str:
        return self.registration.get_kid()

    def register_with_tool(self) -> None:
        """Register this platform with the tool (as an admin would)."""
        from lti_tool.registry import add_platform

        add_platform(name="Mastery Hub demo platform", issuer=self.issuer, client_id=CLIENT_ID,
                     auth_login_url=self.base + "/platform/auth",
                     auth_token_url=self.base + "/platform/token",
                     key_set_url=self.base + "/platform/jwks", deployments=[DEPLOYMENT_ID],
                     product="demo", identifier="demo")

    def conf(self) -> _PlatformConf:
        return _PlatformConf(registration=self.registration)

    # -- what a launch carries ---------------------------------------------------------
    def prepare(self, *, user: str | None = None, role: str = "learner",
                roles: list[str] | None = None, name: str | None = None,
                email: str | None = None, context: dict | bool | None = True,
                resource_link: str = "demo-resource-1", message_type: str =
                "LtiResourceLinkRequest", mentees: list[str] | None = None,
                custom: dict | None = None, claims: dict | None = None,
                drop: tuple[str, ...] = (), storage_target: str | None = None) -> str:
        """Store a launch and return the tool's login URL that starts it (what an LMS puts
        behind a link). ``claims`` override or add claims; ``drop`` removes them."""
        user = user or DEFAULT_USER.get(role, "demo-learner-ana")
        person = USERS.get(user, {})
        spec = {
            "user": user, "roles": roles if roles is not None else ROLES[role],
            "name": name if name is not None else person.get("name"),
            "email": email if email is not None else person.get("email"),
            "context": (CONTEXT if context is True else context or None),
            "resource_link": resource_link, "message_type": message_type,
            "mentees": mentees if mentees is not None else person.get("mentees", []),
            "custom": custom or {}, "claims": orjson.dumps(claims or {}).decode(),
            "drop": list(drop), "created": time.time()}
        hint = secrets.token_urlsafe(12)
        self.db["demo_launches"].insert_one({"_id": hint, **spec})
        params = {"iss": self.issuer, "login_hint": user, "lti_message_hint": hint,
                  "target_link_uri": self.tool + "/lti/launch", "client_id": CLIENT_ID,
                  "lti_deployment_id": DEPLOYMENT_ID}
        if storage_target:
            params["lti_storage_target"] = storage_target
        return self.tool + "/lti/login?" + urlencode(params)

    def launch_message(self, spec: dict, nonce: str) -> dict:
        """The id_token body for a stored launch (used by the auth endpoint and by tests
        that need to tamper with a token)."""
        claim = "https://purl.imsglobal.org/spec/lti/claim/"
        body: dict[str, t.Any] = {
            "iss": self.issuer, "aud": CLIENT_ID, "azp": CLIENT_ID, "sub": spec["user"],
            "nonce": nonce, claim + "message_type": spec["message_type"],
            claim + "version": "1.3.0", claim + "deployment_id": DEPLOYMENT_ID,
            claim + "target_link_uri": self.tool + "/lti/launch",
            claim + "roles": spec["roles"],
            claim + "resource_link": {"id": spec["resource_link"], "title": "Mastery Hub"},
            claim + "launch_presentation": {"document_target": "iframe",
                                            "return_url": self.base + "/"},
            claim + "tool_platform": {"guid": "masteryhub-demo", "name": "Demo platform",
                                      "product_family_code": "demo"},
        }
        if spec.get("name"):
            body["name"] = spec["name"]
        if spec.get("email"):
            body["email"] = spec["email"]
        if spec.get("context"):
            ctx = spec["context"]
            body[claim + "context"] = dict(ctx) | {
                "type": ["http://purl.imsglobal.org/vocab/lis/v2/course#CourseOffering"]}
            course = ctx["id"]
            body["https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"] = {
                "scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
                          "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
                          "https://purl.imsglobal.org/spec/lti-ags/scope/score"],
                "lineitems": f"{self.base}/platform/courses/{course}/lineitems"}
            body["https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"] = {
                "context_memberships_url": f"{self.base}/platform/courses/{course}/memberships",
                "service_versions": ["2.0"]}
        if spec.get("mentees"):
            body[claim + "role_scope_mentor"] = list(spec["mentees"])
        if spec.get("custom"):
            body[claim + "custom"] = dict(spec["custom"])
        if spec["message_type"] == "LtiDeepLinkingRequest":
            body.pop(claim + "resource_link", None)
            body["https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"] = {
                "deep_link_return_url": self.base + "/platform/deep_link_return",
                "accept_types": ["ltiResourceLink"], "accept_presentation_document_targets":
                ["iframe", "window"], "accept_multiple": True, "auto_create": True,
                "data": spec.get("dl_data") or "demo-dl"}
        body.update(orjson.loads(spec.get("claims") or "{}"))
        for name in spec.get("drop") or ():
            body.pop(name, None)
        return body

    def sign(self, body: dict, *, expires_in: int = 300, headers: dict | None = None,
             key: str | None = None, iat: int | None = None) -> str:
        now = int(time.time())
        payload = {"iat": now if iat is None else iat, "exp": now + expires_in} | body
        header = {"kid": self.kid} if headers is None else headers
        return jwt.encode(payload, key or self.private_key, algorithm="RS256", headers=header)


def _demo() -> DemoPlatform:
    platform = current_app.extensions.get("demo_platform")
    if platform is None:
        base = current_app.extensions["masteryhub.settings"].base_url
        platform = DemoPlatform(base + "/demo", base)
        platform.register_with_tool()
        current_app.extensions["demo_platform"] = platform
    return platform


bp = Blueprint("demo", __name__, url_prefix="/demo")


LAUNCHES = (
    ("learner", "Ana Alvarez, learner", "Launch as Ana (learner)",
     "Ana sees her own progress: each competency's level, the evidence behind it, and how "
     "close she is to the course credit. She is near credit; two of her pieces of evidence "
     "wait for the teacher's review."),
    ("teacher", "Dana Teacher, instructor", "Launch as Dana (teacher)",
     "Dana sees the whole class, reviews the evidence that needs a teacher's approval, and "
     "sets which frameworks, competencies and credits the course uses."),
    ("mentor", "Maria Alvarez, mentor (Ana's parent)", "Launch as Maria (mentor)",
     "Maria follows Ana only (the platform names her in role_scope_mentor) and can look "
     "but not change anything."),
)


@bp.get("/")
def index():
    """The newcomer's page: one button per demo role, each a fresh real launch."""
    from flask import render_template

    demo = _demo()
    launches = [{"role": role, "heading": heading, "button": button, "explain": explain,
                 "url": demo.prepare(role=role)}
                for role, heading, button, explain in LAUNCHES]
    deep = demo.prepare(role="teacher", message_type="LtiDeepLinkingRequest")
    response = Response(render_template("lti/demo.html", launches=launches, deep_link=deep,
                                        course=CONTEXT))
    response.headers["Cache-Control"] = "no-store"  # each view prepares fresh launches
    return response


@bp.route("/platform/auth", methods=["GET", "POST"])
def auth():
    """The platform's OIDC authorization endpoint: answers the tool's login redirect with
    a signed id_token posted back to the tool."""
    demo = _demo()
    params = request.values
    spec = demo.db["demo_launches"].find_one({"_id": params.get("lti_message_hint")})
    if spec is None or params.get("login_hint") != spec["user"]:
        abort(400, "unknown launch (lti_message_hint) or user (login_hint)")
    if params.get("redirect_uri") != demo.tool + "/lti/launch":
        abort(400, "redirect_uri is not the tool's registered launch URL")
    launch = _Launch(_FlaskRequest(request), demo.conf())
    launch.set_user_data(spec["user"], spec["roles"], spec.get("name"), spec.get("email"))
    launch.set_extra_claims({k: v for k, v in demo.launch_message(
        spec, params.get("nonce", "")).items() if k not in ("nonce",)})
    return launch.lti_launch()


@bp.get("/platform/jwks")
def platform_jwks():
    return jsonify({"keys": _demo().registration.get_jwks()})


@bp.post("/platform/token")
def token():
    """OAuth2 client-credentials grant with a JWT client assertion (Security Framework)."""
    demo = _demo()
    conf = demo.conf()
    try:
        answer = conf.get_access_token(request.form.to_dict())
    except Exception as exc:  # lti1p3platform raises assorted errors for bad requests
        return jsonify({"error": "invalid_request", "error_description": str(exc)}), 400
    return jsonify(answer)


def _bearer_ok(scope: str) -> bool:
    demo = _demo()
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    try:
        return demo.conf().validate_token(header[7:], allowed_scopes=[scope])
    except Exception:
        return False


SCOPE_LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
SCOPE_SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
SCOPE_RESULT = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly"
SCOPE_NRPS = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"


@bp.route("/platform/courses/<course>/lineitems", methods=["GET", "POST"])
def lineitems(course: str):
    if not _bearer_ok(SCOPE_LINEITEM):
        return jsonify({"error": "unauthorized"}), 401
    demo = _demo()
    col = demo.db["demo_lineitems"]
    if request.method == "POST":
        item = request.get_json(silent=True) or {}
        if not item.get("label") or not item.get("scoreMaximum"):
            return jsonify({"error": "label and scoreMaximum are required"}), 400
        item_id = secrets.token_hex(6)
        url = f"{demo.base}/platform/courses/{course}/lineitems/{item_id}"
        doc = {k: v for k, v in item.items() if k != "id"} | {"id": url}
        col.insert_one({"_id": url, "course": course, **doc})
        return jsonify(doc), 201
    items = [{k: v for k, v in d.items() if k not in ("_id", "course")}
             for d in col.find({"course": course})]
    if request.args.get("resource_id"):
        items = [i for i in items if i.get("resourceId") == request.args["resource_id"]]
    return Response(orjson.dumps(items), content_type=
                    "application/vnd.ims.lis.v2.lineitemcontainer+json")


@bp.route("/platform/courses/<course>/lineitems/<item>", methods=["GET", "PUT"])
def lineitem(course: str, item: str):
    if not _bearer_ok(SCOPE_LINEITEM):
        return jsonify({"error": "unauthorized"}), 401
    demo = _demo()
    url = f"{demo.base}/platform/courses/{course}/lineitems/{item}"
    col = demo.db["demo_lineitems"]
    if request.method == "PUT":
        changes = {k: v for k, v in (request.get_json(silent=True) or {}).items()
                   if k != "id"}
        col.update_one({"_id": url}, {"$set": changes})
    doc = col.find_one({"_id": url})
    if doc is None:
        return jsonify({"error": "no such line item"}), 404
    return jsonify({k: v for k, v in doc.items() if k not in ("_id", "course")})


@bp.post("/platform/courses/<course>/lineitems/<item>/scores")
def scores(course: str, item: str):
    if not _bearer_ok(SCOPE_SCORE):
        return jsonify({"error": "unauthorized"}), 401
    demo = _demo()
    url = f"{demo.base}/platform/courses/{course}/lineitems/{item}"
    if demo.db["demo_lineitems"].find_one({"_id": url}) is None:
        return jsonify({"error": "no such line item"}), 404
    score = request.get_json(silent=True) or {}
    for field in ("userId", "activityProgress", "gradingProgress", "timestamp"):
        if not score.get(field):
            return jsonify({"error": f"{field} is required"}), 400
    demo.db["demo_scores"].update_one(
        {"_id": f"{url}|{score['userId']}"},
        {"$set": {"lineitem": url, "course": course, **score}}, upsert=True)
    return Response(status=204)


@bp.get("/platform/courses/<course>/memberships")
def memberships(course: str):
    if not _bearer_ok(SCOPE_NRPS):
        return jsonify({"error": "unauthorized"}), 401
    demo = _demo()
    extra = list(demo.db["demo_members"].find({"course": course}, {"_id": 0, "course": 0}))
    members = [{"user_id": uid, "name": p["name"], "email": p["email"], "status": "Active",
                "roles": ROLES[p["role"]]} for uid, p in USERS.items()] + extra
    return Response(orjson.dumps({
        "id": request.url, "context": {"id": course, **({k: v for k, v in CONTEXT.items()
                                                          if k != "id"})},
        "members": members}),
        content_type="application/vnd.ims.lti-nrps.v2.membershipcontainer+json")


@bp.post("/platform/deep_link_return")
def deep_link_return():
    """Validates the tool's LtiDeepLinkingResponse and keeps the placed items."""
    demo = _demo()
    try:
        items = demo.conf().validate_deeplinking_resp(request.form.to_dict())
    except Exception as exc:
        return Response(f"Deep linking response rejected: {escape(exc)}", status=400)
    demo.db["demo_placements"].insert_many([{"item": i, "at": time.time()} for i in items]
                                           or [{"item": None, "at": time.time()}])
    titles = "".join(f"<li>{escape(i.get('title') or i.get('url'))}</li>" for i in items)
    return Response(f'<!doctype html><html lang="en"><body><main><h1>Placed in the course'
                    f"</h1><ul>{titles}</ul><p><a href=\"{demo.base}/\">Back to the demo"
                    "</a></p></main></body></html>")


@bp.get("/frame")
def frame():
    """The tool inside an iframe, as an LMS shows it, with the platform's side of LTI
    Platform Storage (Client Side postMessages): the tool keeps its login state in this
    frame when its own cookies are blocked (https://www.imsglobal.org/spec/lti-cs-pm/v0p1)."""
    demo = _demo()
    role = request.args.get("role", "learner")
    if role not in ROLES:
        abort(400, "role must be one of " + ", ".join(ROLES))
    login = demo.prepare(role=role, storage_target="_parent")
    return Response(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Demo course — Mastery Hub in a frame</title></head><body><main>"
        f"<h1>{escape(CONTEXT['title'])}</h1>"
        f'<iframe name="tool" title="Mastery Hub" src="{escape(login)}" '
        'style="width:100%;height:80vh;border:1px solid #ccc"></iframe></main><script>'
        "var store = {};"
        "window.addEventListener('message', function (e) {"
        "  var d = e.data || {}, key = e.origin + '|' + d.key;"
        "  if (d.subject === 'lti.put_data') { store[key] = d.value;"
        "    e.source.postMessage({subject: 'lti.put_data.response', message_id: d.message_id,"
        "      key: d.key, value: d.value}, e.origin); }"
        "  else if (d.subject === 'lti.get_data') {"
        "    e.source.postMessage({subject: 'lti.get_data.response', message_id: d.message_id,"
        "      key: d.key, value: store[key]}, e.origin); }"
        "});</script></body></html>")


def init_app(app) -> None:
    """Register /demo (development only)."""
    app.register_blueprint(bp)
    app.extensions["demo_platform_enabled"] = True
