"""Grades to the LMS (AGS) against the demo platform (lti1p3platform over HTTP): statements
in through the LRS, the mapping worker drained, one sync pass, scores in the platform's
gradebook; failures recorded, shown to the instructor and retried with backoff."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from lti_tool import grades, services
from lti_tool.models import Course, Platform
from lti_tool.sync import FAILURES, GradeSync
from mappings import evidence, records

COURSE = "demo|algebra-1-cbe"
ALG_1_1 = "alg1-1-1"
ALG_1_2 = "alg1-1-2"
RULE = "algebra-1-cbe-credit"
CREDIT = "credit:" + RULE
T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def token_of(response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    match = re.search(r"/lti/s/([^/?#]+)/", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


@pytest.fixture
def new_browser(browser):
    return type(browser)


@pytest.fixture
def db(lti_app):
    return lti_app.extensions["masteryhub.db"]


@pytest.fixture
def course(platform, sample_catalog, lti_app, new_browser):
    """Ana launched (membership); Dana, the teacher, launched (the course exists, and with
    one framework loaded it uses it). Returns the (learner, teacher) session tokens."""
    learner = token_of(new_browser().launch(platform.prepare(role="learner")))
    teacher = token_of(new_browser().launch(platform.prepare(role="teacher")))
    return learner, teacher


@pytest.fixture
def post_statements(lti_app, provider_auth):
    client = lti_app.test_client()

    def post(*statements) -> None:
        r = client.post("/xapi/statements", data=json.dumps(list(statements)),
                        headers=provider_auth | {"Content-Type": "application/json"})
        assert r.status_code == 200, r.data
    return post


def lineitem(db, resource_id: str) -> dict:
    found = list(db["demo_lineitems"].find({"course": "algebra-1-cbe",
                                           "resourceId": resource_id}))
    assert len(found) == 1, (resource_id, found)
    return found[0]


def score(db, resource_id: str, user: str = "demo-learner-ana") -> dict | None:
    return db["demo_scores"].find_one({"lineitem": lineitem(db, resource_id)["id"],
                                       "userId": user})


def learner_of(db, competency: str) -> str:
    """The learner with evidence on the competency (the tests give one learner evidence)."""
    learners = sorted({e["learner"] for e in evidence.all_records(db)
                       if e["competency"] == competency})
    assert len(learners) == 1, learners
    return learners[0]


def test_mastery_and_credit_reach_the_gradebook(course, lti_app, db, quiz, post_statements,
                                                run_mapper):
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.9,
                         when="2030-01-01T09:00:00Z"))
    run_mapper()
    clock = Clock()
    with lti_app.app_context():
        sync = GradeSync(db, name="test", clock=clock)
        result = sync.run_once()
    ana = learner_of(db, ALG_1_1)
    mastery = records.mastery_one(db, ana, ALG_1_1)
    credit = records.credit_one(db, ana, RULE)
    assert not result.failed, result.failed
    posted = {r for _, _, r, _ in result.posted}
    assert {ALG_1_1, CREDIT} <= posted

    item = lineitem(db, ALG_1_1)
    assert item["scoreMaximum"] == 10  # the performance-levels scale's top
    assert item["label"].startswith("ALG.1.1 — Interpret the parts")
    assert item["tag"] == "masteryhub"
    first = score(db, ALG_1_1)
    assert first["scoreGiven"] == pytest.approx(mastery["points"])
    assert first["scoreMaximum"] == 10
    assert first["activityProgress"] == ("Completed" if mastery["mastered"] else "InProgress")
    assert first["gradingProgress"] == "FullyGraded"
    assert first["comment"].startswith(mastery["level"])
    assert first["timestamp"].endswith("Z")

    credit_item = lineitem(db, CREDIT)
    assert credit_item["scoreMaximum"] == 100
    credit_score = score(db, CREDIT)
    assert credit_score["scoreGiven"] == pytest.approx(credit["percent"], abs=0.01)
    assert credit_score["activityProgress"] == "InProgress"
    assert credit_score["gradingProgress"] == "FullyGraded"

    # Nothing changed: nothing posted, and the access token came from the shared cache.
    token = db[services.TOKENS].find_one()
    assert token and token["platform"] == "demo"
    with lti_app.app_context():
        again = sync.run_once()
    assert again.posted == [] and again.failed == []
    assert db[services.TOKENS].find_one()["fetched_at"] == token["fetched_at"]

    # A new result changes the level: posted again, with a newer timestamp.
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.3,
                         when="2030-01-01T10:00:00Z", n=1))
    run_mapper()
    with lti_app.app_context():
        third = sync.run_once()
    mastery = records.mastery_one(db, ana, ALG_1_1)
    assert ALG_1_1 in {r for _, _, r, _ in third.posted}
    second = score(db, ALG_1_1)
    assert second["scoreGiven"] == pytest.approx(mastery["points"]) != first["scoreGiven"]
    assert grades.parse_iso(second["timestamp"]) > grades.parse_iso(first["timestamp"])
    # One line item per resource, however often scores are posted.
    assert db["demo_lineitems"].count_documents({"resourceId": ALG_1_1}) == 1


def test_pending_review_evidence_is_posted_as_pending(course, lti_app, db, post_statements,
                                                     run_mapper):
    post_statements({
        "actor": {"mbox": "mailto:ana@school.example.edu"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
        "object": {"id": "https://internships.example.org/tasks/budget-model",
                   "definition": {"type": "https://w3id.org/xapi/masteryhub/activities/"
                                          "internship-task"}}})
    run_mapper()
    with lti_app.app_context():
        result = GradeSync(db, name="test").run_once()
    assert not result.failed
    pending = score(db, "alg1-3-1")
    assert pending["gradingProgress"] == "Pending"
    assert pending["activityProgress"] == "InProgress"
    assert "scoreGiven" not in pending


def test_a_course_without_line_item_scope_is_not_synced(platform, sample_catalog, lti_app, db,
                                                        quiz, post_statements, run_mapper,
                                                        new_browser):
    scope_only = {"https://purl.imsglobal.org/spec/lti-ags/claim/endpoint": {
        "scope": ["https://purl.imsglobal.org/spec/lti-ags/scope/score"],
        "lineitem": platform.base + "/platform/courses/algebra-1-cbe/lineitems/x"}}
    new_browser().launch(platform.prepare(role="learner", claims=scope_only))
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2030-01-01T09:00:00Z"))
    run_mapper()
    with lti_app.app_context():
        result = GradeSync(db, name="test").run_once()
    assert result.posted == [] and result.failed == []
    assert db["demo_scores"].count_documents({}) == 0


@pytest.fixture
def failing_url() -> Iterator[str]:
    """An HTTP endpoint that always answers 500."""
    def app(environ, start_response):
        return Response("database on fire", status=500)(environ, start_response)

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    thread.join(5)


def test_a_failing_platform_is_retried_with_backoff_and_shown_to_the_instructor(
        course, lti_app, db, quiz, post_statements, run_mapper, failing_url, tool_url,
        new_browser):
    learner, teacher = course
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2030-01-01T09:00:00Z"))
    run_mapper()
    with lti_app.app_context():
        good_url = Platform.objects.get(identifier="demo").auth_token_url
        Platform.objects(identifier="demo").update(set__auth_token_url=failing_url)
    clock = Clock()
    sync = GradeSync(db, name="test", clock=clock)
    with lti_app.app_context():
        first = sync.run_once()
    assert [c for c, _ in first.failed] == [COURSE]
    failure = db[FAILURES].find_one({"_id": COURSE})
    assert failure["attempts"] == 1 and "500" in failure["last_error"]
    assert failure["next_attempt_at"].replace(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=30)

    http = new_browser().http
    status = http.get(f"{tool_url}/lti/s/{teacher}/grades/status", timeout=10)
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "failing" and body["queued"] > 0
    assert "500" in body["failure"]["error"] and body["failure"]["attempts"] == 1
    assert body["failure"]["next_attempt_at"] == "2030-01-01T12:00:30.000Z"
    assert http.get(f"{tool_url}/lti/s/{learner}/grades/status", timeout=10).status_code == 403
    # ... and on the class view, where the instructor looks
    page = http.get(f"{tool_url}/lti/s/{teacher}/class/", timeout=10).text
    assert 'data-testid="gradebook-failing"' in page and "500" in page

    # Before the retry is due the course is left alone; then the delay grows.
    with lti_app.app_context():
        assert sync.run_once().skipped_courses == [COURSE]
        assert db[FAILURES].find_one({"_id": COURSE})["attempts"] == 1
        clock.now = T0 + dt.timedelta(seconds=31)
        sync.run_once()
    failure = db[FAILURES].find_one({"_id": COURSE})
    assert failure["attempts"] == 2
    assert failure["next_attempt_at"].replace(tzinfo=dt.UTC) == clock.now + dt.timedelta(
        seconds=120)

    # The platform recovers: the queued scores go out and the failure is cleared.
    with lti_app.app_context():
        Platform.objects(identifier="demo").update(set__auth_token_url=good_url)
        clock.now += dt.timedelta(seconds=121)
        recovered = sync.run_once()
    assert ALG_1_1 in {r for _, _, r, _ in recovered.posted}
    assert db[FAILURES].find_one({"_id": COURSE}) is None
    body = http.get(f"{tool_url}/lti/s/{teacher}/grades/status", timeout=10).json()
    assert body["status"] == "ok" and body["failure"] is None and body["queued"] == 0


def test_status_needs_a_valid_session(tool_url, new_browser):
    r = new_browser().http.get(f"{tool_url}/lti/s/no-such-session/grades/status", timeout=10)
    assert r.status_code == 401


# -- a platform with lti1p3platform's quirks (line items wrapped, text score bodies) ----------
@pytest.fixture
def quirky_platform() -> Iterator[dict]:
    """A minimal AGS platform answering like lti1p3platform 0.1.8 does."""
    state: dict = {"items": [], "scores": [], "tokens": 0}

    def app(environ, start_response):
        request = Request(environ)
        base = f"http://{request.host}"
        if request.path == "/token":
            state["tokens"] += 1
            body = {"access_token": "t", "token_type": "bearer", "expires_in": 3600}
            return Response(json.dumps(body), content_type="application/json")(
                environ, start_response)
        if request.path == "/lineitems" and request.method == "GET":
            return Response(json.dumps({"content": state["items"]}),
                            content_type="application/json")(environ, start_response)
        if request.path == "/lineitems":
            item = json.loads(request.get_data()) | {
                "id": f"{base}/lineitems/{len(state['items'])}"}
            state["items"].append(item)
            return Response(json.dumps(item), status=201,
                            content_type="application/json")(environ, start_response)
        if request.path.endswith("/scores"):
            state["scores"].append(json.loads(request.get_data()))
            return Response("Score received", content_type="text/plain")(
                environ, start_response)
        return Response("not found", status=404)(environ, start_response)

    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["base"] = f"http://127.0.0.1:{server.server_port}"
    yield state
    server.shutdown()
    thread.join(5)


def test_client_tolerates_wrapped_line_items_and_text_score_bodies(lti_app, db,
                                                                   sample_catalog,
                                                                   quirky_platform):
    from lti_tool.registry import add_platform

    base = quirky_platform["base"]
    with lti_app.app_context():
        add_platform(name="Quirky", issuer=base, client_id="c1", auth_login_url=base + "/auth",
                     auth_token_url=base + "/token", key_set_url=base + "/jwks",
                     identifier="quirky")
        Course(identifier="quirky|c", platform="quirky", context_id="c", ags={
            "scope": [grades.SCOPE_LINEITEM, grades.SCOPE_SCORE],
            "lineitems": base + "/lineitems"}).save()
        course = Course.objects.get(identifier="quirky|c")
        target = grades.targets_of(grades.scope_of(course), sample_catalog)[ALG_1_1]
        connector = services.connector_for("quirky", db=db)
        value = {"scoreMaximum": 10.0, "scoreGiven": 7.0, "activityProgress": "Completed",
                 "gradingProgress": "FullyGraded", "comment": "Level 7 (Proficient)"}
        assert grades.post_score(db, connector, course, target, f"{base}|u1", "l1", value,
                                 T0) == value
        # Found again through the wrapped list once the remembered URL is gone.
        grades.forget_lineitem(db, "quirky|c", ALG_1_1)
        value2 = value | {"scoreGiven": 8.0}
        grades.post_score(db, connector, course, target, f"{base}|u1", "l1", value2, T0)
    assert len(quirky_platform["items"]) == 1
    assert [s["scoreGiven"] for s in quirky_platform["scores"]] == [7.0, 8.0]
    assert quirky_platform["scores"][1]["timestamp"] > quirky_platform["scores"][0]["timestamp"]
    assert quirky_platform["tokens"] == 1  # cached for both calls


def test_backoff_grows_and_is_capped():
    assert [grades.backoff_delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 9)] == \
        [30, 120, 600, 3600, 3600, 3600]


def test_grades_and_roster_commands(course, lti_app, db, quiz, post_statements, run_mapper,
                                    settings, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from masteryhub.cli import main

    for name, value in (("MONGODB_URI", settings.mongodb_uri), ("DB_NAME", settings.db_name),
                        ("DATA_DIR", str(tmp_path / "cli")),
                        ("BASE_URL", "http://localhost")):
        monkeypatch.setenv("MASTERYHUB_" + name, value)
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2030-01-01T09:00:00Z"))
    run_mapper()
    runner = CliRunner()
    out = runner.invoke(main, ["grades", "sync", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert ALG_1_1 in {p["resource"] for p in result["posted"]}
    assert result["rosters"][0]["members"] == 4  # the teacher's launch queued it

    out = runner.invoke(main, ["grades", "sync", "--course", COURSE])
    assert out.exit_code == 0, out.output
    assert "0 score(s) posted" in out.output and "unchanged" in out.output

    out = runner.invoke(main, ["roster", "sync", COURSE, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["members"] == 4
    out = runner.invoke(main, ["roster", "sync", "demo|no-such-course"])
    assert out.exit_code == 1 and "no course" in out.output


def test_one_process_posts_at_a_time(lti_app, db):
    with lti_app.app_context():
        first, second = GradeSync(db, name="a"), GradeSync(db, name="b")
        assert first.run_once() is not None
        assert second.run_once() is None  # the lease is held: it stands by
        first.release()
        assert second.run_once() is not None


def test_changes_are_read_page_by_page_without_skipping_shared_stamps(db, monkeypatch):
    """Many progress documents share a stamp (millisecond resolution, batch writes): paging
    by the stamp alone must neither skip nor repeat any of them."""
    from lti_tool import sync as sync_module

    monkeypatch.setattr(sync_module, "PAGE", 3)
    t = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    stamps = [t] * 7 + [t + dt.timedelta(milliseconds=1)] * 2 + [t + dt.timedelta(seconds=1)]
    db[records.PROGRESS].insert_many([
        {"_id": f"L{i:02d}|f", "learner": f"L{i:02d}", "framework": "f", "updated_at": s,
         "s": b"{}"} for i, s in enumerate(stamps)])
    reader = sync_module.GradeSync(db, overlap=dt.timedelta(0))
    docs, newest, _ = reader._read_changes(records.PROGRESS, None, [], budget=100)
    assert sorted(d["_id"] for d in docs) == [f"L{i:02d}|f" for i in range(10)]
    assert len(docs) == 10 and newest == stamps[-1]
    assert all(d["s"] == b"{}" and d["framework"] == "f" for d in docs)  # for changed_in


def test_only_the_changed_records_of_a_progress_document_are_queued(
        course, lti_app, db, quiz, post_statements, run_mapper):
    """A progress document holds all of a learner's records of a framework and is rewritten
    whole; the sync queues only the records in it stamped since its last read. Cursors of
    an older version (following the mastery and credits collections) are ignored."""
    from lti_tool import sync as sync_module

    future = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    db[sync_module.STATE].insert_one({"_id": sync_module.STATE_ID,
                                      "cursors": {"mastery": future, "credits": future}})
    post_statements(quiz("ana@school.example.edu", "ALG.1.1", 0.9, when="2030-01-01T09:00:00Z"),
                    quiz("ana@school.example.edu", "ALG.1.2", 0.5, when="2030-01-01T09:00:00Z"))
    run_mapper()
    sync = GradeSync(db, name="test", clock=Clock(), overlap=dt.timedelta(0))
    with lti_app.app_context():
        first = sync.run_once()
    assert {ALG_1_1, ALG_1_2, CREDIT} <= {r for _, _, r, _ in first.posted}
    with lti_app.app_context():
        sync.run_once()  # the memberships the first pass imported (the roster)
    assert db[grades.QUEUE].count_documents({}) == 0
    cursors = db[sync_module.STATE].find_one({"_id": sync_module.STATE_ID})["cursors"]
    assert set(cursors) == {"progress", "members"}

    ana = learner_of(db, ALG_1_2)
    before = records.mastery_one(db, ana, ALG_1_1)
    post_statements(quiz("ana@school.example.edu", "ALG.1.2", 0.95,
                         when="2030-01-01T10:00:00Z", n=1))
    run_mapper()
    assert records.mastery_one(db, ana, ALG_1_1) == before  # same document, record as was
    with lti_app.app_context():
        assert sync.detect_changes(sync.acquire()) > 0
    queued = {d["resource"] for d in db[grades.QUEUE].find()}
    assert ALG_1_2 in queued and ALG_1_1 not in queued


def test_without_a_gradebook_course_changes_are_not_read(db):
    from lti_tool import sync as sync_module

    db[records.PROGRESS].insert_one({"_id": "L|f", "learner": "L", "framework": "f",
                                     "updated_at": dt.datetime.now(dt.UTC), "s": b"{}"})
    reader = sync_module.GradeSync(db)
    state = reader.acquire()
    assert reader.detect_changes(state) == 0
    cursors = db[sync_module.STATE].find_one({"_id": sync_module.STATE_ID})["cursors"]
    assert set(cursors) == {"progress", "members"}
