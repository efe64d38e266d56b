"""/demo for newcomers: off in production; in development it offers the three demo
launches (and deep linking), each a working LTI launch; seed_if_empty stores the demo
class's statements and the mapping worker turns them into mastery."""

from __future__ import annotations

import re
from html import unescape

import pytest
from worker_drain import drain

from mappings import evidence, records
from masteryhub.app import create_app
from masteryhub.config import Settings
from masteryhub.demo import LEARNERS, demo_statements, seed_if_empty

LINK = re.compile(r'<a class="button" href="([^"]+)"[^>]*data-role="([^"]+)"')


def test_demo_is_not_served_in_production(tmp_path, db_name, mongo_server_uri):
    settings = Settings.from_env({
        "MASTERYHUB_ENV": "production", "MASTERYHUB_DATA_DIR": str(tmp_path / "data"),
        "MASTERYHUB_MONGODB_URI": mongo_server_uri, "MASTERYHUB_DB_NAME": db_name,
        "MASTERYHUB_BASE_URL": "https://hub.example.edu",
        "MASTERYHUB_SECRET_KEY": "x" * 40})
    client = create_app(settings).test_client()
    for path in ("/demo", "/demo/", "/demo/platform/jwks"):
        assert client.get(path).status_code == 404


def test_demo_page_lists_the_three_launches_and_they_work(platform, browser, tool_url):
    page = browser.http.get(tool_url + "/demo/", timeout=10)
    assert page.status_code == 200
    assert '<html lang="en">' in page.text and "<main>" in page.text
    links = {role: unescape(url) for url, role in LINK.findall(page.text)}
    assert set(links) == {"learner", "teacher", "mentor", "deep-link"}
    assert all(url.startswith(tool_url + "/lti/login?") for url in links.values())
    for words in ("Launch as Ana (learner)", "Launch as Dana (teacher)",
                  "Launch as Maria (mentor)", "Development only"):
        assert words in unescape(page.text)
    for role, expected in (("learner", ["learner"]), ("mentor", ["mentor"])):
        response = browser.launch(links[role])
        assert response.status_code == 303, response.text[:300]
        me = browser.http.get(response.headers["Location"].split("?")[0].rstrip("/") + "/me",
                              timeout=10).json()
        assert me["roles"] == expected and me["course"] == "demo|algebra-1-cbe"
    response = browser.launch(links["deep-link"])
    assert response.status_code == 303 and "/deep-link" in response.headers["Location"]


def test_demo_statements_are_plausible():
    statements = [s for _, s in demo_statements()]
    assert 40 <= len(statements) <= 60
    actors = {s["actor"].get("mbox") for s in statements}
    assert {f"mailto:{email}" for _, email in LEARNERS.values()} <= actors
    assert len({s["id"] for s in statements}) == len(statements)


@pytest.mark.usefixtures("app")
def test_seed_stores_statements_that_the_worker_maps(db):
    assert seed_if_empty("http://localhost") is True
    stored = db["lrs_statements"].count_documents({})
    assert stored == len(demo_statements())
    assert db["lrs_statements"].count_documents({"v": True}) == 1  # the voided mistake
    drain(db)
    ana = db["learners"].find_one({"agents": "mbox|mailto:ana@school.example.edu"})["_id"]
    mastery = {d["competency"]: d for d in records.mastery(db, [ana])}
    assert len(mastery) >= 8
    assert sum(1 for d in mastery.values() if d.get("mastered")) >= 6
    pending = sum(1 for e in evidence.of_learners(db, [ana]) if e["status"] == "pending")
    assert pending >= 2  # the internship and the capstone wait for review
    mistake = next(s["id"] for _, s in demo_statements()
                   if s["verb"]["id"].endswith("/voided"))
    voided = db["lrs_statements"].find_one({"v": True})["sid"]
    assert [e["_id"] for e in evidence.all_records(db)
            if e["statement"] == voided and not e.get("voided")] == []
    assert mistake != voided  # the voiding statement itself is not voided
    ben = db["learners"].find_one({"agents": "mbox|mailto:ben@school.example.edu"})["_id"]
    assert records.mastery(db, [ben])  # Ben has records, but none of this competency
    assert records.mastery_one(db, ben, "alg1-2-3") is None
    assert seed_if_empty("http://localhost") is False  # only into an empty database
    assert db["lrs_statements"].count_documents({}) == stored
