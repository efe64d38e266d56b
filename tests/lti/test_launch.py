"""LTI 1.3 login and launch against lti1p3platform acting as the platform: every role,
the valid variants of the certification suite, and every bad payload rejected with a
clear page (and a replayed id_token refused)."""

from __future__ import annotations

import time
from html import unescape

import jwt
import pytest
from jwcrypto import jwk

from lti_tool.demo_platform import CLIENT_ID, LIS
from lti_tool.models import LaunchSession, Membership
from mappings.models import Learner

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"


def landing(browser, response):
    assert response.status_code == 303, (response.status_code, response.text[:800])
    page = browser.http.get(response.headers["Location"], timeout=10)
    assert page.status_code == 200
    return page


def me(browser, response) -> dict:
    location = response.headers["Location"]
    return browser.http.get(location.rstrip("/") + "/me", timeout=10).json()


@pytest.mark.parametrize("role, expected", [
    ("learner", ["learner"]), ("teacher", ["instructor"]), ("mentor", ["mentor"]),
    ("admin", ["administrator", "instructor"])])
def test_launch_for_every_role(platform, browser, lti_app, role, expected):
    response = browser.launch(platform.prepare(role=role))
    page = landing(browser, response)
    assert "Mastery Hub" in page.text and "Algebra I" in page.text
    info = me(browser, response)
    assert info["roles"] == expected
    assert info["course"] == "demo|algebra-1-cbe"
    assert info["deployment"] == "demo-deployment"


def test_learner_is_linked_by_email_and_lms_account(platform, browser, lti_app):
    info = me(browser, browser.launch(platform.prepare(role="learner")))
    with lti_app.app_context():
        learner = Learner.objects(identifier=info["learner"]).first()
        assert f"acct|{platform.issuer}|demo-learner-ana" in learner.agents
        assert "mbox|mailto:ana@school.example.edu" in learner.agents
        member = Membership.objects(course="demo|algebra-1-cbe").first()
        assert member.learner == info["learner"] and member.roles == ["learner"]


def test_mentor_sees_only_the_learners_in_role_scope_mentor(platform, browser, lti_app):
    ana = me(browser, browser.launch(platform.prepare(role="learner")))["learner"]
    mentor = me(browser, browser.launch(platform.prepare(role="mentor")))
    assert mentor["roles"] == ["mentor"] and mentor["mentees"] == [ana]


def test_login_by_post_as_moodle_does(platform, browser):
    url = platform.prepare(role="learner")
    base, query = url.split("?", 1)
    from urllib.parse import parse_qsl

    r = browser.http.post(base, data=dict(parse_qsl(query)), allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"].startswith(platform.base)


def test_replayed_id_token_is_rejected(platform, browser):
    action, fields = browser.start(platform.prepare(role="learner"))
    assert browser.post(action, fields).status_code == 303
    again = browser.post(action, fields)
    assert again.status_code == 401
    assert "already used" in again.text


def test_launch_without_the_browsers_state_cookie_is_refused(platform, browser):
    action, fields = browser.start(platform.prepare(role="learner"))
    browser.http.cookies.clear()
    r = browser.post(action, fields)
    assert r.status_code == 401 and "new window" in r.text


def test_session_pages_need_the_token(platform, browser, tool_url):
    r = browser.http.get(tool_url + "/lti/s/not-a-real-token/", timeout=10)
    assert r.status_code == 401 and "Launch the tool again" in r.text


@pytest.mark.parametrize("label, change", [
    ("multiple roles", {CLAIM + "roles": [LIS + "Learner", LIS + "Mentor"]}),
    ("short role names", {CLAIM + "roles": ["Learner"]}),
    ("unknown role", {CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Unknown"]}),
    ("no role", {CLAIM + "roles": []}),
])
def test_valid_role_variants_are_accepted(platform, browser, label, change):
    response = browser.launch(platform.prepare(role="learner", claims=change))
    landing(browser, response)
    assert "learner" in me(browser, response)["roles"]


def test_no_personal_data_is_accepted(platform, browser):
    response = browser.launch(platform.prepare(role="learner", name="", email=""))
    landing(browser, response)
    info = me(browser, response)
    assert info["name"] is None and info["learner"]


def test_no_context_is_accepted(platform, browser):
    response = browser.launch(platform.prepare(role="learner", context=None))
    landing(browser, response)
    assert me(browser, response)["course"] is None


# -- the certification suite's bad payloads ----------------------------------------------
def resign(platform, fields: dict, *, change: dict | None = None, drop=(),
           headers: dict | None = None, key: str | None = None, expires_in: int = 300,
           iat: int | None = None) -> dict:
    body = jwt.decode(fields["id_token"], options={"verify_signature": False})
    body.pop("iat", None)
    body.pop("exp", None)
    body.update(change or {})
    for name in drop:
        body.pop(name, None)
    token = platform.sign(body, headers=headers, key=key, expires_in=expires_in, iat=iat)
    return dict(fields, id_token=token)


OTHER_KEY = jwk.JWK.generate(kty="RSA", size=2048).export_to_pem(True, None).decode()


@pytest.mark.parametrize("label, kwargs, message", [
    ("no kid", {"headers": {}}, "key id (kid)"),
    ("unknown kid", {"headers": {"kid": "no-such-key"}}, "no key with the launch token's key id"),
    ("wrong LTI version", {"change": {CLAIM + "version": "1.2.0"}}, "LTI version"),
    ("no LTI version", {"drop": [CLAIM + "version"]}, "LTI version"),
    ("expired", {"expires_in": -3600, "iat": int(time.time()) - 7200}, "expired"),
    ("issued in the future", {"iat": int(time.time()) + 3600, "expires_in": 7200}, "future"),
    ("no message_type", {"drop": [CLAIM + "message_type"]}, "message_type"),
    ("no roles claim", {"drop": [CLAIM + "roles"]}, "roles claim"),
    ("no deployment_id", {"drop": [CLAIM + "deployment_id"]}, "deployment_id"),
    ("no resource link id", {"change": {CLAIM + "resource_link": {"title": "x"}}},
     "resource link id"),
    ("no sub", {"drop": ["sub"]}, "no user (sub)"),
    ("wrong aud", {"change": {"aud": "someone-else", "azp": "someone-else"}},
     "registration"),
    ("extra aud without azp", {"change": {"aud": [CLIENT_ID, "other"], "azp": "other"}},
     "azp"),
    ("bad signature", {"key": OTHER_KEY}, "signature"),
])
def test_bad_payloads_are_rejected_with_a_clear_page(platform, browser, label, kwargs, message):
    action, fields = browser.start(platform.prepare(role="learner"))
    r = browser.post(action, resign(platform, fields, **kwargs))
    assert 400 <= r.status_code < 500, (label, r.status_code, r.text[:500])
    assert message in unescape(r.text), (label, r.text[r.text.find("role=\"alert\""):][:300])
    assert "<h1>" in r.text  # a page for a person, not a traceback


def test_rejected_launch_creates_no_session(platform, browser, lti_app):
    action, fields = browser.start(platform.prepare(role="learner"))
    browser.post(action, resign(platform, fields, key=OTHER_KEY))
    with lti_app.app_context():
        assert LaunchSession.objects.count() == 0


def test_unknown_issuer_at_login_is_refused(platform, browser, tool_url):
    r = browser.http.get(tool_url + "/lti/login", params={
        "iss": "https://evil.example.com", "login_hint": "x"}, timeout=10)
    assert r.status_code == 401 and "no active registration" in r.text


def test_expired_login_states_and_sessions_are_purged(platform, browser, lti_app):
    import datetime as dt

    from lti_tool.launch import purge_expired
    from lti_tool.models import LoginState

    response = browser.launch(platform.prepare(role="learner"))
    assert response.status_code == 303
    browser.start(platform.prepare(role="learner"))  # a login that never completes
    with lti_app.app_context():
        assert LoginState.objects.count() == 1 and LaunchSession.objects.count() == 1
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        LoginState.objects.update(set__expires_at=past)
        assert purge_expired() == 1
        LaunchSession.objects.update(set__expires_at=past)
        assert purge_expired() == 1
        assert LaunchSession.objects.count() == 0


def test_an_email_never_merges_another_lms_users_record(platform, browser, lti_app):
    """Families share emails and LMSs allow duplicates: a second LMS user with Ana's email
    gets a record of their own, and a mentor's email never joins anything."""
    ana = me(browser, browser.launch(platform.prepare(role="learner")))["learner"]
    twin = me(browser, browser.launch(platform.prepare(
        role="learner", user="demo-learner-twin", email="ana@school.example.edu")))["learner"]
    parent = me(browser, browser.launch(platform.prepare(
        role="mentor", email="ana@school.example.edu")))["learner"]
    assert len({ana, twin, parent}) == 3
    with lti_app.app_context():
        assert "mbox|mailto:ana@school.example.edu" in Learner.objects.get(identifier=ana).agents
        assert Learner.objects(identifier=ana).count() == 1


def test_a_record_only_providers_know_joins_the_learner_at_first_launch(
        platform, browser, lti_app):
    """Statements from an internship platform arrived before Ana's first launch: her
    email brings that record (and its evidence) into her LMS identity."""
    from mappings.identity import IdentityCache

    with lti_app.app_context():
        early = IdentityCache().resolve({"mbox": "mailto:ana@school.example.edu"})
    ana = me(browser, browser.launch(platform.prepare(role="learner")))["learner"]
    with lti_app.app_context():
        assert Learner.objects(identifier=early).count() == 0  # merged into ana
        agents = Learner.objects.get(identifier=ana).agents
        assert "mbox|mailto:ana@school.example.edu" in agents


@pytest.mark.parametrize("change, message", [
    ({CLAIM + "context": "algebra"}, "context claim must be an object"),
    ({CLAIM + "custom": ["x"]}, "custom claim must be an object"),
    ({CLAIM + "roles": LIS + "Learner"}, "roles claim must be an array"),
    ({CLAIM + "resource_link": "r1"}, "resource_link claim must be an object"),
    ({"email": ["a@b.c"]}, "email claim must be a string"),
])
def test_signed_claims_of_the_wrong_type_are_refused_by_name(platform, browser, change,
                                                              message):
    action, fields = browser.start(platform.prepare(role="learner"))
    r = browser.post(action, resign(platform, fields, change=change))
    assert r.status_code == 400 and message in unescape(r.text)


def test_a_disabled_platform_ends_its_sessions(platform, browser, lti_app):
    response = browser.launch(platform.prepare(role="learner"))
    home = response.headers["Location"]
    assert browser.http.get(home + "me", timeout=10).status_code == 200
    with lti_app.app_context():
        from lti_tool.models import Platform

        Platform.objects(identifier="demo").update(set__status="disabled")
    assert browser.http.get(home + "me", timeout=10).status_code == 401


def test_a_teacher_launch_without_a_course_gets_a_page(platform, browser):
    response = browser.launch(platform.prepare(role="teacher", context=None))
    page = browser.http.get(response.headers["Location"], timeout=10)
    assert page.status_code == 200 and "instructor" in page.text
