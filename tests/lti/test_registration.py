"""LTI Dynamic Registration against platform peers that behave like Moodle 4.x and Canvas,
served over real HTTP; invitations; the Canvas developer-key JSON."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from registration_peer import TOKEN, PeerPlatform, serving

from lti_tool import invites
from lti_tool.dynamic_registration import PLATFORM_CONFIGURATION, SCOPES, TOOL_CONFIGURATION
from lti_tool.models import Platform
from lti_tool.registry import find_platform
from masteryhub.app import create_app
from masteryhub.config import Settings


@pytest.fixture
def peer() -> Iterator:
    """Start peer platforms ("moodle" or "canvas"); all stop when the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda product: stack.enter_context(serving(product))


@pytest.fixture
def production_app(mongo_server_uri, db_name, tmp_path):
    settings = Settings.from_env({
        "MASTERYHUB_ENV": "production",
        "MASTERYHUB_REGISTRATION_PRIVATE_HOSTS": "true",  # the test peers are on loopback
        "MASTERYHUB_DATA_DIR": str(tmp_path / "data"),
        "MASTERYHUB_MONGODB_URI": mongo_server_uri,
        "MASTERYHUB_DB_NAME": db_name,
        "MASTERYHUB_BASE_URL": "https://hub.example.edu",
        "MASTERYHUB_SECRET_KEY": "s" * 40,
    })
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def register_url(platform: PeerPlatform, token: str | None = TOKEN, **extra) -> str:
    params = dict(extra, openid_configuration=platform.config_url)
    if token:
        params["registration_token"] = token
    return "/lti/register?" + urlencode(params)


def stored(app) -> list[Platform]:
    with app.app_context():
        return list(Platform.objects)


def test_moodle_registration_stores_the_platform_and_says_it_is_pending(app, client, peer):
    moodle = peer("moodle")
    response = client.get(register_url(moodle))
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert "pending" in page and "Manage tools" in page and "Activate" in page
    assert "org.imsglobal.lti.close" in page and "window.parent" in page
    assert "Development mode" in page  # no invitation was needed, and the page says so

    [platform] = stored(app)
    assert platform.product == "moodle" and platform.issuer == moodle.base
    assert platform.client_id == "moodle-client-7" and platform.deployments == ["3"]
    assert platform.auth_login_url == moodle.base + "/mod/lti/auth.php"
    assert platform.auth_token_url == moodle.base + "/mod/lti/token.php"
    assert platform.key_set_url == moodle.base + "/mod/lti/certs.php"
    with app.app_context():
        found = find_platform(moodle.base, "moodle-client-7")
        assert found is not None and found.identifier == platform.identifier

    body = moodle.registration_body()
    assert body["application_type"] == "web" and body["response_types"] == ["id_token"]
    assert set(body["grant_types"]) == {"implicit", "client_credentials"}
    assert body["initiate_login_uri"] == "http://localhost/lti/login"
    assert body["redirect_uris"] == ["http://localhost/lti/launch"]
    assert body["jwks_uri"] == "http://localhost/lti/jwks"
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["client_name"] == "Mastery Hub" and body["logo_uri"].startswith("http://localhost/")
    assert set(body["scope"].split()) == set(SCOPES)
    tool = body[TOOL_CONFIGURATION]
    assert tool["domain"] == "localhost" and tool["target_link_uri"] == "http://localhost/lti/launch"
    assert set(tool["claims"]) >= {"iss", "sub", "name", "given_name", "family_name", "email"}
    assert {m["type"] for m in tool["messages"]} == {"LtiResourceLinkRequest",
                                                     "LtiDeepLinkingRequest"}
    post = next(r for r in moodle.seen if r["method"] == "POST")
    assert post["authorization"] == f"Bearer {TOKEN}"


def test_canvas_registration_sends_the_token_as_bearer_on_both_requests(app, client, peer):
    canvas = peer("canvas")
    response = client.get(register_url(canvas))
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert [r["authorization"] for r in canvas.seen] == [f"Bearer {TOKEN}"] * 2
    assert "ON" in page and "By Client ID" in page and "10000000000042" in page

    [platform] = stored(app)
    assert platform.product == "canvas" and platform.client_id == "10000000000042"
    assert platform.deployments == []  # Canvas gives none: recorded at the first launch
    body = canvas.registration_body()
    messages = {m["type"]: m for m in body[TOOL_CONFIGURATION]["messages"]}
    assert messages["LtiResourceLinkRequest"]["placements"] == ["course_navigation"]
    assert "link_selection" in messages["LtiDeepLinkingRequest"]["placements"]
    assert body[TOOL_CONFIGURATION]["https://canvas.instructure.com/lti/privacy_level"] == "public"


def test_canvas_without_the_token_is_a_clear_error(app, client, peer):
    canvas = peer("canvas")
    response = client.get(register_url(canvas, token=None))
    page = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "HTTP 401" in page and "Invalid registration token" in page
    assert "Nothing was stored" in page and stored(app) == []


def test_an_issuer_on_another_origin_is_refused_before_registering(app, client, peer):
    moodle = peer("moodle")
    moodle.issuer = "https://victim-school.example.edu"
    response = client.get(register_url(moodle))
    assert response.status_code == 400
    assert "victim-school.example.edu" in response.get_data(as_text=True)
    assert [r["method"] for r in moodle.seen] == ["GET"]  # nothing was registered
    assert stored(app) == []

    moodle.issuer = moodle.base.replace("127.0.0.1", "localhost")  # same port, other host
    assert client.get(register_url(moodle)).status_code == 400
    assert stored(app) == []


def test_a_registration_endpoint_error_shows_the_platforms_message(app, client, peer):
    moodle = peer("moodle")
    moodle.registration_error = (422, "redirect_uris must use https")
    response = client.get(register_url(moodle))
    page = response.get_data(as_text=True)
    assert response.status_code == 502
    assert "redirect_uris must use https" in page and "HTTP 422" in page
    assert stored(app) == []


@pytest.mark.parametrize("config_body, problem", [
    ("<html>Moodle maintenance</html>", "is not JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"issuer": "x"}), "no valid issuer"),
])
def test_a_bad_openid_configuration_is_a_clear_error(app, client, peer, config_body, problem):
    moodle = peer("moodle")
    moodle.config_body = config_body
    response = client.get(register_url(moodle))
    assert response.status_code in (400, 502)
    assert problem in response.get_data(as_text=True)
    assert stored(app) == []


def test_a_configuration_that_is_not_an_lti_platform_is_refused(app, client, peer):
    moodle = peer("moodle")
    config = moodle.configuration()
    del config[PLATFORM_CONFIGURATION]
    moodle.config_body = json.dumps(config)
    response = client.get(register_url(moodle))
    assert response.status_code == 400
    assert PLATFORM_CONFIGURATION in response.get_data(as_text=True)


def test_unreachable_or_missing_configuration_urls(app, client):
    from masteryhub.embedded import free_port

    url = f"http://127.0.0.1:{free_port()}/mod/lti/openid-configuration.php"
    response = client.get("/lti/register?" + urlencode({"openid_configuration": url}))
    assert response.status_code == 502
    assert "Could not reach" in response.get_data(as_text=True)

    response = client.get("/lti/register?openid_configuration=file:///etc/passwd")
    assert response.status_code == 400
    response = client.get("/lti/register")
    assert response.status_code == 400
    assert "Open it from your LMS" in response.get_data(as_text=True)
    assert stored(app) == []


def test_registering_the_same_client_twice_is_a_conflict(app, client, peer):
    moodle = peer("moodle")
    assert client.get(register_url(moodle)).status_code == 200
    response = client.get(register_url(moodle))
    assert response.status_code == 409
    assert "already registered" in response.get_data(as_text=True)
    assert len(stored(app)) == 1


def test_production_needs_a_valid_invitation(production_app, peer):
    client = production_app.test_client()
    moodle = peer("moodle")

    response = client.get(register_url(moodle))
    page = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "needs an invitation" in page and "masteryhub platforms invite" in page
    assert moodle.seen == []  # refused before contacting anyone

    assert client.get(register_url(moodle, invite="made-up")).status_code == 403
    with production_app.app_context():
        _, expired = invites.create_invite(dt.timedelta(seconds=-1))
        _, token = invites.create_invite()
    response = client.get(register_url(moodle, invite=expired))
    assert response.status_code == 403 and "has expired" in response.get_data(as_text=True)
    assert moodle.seen == [] and stored(production_app) == []

    # Opened in a browser rather than from the LMS: explain, keep the invitation.
    response = client.get(f"/lti/register?invite={token}")
    assert response.status_code == 400 and "Open it from your LMS" in response.get_data(
        as_text=True)

    # A failed registration does not use the invitation up...
    moodle.registration_error = (400, "try again")
    assert client.get(register_url(moodle, invite=token)).status_code == 502
    moodle.registration_error = None
    response = client.get(register_url(moodle, invite=token))
    page = response.get_data(as_text=True)
    assert response.status_code == 200, page
    assert "Development mode" not in page
    [platform] = stored(production_app)
    with production_app.app_context():
        [invite] = [i for i in invites.RegistrationInvite.objects if i.used_at]
        assert invite.platform == platform.identifier
        assert token not in json.dumps(invite.to_mongo().to_dict(), default=str)

    # ...a successful one does.
    response = client.get(register_url(moodle, invite=token))
    assert response.status_code == 403 and "already been used" in response.get_data(
        as_text=True)
    assert len(stored(production_app)) == 1


def test_an_invitation_with_a_bad_token_is_refused_even_in_development(client, peer):
    moodle = peer("moodle")
    response = client.get(register_url(moodle, invite="nope"))
    assert response.status_code == 403 and "is not valid" in response.get_data(as_text=True)
    assert moodle.seen == []


def test_canvas_json_is_the_developer_key_configuration(client):
    response = client.get("/lti/canvas.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    config = json.loads(response.get_data(as_text=True))
    assert config["title"] == "Mastery Hub"
    assert config["oidc_initiation_url"] == "http://localhost/lti/login"
    assert config["target_link_uri"] == "http://localhost/lti/launch"
    assert config["public_jwk_url"] == "http://localhost/lti/jwks"
    assert set(config["scopes"]) == set(SCOPES)
    [extension] = config["extensions"]
    assert extension["platform"] == "canvas.instructure.com"
    assert extension["privacy_level"] == "public"
    placements = {p["placement"]: p for p in extension["settings"]["placements"]}
    assert placements["course_navigation"]["message_type"] == "LtiResourceLinkRequest"
    for name in ("link_selection", "assignment_selection"):
        assert placements[name]["message_type"] == "LtiDeepLinkingRequest"
        assert placements[name]["target_link_uri"] == "http://localhost/lti/launch"
    assert isinstance(config["custom_fields"], dict)
    logo = client.get("/lti/logo.svg")
    assert logo.status_code == 200 and logo.mimetype == "image/svg+xml"


def test_production_refuses_platforms_on_private_addresses(mongo_server_uri, db_name,
                                                          tmp_path, peer):
    """The registration URL comes from whoever opens the page: in production the server
    does not fetch loopback or private addresses unless the operator allows it."""
    settings = Settings.from_env({
        "MASTERYHUB_ENV": "production", "MASTERYHUB_DATA_DIR": str(tmp_path / "data"),
        "MASTERYHUB_MONGODB_URI": mongo_server_uri, "MASTERYHUB_DB_NAME": db_name,
        "MASTERYHUB_BASE_URL": "https://hub.example.edu", "MASTERYHUB_SECRET_KEY": "s" * 40})
    app = create_app(settings)
    moodle = peer("moodle")
    with app.app_context():
        _, token = invites.create_invite()
    response = app.test_client().get(register_url(moodle, invite=token))
    assert response.status_code == 400
    assert "non-public address" in response.get_data(as_text=True)
    assert moodle.seen == [] and stored(app) == []
