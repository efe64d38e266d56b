"""Class view benchmark (``make bench``): the teacher's heatmap for 30 learners x 40
competencies must render server-side in under 200 ms at p95.

The app runs as `make run` runs it (`masteryhub serve`, development environment so the demo
platform is on), on a SecantusDB server of its own, with ``MASTERYHUB_WORKER=off`` (the
deployment where workers run as their own processes) so that neither the mapping worker nor
the LMS sync share the app's process while it is timed. The class: a framework of 40
competencies (4 strands of 9, performance-level scale of 10 levels, a 70 % credit), 30
learners on the course roster, a mastery record for ~85 % of learner x competency pairs and
three accepted pieces of evidence behind each (~2,800 evidence records, in buckets as the
mapping worker stores them: one per learner and batch, a batch here a day), a few pending.
One real teacher launch through the demo platform gives the session; then 100 GETs of the
class view (default sort), and 100 sorted by a competency with the strand filter on.

Figures, p50/p95:
- server time: ``Server-Timing: app;dur=`` that the teacher blueprint adds to every
  response (from before_request to after_request: the queries and the whole template),
  and ``cpu;dur=``, the request thread's own CPU time in the app (without the database's
  work; what a machine busy with other jobs inflates least);
- the HTTP round trip from this process;
- baseline in the same run: GET /healthz round trip (a database ping), interleaved with
  the class-view requests. Ratios are against its p50.

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/class_view.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import statistics
import sys
import tempfile
import time
from html import unescape
from pathlib import Path

import requests

from lti_tool.demo_platform import DemoPlatform
from masteryhub.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchkit import App, auto_post_form, pct, server_ms

N = 100
WARMUP = 5
LEARNERS = 30
STRANDS, PER_STRAND = 4, 9  # 4 strands + 36 competencies = 40
TARGET_P95_MS = 200.0
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
CONTEXT = {"id": "bench-class", "title": "Benchmark class", "label": "BENCH"}
COURSE = "demo|bench-class"
# The launch leaves out the roster and grade services: the seeded members are not the demo
# platform's people (a roster import would mark them Inactive), and the timing is the view's.
DROP = ("https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice",
        "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint")


def framework_yaml() -> str:
    lines = ["id: bench-class", "title: Class view benchmark", "scale: performance-levels",
             "calculation: decaying_average(0.65)", "competencies:"]
    for s in range(STRANDS):
        lines += [f"  - id: s{s}", f"    code: S{s}", f"    statement: Strand {s}",
                  "    rollup: {method: average}", "    children:"]
        lines += [f"      - {{id: s{s}-c{c}, code: S{s}.{c}, statement: Competency {s}.{c} of "
                  f"the benchmark framework}}" for c in range(PER_STRAND)]
    lines += ["credit_rules:",
              "  - {id: bench-class-credit, name: Benchmark credit, competencies: all, "
              "min_percent: 70}"]
    return "\n".join(lines) + "\n"


def _ms(when: dt.datetime) -> int:
    return (when - EPOCH) // dt.timedelta(milliseconds=1)


def seed(db, rng: random.Random) -> None:
    """Framework, roster, mastery and evidence, written the way the mapper and the roster
    import write them (the mastery records in one progress document per learner, as the
    mapper stores them; ``mappings.records`` reads them; the evidence records in buckets,
    one per learner and batch, through ``mappings.evidence``)."""
    import orjson

    from mappings import evidence as evidence_store
    from mappings.frameworks import parse_yaml_framework, save_framework
    from mappings.models import Competency
    from mappings.records import PROGRESS

    save_framework(parse_yaml_framework(framework_yaml(), filename="bench-class.yaml"))
    levels = [f"Level {n} ({w})" for n, w in enumerate(
        ["Beginning", "Beginning", "Emerging", "Emerging", "Developing", "Approaching",
         "Proficient", "Proficient+", "Advanced", "Distinguished"], start=1)]
    competencies = [c.identifier for c in Competency.objects(framework="bench-class")]
    assert len(competencies) == STRANDS * (PER_STRAND + 1) == 40
    now = dt.datetime.now(dt.UTC)
    members, progress, evidence = [], [], []
    records = 0
    for i in range(LEARNERS):
        learner = f"Lbench{i:02d}"
        leaves: dict[str, list] = {}
        mastery: dict[str, dict] = {}
        user = f"{'http://bench'}|learner-{i}"
        members.append({"_id": f"{COURSE}|{user}", "course": COURSE, "user": user,
                        "learner": learner, "name": f"Learner {i:02d} Benchmark",
                        "email": f"learner{i}@school.example.edu", "roles": ["learner"],
                        "status": "Active", "source": "roster", "updated_at": now})
        for cid in competencies:
            if rng.random() > 0.85:
                continue
            points = rng.randint(1, 10)
            cell = sorted((now - dt.timedelta(days=rng.randint(0, 40), hours=k), k)
                           for k in range(3))  # the mapper lists evidence oldest first
            for when, k in cell:
                sid = f"stmt-{i}-{cid}-{k}"
                evidence.append({
                    "_id": evidence_store.evidence_id(sid, learner, cid, "bench:rule"),
                    "statement": sid, "seq": len(evidence) + 1,
                    "learner": learner, "competency": cid, "framework": "bench-class",
                    "rule": "bench:rule", "points": float(rng.randint(1, 10)),
                    "source_type": "online_course", "timestamp": when,
                    "activity": f"https://bench.example.com/activities/{cid}",
                    "activity_name": f"Activity {cid}", "provider": "bench",
                    "status": "accepted", "voided": False, "actions": []})
                leaves.setdefault(cid, []).append(
                    [_ms(when), len(evidence), evidence[-1]["points"], evidence[-1]["_id"]])
            # written by the mapper a little after its newest evidence arrived
            mastery[cid] = {"points": float(points), "level": levels[points - 1],
                            "mastered": points >= 7, "method": "decaying_average",
                            "at": _ms(cell[-1][0] + dt.timedelta(seconds=2))}
        records += len(mastery)
        if mastery:
            body = {"leaves": leaves, "mastery": mastery, "credits": {}}
            progress.append({"_id": f"{learner}|bench-class", "learner": learner,
                             "framework": "bench-class",
                             "updated_at": EPOCH + dt.timedelta(milliseconds=max(
                                 m["at"] for m in mastery.values())),
                             "s": orjson.dumps(body, option=orjson.OPT_SORT_KEYS)})
        evidence.append({
            "_id": evidence_store.evidence_id(f"pending-{i}", learner, competencies[1],
                                              "bench:review"),
            "statement": f"pending-{i}", "seq": len(evidence) + 1, "learner": learner,
            "competency": competencies[1], "framework": "bench-class",
            "rule": "bench:review", "points": 7.0, "source_type": "project",
            "timestamp": now, "activity": "https://bench.example.com/activities/project",
            "activity_name": "Project", "provider": "bench", "status": "pending",
            "voided": False, "actions": []})
    db["lti_memberships"].insert_many(members)
    db[PROGRESS].insert_many(progress)
    # One mapping batch per day of evidence: each stores one bucket per learner, named
    # after the batch's first statement.
    batches: dict[dt.date, list[dict]] = {}
    for e in evidence:
        batches.setdefault(e["timestamp"].date(), []).append(e)
    evidence_store.ensure_indexes(db)
    for day in sorted(batches):
        first = min(e["seq"] for e in batches[day])
        assert evidence_store.insert(db, batches[day], batch=first) == []  # all new
    buckets = sum(len({e["learner"] for e in batch}) for batch in batches.values())
    print(f"seeded: {LEARNERS} learners, {len(competencies)} competencies, "
          f"{records} mastery records, {len(evidence)} evidence records in {buckets} "
          "buckets")


def teacher_session(http: requests.Session, login_url: str) -> str:
    """One real launch (login → platform → id_token POST); the class view's URL."""
    login = http.get(login_url, allow_redirects=False, timeout=10)
    auth = http.get(login.headers["Location"], allow_redirects=False, timeout=10)
    action, fields = auto_post_form(auth.text)
    launch = http.post(action, data=fields, allow_redirects=False, timeout=10)
    assert launch.status_code == 303, (launch.status_code, launch.text[:300])
    landing = http.get(launch.headers["Location"], timeout=10)
    assert landing.status_code == 200 and "/class/" in landing.url, landing.url
    return landing.url.split("?")[0]


def measure(http: requests.Session, url: str, health_url: str, params: dict
            ) -> tuple[list[float], list[float], list[float], int, list[float]]:
    servers, trips, health, cpus = [], [], [], []
    size = 0
    for i in range(WARMUP + N):
        t0 = time.perf_counter()
        r = http.get(url, params=params, timeout=10)
        trip = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200 and 'data-testid="heatmap"' in r.text, \
            (r.status_code, unescape(re.sub(r"<[^>]+>", " ", r.text))[-600:])
        cells = r.text.count('<td class="cell">')
        assert cells == LEARNERS * (40 if not params.get("strand") else PER_STRAND + 1), cells
        t1 = time.perf_counter()
        assert http.get(health_url, timeout=10).status_code == 200
        ping = (time.perf_counter() - t1) * 1000
        if i >= WARMUP:
            servers.append(server_ms(r))
            cpus.append(server_ms(r, "cpu"))
            trips.append(trip)
            health.append(ping)
            size = len(r.content)
    return servers, trips, health, size, cpus


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="masteryhub-bench-class-"))
    server = EmbeddedServer(workdir)
    state = server.start()
    rng = random.Random(7)
    load = os.getloadavg()
    try:
        from masteryhub.database import connect

        db = connect(state.uri, "bench_class")
        app = App(workdir, state.uri, "bench_class", workers=None, ENV="development",
                  WORKER="off")
        try:
            seed(db, rng)
            # /demo registers the demo platform with the tool (as a newcomer's first visit).
            assert requests.get(app.url + "/demo/", timeout=10).status_code == 200
            platform = DemoPlatform(app.url + "/demo", app.url, db=db)
            http = requests.Session()
            url = teacher_session(http, platform.prepare(role="teacher", context=CONTEXT,
                                                         drop=DROP))
            # The course uses the benchmark framework (serve may have seeded others).
            from lti_tool.courses import link
            from lti_tool.models import Course

            link(Course.objects(identifier=COURSE).get(), frameworks=["bench-class"])
            plain = measure(http, url, app.url + "/healthz", {})
            sorted_ = measure(http, url, app.url + "/healthz",
                              {"sort": "c:s1-c3", "dir": "desc", "strand": "s1"})
        finally:
            app.stop()
        base = statistics.median(plain[2] + sorted_[2])
        print(f"Class view benchmark — {LEARNERS} learners x 40 competencies, {N} GETs each "
              f"after {WARMUP} warm-up, `masteryhub serve`; load average before: "
              f"{' '.join(f'{v:.1f}' for v in load)} on {os.cpu_count()} CPUs")
        print(f"baseline GET /healthz round trip: p50 {base:6.2f} ms  "
              f"p95 {pct(plain[2] + sorted_[2], 0.95):6.2f} ms")
        worst = 0.0
        for label, (servers, trips, _, size, cpus) in (
                ("class view (all columns, by name) ", plain),
                ("class view (sorted, strand filter)", sorted_)):
            for kind, values in (("server", servers), ("app CPU", cpus),
                                 ("round trip", trips)):
                p50 = statistics.median(values)
                print(f"{label} {kind:>10}: p50 {p50:6.2f} ms  p95 {pct(values, 0.95):6.2f} ms  "
                      f"(p50 / healthz p50 = {p50 / base:5.1f}x)")
            print(f"{label} page size: {size / 1024:.0f} KiB")
            worst = max(worst, pct(servers, 0.95))
        verdict = "met" if worst < TARGET_P95_MS else "MISSED"
        # Reported, not enforced: p95 on a machine shared with other jobs measures the
        # machine (see the load average above); wrong pages fail the run (assertions).
        print(f"target: server p95 < {TARGET_P95_MS:.0f} ms — {verdict} "
              f"(worst p95 {worst:.2f} ms)")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
