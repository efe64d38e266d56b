"""Registering the tool with a platform: LTI Dynamic Registration 1.0, and the Canvas
developer-key JSON for the manual path.

Framework-free (the Flask page is ``lti_tool.registration_web``). pylti1p3's
``DynamicRegistration`` builds the client registration request; its ``register`` flow is not
used because it leaves gaps we close here:

- the OpenID configuration is fetched with the registration token as Bearer (Canvas
  refuses the request without it; Moodle accepts it);
- the configuration's ``issuer`` must have the origin of the configuration URL (spec §3.5.1:
  otherwise any site could claim to be another platform's issuer);
- every network or protocol failure becomes a :class:`RegistrationFailed` with a message an
  LMS admin can act on and an HTTP status, instead of an ``AssertionError`` or a hang
  (timeouts, size limits, no redirects for the POST).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from mongoengine import NotUniqueError
from pylti1p3.dynamic_registration import DynamicRegistration

from lti_tool.models import Platform
from lti_tool.registry import RegistrationError, add_platform

TOOL_NAME = "Mastery Hub"
TOOL_DESCRIPTION = ("Competency-based mastery and credit from xAPI evidence: learners see "
                    "their level on each competency, teachers the class, mentors their learner.")
TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"
CANVAS_PRIVACY_LEVEL = "https://canvas.instructure.com/lti/privacy_level"

SCOPES = (
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
)
CLAIMS = ("iss", "sub", "name", "given_name", "family_name", "email")
# Custom parameters every launch carries (none needed yet; the claims above are enough).
CUSTOM_PARAMETERS: dict[str, str] = {}

PRODUCT_NAMES = {"moodle": "Moodle", "canvas": "Canvas", "sakai": "Sakai",
                 "blackboard": "Blackboard", "d2l": "Brightspace", "brightspace": "Brightspace",
                 "schoology": "Schoology"}

TIMEOUT = 15  # seconds, per request to the platform
MAX_BODY = 1 << 20  # a platform's JSON answer is a few kB; refuse anything above 1 MB


@dataclass(frozen=True)
class ToolUrls:
    """The tool's URLs an LMS needs, all derived from BASE_URL."""

    base: str

    @property
    def login(self) -> str:
        return self.base + "/lti/login"

    @property
    def launch(self) -> str:
        return self.base + "/lti/launch"

    @property
    def jwks(self) -> str:
        return self.base + "/lti/jwks"

    @property
    def canvas_json(self) -> str:
        return self.base + "/lti/canvas.json"

    @property
    def register(self) -> str:
        return self.base + "/lti/register"

    @property
    def logo(self) -> str:
        return self.base + "/lti/logo.svg"

    @property
    def domain(self) -> str:
        return urlsplit(self.base).netloc

    def as_dict(self) -> dict[str, str]:
        return {"login": self.login, "launch": self.launch, "redirect": self.launch,
                "target_link_uri": self.launch, "jwks": self.jwks,
                "canvas_json": self.canvas_json, "register": self.register}


class ToolDynamicRegistration(DynamicRegistration):
    """pylti1p3's registration request, filled in from our URLs; placements follow the
    platform's product (Canvas names its placements, others take the spec's)."""

    client_name = TOOL_NAME
    description = TOOL_DESCRIPTION

    def __init__(self, urls: ToolUrls, product: str | None = None):
        self.urls = urls
        self.product = (product or "").lower()

    def get_initiate_login_uri(self) -> str:
        return self.urls.login

    def get_jwks_uri(self) -> str:
        return self.urls.jwks

    def get_redirect_uris(self) -> list[str]:
        return [self.urls.launch]

    def get_scopes(self) -> list[str]:
        return list(SCOPES)

    def get_domain(self) -> str:
        return self.urls.domain

    def get_target_link_uri(self) -> str:
        return self.urls.launch

    def get_claims(self) -> list[str]:
        return list(CLAIMS)

    def get_logo_uri(self) -> str:
        return self.urls.logo

    def get_messages(self) -> list[dict[str, Any]]:
        canvas = self.product == "canvas"
        return [
            {"type": "LtiResourceLinkRequest", "target_link_uri": self.urls.launch,
             "label": TOOL_NAME, **({"placements": ["course_navigation"]} if canvas else {})},
            {"type": "LtiDeepLinkingRequest", "target_link_uri": self.urls.launch,
             "label": f"{TOOL_NAME} activity",
             "placements": ["link_selection", "assignment_selection"] if canvas
             else ["ContentArea"]},
        ]

    def lti_registration_data(self) -> dict[str, Any]:
        data = super().lti_registration_data()
        tool = data[TOOL_CONFIGURATION]
        if CUSTOM_PARAMETERS:
            tool["custom_parameters"] = dict(CUSTOM_PARAMETERS)
        tool[CANVAS_PRIVACY_LEVEL] = "public"  # Canvas: send name and email
        return data


def registration_request(urls: ToolUrls, product: str | None = None) -> dict[str, Any]:
    """The client registration we POST to a platform's registration endpoint."""
    return ToolDynamicRegistration(urls, product).lti_registration_data()


def canvas_developer_key(urls: ToolUrls) -> dict[str, Any]:
    """The JSON for Canvas > Developer Keys > + LTI Key > Paste JSON (or Enter URL)."""
    deep_linking = {"message_type": "LtiDeepLinkingRequest", "target_link_uri": urls.launch}
    return {
        "title": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "oidc_initiation_url": urls.login,
        "target_link_uri": urls.launch,
        "public_jwk_url": urls.jwks,
        "scopes": list(SCOPES),
        "extensions": [{
            "platform": "canvas.instructure.com",
            "domain": urls.domain,
            "tool_id": "mastery-hub",
            "privacy_level": "public",
            "settings": {
                "text": TOOL_NAME,
                "icon_url": urls.logo,
                "placements": [
                    {"placement": "course_navigation", "message_type": "LtiResourceLinkRequest",
                     "target_link_uri": urls.launch, "text": TOOL_NAME,
                     "default": "enabled", "visibility": "public"},
                    {"placement": "link_selection", "text": f"{TOOL_NAME} activity",
                     **deep_linking},
                    {"placement": "assignment_selection", "text": f"{TOOL_NAME} activity",
                     **deep_linking},
                ],
            },
        }],
        "custom_fields": dict(CUSTOM_PARAMETERS),
    }


class RegistrationFailed(Exception):
    """Dynamic registration cannot go on; ``message`` says why, for the LMS admin."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Registered:
    platform: Platform
    product: str | None
    deployment_id: str | None

    @property
    def product_name(self) -> str:
        return PRODUCT_NAMES.get(self.product or "", self.product or "your LMS")


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


def is_http_url(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def register(openid_configuration_url: str, registration_token: str | None, urls: ToolUrls,
             *, name: str | None = None, allow_private: bool = False) -> Registered:
    """Run dynamic registration against a platform and store the platform on success.

    Raises :class:`RegistrationFailed` (nothing stored) on any problem. Unless
    ``allow_private`` (development), the platform's addresses must be public ones and no
    redirect is followed: the URLs come from whoever opens the registration page, and the
    server must not be made to reach into its own network.
    """
    guard = (lambda url: None) if allow_private else _refuse_private
    if not is_http_url(openid_configuration_url):
        raise RegistrationFailed(
            "The openid_configuration parameter is missing or is not an http(s) URL. Start "
            "the registration from your LMS, which adds it to the registration URL.", 400)
    auth = {"Authorization": f"Bearer {registration_token}"} if registration_token else {}
    guard(openid_configuration_url)
    config = _request_json("GET", openid_configuration_url, headers=auth,
                           what="the platform's OpenID configuration",
                           redirects=allow_private)
    _check_configuration(config, openid_configuration_url)
    platform_conf = config[PLATFORM_CONFIGURATION]
    product = str(platform_conf.get("product_family_code") or "").strip().lower() or None

    for key in ("registration_endpoint", "authorization_endpoint", "token_endpoint",
                "jwks_uri"):
        guard(config[key])
    answer = _request_json("POST", config["registration_endpoint"], headers=auth,
                           body=registration_request(urls, product),
                           what="the platform's registration endpoint")
    client_id = answer.get("client_id")
    if isinstance(client_id, int):
        client_id = str(client_id)
    if not isinstance(client_id, str) or not client_id.strip():
        raise RegistrationFailed("The platform accepted the registration but its answer has "
                                 "no client_id, so launches could not be recognised.", 502)
    tool_conf = answer.get(TOOL_CONFIGURATION)
    tool_conf = tool_conf if isinstance(tool_conf, dict) else {}
    deployment = tool_conf.get("deployment_id")
    deployment = str(deployment) if deployment not in (None, "") else None

    issuer = config["issuer"]
    if Platform.objects(issuer=issuer, client_id=client_id).first() is not None:
        raise _duplicate(issuer, client_id)
    host = urlsplit(config["registration_endpoint"]).hostname or urlsplit(issuer).hostname
    product_name = PRODUCT_NAMES.get(product or "", product or "LMS")
    audience = config.get("authorization_server")
    try:
        platform = add_platform(
            name=name or f"{product_name} ({host})", issuer=issuer, client_id=client_id,
            auth_login_url=config["authorization_endpoint"],
            auth_token_url=config["token_endpoint"], key_set_url=config["jwks_uri"],
            deployments=[deployment] if deployment else [],
            auth_audience=audience if is_http_url(audience) else None, product=product)
    except NotUniqueError:
        raise _duplicate(issuer, client_id) from None
    except RegistrationError as exc:
        raise RegistrationFailed(f"The platform's configuration cannot be used: {exc}",
                                 502) from None
    return Registered(platform=platform, product=product, deployment_id=deployment)


def _duplicate(issuer: str, client_id: str) -> RegistrationFailed:
    return RegistrationFailed(
        f"This platform ({issuer}) is already registered with client ID {client_id}. Nothing "
        "was changed here; remove the duplicate tool your LMS just created.", 409)


def _check_configuration(config: dict, url: str) -> None:
    issuer = config.get("issuer")
    if not is_http_url(issuer):
        raise RegistrationFailed("The platform's OpenID configuration has no valid issuer.")
    if origin(issuer) != origin(url):
        raise RegistrationFailed(
            f"The platform's issuer {issuer} is not on the site the OpenID configuration came "
            f"from ({url}). A platform may only register as itself, so the registration was "
            "refused.", 400)
    missing = [key for key in ("registration_endpoint", "authorization_endpoint",
                               "token_endpoint", "jwks_uri") if not is_http_url(config.get(key))]
    if missing:
        raise RegistrationFailed("The platform's OpenID configuration lacks a valid "
                                 + ", ".join(missing) + ".", 400)
    if not isinstance(config.get(PLATFORM_CONFIGURATION), dict):
        raise RegistrationFailed("The OpenID configuration is not an LTI platform's: it has "
                                 f"no {PLATFORM_CONFIGURATION}.", 400)


def _refuse_private(url: str) -> None:
    """Refuse URLs whose host is (or resolves to) a loopback, private, link-local or
    otherwise non-public address."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        raise RegistrationFailed(f"The platform's address {host!r} cannot be resolved.",
                                 502) from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise RegistrationFailed(
                f"The platform's URL {url} points to a non-public address ({address}); "
                "dynamic registration only talks to platforms on the internet. Register "
                "an internal LMS with `masteryhub platforms add`.", 400)


def _request_json(method: str, url: str, *, headers: dict[str, str], what: str,
                  body: dict | None = None, redirects: bool = False) -> dict:
    headers = {"Accept": "application/json", **headers}
    try:
        with requests.request(method, url, headers=headers, json=body, timeout=TIMEOUT,
                              stream=True, allow_redirects=redirects) as response:
            raw = response.raw.read(MAX_BODY + 1, decode_content=True)
            status, reason = response.status_code, response.reason
    except requests.RequestException as exc:
        raise RegistrationFailed(f"Could not reach {what} at {url}: "
                                 f"{_short(type(exc).__name__ + ': ' + str(exc))}", 502) from None
    if len(raw) > MAX_BODY:
        raise RegistrationFailed(f"The answer of {what} is too large.", 502)
    text = raw.decode("utf-8", "replace")
    if not 200 <= status < 300:
        detail = _platform_message(text)
        raise RegistrationFailed(
            f"{what[0].upper()}{what[1:]} ({url}) answered HTTP {status} {reason or ''}"
            f"{': ' + detail if detail else ''}".rstrip(), 502)
    try:
        data = json.loads(text)
    except ValueError:
        raise RegistrationFailed(f"The answer of {what} ({url}) is not JSON.", 502) from None
    if not isinstance(data, dict):
        raise RegistrationFailed(f"The answer of {what} ({url}) is not a JSON object.", 502)
    return data


def _platform_message(text: str) -> str:
    """The error a platform gave: OAuth's error/error_description, Canvas' errorMessage or
    errors, or the start of a plain-text body."""
    try:
        data = json.loads(text)
    except ValueError:
        return _short(" ".join(text.split()))
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("error", "error_description", "errorMessage",
                                        "message", "errors") if data.get(k)]
        if parts:
            return _short(": ".join(parts))
    return _short(json.dumps(data))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
