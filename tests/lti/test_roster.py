"""Roster (NRPS) from the demo platform: queued by an instructor's launch and imported by
the sync loop, refreshed on demand by staff only, members who left marked Inactive, and
every endpoint scoped to the session's own course."""

from __future__ import annotations

import re

import pytest

from lti_tool import roster
from lti_tool.demo_platform import LIS
from lti_tool.models import Membership
from lti_tool.sync import GradeSync
from mappings import evidence
from mappings.models import Learner

COURSE = "demo|algebra-1-cbe"
CAL = {"course": "algebra-1-cbe", "user_id": "demo-learner-cal", "name": "Cal Chen",
       "email": "cal@school.example.edu", "status": "Active", "roles": [LIS + "Learner"]}


def token_of(response) -> str:
    assert response.status_code == 303, (response.status_code, response.text[:500])
    match = re.search(r"/lti/s/([^/?#]+)/", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


@pytest.fixture
def launch(platform, browser):
    def run(**kwargs) -> str:
        return token_of(type(browser)().launch(platform.prepare(**kwargs)))
    return run


@pytest.fixture
def db(lti_app):
    return lti_app.extensions["masteryhub.db"]


@pytest.fixture
def http(browser):
    return browser.http


def test_instructor_launch_queues_and_one_pass_imports_the_roster(launch, lti_app, db,
                                                                   tool_url, http):
    launch(role="learner")
    assert db[roster.QUEUE].find_one({"_id": COURSE}) is None  # learners do not queue
    teacher = launch(role="teacher")
    assert db[roster.QUEUE].find_one({"_id": COURSE})["queued_at"] is not None
    with lti_app.app_context():
        result = GradeSync(db, name="test").run_once()
        members = {m.user.split("|", 1)[1]: m for m in Membership.objects(course=COURSE)}
        ben = members["demo-learner-ben"]
        assert ben.source == "roster" and ben.status == "Active" and ben.roles == ["learner"]
        assert "mbox|mailto:ben@school.example.edu" in Learner.objects.get(
            identifier=ben.learner).agents
        assert members["demo-teacher"].learner is None  # not a learner of the course
        assert members["demo-learner-ana"].learner  # linked, the same as at her launch
    assert [(r.course, r.members, r.learners) for r in result.rosters] == [(COURSE, 4, 2)]
    assert db[roster.QUEUE].find_one({"_id": COURSE})["queued_at"] is None
    assert evidence.of_learners(db, [ben.learner]) == []

    # The class roster lists Ben, who never launched and has no evidence yet.
    listed = http.get(f"{tool_url}/lti/s/{teacher}/roster", timeout=10).json()
    learners = [m["name"] for m in listed["members"] if "learner" in m["roles"]]
    assert learners == ["Ana Alvarez", "Ben Brooks"]
    assert listed["sync"]["counts"]["members"] == 4

    # Another instructor launch soon after does not queue the import again.
    launch(role="teacher")
    assert db[roster.QUEUE].find_one({"_id": COURSE})["queued_at"] is None


def test_refresh_on_demand_marks_members_who_left_inactive(launch, lti_app, db, tool_url,
                                                          http):
    teacher = launch(role="teacher")
    db["demo_members"].insert_one(dict(CAL))
    url = f"{tool_url}/lti/s/{teacher}/roster/refresh"
    r = http.post(url, timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["members"] == 5 and r.json()["learners"] == 3
    db["demo_members"].delete_many({"user_id": "demo-learner-cal"})
    r = http.post(url, timeout=15)
    assert r.status_code == 200 and r.json()["inactive"] == 1 and r.json()["members"] == 4
    with lti_app.app_context():
        cal = Membership.objects(course=COURSE, user__endswith="|demo-learner-cal").get()
        assert cal.status == "Inactive"  # kept, not deleted
        assert cal.learner  # the learner record (and its history) stays linked
    listed = http.get(f"{tool_url}/lti/s/{teacher}/roster", timeout=10).json()["members"]
    assert [m["status"] for m in listed if m["name"] == "Cal Chen"] == ["Inactive"]


def test_roster_endpoints_are_for_the_courses_staff_only(launch, tool_url, http, db):
    learner = launch(role="learner")
    for method, path in (("post", "roster/refresh"), ("get", "roster"),
                         ("get", "grades/status")):
        r = getattr(http, method)(f"{tool_url}/lti/s/{learner}/{path}", timeout=10)
        assert r.status_code == 403, (path, r.status_code)
    assert db["lti_memberships"].count_documents({"source": "roster"}) == 0
    r = http.post(f"{tool_url}/lti/s/not-a-session/roster/refresh", timeout=10)
    assert r.status_code == 401


def test_an_instructor_of_another_course_sees_only_that_course(launch, lti_app, db, tool_url,
                                                                http):
    teacher = launch(role="teacher")
    assert http.post(f"{tool_url}/lti/s/{teacher}/roster/refresh", timeout=15).ok
    other = launch(role="teacher", context={"id": "geometry-1", "title": "Geometry"})
    listed = http.get(f"{tool_url}/lti/s/{other}/roster", timeout=10).json()
    assert listed["course"] == "demo|geometry-1"
    assert all("algebra" not in m["user"] for m in listed["members"])
    assert [m["name"] for m in listed["members"]] == ["Dana Teacher"]
    status = http.get(f"{tool_url}/lti/s/{other}/grades/status", timeout=10).json()
    assert status["course"] == "demo|geometry-1" and status["scores"] == 0
    # Refreshing imports the other course's own roster, never Algebra's memberships.
    assert http.post(f"{tool_url}/lti/s/{other}/roster/refresh", timeout=15).ok
    assert db["lti_memberships"].count_documents({"course": COURSE}) == 4
    # Without a course there is nothing to see.
    nowhere = launch(role="teacher", context=None)
    assert http.get(f"{tool_url}/lti/s/{nowhere}/roster", timeout=10).status_code == 404


def test_a_failed_import_is_retried_with_backoff(launch, lti_app, db):
    import datetime as dt

    from lti_tool.models import Platform

    launch(role="teacher")
    with lti_app.app_context():
        Platform.objects(identifier="demo").update(
            set__auth_token_url="http://127.0.0.1:9/token")
        clock_now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        sync = GradeSync(db, name="test", clock=lambda: clock_now, timeout=2)
        result = sync.run_once()
    assert [c for c, _ in result.roster_failures] == [COURSE]
    doc = db[roster.QUEUE].find_one({"_id": COURSE})
    assert doc["attempts"] == 1 and doc["queued_at"] is not None
    assert doc["next_attempt_at"].replace(tzinfo=dt.UTC) == clock_now + dt.timedelta(seconds=30)
    assert "could not be reached" in doc["last_error"]
    # where the admin status page and /metrics count failing syncs
    failing = db["lti_sync_failures"].find_one({"_id": f"roster:{COURSE}"})
    assert failing["kind"] == "roster" and failing["attempts"] == 1


@pytest.mark.parametrize("raw, expected", [
    ([LIS + "Learner"], True),
    (["http://purl.imsglobal.org/vocab/lis/v2/membership/Learner#Learner"], True),
    (["Learner"], True),
    (["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Student"], False),
    ([LIS + "Instructor"], False),
    ([LIS + "Mentor"], False),
    ([], False),
])
def test_learner_roles(raw, expected):
    assert roster.is_learner_role(raw) is expected
