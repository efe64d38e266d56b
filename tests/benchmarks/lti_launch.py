"""LTI launch benchmark (``make bench``): 200 login + launch round trips through the real
flow, against the demo platform (lti1p3platform) served by the same app.

The app runs as `make run` runs it (`masteryhub serve`, development environment, so /demo
is on), on a SecantusDB server of its own. Each round trip is what a browser does: GET the
tool's OIDC login → 302 to the platform's auth endpoint → the platform's auto-posting form
→ POST the id_token to the tool's launch → 303 to the landing page. Figures, p50/p95:

- the tool's own server time for login and for launch (``Server-Timing: app;dur=`` of
  /lti/login and /lti/launch, so the HTTP client and the platform are not counted);
- the whole round trip including the platform's part;
- baseline, measured in the same run: GET /healthz round trip. Ratios are against it.

The first launch fetches the platform's key set (JWKS) over HTTP; later ones use the
cache in MongoDB (lti_tool.platform_keys), so the first launch is reported on its own, and
40 more launches with the cache emptied before each show what the cache saves.

Run: ``make bench`` or ``.venv/bin/python tests/benchmarks/lti_launch.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from lti_tool import platform_keys
from lti_tool.demo_platform import DemoPlatform
from masteryhub.embedded import EmbeddedServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchkit import App, auto_post_form, pct, server_ms

N = 200
WARMUP = 10
UNCACHED = 40
ROLES = ("learner", "teacher", "mentor")


def round_trip(http: requests.Session, login_url: str) -> tuple[float, float, float]:
    """One launch like a browser: (login server ms, launch server ms, round trip ms)."""
    started = time.perf_counter()
    login = http.get(login_url, allow_redirects=False, timeout=10)
    assert login.status_code == 302, (login.status_code, login.text[:300])
    auth = http.get(login.headers["Location"], allow_redirects=False, timeout=10)
    assert auth.status_code == 200, (auth.status_code, auth.text[:300])
    action, fields = auto_post_form(auth.text)
    launch = http.post(action, data=fields, allow_redirects=False, timeout=10)
    assert launch.status_code == 303, (launch.status_code, launch.text[:300])
    elapsed = (time.perf_counter() - started) * 1000
    return server_ms(login), server_ms(launch), elapsed


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="masteryhub-bench-lti-"))
    server = EmbeddedServer(workdir)
    state = server.start()
    try:
        from masteryhub.database import connect

        db = connect(state.uri, "bench_lti")
        app = App(workdir, state.uri, "bench_lti", workers=None, ENV="development")
        try:
            # /demo registers the demo platform with the tool (as a newcomer's first visit).
            assert requests.get(app.url + "/demo/", timeout=10).status_code == 200
            platform = DemoPlatform(app.url + "/demo", app.url, db=db)
            http = requests.Session()
            first = round_trip(http, platform.prepare(role="learner"))
            for i in range(WARMUP):
                round_trip(http, platform.prepare(role=ROLES[i % 3]))
            logins, launches, trips, health = [], [], [], []
            for i in range(N):
                url = platform.prepare(role=ROLES[i % 3])  # the LMS renders a link
                login_ms, launch_ms, trip_ms = round_trip(http, url)
                logins.append(login_ms)
                launches.append(launch_ms)
                trips.append(trip_ms)
                t0 = time.perf_counter()
                assert http.get(app.url + "/healthz", timeout=10).status_code == 200
                health.append((time.perf_counter() - t0) * 1000)
            uncached = []  # what every launch cost before the key-set cache
            for i in range(UNCACHED):
                db[platform_keys.COLLECTION].delete_many({})
                uncached.append(round_trip(http, platform.prepare(role=ROLES[i % 3]))[1])
        finally:
            app.stop()
        base = statistics.median(health)
        print(f"LTI launch benchmark — {N} login+launch round trips (roles "
              f"{'/'.join(ROLES)}), `masteryhub serve`, demo platform in the same app")
        print(f"baseline GET /healthz round trip:  p50 {base:6.2f} ms  "
              f"p95 {pct(health, 0.95):6.2f} ms")
        for label, values in (("tool server time, /lti/login ", logins),
                              ("tool server time, /lti/launch", launches),
                              ("whole round trip (+ platform) ", trips)):
            p50 = statistics.median(values)
            print(f"{label}: p50 {p50:6.2f} ms  p95 {pct(values, 0.95):6.2f} ms  "
                  f"(p50 / healthz p50 = {p50 / base:5.1f}x)")
        print(f"first launch (platform JWKS fetched, then cached): launch server time "
              f"{first[1]:.2f} ms, round trip {first[2]:.2f} ms")
        p50 = statistics.median(uncached)
        print(f"launch server time with the key-set cache emptied each time ({UNCACHED}): "
              f"p50 {p50:6.2f} ms  p95 {pct(uncached, 0.95):6.2f} ms "
              f"({p50 / statistics.median(launches):.1f}x the cached launch)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
