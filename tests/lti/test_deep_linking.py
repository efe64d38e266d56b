"""Deep Linking 2.0 against lti1p3platform: a teacher places views, the platform validates
the signed response, learners are refused, accept_multiple is honoured, and a placed link's
launch lands on its view."""

from __future__ import annotations

import base64
import json
import re
from html import unescape

import jwt
import pytest
from mongoengine.connection import get_db

from lti_tool import keys
from lti_tool.demo_platform import CLIENT_ID, DEPLOYMENT_ID
from mappings.frameworks import sample_framework, save_framework
from mappings.models import Competency

DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"
CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL_REQUEST = "LtiDeepLinkingRequest"


def auto_post_form(html: str) -> tuple[str, dict[str, str]]:
    """The (action, fields) of a self-submitting form, as a browser would post it."""
    action = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert action, html[:500]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    return unescape(action.group(1)), {unescape(k): unescape(v) for k, v in fields}


@pytest.fixture
def catalog(lti_app):
    with lti_app.app_context():
        save_framework(sample_framework())
        return {c.code: c.identifier for c in Competency.objects}


def picker(browser, platform, *, role="teacher", settings: dict | None = None):
    claims = None
    if settings is not None:
        base = {"deep_link_return_url": platform.base + "/platform/deep_link_return",
                "accept_types": ["ltiResourceLink"],
                "accept_presentation_document_targets": ["iframe", "window"],
                "data": "demo-dl"}
        claims = {DL + "deep_linking_settings": base | settings}
    response = browser.launch(platform.prepare(role=role, message_type=DL_REQUEST,
                                               claims=claims))
    assert response.status_code == 303, response.text[:500]
    location = response.headers["Location"]
    return location, browser.http.get(location, timeout=10)


def values(page) -> list[str]:
    return [unescape(v) for v in re.findall(r'name="item" value="([^"]+)"', page.text)]


def placements(lti_app) -> list[dict]:
    with lti_app.app_context():
        return [d["item"] for d in get_db()["demo_placements"].find().sort("at", 1)]


def test_teacher_places_a_competency_and_the_platform_accepts_it(
        platform, browser, lti_app, catalog):
    location, page = picker(browser, platform)
    assert location.endswith("/deep-link")
    assert page.status_code == 200
    offered = values(page)
    assert offered[0] == "dashboard"
    assert f"competency:{catalog['ALG.1.2']}" in offered
    assert "credit:algebra-1-cbe-credit" in offered
    assert "ALG.1.2" in page.text and "Solve linear equations" in page.text
    assert "Algebra I credit" in page.text and 'type="checkbox"' in page.text

    answer = browser.http.post(location, data={"item": f"competency:{catalog['ALG.1.2']}"},
                               timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    action, fields = auto_post_form(answer.text)
    assert action == platform.base + "/platform/deep_link_return"
    token = fields["JWT"]
    header = jwt.get_unverified_header(token)
    with lti_app.app_context():
        assert header["kid"] == keys.active_key().kid
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["iss"] == CLIENT_ID and body["aud"] == [platform.issuer]
    assert body[CLAIM + "message_type"] == "LtiDeepLinkingResponse"
    assert body[CLAIM + "deployment_id"] == DEPLOYMENT_ID
    assert body[DL + "data"] == "demo-dl"

    returned = browser.http.post(action, data=fields, timeout=10)
    assert returned.status_code == 200, returned.text
    (item,) = placements(lti_app)
    assert item["type"] == "ltiResourceLink"
    assert item["title"] == "Mastery Hub: ALG.1.2"
    assert item["url"] == platform.tool + "/lti/launch"
    assert item["custom"] == {"masteryhub_view": "competency",
                              "masteryhub_competency": catalog["ALG.1.2"]}


def test_dashboard_and_credit_items(platform, browser, lti_app, catalog):
    location, _ = picker(browser, platform)
    answer = browser.http.post(location, data={"item": ["dashboard",
                                                        "credit:algebra-1-cbe-credit"]},
                               timeout=10)
    action, fields = auto_post_form(answer.text)
    assert browser.http.post(action, data=fields, timeout=10).status_code == 200
    customs = [i["custom"] for i in placements(lti_app)]
    assert customs == [{"masteryhub_view": "dashboard"},
                       {"masteryhub_view": "credit",
                        "masteryhub_credit": "algebra-1-cbe-credit"}]


@pytest.mark.parametrize("tamper", ["payload", "unsigned", "other key"])
def test_platform_rejects_a_tampered_or_unsigned_response(
        platform, browser, lti_app, catalog, tamper):
    location, _ = picker(browser, platform)
    answer = browser.http.post(location, data={"item": "dashboard"}, timeout=10)
    action, fields = auto_post_form(answer.text)
    token = fields["JWT"]
    body = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    body[DL + "content_items"][0]["custom"]["masteryhub_view"] = "credit"
    if tamper == "payload":  # the original signature over a changed body
        head, _, sig = token.split(".")
        changed = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        forged = f"{head}.{changed}.{sig}"
    elif tamper == "unsigned":
        forged = jwt.encode(body, None, algorithm="none", headers={"kid": header["kid"]})
    else:
        forged = platform.sign(body, headers={"kid": header["kid"]})
    rejected = browser.http.post(action, data={"JWT": forged}, timeout=10)
    assert rejected.status_code == 400 and "rejected" in rejected.text
    assert placements(lti_app) == []


def test_learner_gets_403_on_the_picker(platform, browser, catalog):
    location, page = picker(browser, platform, role="learner")
    assert page.status_code == 403
    assert "Only teachers" in unescape(page.text)
    assert browser.http.post(location, data={"item": "dashboard"},
                             timeout=10).status_code == 403


def test_single_selection_when_the_platform_accepts_one_item(
        platform, browser, lti_app, catalog):
    location, page = picker(browser, platform, settings={"accept_multiple": False})
    assert 'type="radio"' in page.text and 'type="checkbox"' not in page.text
    two = browser.http.post(location, data={"item": ["dashboard",
                                                     "credit:algebra-1-cbe-credit"]},
                            timeout=10)
    assert two.status_code == 400 and "just one" in two.text
    one = browser.http.post(location, data={"item": "dashboard"}, timeout=10)
    action, fields = auto_post_form(one.text)
    assert browser.http.post(action, data=fields, timeout=10).status_code == 200
    assert len(placements(lti_app)) == 1


def test_data_is_omitted_when_the_platform_sent_none(platform, browser, catalog):
    location, _ = picker(browser, platform, settings={"accept_multiple": True,
                                                      "data": None})
    answer = browser.http.post(location, data={"item": "dashboard"}, timeout=10)
    _, fields = auto_post_form(answer.text)
    assert DL + "data" not in jwt.decode(fields["JWT"], options={"verify_signature": False})


@pytest.mark.parametrize("form, message", [
    ({}, "at least one"),
    ({"item": "competency:no-such-thing"}, "not a view of this course"),
    ({"item": ["dashboard", "dashboard"]}, "twice"),
])
def test_bad_selections_are_refused_with_a_message(platform, browser, catalog, form,
                                                   message):
    location, _ = picker(browser, platform)
    r = browser.http.post(location, data=form, timeout=10)
    assert r.status_code == 400 and message in unescape(r.text)
    assert 'role="alert"' in r.text


def test_picker_only_for_deep_linking_launches(platform, browser, catalog):
    response = browser.launch(platform.prepare(role="teacher"))
    home = response.headers["Location"]
    r = browser.http.get(home.rstrip("/") + "/deep-link", timeout=10)
    assert r.status_code == 400


def test_a_platform_that_accepts_no_resource_links_is_refused_at_launch(platform, browser):
    claims = {DL + "deep_linking_settings": {
        "deep_link_return_url": platform.base + "/platform/deep_link_return",
        "accept_types": ["link"], "accept_presentation_document_targets": ["iframe"]}}
    r = browser.launch(platform.prepare(role="teacher", message_type=DL_REQUEST,
                                        claims=claims))
    assert r.status_code == 400 and "resource link placement" in r.text


@pytest.mark.parametrize("custom, view, path, shown", [
    ({"masteryhub_view": "competency", "masteryhub_competency": "alg1-1-2"}, "competency",
     "/competency/alg1-1-2", "ALG.1.2"),
    ({"masteryhub_view": "credit", "masteryhub_credit": "algebra-1-cbe-credit"}, "credit",
     "/", "Algebra I credit"),
    ({"masteryhub_view": "dashboard"}, "dashboard", "/", "My progress"),
])
def test_a_placed_link_lands_on_its_view(platform, browser, catalog, custom, view, path,
                                         shown):
    response = browser.launch(platform.prepare(role="learner", custom=custom))
    assert response.status_code == 303
    location = response.headers["Location"]
    assert f"view={view}" in location
    page = browser.http.get(location, timeout=10)  # the home page sends the learner on
    assert page.status_code == 200
    assert "/learner/" in page.url and page.url.split("#")[0].endswith(path)
    assert shown in page.text


def test_a_plain_launch_lands_on_the_home_page(platform, browser, catalog):
    response = browser.launch(platform.prepare(role="learner",
                                               custom={"masteryhub_view": "bogus"}))
    location = response.headers["Location"]
    assert location.endswith("/") and "view=" not in location
