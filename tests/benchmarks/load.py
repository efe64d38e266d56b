"""Bounded load test (``make bench``): 8 concurrent clients for at most 60 s, loopback only,
mixing the three things the app does under real use:

- **write**: a provider POSTs 20 statements (the mapping worker maps them meanwhile);
- **query**: GET /xapi/statements filtered by agent, verb or activity (limit 50);
- **launch**: a whole LTI 1.3 launch like a browser: the tool's OIDC login → the demo
  platform's auth endpoint → its auto-posting form → POST id_token to the tool's launch.

The app runs as in production, behind gunicorn (`masteryhub serve --workers 2`, mapping
worker thread on, development environment so /demo exists), on a SecantusDB child process
of its own. Figures: status codes per kind, throughput, p50/p95 latency. The run fails
(exit 1) on any 5xx, or any status other than the expected ones.

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/load.py [seconds]`` (default 30,
at most 60).
"""

from __future__ import annotations

import base64
import collections
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from masteryhub.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchkit import App, auto_post_form, pct

CLIENTS = 8
MAX_SECONDS = 60
WEIGHTS = {"write": 4, "query": 4, "launch": 2}
EXPECTED = {"write": {200}, "query": {200}, "launch": {200, 302, 303}}
LEAVES = ["ALG.1.1", "ALG.1.2", "ALG.1.3", "ALG.1.4", "ALG.2.1", "ALG.2.2", "ALG.2.3",
          "ALG.3.1", "ALG.3.2", "ALG.4.1", "ALG.4.2", "ALG.4.3", "ALG.4.4"]
VERBS = ["http://adlnet.gov/expapi/verbs/passed", "http://adlnet.gov/expapi/verbs/failed",
         "http://adlnet.gov/expapi/verbs/completed"]


def statement(rng: random.Random) -> dict:
    learner = rng.randrange(200)
    code = rng.choice(LEAVES)
    verb = rng.choice(VERBS)
    scaled = round(rng.random(), 2)
    return {"id": str(uuid.uuid4()),
            "actor": {"objectType": "Agent", "name": f"Learner {learner}",
                      "mbox": f"mailto:learner{learner}@school.example"},
            "verb": {"id": verb, "display": {"en-US": verb.rsplit("/", 1)[1]}},
            "object": {"objectType": "Activity",
                       "id": f"https://courses.example.com/algebra-1/{code}/quiz-"
                             f"{rng.randrange(5)}",
                       "definition": {"name": {"en-US": f"{code} quiz"}}},
            "result": {"score": {"scaled": scaled}, "success": scaled >= 0.8},
            "timestamp": f"2026-11-{1 + rng.randrange(20):02d}T10:00:00.000Z"}


class Client(threading.Thread):
    def __init__(self, n: int, app: App, auth: str, platform, stop: threading.Event):
        super().__init__(daemon=True)
        self.rng = random.Random(n)
        self.app = app
        self.platform = platform
        self.stop_event = stop
        self.http = requests.Session()
        self.xapi = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}
        self.samples: list[tuple[str, int, float]] = []  # (kind, worst status, ms)
        self.statuses: collections.Counter = collections.Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        kinds = [k for k, w in WEIGHTS.items() for _ in range(w)]
        while not self.stop_event.is_set():
            kind = self.rng.choice(kinds)
            started = time.perf_counter()
            try:
                statuses = getattr(self, kind)()
            except requests.RequestException as exc:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            elapsed = (time.perf_counter() - started) * 1000
            for status in statuses:
                self.statuses[(kind, status)] += 1
            self.samples.append((kind, max(statuses), elapsed))

    def write(self) -> list[int]:
        body = [statement(self.rng) for _ in range(20)]
        r = self.http.post(self.app.url + "/xapi/statements", json=body, headers=self.xapi,
                           timeout=30)
        return [r.status_code]

    def query(self) -> list[int]:
        choice = self.rng.randrange(3)
        if choice == 0:
            params = {"agent": f'{{"mbox": "mailto:learner{self.rng.randrange(200)}'
                               '@school.example"}'}
        elif choice == 1:
            params = {"verb": self.rng.choice(VERBS)}
        else:
            params = {"activity": f"https://courses.example.com/algebra-1/"
                                  f"{self.rng.choice(LEAVES)}/quiz-{self.rng.randrange(5)}"}
        r = self.http.get(self.app.url + "/xapi/statements", params=dict(params, limit=50),
                          headers=self.xapi, timeout=30)
        return [r.status_code]

    def launch(self) -> list[int]:
        role = self.rng.choice(("learner", "teacher", "mentor"))
        browser = requests.Session()
        login = browser.get(self.platform.prepare(role=role), allow_redirects=False,
                            timeout=30)
        if login.status_code != 302:
            return [login.status_code]
        auth = browser.get(login.headers["Location"], allow_redirects=False, timeout=30)
        form = auto_post_form(auth.text) if auth.status_code == 200 else None
        if form is None:
            return [login.status_code, auth.status_code]
        launch = browser.post(form[0], data=form[1], allow_redirects=False, timeout=30)
        statuses = [login.status_code, auth.status_code, launch.status_code]
        if launch.status_code == 303:  # the landing page the browser goes on to
            page = browser.get(self.app.url + launch.headers["Location"]
                               if launch.headers["Location"].startswith("/")
                               else launch.headers["Location"], timeout=30)
            statuses.append(page.status_code)
        return statuses


def main() -> int:
    seconds = min(float(sys.argv[1]) if len(sys.argv) > 1 else 30.0, MAX_SECONDS)
    workdir = Path(tempfile.mkdtemp(prefix="masteryhub-bench-load-"))
    server = EmbeddedServer(workdir / "database")
    state = server.start()
    try:
        from lrs.auth import create_credential
        from lti_tool.demo_platform import DemoPlatform
        from mappings import catalog as catalog_module
        from mappings.frameworks import sample_framework, save_framework
        from mappings.models import RuleSet
        from mappings.rules import load_ruleset
        from masteryhub.database import connect

        db = connect(state.uri, "bench_load")
        save_framework(sample_framework())
        rules = Path(__file__).resolve().parents[2] / "mappings/data/sample_rules.yaml"
        text = rules.read_text()
        ruleset = load_ruleset(text, filename="sample_rules.yaml",
                               competencies=catalog_module.load().infos)
        RuleSet(name=ruleset.name, text=text, rules=ruleset.to_dicts()).save()
        catalog_module.bump()
        credential, secret = create_credential("Load test provider", ["all"])
        auth = "Basic " + base64.b64encode(f"{credential.key}:{secret}".encode()).decode()
        app = App(workdir, state.uri, "bench_load", log=workdir / "serve.log",
                  ENV="development")
        try:
            assert requests.get(app.url + "/demo/", timeout=10).status_code == 200
            platform = DemoPlatform(app.url + "/demo", app.url, db=db)
            stop = threading.Event()
            clients = [Client(n, app, auth, platform, stop) for n in range(CLIENTS)]
            started = time.perf_counter()
            for client in clients:
                client.start()
            time.sleep(seconds)
            stop.set()
            for client in clients:
                client.join(60)
            elapsed = time.perf_counter() - started
        finally:
            app.stop()
    finally:
        server.stop()

    samples = [s for c in clients for s in c.samples]
    statuses: collections.Counter = sum((c.statuses for c in clients), collections.Counter())
    errors = [e for c in clients for e in c.errors]
    print(f"Load test — {CLIENTS} concurrent clients for {elapsed:.1f} s against "
          "`masteryhub serve --workers 2` (gunicorn, mapping worker on), SecantusDB child, "
          "loopback")
    print(f"{'kind':8} {'count':>6} {'per s':>7} {'p50 ms':>8} {'p95 ms':>8}  statuses")
    for kind in WEIGHTS:
        times = [ms for k, _, ms in samples if k == kind]
        codes = {s: n for (k, s), n in sorted(statuses.items()) if k == kind}
        if not times:
            print(f"{kind:8} {0:>6}")
            continue
        print(f"{kind:8} {len(times):>6} {len(times) / elapsed:>7.1f} "
              f"{statistics.median(times):>8.1f} {pct(times, 0.95):>8.1f}  {codes}")
    written = sum(1 for k, s, _ in samples if k == "write" and s == 200) * 20
    print(f"statements written: {written} ({written / elapsed:.0f}/s); requests: "
          f"{sum(statuses.values())}; client errors (no HTTP answer): {len(errors)}")
    server_errors = {key: n for key, n in statuses.items() if key[1] >= 500}
    unexpected = {key: n for key, n in statuses.items() if key[1] not in EXPECTED[key[0]]}
    for line in errors[:5]:
        print("  " + line)
    if server_errors or unexpected or errors:
        print(f"FAILED: 5xx {server_errors}, unexpected {unexpected}, errors {len(errors)}")
        return 1
    print("zero 5xx")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
