"""The teacher's side, through real launches over HTTP: the class heatmap (legend, sort,
filter), who needs support and why, the review queue (approve / reject / override with
audit), CSV exports, staff-only access and course isolation."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from html import unescape
from types import SimpleNamespace

import pytest
import requests

from lti_tool import roster
from lti_tool.models import Membership
from mappings import evidence as evidence_store
from mappings import records
from mappings.models import Competency

COURSE = "demo|algebra-1-cbe"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
INJECTED_NAME = "=HYPERLINK(\"http://evil.example\",\"x\")"


def launch(browser, platform, **kwargs) -> str:
    """Launch and return the session's base URL (…/lti/s/<token>)."""
    response = browser.launch(platform.prepare(**kwargs))
    assert response.status_code == 303, response.text[:500]
    return response.headers["Location"].rstrip("/")


def ago(days: float) -> str:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def internship(email: str, task: str, *, days: float) -> dict:
    """A supervisor's attestation: the sample rules turn it into pending evidence for
    ALG.3.1 and ALG.3.2 (a teacher must review it)."""
    return {
        "id": str(uuid.uuid4()),
        "actor": {"objectType": "Agent", "name": email.split("@")[0], "mbox": f"mailto:{email}"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed",
                 "display": {"en-US": "completed"}},
        "object": {"id": f"https://internships.example.org/tasks/{task}",
                   "definition": {
                       "type": "https://w3id.org/xapi/masteryhub/activities/internship-task",
                       "name": {"en-US": f"Internship: {task}"},
                       "description": {"en-US": "Built the weekly cost model for the bakery."}}},
        "result": {"success": True, "completion": True},
        "timestamp": ago(days),
    }


def post_statements(tool_url, provider_auth, statements) -> None:
    r = requests.post(tool_url + "/xapi/statements", data=json.dumps(statements),
                      headers=provider_auth | {"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text


@pytest.fixture
def klass(lti_app, tool_url, platform, browser, sample_catalog, provider_auth, run_mapper,
          quiz):
    """Dana's class: Ana (doing well, internship waiting for review), Ben (stuck on ALG.1.1
    and idle for a month), Cy (attempted four below proficient: credit at risk), and a
    learner with a formula for a name — all from the roster, none of them launched."""
    base = launch(browser, platform, role="teacher")
    db = lti_app.extensions["masteryhub.db"]
    db["demo_members"].insert_many([
        {"course": "algebra-1-cbe", "user_id": "demo-learner-cy", "name": "Cy Young",
         "email": "cy@school.example.edu", "status": "Active", "roles": [LIS + "Learner"]},
        {"course": "algebra-1-cbe", "user_id": "demo-learner-eve", "name": INJECTED_NAME,
         "email": "eve@school.example.edu", "status": "Active", "roles": [LIS + "Learner"]}])
    with lti_app.app_context():
        result = roster.import_roster(COURSE)
        assert result.learners == 4
        ids = {m.email.split("@")[0]: m.learner for m in
               Membership.objects(course=COURSE, learner__ne=None)}
    post_statements(tool_url, provider_auth, [
        quiz("ana@school.example.edu", "ALG.1.1", 0.95, when=ago(2), n=1),
        quiz("ana@school.example.edu", "ALG.1.2", 0.9, when=ago(1), n=1),
        quiz("ben@school.example.edu", "ALG.1.1", 0.3, when=ago(40), n=1),
        quiz("ben@school.example.edu", "ALG.1.1", 0.4, when=ago(35), n=2),
        quiz("ben@school.example.edu", "ALG.1.1", 0.5, when=ago(30), n=3),
        quiz("cy@school.example.edu", "ALG.2.1", 0.2, when=ago(3), n=1),
        quiz("cy@school.example.edu", "ALG.2.2", 0.3, when=ago(3), n=1),
        quiz("cy@school.example.edu", "ALG.2.3", 0.1, when=ago(2), n=1),
        quiz("cy@school.example.edu", "ALG.3.1", 0.2, when=ago(1), n=1),
        internship("ana@school.example.edu", "bakery-costs", days=1),
    ])
    run_mapper()
    with lti_app.app_context():
        codes = {c.code: c.identifier for c in Competency.objects}
    return SimpleNamespace(base=base, http=browser.http, db=db, codes=codes, ana=ids["ana"],
                           ben=ids["ben"], cy=ids["cy"], eve=ids["eve"],
                           new_browser=type(browser))


def get(klass, path: str, **params) -> requests.Response:
    return klass.http.get(klass.base + path, params=params, timeout=10)


def row_order(html: str) -> list[str]:
    return re.findall(r'data-testid="row-([^"]+)"', html)


def plain(html: str) -> str:
    """The page's text: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def support_block(html: str, learner: str) -> str:
    match = re.search(rf'data-testid="support-{re.escape(learner)}">(.*?)</ul>', html, re.S)
    return unescape(match.group(1)) if match else ""


# -- the class view ------------------------------------------------------------------------
def test_staff_launch_lands_on_the_class_heatmap_with_a_legend(klass):
    r = klass.http.get(klass.base + "/", timeout=10)  # the launch's landing page
    assert r.status_code == 200 and "/class/" in r.url
    assert r.headers["Server-Timing"].startswith("app;dur=")
    html = r.text
    text = unescape(html)
    assert "Learners \u00d7 competencies" in text
    for name in ("Ana Alvarez", "Ben Brooks", "Cy Young"):
        assert name in text
    # every level of the scale in the legend, with its number and the proficiency marker
    legend = unescape(html.split('data-testid="legend"')[1].split("</div>")[0])
    for n in range(1, 11):
        assert f">{n}" in legend
    assert "Level 7 (Proficient)" in legend and "Level 1 (Beginning)" in legend
    assert "✓" in legend and "No evidence yet" in legend
    # a cell: level number, a tick when proficient, colour class, a link to the history
    ana_row = html.split(f'data-testid="row-{klass.ana}"')[1].split("</tr>")[0]
    first = klass.codes["ALG.1.1"]
    cell = re.search(rf'<a class="hm hm-(\d+)( mastered)?" href="([^"]+/competency/{first})"'
                     rf' aria-label="([^"]+)">([^<]+)</a>', ana_row)
    assert cell, ana_row[:2000]
    assert cell.group(2) == " mastered" and cell.group(5).endswith("✓")
    assert int(cell.group(1)) == int(cell.group(5).rstrip("✓")) >= 7  # 10-level scale
    assert "ALG.1.1" in unescape(cell.group(4)) and "proficient" in cell.group(4)
    # one click to the learner's competency page
    page = klass.http.get(requests.compat.urljoin(r.url, unescape(cell.group(3))), timeout=10)
    assert page.status_code == 200 and "Level over time" in page.text
    # no evidence: a dashed empty cell with a dash
    assert 'class="hm hm-0"' in ana_row
    # the learner's full view one click away
    assert f'/learner/{klass.ana}/"' in ana_row


def test_sort_by_name_proficient_credit_and_one_competency(klass):
    ana, ben, cy, eve = klass.ana, klass.ben, klass.cy, klass.eve
    by_name = row_order(get(klass, "/class/").text)
    assert by_name == [eve, ana, ben, cy]  # "=HYPERLINK…" sorts first
    assert row_order(get(klass, "/class/", sort="name", dir="desc").text) == [cy, ben, ana, eve]
    proficient = row_order(get(klass, "/class/", sort="proficient").text)
    assert proficient[0] == ana  # two proficient; the rest none, then by name
    assert row_order(get(klass, "/class/", sort="credit", dir="desc").text)[0] == ana
    level = row_order(get(klass, "/class/", sort="c:" + klass.codes["ALG.1.1"],
                          dir="desc").text)
    assert level[:2] == [ana, ben]  # Ana proficient, Ben low, the others no evidence
    ascending = row_order(get(klass, "/class/", sort="c:" + klass.codes["ALG.1.1"],
                              dir="asc").text)
    assert ascending[-2:] == [ben, ana]
    # the column headers are the sort links, with aria-sort on the current one
    html = get(klass, "/class/", sort="proficient").text
    assert 'aria-sort="descending"' in html and "sort=name" in html
    assert f"sort=c:{klass.codes['ALG.2.1']}" in html
    for bad in ({"sort": "email"}, {"sort": "c:nope"}, {"dir": "sideways"},
                {"rule": "not-a-credit"}):
        r = get(klass, "/class/", **bad)
        assert r.status_code == 400, bad


def test_filter_by_strand_and_learner_name(klass):
    html = get(klass, "/class/", strand=klass.codes["ALG.2"]).text
    heatmap = html.split('data-testid="heatmap"')[1]
    assert ">ALG.2.1<" in heatmap and ">ALG.2<" in heatmap
    assert ">ALG.1.1<" not in heatmap and ">ALG.3.1<" not in heatmap
    assert len(row_order(html)) == 4
    named = get(klass, "/class/", q="BEN")
    assert row_order(named.text) == [klass.ben]
    assert "Show all" in named.text
    nobody = get(klass, "/class/", q="zz-nobody")
    assert nobody.status_code == 200 and "No learner matches" in unescape(nobody.text)
    assert get(klass, "/class/", strand=klass.codes["ALG.1.1"]).status_code == 400  # a leaf


def test_needs_support_lists_each_learner_with_reasons(klass):
    html = get(klass, "/class/").text
    ben = support_block(html, klass.ben)
    assert "No accepted evidence for 30 days" in ben
    assert "Stuck on ALG.1.1: 3 pieces of accepted evidence" in ben
    assert "proficient is Level 7 (Proficient)" in ben
    cy = support_block(html, klass.cy)
    assert "Algebra I credit at risk: 0 of 13 proficient and 10 needed, but only 9 not " \
           "yet attempted" in cy
    assert "Stuck" not in cy and "No accepted evidence" not in cy
    eve = support_block(html, klass.eve)
    assert "No accepted evidence yet." in eve  # never any evidence counts too
    assert f'data-testid="support-{klass.ana}"' not in html
    # each learner links to their dashboard; the rules are explained on the page
    assert f'/learner/{klass.ben}/"><strong>Ben Brooks' in html
    assert "Even proficiency in everything untouched would not earn it" in unescape(html)
    # thresholds are query parameters
    relaxed = get(klass, "/class/", days=60, stuck=4).text
    assert support_block(relaxed, klass.ben) == ""
    assert "value=\"60\"" in relaxed
    for bad in ({"days": "soon"}, {"days": "0"}, {"stuck": "-1"}):
        r = get(klass, "/class/", **bad)
        assert r.status_code == 400 and "must be" in unescape(r.text), bad


def pending_of(klass, learner: str) -> dict:
    """One of the learner's pending pieces of evidence."""
    return next(e for e in evidence_store.of_learners(klass.db, [learner])
                if e["status"] == "pending")


def test_class_pages_are_for_staff_of_the_course_only(klass, platform, lti_app):
    evidence = pending_of(klass, klass.ana)
    for role in ("learner", "mentor"):
        b = klass.new_browser()
        base = launch(b, platform, role=role)
        for path in ("/class/", "/review", "/export/class.csv", "/export/class-credits.csv"):
            r = b.http.get(base + path, timeout=10)
            assert r.status_code == 403, (role, path)
            assert "teacher" in unescape(r.text)
        r = b.http.post(base + "/review", data={"evidence": evidence["_id"],
                                                "action": "approve"}, timeout=10)
        assert r.status_code == 403
    assert evidence_store.get(klass.db, evidence["_id"])["status"] == "pending"


def test_a_teacher_of_another_course_sees_nothing_of_this_one(klass, platform):
    b = klass.new_browser()
    base = launch(b, platform, role="teacher", context={"id": "other-course",
                                                         "title": "Other"})
    html = b.http.get(base + "/class/", timeout=10).text
    assert "Other" in html and "No learners in this course yet" in html
    for name in ("Ana Alvarez", "Ben Brooks", "Cy Young"):
        assert name not in html
    assert "Nothing waits for review" in b.http.get(base + "/review", timeout=10).text
    evidence = pending_of(klass, klass.ana)
    r = b.http.post(base + "/review", data={"evidence": evidence["_id"], "action": "approve"},
                    timeout=10)
    assert r.status_code == 404
    assert evidence_store.get(klass.db, evidence["_id"])["status"] == "pending"
    assert klass.db["audit"].count_documents({"subject": evidence["_id"]}) == 0
    assert b.http.get(f"{base}/learner/{klass.ana}/", timeout=10).status_code == 403
    assert b.http.get(f"{base}/export/me.csv", params={"learner": klass.ana},
                      timeout=10).status_code == 403
    rows = list(csv.reader(io.StringIO(b.http.get(base + "/export/class.csv",
                                                  timeout=10).content.decode("utf-8-sig"))))
    assert len(rows) == 1  # the header only


# -- the review queue ----------------------------------------------------------------------
def pending_items(html: str) -> list[str]:
    return re.findall(r'name="evidence" value="([^"]+)"', html)


def test_review_queue_shows_the_statement_behind_each_item(klass):
    html = get(klass, "/review").text
    text = unescape(html)
    items = pending_items(html)
    assert len(items) == 2  # the internship attests ALG.3.1 and ALG.3.2
    assert "2 pieces of evidence awaiting" in text
    assert "Ana Alvarez" in text and "Internship" in text
    assert "completed" in text and "Internship: bakery-costs" in text
    assert "Built the weekly cost model for the bakery." in text
    assert "passed, completed" in text  # the result
    for code in ("ALG.3.1", "ALG.3.2"):
        assert code in text
    assert text.count("Level 10 (Distinguished)") >= 2  # override choices from the scale
    for action, label in (("approve", "Approve"), ("reject", "Reject"),
                          ("override", "Override level")):
        assert re.search(rf'name="action" value="{action}"[^>]*>{label}</button>', html)
    # the class view points to the queue
    assert "2 pieces of evidence awaiting review" in plain(get(klass, "/class/").text)


def test_learner_submission_shows_reflection_link_and_file(klass, platform, run_mapper):
    ana = klass.new_browser()
    base = launch(ana, platform, role="learner")
    r = ana.http.post(f"{base}/learner/{klass.ana}/submit", data={
        "competency": klass.codes["ALG.4.1"], "title": "Garden area model",
        "reflection": "I factored x^2 + 5x + 6 to find the garden's dimensions.",
        "link": "https://drive.example.com/ana/garden", "source_type": "project",
        "level": "Level 8 (Proficient+)"},
        files={"file": ("garden.txt", b"(x+2)(x+3)\n", "text/plain")},
        allow_redirects=False, timeout=10)
    assert r.status_code == 303, unescape(r.text)[:500]
    run_mapper()
    html = get(klass, "/review").text
    text = unescape(html)
    assert "Garden area model" in text and "Reflection" in text
    assert "I factored x^2 + 5x + 6" in text
    assert "the learner\u2019s own estimate: Level 8 (Proficient+)" in text
    assert 'href="https://drive.example.com/ana/garden" target="_blank" rel="noopener' in html
    file_link = re.search(r'href="([^"]+/files/[0-9a-f]{32})">garden.txt</a>', html)
    assert file_link, html[-3000:]
    served = klass.http.get(requests.compat.urljoin(klass.base + "/", file_link.group(1)),
                            timeout=10)
    assert served.status_code == 200 and served.content == b"(x+2)(x+3)\n"


def decide(klass, evidence: str, action: str, **form) -> requests.Response:
    return klass.http.post(klass.base + "/review", data={"evidence": evidence,
                                                         "action": action, **form},
                           allow_redirects=False, timeout=10)


def mastery(klass, learner: str, code: str) -> dict:
    return records.mastery_one(klass.db, learner, klass.codes[code]) or {}


def test_approve_counts_the_evidence_and_is_audited(klass, run_mapper):
    items = pending_items(get(klass, "/review").text)
    first = next(i for i in items if f"|{klass.codes['ALG.3.1']}|" in i)
    assert mastery(klass, klass.ana, "ALG.3.1").get("level") is None
    r = decide(klass, first, "approve", comment="Supervisor confirmed.")
    assert r.status_code == 303
    run_mapper()
    evidence = evidence_store.get(klass.db, first)
    assert evidence["status"] == "accepted"
    (action,) = evidence["actions"]
    assert action["action"] == "approve" and action["by"] == "Dana Teacher"
    assert action["comment"] == "Supervisor confirmed."
    assert action["credential"].startswith("lti:") and "demo-teacher" in action["credential"]
    audit = klass.db["audit"].find_one({"subject": first})
    assert audit["actor"] == "Dana Teacher" and audit["action"] == "evidence_approve"
    assert audit["detail"]["previous_status"] == "pending"
    after = mastery(klass, klass.ana, "ALG.3.1")
    assert after["level"] and after["mastered"]  # an attestation counts at mastery
    # the page after the decision says what happened and what it did
    page = klass.http.get(requests.compat.urljoin(klass.base + "/", r.headers["Location"]),
                          timeout=10)
    text = plain(page.text)
    assert "Approved: Ana Alvarez\u2019s evidence for ALG.3.1 , by Dana Teacher, with the " \
           "comment \u201cSupervisor confirmed.\u201d" in text
    assert f"ALG.3.1 is now {after['level']} ." in text
    assert len(pending_items(page.text)) == 1


def test_reject_and_override_with_a_comment(klass, run_mapper):
    items = pending_items(get(klass, "/review").text)
    alg31 = next(i for i in items if f"|{klass.codes['ALG.3.1']}|" in i)
    alg32 = next(i for i in items if f"|{klass.codes['ALG.3.2']}|" in i)
    assert decide(klass, alg32, "reject", comment="Not modelling work.").status_code == 303
    assert decide(klass, alg31, "override", level="Level 5 (Developing)",
                  comment="Partly shown.").status_code == 303
    run_mapper()
    rejected = evidence_store.get(klass.db, alg32)
    assert rejected["status"] == "rejected"
    assert rejected["actions"][-1]["comment"] == "Not modelling work."
    overridden = evidence_store.get(klass.db, alg31)
    assert overridden["status"] == "accepted"
    assert overridden["actions"][-1]["action"] == "override"
    assert overridden["actions"][-1]["points"] == 5
    assert mastery(klass, klass.ana, "ALG.3.1")["level"] == "Level 5 (Developing)"
    assert mastery(klass, klass.ana, "ALG.3.2").get("level") is None
    actions = {a["action"] for a in klass.db["audit"].find({"actor": "Dana Teacher"})}
    assert actions == {"evidence_reject", "evidence_override"}
    # the learner's competency page shows who decided and why
    page = get(klass, f"/learner/{klass.ana}/competency/{klass.codes['ALG.3.1']}")
    assert "override by Dana Teacher: “Partly shown.”" in unescape(page.text)


def test_bad_decisions_are_400_and_change_nothing(klass):
    items = pending_items(get(klass, "/review").text)
    item = items[0]
    cases = [
        ({"action": "delete"}, "Choose Approve, Reject or Override"),
        ({"action": "reject"}, "Say why in a comment"),
        ({"action": "override", "comment": "x"}, "Choose the level"),
        ({"action": "override", "comment": "x", "level": "Level 11 (Genius)"},
         "Choose the level"),
        ({"action": "approve", "level": "Level 5 (Developing)"}, "only chosen with Override"),
        ({"action": "approve", "comment": "x" * 2001}, "longer than 2000"),
    ]
    for form, message in cases:
        r = decide(klass, item, **form)
        assert r.status_code == 400, form
        assert message in unescape(r.text), (form, unescape(r.text)[:800])
    assert decide(klass, "no-such-evidence", "approve").status_code == 404
    assert klass.http.get(klass.base + "/review", params={"decided": "x"},
                          timeout=10).status_code == 200
    # GET is not a decision
    assert klass.http.get(klass.base + "/review", params={"evidence": item,
                                                          "action": "approve"},
                          timeout=10).status_code == 200
    assert len(evidence_store.pending(klass.db)) == 2
    assert klass.db["audit"].count_documents({}) == 0


# -- exports -------------------------------------------------------------------------------
def read_csv(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.content.startswith(b"\xef\xbb\xbf")  # BOM, for Excel
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_class_csv_has_every_learner_and_competency(klass):
    r = get(klass, "/export/class.csv")
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="ALG1-CBE-') and \
        disposition.split(";")[1].strip().endswith('-mastery.csv"')
    rows = read_csv(r)
    assert len(rows) == 4 * 17  # 4 learners x (13 competencies + 4 strands)
    assert list(rows[0]) == ["Learner", "Email", "Learner id", "Competency code",
                             "Competency", "Level", "Level number", "Levels on scale",
                             "Points", "Proficient", "Evidence count", "Last evidence"]
    ana = {row["Competency code"]: row for row in rows if row["Learner id"] == klass.ana}
    assert ana["ALG.1.1"]["Proficient"] == "yes" and ana["ALG.1.1"]["Evidence count"] == "1"
    assert ana["ALG.1.1"]["Email"] == "ana@school.example.edu"
    assert ana["ALG.1.1"]["Level"].startswith("Level ")
    assert int(ana["ALG.1.1"]["Level number"]) >= 7 and ana["ALG.1.1"]["Levels on scale"] == "10"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", ana["ALG.1.1"]["Last evidence"])
    assert ana["ALG.4.4"]["Level"] == "" and ana["ALG.4.4"]["Proficient"] == "no"
    ben = {row["Competency code"]: row for row in rows if row["Learner id"] == klass.ben}
    assert ben["ALG.1.1"]["Evidence count"] == "3"
    # formula injection: the cell is text, not a formula
    eve = [row for row in rows if row["Learner id"] == klass.eve]
    assert eve and all(row["Learner"] == "'" + INJECTED_NAME for row in eve)
    assert not any(v.startswith(("=", "+", "-", "@")) for row in rows for v in row.values())
    credits = read_csv(get(klass, "/export/class-credits.csv"))
    assert len(credits) == 4
    cy = next(c for c in credits if c["Learner id"] == klass.cy)
    assert cy["Credit"] == "Algebra I credit" and cy["Proficient"] == "0"
    assert cy["Needed count"] == "10" and cy["Status"] == "in progress"
    # the class view links both files
    html = get(klass, "/class/").text
    assert "/export/class.csv" in html and "/export/class-credits.csv" in html


def test_a_learner_exports_their_own_record_and_a_mentor_their_mentee(klass, platform):
    ana = klass.new_browser()
    base = launch(ana, platform, role="learner")
    rows = read_csv(ana.http.get(base + "/export/me.csv", timeout=10))
    assert len(rows) == 17 and {r["Learner id"] for r in rows} == {klass.ana}
    assert rows[0]["Learner"] == "Ana Alvarez"
    assert "Ana-Alvarez-" in ana.http.get(base + "/export/me.csv",
                                          timeout=10).headers["Content-Disposition"]
    credits = read_csv(ana.http.get(base + "/export/me-credits.csv", timeout=10))
    assert [c["Credit"] for c in credits] == ["Algebra I credit"]
    assert ana.http.get(base + "/export/me.csv", params={"learner": klass.ben},
                        timeout=10).status_code == 403
    mentor = klass.new_browser()
    mbase = launch(mentor, platform, role="mentor")
    mine = read_csv(mentor.http.get(mbase + "/export/me.csv", params={"learner": klass.ana},
                                    timeout=10))
    assert {r["Learner id"] for r in mine} == {klass.ana}
    only = read_csv(mentor.http.get(mbase + "/export/me.csv", timeout=10))  # one mentee
    assert {r["Learner id"] for r in only} == {klass.ana}
    assert mentor.http.get(mbase + "/export/me.csv", params={"learner": klass.ben},
                           timeout=10).status_code == 403
    # staff may export one learner of their course too (and must say which)
    assert get(klass, "/export/me.csv").status_code == 400
    assert len(read_csv(get(klass, "/export/me.csv", learner=klass.ben))) == 17


def test_csv_cells_are_formula_safe():
    from lti_tool.teacher import safe_cell

    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\t=x", "\r=x"):
        assert safe_cell(text) == "'" + text
    assert safe_cell("Ana") == "Ana" and safe_cell(None) == "" and safe_cell(True) == "yes"
    assert safe_cell(7.0) == "7" and safe_cell(6.25) == "6.25" and safe_cell(3) == "3"
