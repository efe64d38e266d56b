"""LTI 1.3 login and launch, free of Flask (the web module is a thin adapter).

pylti1p3 validates the id_token (format, registration, signature, deployment, message
claims). Around it we close the gaps DESIGN.md lists:

- login initiation accepts GET and POST parameters alike (Moodle POSTs);
- state and nonce are stored server-side as one pair and *consumed* by the launch, so a
  replayed id_token is rejected (pylti1p3 alone accepts it);
- ``aud``/``azp``, ``exp`` and ``iat`` are checked explicitly, with a small clock leeway;
- a deployment id first seen in a validly signed launch is recorded (Canvas creates one
  each time the tool is installed), unless the registration lists them explicitly;
- a launch becomes a server-side session found by an unguessable token, so the pages in
  the LMS iframe need no third-party cookie.

Spec: https://www.imsglobal.org/spec/lti/v1p3/ and the Security Framework
https://www.imsglobal.org/spec/security/v1p0/#authentication-response-validation
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import jwt
import orjson
from pylti1p3.exception import LtiException, LtiKeyException
from pylti1p3.message_launch import MessageLaunch
from pylti1p3.request import Request

from lti_tool import courses, identity, platform_keys, roles, roster
from lti_tool.models import Course, LaunchSession, LoginState, Membership, Platform
from lti_tool.registry import MongoToolConf, add_deployment, find_platform
from mappings.models import utcnow

# The login parameters worth keeping to restart a login in a top-level window.
RESTART_PARAMS = ("iss", "login_hint", "lti_message_hint", "client_id", "target_link_uri",
                  "lti_deployment_id")
LOGIN_TTL = dt.timedelta(minutes=10)
SESSION_TTL = dt.timedelta(hours=8)
CLOCK_LEEWAY = 60  # seconds: platform and tool clocks differ a little

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"


class LaunchError(Exception):
    """A login or launch we refuse; ``message`` is shown to the user on a clear page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class CookiesBlocked(LaunchError):
    """The browser dropped the state cookie and there is no platform storage: the page
    offers to start the login again in a new window, where cookies are first-party."""

    def __init__(self, login: LoginState):
        super().__init__("Your browser did not keep this tool's login cookie (third-party "
                         "cookies are probably blocked in the course frame). Open the tool "
                         "in a new window to continue.", status=401)
        self.restart = dict(login.login_params or {})


class ParamsRequest(Request):
    """pylti1p3's request interface over plain parameters (query and form merged)."""

    def __init__(self, params: Mapping[str, str], secure: bool):
        self._params = dict(params)
        self._secure = secure

    @property
    def session(self):  # pragma: no cover - we never use pylti1p3's session storage
        raise NotImplementedError

    def is_secure(self) -> bool:
        return self._secure

    def get_param(self, key: str) -> str:
        return self._params.get(key)  # type: ignore[return-value]


# -- login initiation ----------------------------------------------------------------
@dataclass
class LoginRedirect:
    url: str  # the platform's auth endpoint with the OIDC parameters
    state: str
    nonce: str
    storage_target: str | None  # platform storage (postMessage) frame, when offered
    platform_origin: str


def begin_login(params: Mapping[str, str], *, launch_url: str) -> LoginRedirect:
    """Third-party initiated login (OIDC): validate the platform's request, remember a
    fresh state and nonce, and send the browser to the platform's auth endpoint."""
    iss = (params.get("iss") or "").strip()
    login_hint = params.get("login_hint")
    if not iss:
        raise LaunchError("The login request has no issuer (iss).")
    if not login_hint:
        raise LaunchError("The login request has no login_hint.")
    client_id = params.get("client_id") or None
    platform = find_platform(iss, client_id)
    if platform is None:
        who = f"issuer {iss!r}" + (f" and client id {client_id!r}" if client_id else "")
        raise LaunchError(f"This tool has no active registration for {who}. An administrator "
                          "can register the platform (see /lti/register or "
                          "`masteryhub platforms add`).", status=401)
    target = params.get("target_link_uri") or launch_url
    if not _same_origin(target, launch_url):
        raise LaunchError("target_link_uri points to another site; refusing to launch there.")
    if secrets.randbelow(20) == 0:
        purge_expired()
    state = secrets.token_urlsafe(24)
    nonce = secrets.token_urlsafe(24)
    storage_target = params.get("lti_storage_target") or None
    now = utcnow()
    LoginState(state=state, nonce=nonce, platform=platform.identifier,
               target_link_uri=target, storage_target=storage_target, created_at=now,
               login_params={k: params[k] for k in RESTART_PARAMS if params.get(k)},
               expires_at=now + LOGIN_TTL).save(force_insert=True)
    auth = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
            "prompt": "none", "client_id": platform.client_id, "redirect_uri": launch_url,
            "state": state, "nonce": nonce, "login_hint": login_hint}
    if params.get("lti_message_hint"):
        auth["lti_message_hint"] = params["lti_message_hint"]
    sep = "&" if "?" in platform.auth_login_url else "?"
    parts = urlsplit(platform.auth_login_url)
    return LoginRedirect(url=platform.auth_login_url + sep + urlencode(auth), state=state,
                         nonce=nonce, storage_target=storage_target,
                         platform_origin=f"{parts.scheme}://{parts.netloc}")


def purge_expired() -> int:
    """Drop login states and launch sessions past their expiry (one indexed delete each);
    run now and then from logins, so neither collection grows without bound."""
    now = utcnow()
    return (LoginState.objects(expires_at__lt=now).delete() +
            LaunchSession.objects(expires_at__lt=now).delete())


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)


# -- launch -----------------------------------------------------------------------------
class _Launch(MessageLaunch):
    """pylti1p3's validation chain minus its session-based state and nonce handling (we
    consume both server-side afterwards) and with strict aud/exp/iat checks."""

    def __init__(self, params: Mapping[str, str], secure: bool):
        request = ParamsRequest(params, secure)
        super().__init__(request, MongoToolConf(), session_service=_NoSession(),
                         cookie_service=_NoCookies())

    def _get_request_param(self, key: str) -> str:
        return self._request.get_param(key)

    def fetch_public_key(self, key_set_url: str):
        # Cached in MongoDB (lti_tool.platform_keys), not fetched on every launch.
        return platform_keys.key_set(key_set_url, self._requests_session)

    def get_public_key(self) -> tuple[str, str]:
        try:
            return super().get_public_key()
        except LtiKeyException as exc:
            if str(exc) != "Unable to find public key":
                raise
            # An unknown kid: the platform may have rotated its key since we cached it.
            url = self._registration.get_key_set_url()  # type: ignore[union-attr]
            fresh = platform_keys.refetch(url, self._requests_session)
            if fresh is None:
                raise
            self._registration.set_key_set(fresh)  # type: ignore[union-attr]
            return super().get_public_key()

    def validate_jwt_signature(self) -> MessageLaunch:
        public_key, alg = self.get_public_key()
        try:
            jwt.decode(self._get_id_token(), public_key, algorithms=[alg],
                       audience=self.get_client_id(), leeway=CLOCK_LEEWAY,
                       options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.ExpiredSignatureError as exc:
            raise LaunchError("The launch token has expired; launch again from the "
                              "course.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise LaunchError("The launch token is dated in the future (iat); check the "
                              "platform's clock.") from exc
        except jwt.InvalidAudienceError as exc:
            raise LaunchError("The launch token is not addressed to this tool (aud).") \
                from exc
        except jwt.MissingRequiredClaimError as exc:
            raise LaunchError(f"The launch token lacks the {exc.claim!r} claim.") from exc
        except jwt.InvalidTokenError as exc:
            raise LaunchError(f"The launch token's signature is not valid: {exc}") from exc
        body = self._get_jwt_body()
        aud = body.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and body.get("azp") != self.get_client_id():
            raise LaunchError("The launch token has several audiences and its azp is not "
                              "this tool.")
        return self

    def validate_deployment(self) -> MessageLaunch:
        deployment_id = self._get_jwt_body().get(CLAIM + "deployment_id")
        if not deployment_id:
            raise LaunchError("The launch token has no deployment_id.")
        platform = self._registration.platform  # type: ignore[union-attr]
        if deployment_id not in platform.deployments:
            if not platform.auto_deployments:
                raise LaunchError(f"The deployment {deployment_id!r} is not registered for "
                                  f"{platform.name}.", status=401)
            add_deployment(platform, deployment_id)
        return self

    def run(self) -> MessageLaunch:
        """Validate everything except state/nonce, which the caller consumes."""
        self._validated = True
        self.validate_jwt_format()
        if not isinstance(self._jwt.get("body"), dict) or \
                not isinstance(self._jwt.get("header"), dict):
            raise LaunchError("The launch token's header and body must be JSON objects.")
        self.validate_registration().validate_jwt_signature()
        _check_claim_types(self._jwt["body"])
        return self.validate_deployment().validate_message()


class _NoSession:
    """pylti1p3 requires a session service; the parts that would use it are replaced."""

    def get_launch_data(self, key):  # pragma: no cover
        return None


class _NoCookies:
    def get_cookie(self, name):  # pragma: no cover
        return None


_MESSAGES = {
    "Missing Resource Link Id": "The launch lacks the resource link id "
                                "(https://purl.imsglobal.org/spec/lti/claim/resource_link).",
    "Must have a user (sub)": "The launch token has no user (sub).",
    "Incorrect version, expected 1.3.0": "The launch token's LTI version is missing or is "
                                         "not 1.3.0.",
    "Missing Roles Claim": "The launch token has no roles claim.",
    "Invalid message type": "The launch token has no message_type.",
    "Unrecognized message type": "This tool does not handle that message_type.",
    "JWT KID not found": "The launch token's header has no key id (kid).",
    "Unable to find public key": "The platform's key set has no key with the launch "
                                 "token's key id (kid).",
    "Registration not found.": "This tool has no registration for the token's issuer and "
                               "audience.",
}


_CLAIM_TYPES = {CLAIM + "context": dict, CLAIM + "custom": dict, CLAIM + "roles": list,
                CLAIM + "role_scope_mentor": list, CLAIM + "resource_link": dict,
                AGS_CLAIM: dict, NRPS_CLAIM: dict, DL_CLAIM: dict}


def _check_claim_types(body: Mapping) -> None:
    """A signed token can still carry a claim of the wrong JSON type; refuse it by name."""
    for claim, kind in _CLAIM_TYPES.items():
        if claim in body and body[claim] is not None and not isinstance(body[claim], kind):
            what = "an object" if kind is dict else "an array"
            raise LaunchError(f"The launch token's {claim.rsplit('/', 1)[-1]} claim must be "
                              f"{what}.")
    for name in ("sub", "email", "name"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise LaunchError(f"The launch token's {name} claim must be a string.")


@dataclass
class Launch:
    session: LaunchSession
    needs_storage_check: bool  # bind to the browser through platform storage first
    login: LoginState


def complete_launch(params: Mapping[str, str], *, secure: bool,
                    cookie_state: str | None) -> Launch:
    """Validate an id_token POSTed by the platform and turn it into a launch session.

    The state must match the one this browser was given at login (cookie), or, when the
    platform offered platform storage, the page will check it there before the session is
    usable. Either way the state+nonce pair is consumed here: a token works once.
    """
    id_token, state = params.get("id_token"), params.get("state")
    if not id_token:
        raise LaunchError("The launch has no id_token.")
    if not state:
        raise LaunchError("The launch has no state.")
    launch = _Launch(params, secure)
    try:
        launch.run()
    except LaunchError:
        raise
    except LtiException as exc:
        text = str(exc)
        raise LaunchError(_MESSAGES.get(text, f"The launch is not valid: {text}")) from exc
    body = launch.get_launch_data()
    nonce = body.get("nonce")
    if not nonce:
        raise LaunchError("The launch token has no nonce.")
    login = LoginState.objects(state=state, nonce=nonce,
                               expires_at__gt=utcnow()).modify(remove=True)
    if login is None:
        raise LaunchError("This launch was already used or has expired. Launch the tool again "
                          "from your course.", status=401)
    if cookie_state is not None and cookie_state != state:
        raise LaunchError("The launch does not belong to this browser session (state).",
                          status=401)
    platform = Platform.objects(identifier=login.platform).first()
    if platform is None or platform.issuer != body.get("iss") or \
            launch._registration.platform.identifier != platform.identifier:
        raise LaunchError("The launch token was issued by another platform than the login.",
                          status=401)
    needs_storage_check = cookie_state is None
    if needs_storage_check and not login.storage_target:
        raise CookiesBlocked(login)
    session = start_session(platform, body, verified=not needs_storage_check)
    return Launch(session=session, needs_storage_check=needs_storage_check, login=login)


def start_session(platform: Platform, body: Mapping, *, verified: bool) -> LaunchSession:
    """Record who launched, in which course, with which roles; link the LTI user to their
    learner record; remember the course's service endpoints."""
    sub = body.get("sub")
    iss = body["iss"]
    raw_roles = list(body.get(CLAIM + "roles") or [])
    normalised = roles.normalise(raw_roles)
    email = body.get("email") or None
    name = body.get("name") or " ".join(
        p for p in (body.get("given_name"), body.get("family_name")) if p) or None
    # Only a learner's email joins their record (a parent's or teacher's must not).
    learner = identity.learner_for_lti_user(
        iss, sub, email=email if "learner" in normalised and not {
            "mentor", "instructor", "administrator"} & set(normalised) else None,
        name=name) if sub else None
    mentees = []
    if "mentor" in normalised:
        mentees = [identity.learner_for_lti_user(iss, m)
                   for m in body.get(CLAIM + "role_scope_mentor") or () if m]
    context = body.get(CLAIM + "context") or {}
    course_id = None
    if context.get("id"):
        course_id = upsert_course(platform, context, body, raw_roles)
        if sub:
            upsert_membership(course_id, f"{iss}|{sub}", learner, name, email, raw_roles,
                              source="launch")
        if {"instructor", "administrator"} & set(normalised):
            roster.queue_import(course_id)  # NRPS import, run by the sync loop
    now = utcnow()
    session = LaunchSession(
        token=secrets.token_urlsafe(32), platform=platform.identifier,
        deployment=body.get(CLAIM + "deployment_id"), user=f"{iss}|{sub}" if sub else
        f"{iss}|anonymous-{secrets.token_hex(8)}", learner=learner, name=name, email=email,
        roles=normalised, raw_roles=raw_roles, mentees=mentees, context=course_id,
        message_type=body.get(CLAIM + "message_type"),
        claims_json=orjson.dumps(dict(body)).decode(), pending=not verified,
        created_at=now, expires_at=now + (SESSION_TTL if verified else LOGIN_TTL))
    session.save(force_insert=True)
    return session


def upsert_course(platform: Platform, context: Mapping, body: Mapping,
                  raw_roles: list[str]) -> str:
    course_id = f"{platform.identifier}|{context['id']}"
    update: dict = {"platform": platform.identifier, "context_id": str(context["id"]),
                    "title": context.get("title"), "label": context.get("label"),
                    "updated_at": utcnow()}
    if body.get(AGS_CLAIM):
        update["ags"] = dict(body[AGS_CLAIM])
    nrps = (body.get(NRPS_CLAIM) or {}).get("context_memberships_url")
    if nrps:
        update["nrps_url"] = nrps
    Course._get_collection().update_one({"_id": course_id}, {"$set": update}, upsert=True)
    courses.apply_custom_parameters(course_id, body.get(CLAIM + "custom"))
    return course_id


def upsert_membership(course_id: str, user: str, learner: str | None, name: str | None,
                      email: str | None, raw_roles: list[str], *, source: str) -> None:
    Membership._get_collection().update_one(
        {"_id": f"{course_id}|{user}"},
        {"$set": {"course": course_id, "user": user, "learner": learner, "name": name,
                  "email": email, "roles": roles.normalise(raw_roles), "source": source,
                  "status": "Active", "updated_at": utcnow()}}, upsert=True)


def claims_of(session: LaunchSession) -> dict:
    """The id_token body as the platform sent it."""
    return orjson.loads(session.claims_json or "{}")


def find_session(token: str | None) -> LaunchSession | None:
    """A live, browser-verified launch session, or None."""
    if not token or len(token) > 100:
        return None
    session = LaunchSession.objects(token=token).first()
    if session is None or session.pending or session.expired():
        return None
    if Platform.objects(identifier=session.platform, status="active").first() is None:
        return None  # an administrator disabled the platform: its sessions end with it
    return session


def confirm_storage_check(token: str) -> LaunchSession | None:
    """The launch page found the state in platform storage: the session becomes usable."""
    result = LaunchSession._get_collection().find_one_and_update(
        {"_id": token, "pending": True, "expires_at": {"$gt": utcnow()}},
        {"$set": {"pending": False, "expires_at": utcnow() + SESSION_TTL}})
    return LaunchSession.objects(token=token).first() if result else None
