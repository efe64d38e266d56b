"""`masteryhub platforms` and `masteryhub keys`, run as an operator runs them: as separate
processes on the database the app uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlencode, urlsplit

import jwt
import pytest
from registration_peer import TOKEN, serving

from lti_tool import keys
from lti_tool.registry import find_platform, registration_of
from masteryhub.app import create_app
from masteryhub.config import Settings

pytestmark = pytest.mark.slow

BASE_URL = "https://hub.example.edu"
SECRET = "k" * 40


@pytest.fixture
def env(tmp_path, mongo_server_uri, db_name) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERYHUB_")}
    env.update(MASTERYHUB_DATA_DIR=str(tmp_path / "data"), MASTERYHUB_ENV="production",
               MASTERYHUB_MONGODB_URI=mongo_server_uri, MASTERYHUB_DB_NAME=db_name,
               MASTERYHUB_BASE_URL=BASE_URL, MASTERYHUB_SECRET_KEY=SECRET,
               # the test platforms run on loopback
               MASTERYHUB_REGISTRATION_PRIVATE_HOSTS="true")
    return env


@pytest.fixture
def hub(env):
    """The production app on the same database as the commands."""
    settings = Settings.from_env(env)
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def run_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "masteryhub.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def ok_json(*args, env):
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_add_with_presets_list_show_deployments_disable(env, hub):
    moodle = ok_json("platforms", "add", "--moodle-site", "https://moodle.school.edu/",
                     "--client-id", "mh-1", "--deployment", "1", "--json", env=env)
    platform = moodle["platform"]
    assert platform["issuer"] == "https://moodle.school.edu"
    assert platform["auth_login_url"] == "https://moodle.school.edu/mod/lti/auth.php"
    assert platform["auth_token_url"] == "https://moodle.school.edu/mod/lti/token.php"
    assert platform["key_set_url"] == "https://moodle.school.edu/mod/lti/certs.php"
    assert platform["product"] == "moodle" and platform["deployments"] == ["1"]
    assert moodle["tool"]["login"] == BASE_URL + "/lti/login"
    assert moodle["tool"]["jwks"] == BASE_URL + "/lti/jwks"

    canvas = run_cli("platforms", "add", "--canvas", "--client-id", "10000000000077",
                     env=env)
    assert canvas.returncode == 0, canvas.stderr
    for text in ("Registered platform", "https://canvas.instructure.com",
                 f"{BASE_URL}/lti/login", f"{BASE_URL}/lti/launch", f"{BASE_URL}/lti/jwks",
                 f"{BASE_URL}/lti/canvas.json"):
        assert text in canvas.stdout

    listed = ok_json("platforms", "list", "--json", env=env)
    assert [p["product"] for p in listed] == ["moodle", "canvas"]
    [canvas_info] = [p for p in listed if p["product"] == "canvas"]
    assert canvas_info["auth_login_url"] == "https://sso.canvaslms.com/api/lti/authorize_redirect"
    assert canvas_info["auth_token_url"] == "https://sso.canvaslms.com/login/oauth2/token"
    assert canvas_info["key_set_url"] == "https://sso.canvaslms.com/api/lti/security/jwks"
    assert "moodle.school.edu" in run_cli("platforms", "list", env=env).stdout

    ident = canvas_info["id"]
    added = run_cli("platforms", "deployments", "add", ident, "42:abc", env=env)
    assert added.returncode == 0 and "added" in added.stdout
    again = run_cli("platforms", "deployments", "add", ident, "42:abc", env=env)
    assert again.returncode == 0 and "already recorded" in again.stdout
    assert ok_json("platforms", "show", ident, "--json", env=env)["deployments"] == ["42:abc"]

    assert run_cli("platforms", "disable", ident, env=env).returncode == 0
    with hub.app_context():
        assert find_platform("https://canvas.instructure.com", "10000000000077") is None
    assert run_cli("platforms", "enable", ident, env=env).returncode == 0
    with hub.app_context():
        assert find_platform("https://canvas.instructure.com", "10000000000077") is not None

    missing = run_cli("platforms", "show", "nope", env=env)
    assert missing.returncode == 1 and "no platform 'nope'" in missing.stderr


@pytest.mark.parametrize("args, message", [
    (("--client-id", "x"), "--issuer"),
    (("--client-id", "x", "--canvas", "--moodle-site", "https://m.example.edu"),
     "--moodle-site"),
    (("--client-id", "x", "--moodle-site", "moodle.school.edu"), "--moodle-site"),
    (("--client-id", "x", "--canvas", "--key-set-url", "ftp://keys"), "--key-set-url"),
    (("--client-id", " ", "--canvas"), "--client-id"),
    (("--canvas",), "--client-id"),
])
def test_bad_input_names_the_option(env, args, message):
    result = run_cli("platforms", "add", *args, env=env)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


def test_invite_then_register_with_it(env, hub):
    invite = ok_json("platforms", "invite", "--expires-days", "2", "--json", env=env)
    url = urlsplit(invite["url"])
    assert invite["url"].startswith(BASE_URL + "/lti/register?invite=")
    human = run_cli("platforms", "invite", env=env)
    assert human.returncode == 0 and "/lti/register?invite=" in human.stdout
    bad = run_cli("platforms", "invite", "--expires-days", "0", env=env)
    assert bad.returncode == 2 and "--expires-days" in bad.stderr

    with serving("moodle") as moodle:
        client = hub.test_client()
        # The LMS appends its parameters to the URL the admin pasted.
        target = f"{url.path}?{url.query}&" + urlencode(
            {"openid_configuration": moodle.config_url, "registration_token": TOKEN})
        response = client.get(target)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert client.get(target).status_code == 403  # one-time
    [platform] = ok_json("platforms", "list", "--json", env=env)
    assert platform["product"] == "moodle" and platform["deployments"] == ["3"]


def _published_kids(client) -> list[str]:
    return [k["kid"] for k in client.get("/lti/jwks").get_json()["keys"]]


def test_keys_rotate_keeps_the_old_key_published_and_prune_removes_it(env, hub):
    client = hub.test_client()
    assert ok_json("keys", "list", "--json", env=env) == []
    [first] = _published_kids(client)  # the first use creates the key

    rotated = ok_json("keys", "rotate", "--json", env=env)
    second = rotated["kid"]
    assert rotated["previous"] == [first] and rotated["previous_published_until"]
    assert set(_published_kids(client)) == {first, second}

    # The new active key signs: a client assertion verifies with the published key.
    with hub.app_context():
        from lti_tool.registry import add_platform

        platform = add_platform(name="M", issuer="https://m.example.edu", client_id="c",
                                auth_login_url="https://m.example.edu/auth",
                                auth_token_url="https://m.example.edu/token",
                                key_set_url="https://m.example.edu/certs")
        registration = registration_of(platform)
        assert registration.get_kid() == second == keys.active_key().kid
        token = jwt.encode({"iss": "c", "aud": "https://m.example.edu/token"},
                           registration.get_tool_private_key(), algorithm="RS256",
                           headers={"kid": registration.get_kid()})
    jwks = client.get("/lti/jwks").get_json()
    public = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    assert jwt.decode(token, public.key, algorithms=["RS256"],
                      audience="https://m.example.edu/token")["iss"] == "c"

    human = run_cli("keys", "rotate", "--keep-days", "0", env=env)
    assert human.returncode == 0 and "New signing key" in human.stdout
    assert "stays published" in human.stdout
    listed = ok_json("keys", "list", "--json", env=env)
    third = next(k["kid"] for k in listed if k["active"])
    # second's grace time is over at once; first is still within its 7 days.
    assert set(_published_kids(client)) == {first, third}
    assert ok_json("keys", "prune", "--json", env=env) == {"removed": 1}
    assert {k["kid"] for k in ok_json("keys", "list", "--json", env=env)} == {first, third}
    assert "Removed 0" in run_cli("keys", "prune", env=env).stdout
    assert "active" in run_cli("keys", "list", env=env).stdout
