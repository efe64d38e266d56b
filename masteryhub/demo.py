"""Demo data for `make run`: the sample framework and its rules, and a few weeks of xAPI
statements from a small class, so a newcomer sees something on first start (at ``/demo``).
Development only, and only into an empty database.

The statements go through the LRS's normal path (validated, then stored by
``StatementStore.insert`` under a "Demo data" credential), in time order and in batches,
so their ``stored`` order, sequence numbers and voiding are exactly those of statements a
provider would have sent; the mapping worker maps them when the app starts. Their actors
are the demo platform's learners (``lti_tool.demo_platform.USERS``: Ana and Ben, matched by
email) and four more learners of the class.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from importlib import resources

log = logging.getLogger(__name__)

PASSED = "http://adlnet.gov/expapi/verbs/passed"
FAILED = "http://adlnet.gov/expapi/verbs/failed"
COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
ASSESSED = "https://w3id.org/xapi/masteryhub/verbs/assessed"
INTERNSHIP_TASK = "https://w3id.org/xapi/masteryhub/activities/internship-task"
COURSE = "https://courses.example.com/algebra-1"
NAMESPACE = uuid.UUID("6f1c2d1e-6a55-4d0b-9a43-5d3f0f7c1a20")  # stable demo statement ids

LEARNERS = {
    "ana": ("Ana Alvarez", "ana@school.example.edu"),
    "ben": ("Ben Brooks", "ben@school.example.edu"),
    "chloe": ("Chloe Chen", "chloe@school.example.edu"),
    "dev": ("Dev Patel", "dev@school.example.edu"),
    "eli": ("Eli Okafor", "eli@school.example.edu"),
    "fatima": ("Fatima Noor", "fatima@school.example.edu"),
}
# (learner, competency code, scaled score, days ago): online-course quizzes, which the
# sample rules map to the competency of the quiz's unit. Ana is near credit, Ben midway,
# the others at different places along the course.
QUIZZES = [
    ("ana", "ALG.1.1", 0.72, 40), ("ana", "ALG.1.1", 0.90, 33), ("ana", "ALG.1.2", 0.85, 38),
    ("ana", "ALG.1.2", 0.93, 26), ("ana", "ALG.1.3", 0.88, 30), ("ana", "ALG.1.4", 0.81, 24),
    ("ana", "ALG.2.2", 0.90, 19), ("ana", "ALG.2.3", 0.86, 15), ("ana", "ALG.4.1", 0.92, 12),
    ("ana", "ALG.4.2", 0.78, 9), ("ana", "ALG.4.2", 0.87, 5), ("ana", "ALG.4.3", 0.84, 3),
    ("ben", "ALG.1.1", 0.65, 39), ("ben", "ALG.1.1", 0.82, 31), ("ben", "ALG.1.2", 0.55, 29),
    ("ben", "ALG.1.2", 0.74, 22), ("ben", "ALG.1.3", 0.80, 18), ("ben", "ALG.2.2", 0.60, 11),
    ("ben", "ALG.4.1", 0.48, 6),
    ("chloe", "ALG.1.1", 0.95, 35), ("chloe", "ALG.1.2", 0.91, 28),
    ("chloe", "ALG.1.3", 0.97, 21), ("chloe", "ALG.1.4", 0.89, 14),
    ("chloe", "ALG.2.1", 0.83, 8), ("chloe", "ALG.2.2", 0.94, 2),
    ("dev", "ALG.1.1", 0.58, 34), ("dev", "ALG.1.1", 0.71, 20), ("dev", "ALG.1.2", 0.62, 13),
    ("dev", "ALG.1.3", 0.45, 4),
    ("eli", "ALG.1.1", 0.88, 37), ("eli", "ALG.1.2", 0.79, 27), ("eli", "ALG.1.4", 0.90, 17),
    ("eli", "ALG.3.1", 0.85, 10), ("eli", "ALG.3.2", 0.70, 7),
    ("fatima", "ALG.1.1", 0.99, 36), ("fatima", "ALG.1.2", 0.96, 25),
    ("fatima", "ALG.2.1", 0.92, 16), ("fatima", "ALG.2.3", 0.90, 9),
    ("fatima", "ALG.4.4", 0.86, 1),
]
# Internship attestations (the sample rules send them to teacher review).
INTERNSHIPS = [("ana", "budget-model", "Model a shop's weekly budget", 10),
               ("eli", "survey-trend", "Fit a trend line to survey data", 6)]
# Capstone projects assessed with a rubric score (teacher review as well).
CAPSTONES = [("ana", "bike-share", 0.88, 2), ("chloe", "water-use", 0.76, 1)]
# A quiz recorded for the wrong learner and voided by the provider a day later.
MISTAKE = ("ben", "ALG.2.3", 0.05, 14)


def _agent(who: str) -> dict:
    name, email = LEARNERS[who]
    return {"objectType": "Agent", "name": name, "mbox": f"mailto:{email}"}


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(map(str, parts))))


def _when(now: dt.datetime, days_ago: int, rng: random.Random) -> dt.datetime:
    day = (now - dt.timedelta(days=days_ago)).replace(hour=9, minute=0, second=0,
                                                      microsecond=0)
    return day + dt.timedelta(minutes=rng.randrange(0, 8 * 60))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def demo_statements(now: dt.datetime | None = None) -> list[tuple[dt.datetime, dict]]:
    """The demo class's statements with their times, oldest first (the voiding statement
    comes a day after the statement it voids)."""
    now = now or dt.datetime.now(dt.UTC)
    rng = random.Random(20261123)
    out: list[tuple[dt.datetime, dict]] = []
    attempts: dict[tuple[str, str], int] = {}

    def quiz(who: str, code: str, scaled: float, days: int) -> tuple[dt.datetime, dict]:
        n = attempts[who, code] = attempts.get((who, code), 0) + 1
        when = _when(now, days, rng)
        passed = scaled >= 0.8
        return when, {
            "id": _id("quiz", who, code, n),
            "actor": _agent(who),
            "verb": {"id": PASSED if passed else FAILED,
                     "display": {"en-US": "passed" if passed else "failed"}},
            "object": {"objectType": "Activity", "id": f"{COURSE}/{code}/quiz-{n}",
                       "definition": {"name": {"en-US": f"{code} unit quiz {n}"},
                                      "type": "http://adlnet.gov/expapi/activities/"
                                              "assessment"}},
            "result": {"score": {"scaled": scaled, "raw": round(scaled * 20), "min": 0,
                                 "max": 20}, "success": passed, "completion": True},
            "context": {"platform": "Example Online Courses",
                        "contextActivities": {"grouping": [{"id": COURSE}]}},
            "timestamp": _iso(when)}

    for row in QUIZZES:
        out.append(quiz(*row))
    for who, task, title, days in INTERNSHIPS:
        when = _when(now, days, rng)
        out.append((when, {
            "id": _id("internship", who, task), "actor": _agent(who),
            "verb": {"id": COMPLETED, "display": {"en-US": "completed"}},
            "object": {"objectType": "Activity",
                       "id": f"https://internships.example.org/tasks/{task}",
                       "definition": {"name": {"en-US": title}, "type": INTERNSHIP_TASK}},
            "result": {"completion": True,
                       "response": "Supervisor: solid modelling, explained to the team."},
            "context": {"platform": "Example Internships",
                        "instructor": {"objectType": "Agent", "name": "Sam Supervisor",
                                       "mbox": "mailto:sam@internships.example.org"}},
            "timestamp": _iso(when)}))
    for who, project, scaled, days in CAPSTONES:
        when = _when(now, days, rng)
        out.append((when, {
            "id": _id("capstone", who, project), "actor": _agent(who),
            "verb": {"id": ASSESSED, "display": {"en-US": "assessed"}},
            "object": {"objectType": "Activity",
                       "id": f"https://projects.example.org/capstone/{project}",
                       "definition": {"name": {"en-US": f"Capstone project: {project}"}}},
            "result": {"score": {"scaled": scaled}, "completion": True},
            "context": {"platform": "Example Project Tool"},
            "timestamp": _iso(when)}))
    wrong_when, wrong = quiz(*MISTAKE)
    out.append((wrong_when, wrong))
    void_when = wrong_when + dt.timedelta(days=1)
    out.append((void_when, {
        "id": _id("void", wrong["id"]),
        "actor": {"objectType": "Agent", "name": "Example Online Courses",
                  "mbox": "mailto:support@courses.example.com"},
        "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
        "object": {"objectType": "StatementRef", "id": wrong["id"]},
        "timestamp": _iso(void_when)}))
    out.sort(key=lambda pair: pair[0])
    return out


def store_demo_statements(db, base_url: str) -> int:
    """Store the demo statements through the LRS (one batch per day, oldest first); the
    number stored. A voiding statement always lands in a later batch than its target."""
    from lrs.auth import create_credential
    from lrs.store import StatementStore
    from lrs.validation import validate_statements

    credential, _secret = create_credential("Demo data (make run)", ["statements/write"])
    authority = credential.authority(base_url)
    store = StatementStore(db)
    store.ensure_indexes()
    batches: dict[dt.date, list[dict]] = {}
    for when, stmt in demo_statements():
        batches.setdefault(when.date(), []).append(stmt)
    count = 0
    for day in sorted(batches):
        statements = validate_statements(batches[day])
        store.insert(statements, authority=authority, credential_key=credential.key)
        count += len(statements)
    store.flush()
    return count


def _base_url() -> str:
    from masteryhub.config import ConfigError, Settings

    try:
        return Settings.from_env().base_url
    except ConfigError:
        return "http://127.0.0.1:8000"


def seed_if_empty(base_url: str | None = None) -> bool:
    """Import the sample framework and rules, and the demo statements, when no framework
    exists; True if it did. Statements are added only to an empty LRS."""
    from mongoengine.connection import get_db

    from mappings import catalog as catalog_module
    from mappings.frameworks import sample_framework, save_framework
    from mappings.models import Framework, RuleSet, ensure_indexes
    from mappings.rules import load_ruleset

    ensure_indexes()
    if Framework.objects.first() is not None:
        return False
    save_framework(sample_framework())
    text = resources.files("mappings.data").joinpath("sample_rules.yaml").read_text("utf-8")
    ruleset = load_ruleset(text, filename="sample_rules.yaml",
                           competencies=catalog_module.load().infos)
    RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
    catalog_module.bump()
    log.info("demo data: imported the sample framework and rules")
    db = get_db()
    if db["lrs_statements"].find_one({}, {"_id": 1}) is None:
        count = store_demo_statements(db, base_url or _base_url())
        log.info("demo data: stored %d xAPI statements of a demo class", count)
    return True
