"""The learner's and mentor's pages in Chromium, each reached through a real LTI launch
from the demo platform, checked with axe and saved as screenshots (tests/artifacts/)."""

from __future__ import annotations

import json

import pytest
import requests


@pytest.fixture
def evidence(tool_url, sample_catalog, provider_auth, run_mapper, quiz):
    statements = [quiz("ana@school.example.edu", code, score, when=f"2026-10-{d:02d}T10:00:00Z")
                  for d, (code, score) in enumerate([
                      ("ALG.1.1", 0.95), ("ALG.1.2", 0.9), ("ALG.1.1", 0.6), ("ALG.1.1", 0.85),
                      ("ALG.2.1", 0.4), ("ALG.2.2", 0.75)], start=1)]
    r = requests.post(tool_url + "/xapi/statements", data=json.dumps(statements),
                      headers=provider_auth | {"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    run_mapper()


def test_learner_pages_in_a_browser(page, check_page, platform, evidence):
    page.goto(platform.prepare(role="learner"))
    page.wait_for_url("**/learner/*/")
    assert page.locator("h1").inner_text().startswith("My progress")
    assert "of 13 proficient, 70% needed" in page.inner_text("main")
    check_page(page, "dashboard")

    # one click to a competency's history: a chart with one point per accepted evidence
    page.get_by_role("link", name="ALG.1.1", exact=False).first.click()
    page.wait_for_url("**/competency/*")
    assert page.locator("svg.timeline circle").count() == 3
    check_page(page, "competency")

    # goals: tick the first suggestion and save
    page.go_back()
    page.locator("#goals input[type=checkbox]").first.check()
    page.get_by_role("button", name="Save my goals").click()
    page.wait_for_url("**/learner/*/#goals")
    assert page.locator("[data-testid=goals] li").count() == 1

    page.get_by_role("link", name="Submit evidence").click()
    check_page(page, "submit evidence")
    page.get_by_role("button", name="Submit for review").click()  # empty: browser blocks it
    assert "/submit" in page.url


def test_mentor_page_in_a_browser(page, check_page, platform, evidence, browser):
    browser.launch(platform.prepare(role="learner"))  # Ana has launched once: she exists
    page.goto(platform.prepare(role="mentor"))
    page.wait_for_url("**/learner/*/")
    assert "read-only" in page.inner_text("main")
    assert page.get_by_role("button", name="Save my goals").count() == 0
    check_page(page, "mentor dashboard")
