"""An instructor links the course to frameworks, competencies and credits."""

from __future__ import annotations

from html import unescape

from mappings.frameworks import parse_yaml_framework, save_framework

SECOND = """\
id: biology-cbe
title: Biology (competency-based)
scale: four-level
competencies:
  - {id: bio-1, code: BIO.1, statement: Cells}
  - {id: bio-2, code: BIO.2, statement: Genetics}
credit_rules:
  - {id: bio-credit, name: Biology credit, competencies: all, min_percent: 50}
"""


def launch(browser, platform, **kwargs) -> str:
    response = browser.launch(platform.prepare(**kwargs))
    assert response.status_code == 303
    return response.headers["Location"].rstrip("/")


def test_two_frameworks_need_a_choice_and_the_teacher_makes_it(
        lti_app, platform, browser, sample_catalog):
    with lti_app.app_context():
        save_framework(parse_yaml_framework(SECOND, filename="bio.yaml"))
    base = launch(browser, platform, role="teacher")
    page = browser.http.get(base + "/class/", timeout=10)
    assert 'data-testid="setup-needed"' in page.text  # two frameworks: nothing chosen yet
    setup = browser.http.get(base + "/course", timeout=10)
    assert setup.status_code == 200 and "Biology (competency-based)" in setup.text
    bad = browser.http.post(base + "/course", data={"framework": ["no-such"]}, timeout=10)
    assert bad.status_code == 400 and "does not exist" in unescape(bad.text)
    ok = browser.http.post(base + "/course", data={"framework": ["biology-cbe"],
                                                   "credit": ["bio-credit"]}, timeout=10)
    assert ok.status_code == 200 and "Saved" in ok.text
    page = browser.http.get(base + "/class/", timeout=10).text
    assert 'data-testid="setup-needed"' not in page and "2 competencies" in page


def test_learners_cannot_change_the_course(platform, browser, sample_catalog):
    base = launch(browser, platform, role="learner")
    assert browser.http.get(base + "/course", timeout=10).status_code == 403
    assert browser.http.post(base + "/course", data={"framework": ["algebra-1-cbe"]},
                             timeout=10).status_code == 403
