"""A platform's side of LTI Dynamic Registration, as Moodle 4.x and Canvas behave, served
over real HTTP for the registration tests."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from lti_tool.dynamic_registration import PLATFORM_CONFIGURATION, SCOPES, TOOL_CONFIGURATION

TOKEN = "reg-token-eyJhbGciOi.J9"  # what the LMS adds as registration_token


class PeerPlatform:
    """A platform's side of dynamic registration.

    ``moodle``: openid configuration at /mod/lti/openid-configuration.php (public), the
    registration endpoint needs the Bearer token and answers a client_id and a deployment_id.
    ``canvas``: the openid configuration needs the Bearer token (401 without), the answer has
    a client_id and no deployment_id.
    """

    def __init__(self, product: str):
        self.product = product
        self.base = ""
        self.seen: list[dict] = []  # every request: method, path, authorization, body
        self.issuer: str | None = None  # override: a lying issuer
        self.config_body: str | None = None  # override: the raw openid configuration
        self.registration_error: tuple[int, str] | None = None
        self.client_id = "moodle-client-7" if product == "moodle" else "10000000000042"

    @property
    def config_path(self) -> str:
        return ("/mod/lti/openid-configuration.php" if self.product == "moodle"
                else "/api/lti/security/openid-configuration")

    @property
    def config_url(self) -> str:
        return self.base + self.config_path

    def configuration(self) -> dict:
        base = self.base
        if self.product == "moodle":
            endpoints = {"authorization_endpoint": base + "/mod/lti/auth.php",
                         "token_endpoint": base + "/mod/lti/token.php",
                         "jwks_uri": base + "/mod/lti/certs.php",
                         "registration_endpoint": base + "/mod/lti/openid-registration.php"}
            platform = {"product_family_code": "moodle", "version": "4.3.2",
                        "messages_supported": [{"type": "LtiResourceLinkRequest"},
                                               {"type": "LtiDeepLinkingRequest"}]}
        else:
            endpoints = {"authorization_endpoint": base + "/api/lti/authorize_redirect",
                         "token_endpoint": base + "/login/oauth2/token",
                         "jwks_uri": base + "/api/lti/security/jwks",
                         "registration_endpoint": base + "/api/lti/registrations"}
            platform = {"product_family_code": "canvas", "version": "OpenSource",
                        "messages_supported": [{"type": "LtiResourceLinkRequest"}]}
        return {"issuer": self.issuer or base, **endpoints,
                "scopes_supported": ["openid", *SCOPES],
                "response_types_supported": ["id_token"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "claims_supported": ["sub", "iss", "name", "email"],
                PLATFORM_CONFIGURATION: platform}

    def __call__(self, environ, start_response):
        request = Request(environ)
        body = request.get_data(as_text=True)
        auth = request.headers.get("Authorization")
        self.seen.append({"method": request.method, "path": request.path,
                          "authorization": auth, "body": body})
        bearer_ok = auth == f"Bearer {TOKEN}"
        if request.method == "GET" and request.path == self.config_path:
            if self.product == "canvas" and not bearer_ok:
                return _json({"errors": [{"message": "Invalid registration token"}]},
                             401)(environ, start_response)
            if self.config_body is not None:
                return Response(self.config_body, 200)(environ, start_response)
            return _json(self.configuration())(environ, start_response)
        if request.method == "POST" and request.path == urlsplit_path(
                self.configuration()["registration_endpoint"]):
            if not bearer_ok:
                return Response("Unauthorized registration token", 401)(environ,
                                                                       start_response)
            if self.registration_error:
                status, message = self.registration_error
                return _json({"error": "invalid_client_metadata",
                              "error_description": message}, status)(environ, start_response)
            registration = json.loads(body)
            answer = dict(registration, client_id=self.client_id)
            tool = dict(registration[TOOL_CONFIGURATION])
            if self.product == "moodle":
                tool["deployment_id"] = "3"
            answer[TOOL_CONFIGURATION] = tool
            return _json(answer)(environ, start_response)
        return Response("not found", 404)(environ, start_response)

    def registration_body(self) -> dict:
        posts = [r for r in self.seen if r["method"] == "POST"]
        assert len(posts) == 1, self.seen
        return json.loads(posts[0]["body"])


def urlsplit_path(url: str) -> str:
    return urlsplit(url).path


def _json(value, status: int = 200) -> Response:
    return Response(json.dumps(value), status, mimetype="application/json")


@contextlib.contextmanager
def serving(product: str) -> Iterator[PeerPlatform]:
    """A peer platform on a loopback port for the duration of the block."""
    platform = PeerPlatform(product)
    server = make_server("127.0.0.1", 0, platform, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    platform.base = f"http://127.0.0.1:{server.server_port}"
    try:
        yield platform
    finally:
        server.shutdown()
        thread.join(5)
