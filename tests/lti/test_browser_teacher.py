"""The teacher's pages in Chromium, reached through real LTI launches from the demo
platform, checked with axe and saved as screenshots (tests/artifacts/); and the loop a
class runs on: a learner submits evidence in the browser, the teacher approves it in the
review queue, the learner's level changes."""

from __future__ import annotations

import json
import uuid

import pytest
import requests


@pytest.fixture
def evidence(tool_url, sample_catalog, provider_auth, run_mapper, quiz, browser, platform):
    """Ana (launched once, so she is in the class) with quizzes and an internship
    attestation waiting for review."""
    browser.launch(platform.prepare(role="learner"))
    statements = [quiz("ana@school.example.edu", code, score, when=f"2026-10-{d:02d}T10:00:00Z")
                  for d, (code, score) in enumerate([
                      ("ALG.1.1", 0.95), ("ALG.1.2", 0.9), ("ALG.1.1", 0.6), ("ALG.2.1", 0.4)],
                      start=1)]
    statements.append({
        "id": str(uuid.uuid4()),
        "actor": {"name": "ana", "mbox": "mailto:ana@school.example.edu"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed",
                 "display": {"en-US": "completed"}},
        "object": {"id": "https://internships.example.org/tasks/bakery",
                   "definition": {
                       "type": "https://w3id.org/xapi/masteryhub/activities/internship-task",
                       "name": {"en-US": "Bakery cost model"},
                       "description": {"en-US": "Modelled weekly costs with a linear "
                                                "function."}}},
        "timestamp": "2026-10-06T10:00:00Z"})
    r = requests.post(tool_url + "/xapi/statements", data=json.dumps(statements),
                      headers=provider_auth | {"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    run_mapper()


def test_teacher_pages_in_a_browser(page, check_page, platform, evidence):
    page.goto(platform.prepare(role="teacher"))  # the platform auto-posts the launch form
    page.wait_for_url("**/class/")
    assert page.locator("h1").inner_text().startswith("Class")
    assert page.locator("[data-testid=heatmap] tbody tr").count() == 1
    assert "Level 7 (Proficient)" in page.locator("[data-testid=legend]").inner_text()
    check_page(page, "class view")

    # sort by a competency: its header is a link
    page.locator("th.comp a", has_text="ALG.1.2").click()
    page.wait_for_url("**sort=c:*")
    assert page.locator("th[aria-sort=descending]").count() == 1

    page.get_by_role("link", name="Review", exact=True).click()
    page.wait_for_url("**/review")
    assert page.locator("[data-testid=review-item]").count() == 2
    check_page(page, "review queue")

    page.get_by_role("link", name="Class", exact=True).click()
    page.get_by_role("link", name="Ana Alvarez").first.click()
    page.wait_for_url("**/learner/*/")
    assert "Ana Alvarez" in page.locator("h1").inner_text()
    check_page(page, "learner view")


def test_submit_approve_and_the_level_changes(page, check_page, platform, sample_catalog,
                                              run_mapper):
    # the learner: sets a goal, then submits evidence for ALG.3.1 (nothing there yet)
    page.goto(platform.prepare(role="learner"))
    page.wait_for_url("**/learner/*/")
    row = page.locator("[data-testid='competency-ALG.3.1']")
    assert "No evidence yet" in row.inner_text()
    page.locator("#goals input[type=checkbox]").first.check()
    page.get_by_role("button", name="Save my goals").click()
    page.wait_for_url("**/learner/*/#goals")
    assert page.locator("[data-testid=goals] li").count() == 1

    page.get_by_role("link", name="Submit evidence").click()
    page.wait_for_url("**/submit")
    page.get_by_label("Competency").select_option(label=page.locator(
        "#competency option", has_text="ALG.3.1").inner_text())
    page.get_by_label("Title").fill("Phone plan comparison")
    page.get_by_label("Reflection").fill("I compared two phone plans with linear functions "
                                         "and found where they cross.")
    page.get_by_label("Link to your work").fill("https://docs.example.com/ana/phone-plans")
    page.get_by_label("Where does it come from?").select_option("project")
    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_url("**submitted=1")
    run_mapper()

    # the teacher approves it in the review queue
    page.goto(platform.prepare(role="teacher"))
    page.wait_for_url("**/class/")
    page.get_by_role("link", name="Review", exact=True).click()
    item = page.locator("[data-testid=review-item]", has_text="Phone plan comparison")
    assert "found where they cross" in item.inner_text()
    item.get_by_label("Comment for the learner").fill("Clear reasoning.")
    item.get_by_role("button", name="Approve").click()
    page.wait_for_url("**decided=*")
    assert "Approved" in page.locator("[data-testid=decided]").inner_text()
    check_page(page, "review decided")
    run_mapper()

    # the learner's level on ALG.3.1 has changed
    page.goto(platform.prepare(role="learner"))
    page.wait_for_url("**/learner/*/")
    text = page.locator("[data-testid='competency-ALG.3.1']").inner_text()
    assert "No evidence yet" not in text and "Level 7 (Proficient)" in text
