"""The operator's admin area (/admin) over HTTP: sign-in, sessions, CSRF, throttling, and
every page's actions, each bad input refused with a message and nothing changed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from html import unescape
from importlib import resources
from io import BytesIO

import pytest
from click.testing import CliRunner

from lti_tool import admin_auth, invites
from lti_tool.admin_auth import AdminAccount, AdminSession, AuditEntry
from masteryhub.app import create_app

EMAIL = "ops@hub.example.edu"
PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:1000]
    return unescape(found.group(1))


def text_of(response) -> str:
    return unescape(response.get_data(as_text=True))


@pytest.fixture
def admin(app):
    with app.app_context():
        admin_auth.add_admin(EMAIL, PASSWORD)
    return EMAIL


def login(client, email=EMAIL, password=PASSWORD, environ_base=None, **fields):
    extra = {"environ_base": environ_base} if environ_base else {}
    page = client.get("/admin/login", **extra)
    return client.post("/admin/login", data={
        "email": email, "password": password, "csrf_token": csrf_of(page.get_data(as_text=True)),
        **fields}, **extra)


@pytest.fixture
def signed_in(client, admin):
    """The test client signed in; returns a function giving a page's CSRF token."""
    response = login(client)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]

    def token(path: str = "/admin/status") -> str:
        return csrf_of(client.get(path).get_data(as_text=True))
    return token


def sample_text(name: str) -> str:
    return resources.files("mappings.data").joinpath(name).read_text()


def upload(client, token, path, text, filename, **fields):
    return client.post(path, data={"csrf_token": token, "file": (BytesIO(text.encode()),
                                                                 filename), **fields},
                       content_type="multipart/form-data")


# -- access ---------------------------------------------------------------------------------
PAGES = ["/admin/", "/admin/status", "/admin/platforms", "/admin/platforms/x",
         "/admin/credentials", "/admin/credentials/abc/revoke", "/admin/frameworks",
         "/admin/frameworks/algebra-1-cbe", "/admin/rules", "/admin/rules/dry-run",
         "/admin/rules/set/x", "/admin/invitations/new"]
ACTIONS = ["/admin/platforms", "/admin/platforms/x/deployments", "/admin/platforms/x/status",
           "/admin/invitations", "/admin/credentials", "/admin/credentials/abc/revoke",
           "/admin/frameworks", "/admin/rules", "/admin/rules/set/x/remove",
           "/admin/rules/dry-run", "/admin/logout"]


def test_every_page_needs_a_signed_in_admin(client, db, admin):
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/admin/login?next="), path
    for path in ACTIONS:
        response = client.post(path, data={"name": "x", "scopes": ["all"]})
        assert response.status_code == 403, path
        assert "Sign in" in text_of(response)
    assert db["lrs_credentials"].count_documents({}) == 0
    assert db["lti_registration_invites"].count_documents({}) == 0


def test_an_lti_launch_session_is_no_admin_session(client, admin, db):
    """A cookie from elsewhere in the app (or a forged session id) does not sign anyone in."""
    with client.session_transaction() as session:
        session["admin_sid"] = "not-a-session"
    assert client.get("/admin/status").status_code == 302


def test_login_page_explains_the_command_when_no_admin_exists(client):
    text = text_of(client.get("/admin/login"))
    assert "No admin account exists yet" in text
    assert "masteryhub admins add" in text and "no default password" in text


def test_sign_in_sets_a_hardened_session_cookie_and_sign_out_ends_it(client, admin, db):
    response = login(client)
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/status"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Expires=" in cookie  # an 8-hour session, not a browser-lifetime one
    stored = AdminSession.objects.get()
    assert stored.email == EMAIL
    page = client.get("/admin/status")
    assert page.status_code == 200 and EMAIL in text_of(page)
    for header, value in (("X-Frame-Options", "DENY"), ("Cache-Control", "no-store")):
        assert page.headers[header] == value
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

    # the old cookie is useless after sign-out: the session is gone on the server
    with client.session_transaction() as session:
        old = dict(session)
    response = client.post("/admin/logout", data={"csrf_token": csrf_of(text_of(page))})
    assert response.status_code == 303
    assert AdminSession.objects.count() == 0
    with client.session_transaction() as session:
        session.update(old)
    assert client.get("/admin/status").status_code == 302
    actions = [a.action for a in AuditEntry.objects.order_by("at")]
    assert actions == ["login", "logout"]


def test_wrong_password_unknown_account_and_missing_csrf_are_refused(client, admin):
    response = login(client, password="wrong password!")
    assert response.status_code == 403
    assert "Wrong email or password" in text_of(response)
    response = login(client, email="nobody@example.edu")
    assert response.status_code == 403
    response = client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert "security token" in text_of(response)
    assert AdminSession.objects.count() == 0
    assert client.get("/admin/status").status_code == 302


def test_login_is_throttled_per_account_and_address(client, admin, app):
    for _ in range(admin_auth.MAX_FAILURES):
        assert login(client, password="not the password").status_code == 403
    # locked: even the right password is refused, with a clear message and Retry-After
    response = login(client)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in text_of(response)
    assert "Try again in 15 minutes" in text_of(response)
    assert 0 < int(response.headers["Retry-After"]) <= 15 * 60 + 1
    assert AdminSession.objects.count() == 0
    # from another address the account still works
    other = app.test_client()
    response = login(other, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 303
    actions = [a.action for a in AuditEntry.objects]
    assert actions.count("login.failed") == 5 and "login.throttled" in actions


def test_throttle_window_passes(app, admin):
    import datetime as dt

    from mappings.models import utcnow

    with app.app_context():
        then = utcnow() - dt.timedelta(minutes=20)
        for _ in range(admin_auth.MAX_FAILURES):
            assert admin_auth.authenticate(EMAIL, "nope", "1.2.3.4", now=then) is None
        with pytest.raises(admin_auth.LoginThrottled):
            admin_auth.authenticate(EMAIL, PASSWORD, "1.2.3.4", now=then)
        assert admin_auth.authenticate(EMAIL, PASSWORD, "1.2.3.4") is not None


def test_next_only_returns_inside_admin(client, admin):
    response = login(client, next="https://evil.example/admin")
    assert response.headers["Location"] == "/admin/status"
    client.post("/admin/logout", data={"csrf_token": csrf_of(text_of(
        client.get("/admin/status")))})
    response = login(client, next="/admin/credentials")
    assert response.headers["Location"] == "/admin/credentials"


def test_production_has_secure_cookies_and_no_setup_hint(settings, mongo_server_uri, admin):
    production = dataclasses.replace(settings, env="production",
                                     base_url="https://hub.example.edu")
    app = create_app(production, mongodb_uri=mongo_server_uri)
    app.config["TESTING"] = True
    client = app.test_client()
    with app.app_context():
        AdminAccount.objects.delete()
    assert "No admin account" not in text_of(client.get("/admin/login"))
    with app.app_context():
        admin_auth.add_admin(EMAIL, PASSWORD)
    response = login(client)
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]


def test_csrf_token_is_required_on_every_action(client, signed_in, db):
    response = client.post("/admin/credentials", data={"name": "Vendor", "scopes": ["all"]})
    assert response.status_code == 400
    assert "security token" in text_of(response)
    response = client.post("/admin/credentials", data={"name": "Vendor", "scopes": ["all"],
                                                      "csrf_token": "forged"})
    assert response.status_code == 400
    assert db["lrs_credentials"].count_documents({}) == 0
    # a token of another session does not work either
    other = admin_auth.start_session(EMAIL)
    other_token = AdminSession.objects.get(id_sha256=admin_auth._sha256(other)).csrf_token
    response = client.post("/admin/credentials", data={"name": "Vendor", "scopes": ["all"],
                                                      "csrf_token": other_token})
    assert response.status_code == 400


# -- credentials ----------------------------------------------------------------------------
def test_credential_secret_is_shown_once_and_never_stored(client, signed_in, db):
    token = signed_in("/admin/credentials")
    response = client.post("/admin/credentials", data={
        "csrf_token": token, "name": "Algebra Online", "scopes": ["statements/write",
                                                                  "statements/read/mine"]})
    assert response.status_code == 303
    created = client.get(response.headers["Location"])
    text = text_of(created)
    key = re.search(r'data-testid="credential-key">([^<]+)<', text).group(1)
    secret = re.search(r'data-testid="credential-secret">([^<]+)<', text).group(1)
    assert "shown only this once" in text
    # the reload does not show it again
    again = text_of(client.get(response.headers["Location"]))
    assert secret not in again and "not shown again" in again
    # only the hash is kept, nowhere the secret itself
    for name in db.list_collection_names():
        assert secret not in json.dumps(list(db[name].find()), default=str), name
    stored = db["lrs_credentials"].find_one({"key": key})
    assert stored["scopes"] == ["statements/write", "statements/read/mine"]
    # the credential works against the LRS
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(
        f"{key}:{secret}".encode()).decode(), "X-Experience-API-Version": "1.0.3"}
    assert client.get("/xapi/statements", headers=auth).status_code == 200
    listing = text_of(client.get("/admin/credentials"))
    assert "Algebra Online" in listing and key in listing and secret not in listing
    entry = AuditEntry.objects(action="credential.create").get()
    assert entry.admin == EMAIL and entry.target == key and secret not in entry.detail

    # revoke: a confirmation page, then the POST
    confirm = client.get(f"/admin/credentials/{key}/revoke")
    assert confirm.status_code == 200 and "cannot be undone" in text_of(confirm)
    response = client.post(f"/admin/credentials/{key}/revoke",
                           data={"csrf_token": csrf_of(text_of(confirm))})
    assert response.status_code == 303
    assert db["lrs_credentials"].find_one({"key": key})["revoked_at"] is not None
    assert "revoked" in text_of(client.get("/admin/credentials"))
    assert AuditEntry.objects(action="credential.revoke", target=key).count() == 1


@pytest.mark.parametrize("form, message", [
    ({"name": "", "scopes": ["all"]}, "needs a name"),
    ({"name": "Vendor", "scopes": []}, "(none given)"),
    ({"name": "Vendor", "scopes": ["statements/write", "root"]}, "unknown scope(s) root"),
    ({"name": "V" * 300, "scopes": ["all"]}, "too long"),
])
def test_bad_credential_forms_are_refused(client, signed_in, db, form, message):
    response = client.post("/admin/credentials", data={"csrf_token": signed_in(), **form})
    assert response.status_code == 400
    assert message in text_of(response)
    assert db["lrs_credentials"].count_documents({}) == 0


def test_unknown_credential_is_404(client, signed_in):
    assert client.get("/admin/credentials/nope/revoke").status_code == 404
    response = client.post("/admin/credentials/nope/revoke", data={"csrf_token": signed_in()})
    assert response.status_code == 404


# -- platforms ------------------------------------------------------------------------------
MOODLE = {"name": "Moodle (school)", "issuer": "https://moodle.school.edu",
          "client_id": "mh-1", "auth_login_url": "https://moodle.school.edu/mod/lti/auth.php",
          "auth_token_url": "https://moodle.school.edu/mod/lti/token.php",
          "key_set_url": "https://moodle.school.edu/mod/lti/certs.php", "deployment": "1"}


def test_register_platform_deployments_disable_enable(client, signed_in, db):
    token = signed_in("/admin/platforms")
    bad = client.post("/admin/platforms", data={**MOODLE, "key_set_url": "certs.php",
                                                "csrf_token": token})
    assert bad.status_code == 400 and "key_set_url" in text_of(bad)
    assert db["lti_platforms"].count_documents({}) == 0

    response = client.post("/admin/platforms", data={**MOODLE, "csrf_token": token})
    assert response.status_code == 303
    detail = client.get(response.headers["Location"])
    text = text_of(detail)
    for url in ("http://localhost/lti/login", "http://localhost/lti/launch",
                "http://localhost/lti/jwks", "http://localhost/lti/canvas.json"):
        assert url in text
    identifier = db["lti_platforms"].find_one()["_id"]
    again = client.post("/admin/platforms", data={**MOODLE, "csrf_token": token})
    assert again.status_code == 409 and "already registered" in text_of(again)

    base = f"/admin/platforms/{identifier}"
    assert client.post(base + "/deployments", data={"csrf_token": token,
                                                    "deployment_id": "  "}).status_code == 400
    response = client.post(base + "/deployments", data={"csrf_token": token,
                                                        "deployment_id": "42"})
    assert response.status_code == 303
    assert db["lti_platforms"].find_one()["deployments"] == ["1", "42"]
    listing = text_of(client.get("/admin/platforms"))
    assert "Moodle (school)" in listing and "mh-1" in listing
    assert "https://moodle.school.edu" in listing

    assert client.post(base + "/status", data={"csrf_token": token,
                                               "status": "gone"}).status_code == 400
    client.post(base + "/status", data={"csrf_token": token, "status": "disabled"})
    assert db["lti_platforms"].find_one()["status"] == "disabled"
    client.post(base + "/status", data={"csrf_token": token, "status": "active"})
    assert db["lti_platforms"].find_one()["status"] == "active"
    actions = [a.action for a in AuditEntry.objects(target=identifier).order_by("at")]
    assert actions == ["platform.add", "platform.deployment.add", "platform.disable",
                       "platform.enable"]
    assert client.get("/admin/platforms/nope").status_code == 404


def test_invitation_link_is_shown_once_with_expiry(client, signed_in, db):
    token = signed_in("/admin/platforms")
    assert client.post("/admin/invitations", data={"csrf_token": token,
                                                   "expires_days": "0"}).status_code == 400
    assert client.post("/admin/invitations", data={"csrf_token": token,
                                                   "expires_days": "x"}).status_code == 400
    assert db["lti_registration_invites"].count_documents({}) == 0
    response = client.post("/admin/invitations", data={"csrf_token": token,
                                                       "expires_days": "3",
                                                       "note": "Riverside HS Moodle"})
    assert response.status_code == 303
    text = text_of(client.get(response.headers["Location"]))
    url = re.search(r'value="(http://localhost/lti/register\?invite=[^"]+)"', text).group(1)
    invite_token = url.split("invite=")[1]
    assert invites.invite_state(invite_token) == "valid"
    assert "Expires" in text or "expires" in text
    again = text_of(client.get(response.headers["Location"]))
    assert invite_token not in again and "cannot be shown again" in again
    for name in db.list_collection_names():
        assert invite_token not in json.dumps(list(db[name].find()), default=str)
    listing = text_of(client.get("/admin/platforms"))
    assert "Riverside HS Moodle" in listing and "valid" in listing


# -- frameworks -----------------------------------------------------------------------------
def test_import_yaml_by_upload_and_browse(client, signed_in, db):
    token = signed_in("/admin/frameworks")
    response = upload(client, token, "/admin/frameworks", sample_text("sample_framework.yaml"),
                      "algebra.yaml")
    assert response.status_code == 303
    page = client.get(response.headers["Location"])
    text = text_of(page)
    assert "Imported 'Algebra I (competency-based)': 17 competencies" in text
    assert "ALG.1.1" in text and "Algebra I credit" in text and "performance-levels" in text
    assert "Level 7" in text
    assert db["competencies"].count_documents({"framework": "algebra-1-cbe"}) == 17
    listing = text_of(client.get("/admin/frameworks"))
    assert "Algebra I (competency-based)" in listing and ">17<" in listing
    assert AuditEntry.objects(action="framework.import").get().target == "algebra-1-cbe"


def test_import_case_json_upload(client, signed_in, db):
    response = upload(client, signed_in(), "/admin/frameworks",
                      sample_text("sample_case_package.json"), "package.json")
    assert response.status_code == 303
    assert db["frameworks"].find_one()["source"] == "case"


@pytest.mark.parametrize("filename, text, message", [
    ("bad.yaml", "id: x\ntitle: X\ncompetencies:\n  - {id: a, code: A}\n",
     "bad.yaml:4: competency 'a' (A)"),
    ("bad.json", "{not json", "bad.json: not JSON"),
    ("bad.json", json.dumps({"CFDocument": {}}), "bad.json"),
])
def test_bad_framework_files_are_refused_and_nothing_changes(client, signed_in, db, filename,
                                                             text, message):
    response = upload(client, signed_in(), "/admin/frameworks", text, filename)
    assert response.status_code == 400
    body = text_of(response)
    assert "Nothing was imported" in body and message in body, body[body.find("alert"):][:400]
    assert db["frameworks"].count_documents({}) == 0
    assert db["competencies"].count_documents({}) == 0


def test_unreachable_case_url_and_bad_forms(client, signed_in, db):
    token = signed_in()
    response = client.post("/admin/frameworks", data={
        "csrf_token": token, "url": "http://127.0.0.1:9/ims/case/v1p1/CFPackages/x"})
    assert response.status_code == 400
    assert "request failed" in text_of(response)
    response = client.post("/admin/frameworks", data={"csrf_token": token, "url": "ftp://x"})
    assert response.status_code == 400 and "not an http(s) URL" in text_of(response)
    response = client.post("/admin/frameworks", data={"csrf_token": token})
    assert response.status_code == 400 and "one of" in text_of(response)
    response = upload(client, token, "/admin/frameworks", "x", "a.yaml", url="https://x.org/p")
    assert response.status_code == 400 and "one of" in text_of(response)
    response = upload(client, token, "/admin/frameworks", sample_text("sample_case_package.json"),
                      "p.json", scale="gold-stars")
    assert response.status_code == 400 and "Unknown scale" in text_of(response)
    assert db["frameworks"].count_documents({}) == 0
    assert client.get("/admin/frameworks/nope").status_code == 404


# -- rules ----------------------------------------------------------------------------------
@pytest.fixture
def with_framework(client, signed_in):
    token = signed_in("/admin/frameworks")
    response = upload(client, token, "/admin/frameworks", sample_text("sample_framework.yaml"),
                      "algebra.yaml")
    assert response.status_code == 303
    return token


def test_rule_sets_upload_validate_replace_remove(client, signed_in, with_framework, db):
    token = with_framework
    rules = sample_text("sample_rules.yaml")
    # a broken file: every problem with file:line, nothing stored
    broken = rules.replace("competency: ALG.1.2", "competency: ALG.9.9", 1) \
        .replace("verb: [http://adlnet", "verbs: [http://adlnet", 1)
    response = upload(client, token, "/admin/rules", broken, "mine.yaml", action="save")
    assert response.status_code == 400
    text = text_of(response)
    assert re.search(r"mine\.yaml:\d+: rules\[0\]", text), text
    assert re.search(r"mine\.yaml:\d+: .*ALG\.9\.9", text)
    assert db["rule_sets"].count_documents({}) == 0
    # validate only: says valid, stores nothing
    response = upload(client, token, "/admin/rules", rules, "sample_rules.yaml",
                      action="validate")
    assert response.status_code == 200 and "is valid" in text_of(response)
    assert db["rule_sets"].count_documents({}) == 0
    # save, then replace (pasted text)
    response = upload(client, token, "/admin/rules", rules, "sample_rules.yaml", action="save")
    assert response.status_code == 303
    assert "Loaded rule set 'algebra-1-sample'" in text_of(client.get(response.headers["Location"]))
    response = client.post("/admin/rules", data={"csrf_token": token, "action": "save",
                                                 "text": rules})
    assert response.status_code == 303
    assert "Replaced" in text_of(client.get(response.headers["Location"]))
    assert db["rule_sets"].count_documents({}) == 1
    assert "algebra-1-sample" in text_of(client.get("/admin/rules"))
    response = client.post("/admin/rules", data={"csrf_token": token, "action": "save",
                                                 "text": "  "})
    assert response.status_code == 400
    # remove, with confirmation
    confirm = client.get("/admin/rules/set/algebra-1-sample/remove")
    assert confirm.status_code == 200
    response = client.post("/admin/rules/set/algebra-1-sample/remove",
                           data={"csrf_token": token})
    assert response.status_code == 303
    assert db["rule_sets"].count_documents({}) == 0
    assert [a.action for a in AuditEntry.objects(action__startswith="rules.").order_by("at")] \
        == ["rules.load", "rules.replace", "rules.remove"]


def test_dry_run_shows_matching_rules_and_evidence_and_stores_nothing(client, with_framework,
                                                                      db, quiz):
    token = with_framework
    upload(client, token, "/admin/rules", sample_text("sample_rules.yaml"), "r.yaml",
           action="save")
    statement = quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2026-10-01T10:00:00Z")
    response = client.post("/admin/rules/dry-run", data={
        "csrf_token": token, "statement": json.dumps(statement), "provider": ""})
    assert response.status_code == 200
    text = text_of(response)
    assert "algebra-1-sample:quiz-alg-1-1" in text
    assert re.search(r"quiz-alg-1-2</code></td><td>algebra-1-sample:\d+</td>\s*"
                     r"<td>no match: activity", text), text[text.find("checks"):][:1500]
    assert "ALG.1.1" in text and "MATCH    algebra-1-sample:quiz-alg-1-1" in text
    for name in ("statements", "evidence", "progress"):
        assert db[name].count_documents({}) == 0

    bad = client.post("/admin/rules/dry-run", data={"csrf_token": token,
                                                    "statement": '{"actor": '})
    assert bad.status_code == 400 and "Not JSON: Expecting value: line 1 column 11" in text_of(bad)
    bad = client.post("/admin/rules/dry-run", data={"csrf_token": token, "statement": "[]"})
    assert bad.status_code == 400 and "not an array" in text_of(bad)
    bad = client.post("/admin/rules/dry-run", data={"csrf_token": token,
                                                    "statement": '{"verb": {}}'})
    assert bad.status_code == 400 and "Not a valid xAPI statement" in text_of(bad)


# -- status ---------------------------------------------------------------------------------
def test_status_shows_worker_sync_failures_errors_and_audit(client, signed_in, db):
    import datetime as dt

    from lti_tool.sync import FAILURES

    now = dt.datetime.now(dt.UTC)
    db["mapping_errors"].insert_one({"_id": "statement|s1", "kind": "statement",
                                     "subject": "s1", "error": "KeyError: 'ALG.X'", "at": now})
    db[FAILURES].insert_one({"_id": "moodle|c1", "course": "moodle|c1", "kind": "grades",
                             "attempts": 3, "last_error": "token endpoint answered 503",
                             "since": now, "last_attempt_at": now, "next_attempt_at": now})
    text = text_of(client.get("/admin/status"))
    assert "statement 0" in text and "0 statements behind" in text
    assert "KeyError: &#39;ALG.X&#39;" in text or "KeyError: 'ALG.X'" in text
    assert "token endpoint answered 503" in text and "moodle|c1" in text
    assert "login" in text and EMAIL in text


# -- the command line -----------------------------------------------------------------------
def test_admins_commands(app, db):
    cli = admin_auth.admins
    obj = {"database": lambda: contextlib.nullcontext(db)}
    runner = CliRunner()
    result = runner.invoke(cli, ["add", "Ops@Hub.example.edu"], obj=obj,
                           input="short\nshort\n")
    assert result.exit_code != 0 and "at least 12" in result.output
    result = runner.invoke(cli, ["add", "Ops@Hub.example.edu"], obj=obj,
                           input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    stored = db["admin_accounts"].find_one()
    assert stored["_id"] == "ops@hub.example.edu"
    assert PASSWORD not in json.dumps(stored, default=str)
    assert stored["password_hash"].startswith(("scrypt:", "pbkdf2:"))
    result = runner.invoke(cli, ["add", "ops@hub.example.edu"], obj=obj)
    assert result.exit_code != 0 and "already has an account" in result.output
    result = runner.invoke(cli, ["add", "not-an-email"], obj=obj)
    assert result.exit_code != 0 and "not an email address" in result.output

    result = runner.invoke(cli, ["add", "second@hub.example.edu", "--generate-password"],
                           obj=obj)
    assert result.exit_code == 0
    generated = re.search(r"Password \(shown once\): (\S+)", result.output).group(1)
    client = app.test_client()
    assert login(client, "second@hub.example.edu", generated).status_code == 303
    assert AdminSession.objects(email="second@hub.example.edu").count() == 1

    result = runner.invoke(cli, ["password", "second@hub.example.edu", "--generate-password"],
                           obj=obj)
    assert result.exit_code == 0, result.output
    assert AdminSession.objects(email="second@hub.example.edu").count() == 0  # signed out
    assert client.get("/admin/status").status_code == 302
    newer = re.search(r"Password \(shown once\): (\S+)", result.output).group(1)
    assert login(client, "second@hub.example.edu", generated).status_code == 403
    assert login(client, "second@hub.example.edu", newer).status_code == 303
    result = runner.invoke(cli, ["password", "nobody@hub.example.edu"], obj=obj)
    assert result.exit_code != 0 and "no admin account" in result.output

    result = runner.invoke(cli, ["list", "--json"], obj=obj)
    assert [r["email"] for r in json.loads(result.output)] == ["ops@hub.example.edu",
                                                               "second@hub.example.edu"]
    result = runner.invoke(cli, ["remove", "second@hub.example.edu"], obj=obj)
    assert result.exit_code == 0
    assert AdminSession.objects(email="second@hub.example.edu").count() == 0
    assert client.get("/admin/status").status_code == 302
    result = runner.invoke(cli, ["remove", "second@hub.example.edu"], obj=obj)
    assert result.exit_code != 0 and "no admin account" in result.output
    actions = [a.action for a in AuditEntry.objects.order_by("at")]
    assert actions.count("admin.add") == 2 and "admin.remove" in actions
    assert "admin.password" in actions


def test_masteryhub_cli_has_the_admins_group():
    from masteryhub.cli import main

    assert "admins" in main.commands
