"""The learner's side, through real launches: dashboard, a competency's history, goals,
submitting evidence (an xAPI statement through the LRS, then the review queue), and who
may see whose record."""

from __future__ import annotations

import json
from html import unescape

import pytest

from mappings import evidence as evidence_store


@pytest.fixture
def ana_with_evidence(lti_app, tool_url, sample_catalog, provider_auth, run_mapper, quiz):
    import requests

    statements = [quiz("ana@school.example.edu", code, score, when=f"2026-10-0{i + 1}T10:00:00Z")
                  for i, (code, score) in enumerate([("ALG.1.1", 0.95), ("ALG.1.2", 0.9),
                                                     ("ALG.1.1", 0.5), ("ALG.2.1", 0.3)])]
    r = requests.post(tool_url + "/xapi/statements", data=json.dumps(statements),
                      headers=provider_auth | {"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    run_mapper()


def launch(browser, platform, **kwargs) -> str:
    """Launch and return the session's base URL (…/lti/s/<token>)."""
    response = browser.launch(platform.prepare(**kwargs))
    assert response.status_code == 303, response.text[:500]
    return response.headers["Location"].rstrip("/")


def me(browser, base) -> dict:
    return browser.http.get(base + "/me", timeout=10).json()


def test_learner_dashboard_shows_levels_credit_evidence_and_next_steps(
        platform, browser, ana_with_evidence):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    page = browser.http.get(f"{base}/learner/{learner}/", timeout=10)
    assert page.status_code == 200
    text = unescape(page.text)
    assert "My progress" in text and "Algebra I credit" in text
    assert "of 13 proficient, 70% needed" in text
    # the tree: a level for ALG.1.1 (two quizzes), nothing yet for ALG.3.1
    assert 'data-testid="competency-ALG.1.1"' in text and "level" in text
    assert "No evidence yet" in text
    # evidence with its source and date; next steps in learning-path order
    assert "Online course" in text and "01 Oct 2026" in text
    assert "What to work on next" in text


def test_competency_page_has_a_timeline_chart_and_table(lti_app, platform, browser,
                                                        ana_with_evidence):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    from mappings.models import Competency

    with lti_app.app_context():
        competency = Competency.objects(code="ALG.1.1").first().identifier
    page = browser.http.get(f"{base}/learner/{learner}/competency/{competency}", timeout=10)
    assert page.status_code == 200
    assert "<svg" in page.text and 'role="img"' in page.text
    assert page.text.count("<circle") == 2  # one point per accepted evidence
    assert ">mastery</text>" in page.text


def test_goals_are_saved_for_the_learner_only(platform, browser, ana_with_evidence):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    page = browser.http.get(f"{base}/learner/{learner}/", timeout=10).text
    import re

    first = re.search(r'name="competency" value="([^"]+)"', page).group(1)
    r = browser.http.post(f"{base}/learner/{learner}/goals", data={"competency": [first]},
                          allow_redirects=True, timeout=10)
    assert r.status_code == 200 and 'data-testid="goals"' in r.text
    bad = browser.http.post(f"{base}/learner/{learner}/goals",
                            data={"competency": ["not-in-course"]}, timeout=10)
    assert bad.status_code == 400


def test_submission_becomes_a_statement_and_pending_evidence(
        lti_app, platform, browser, sample_catalog, run_mapper):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    form = browser.http.get(f"{base}/learner/{learner}/submit", timeout=10).text
    import re

    competency = re.search(r'<option value="([^"]+)"[^>]*>ALG.3.1', form).group(1)
    # bad input: a clear 400 listing every problem, nothing stored
    bad = browser.http.post(f"{base}/learner/{learner}/submit",
                            data={"competency": competency, "title": "", "reflection": "short"},
                            timeout=10)
    assert bad.status_code == 400
    assert "Give your evidence a title" in unescape(bad.text)
    assert "Add a link or a file" in unescape(bad.text)
    ok = browser.http.post(f"{base}/learner/{learner}/submit", data={
        "competency": competency, "title": "Bakery budget model",
        "reflection": "I modelled the bakery's weekly costs with a linear function.",
        "source_type": "internship"},
        files={"file": ("model.csv", b"week,cost\n1,120\n2,135\n", "text/csv")},
        allow_redirects=False, timeout=10)
    assert ok.status_code == 303, unescape(ok.text)[:1000]
    run_mapper()
    db = lti_app.extensions["masteryhub.db"]
    (evidence,) = evidence_store.of_learners(db, [learner])
    assert evidence["status"] == "pending" and evidence["source_type"] == "internship"
    assert evidence["competency"] == competency
    stmt = db["lrs_statements"].find_one({"sid": evidence["statement"]})
    assert stmt is not None  # it went through the LRS
    dashboard = browser.http.get(f"{base}/learner/{learner}/", timeout=10).text
    assert "awaiting review" in dashboard
    # the statement's attachment names the file by an address that only explains itself
    # outside a launch: the file stays behind the access checks
    file_url = json.loads(stmt["j"])["attachments"][0]["fileUrl"]
    outside = browser.http.get(file_url, timeout=10)
    assert outside.status_code == 401 and "Open it from Mastery Hub" in unescape(outside.text)


def test_mentor_sees_their_learner_read_only_and_nobody_else(
        platform, browser, ana_with_evidence):
    ben_browser = type(browser)()
    ben = me(ben_browser, launch(ben_browser, platform, role="learner",
                                 user="demo-learner-ben"))["learner"]
    ana_browser = type(browser)()
    ana = me(ana_browser, launch(ana_browser, platform, role="learner"))["learner"]
    base = launch(browser, platform, role="mentor")
    # one mentee: straight to her dashboard
    home = browser.http.get(base + "/mentees", timeout=10)
    assert home.status_code == 200 and "read-only" in home.text
    assert f"/learner/{ana}/" in home.url
    assert "Save my goals" not in home.text and "Submit evidence" not in home.text
    assert ">My progress<" not in home.text and ">My learners<" in home.text
    assert browser.http.get(f"{base}/learner/{ben}/", timeout=10).status_code == 403
    # a learner cannot open another learner's record either
    assert ana_browser.http.get(
        f"{launch(ana_browser, platform, role='learner')}/learner/{ben}/",
        timeout=10).status_code == 403


def test_learner_cannot_submit_for_someone_else(platform, browser, ana_with_evidence):
    base = launch(browser, platform, role="learner")
    r = browser.http.post(f"{base}/learner/Lsomeoneelse/submit", data={}, timeout=10)
    assert r.status_code == 403


def test_teacher_links_only_free_identifiers_to_a_learner(
        lti_app, platform, browser, sample_catalog, provider_auth, run_mapper, quiz):
    ana = me(type(browser)(), launch(type(browser)(), platform, role="learner"))["learner"]
    import requests

    # an internship platform knows Ana only by her personal email
    r = requests.post(browser_base(platform) + "/xapi/statements",
                      data=json.dumps([quiz("ana.alvarez@gmail.example", "ALG.1.3", 0.9,
                                            when="2026-10-10T10:00:00Z")]),
                      headers=provider_auth | {"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200
    run_mapper()
    teacher = launch(browser, platform, role="teacher")
    bad = browser.http.post(f"{teacher}/learner/{ana}/aliases",
                            data={"kind": "email", "email": "not an email"}, timeout=10)
    assert bad.status_code == 400
    # that email is already a learner record of its own (created by the statement): refused
    taken = browser.http.post(f"{teacher}/learner/{ana}/aliases",
                              data={"kind": "email", "email": "ana.alvarez@gmail.example"},
                              timeout=10)
    assert taken.status_code == 409
    fresh = browser.http.post(f"{teacher}/learner/{ana}/aliases",
                              data={"kind": "email", "email": "ana@internship.example"},
                              allow_redirects=False, timeout=10)
    assert fresh.status_code == 303
    with lti_app.app_context():
        from mappings.models import Learner

        assert "mbox|mailto:ana@internship.example" in Learner.objects.get(
            identifier=ana).agents
    page = browser.http.get(f"{teacher}/learner/{ana}/", timeout=10).text
    assert "<title>ana — Mastery Hub</title>" in page or "<title>Ana Alvarez — Mastery Hub" \
        "</title>" in page, page[:400]
    assert page.count('id="identity"') == 1 and "mbox|mailto:ana@internship.example" in page
    learner_browser = type(browser)()
    base = launch(learner_browser, platform, role="learner")
    assert learner_browser.http.post(f"{base}/learner/{ana}/aliases",
                                     data={"kind": "email", "email": "x@y.example"},
                                     timeout=10).status_code == 403


def browser_base(platform) -> str:
    return platform.tool


def test_pages_in_a_launch_send_no_referer_and_are_not_cached(platform, browser,
                                                              sample_catalog):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    for path in (f"/learner/{learner}/", f"/learner/{learner}/submit", "/course"):
        r = browser.http.get(base + path, timeout=10)
        assert r.headers["Referrer-Policy"] == "same-origin", path
        assert r.headers["Cache-Control"] == "no-store", path


def test_an_upload_over_the_limit_gets_a_clear_413(platform, browser, sample_catalog):
    base = launch(browser, platform, role="learner")
    learner = me(browser, base)["learner"]
    r = browser.http.post(f"{base}/learner/{learner}/submit",
                          data={"title": "big", "reflection": "x" * 30},
                          files={"file": ("big.bin", b"0" * (6 * 1024 * 1024))}, timeout=30)
    assert r.status_code == 413 and "larger than 5 MB" in r.text
