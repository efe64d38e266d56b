"""Request ids, structured logs and /metrics (masteryhub/observability.py)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from masteryhub.app import create_app
from masteryhub.config import Settings
from masteryhub.observability import JsonFormatter, TextFormatter

TOKEN = "metrics-" + "x" * 24
ROOT = Path(__file__).resolve().parent.parent


def make_settings(tmp_path: Path, mongo_server_uri: str, db_name: str, **extra: str) -> Settings:
    env = {"MASTERYHUB_DATA_DIR": str(tmp_path / "data"),
           "MASTERYHUB_MONGODB_URI": mongo_server_uri,
           "MASTERYHUB_DB_NAME": db_name,
           "MASTERYHUB_BASE_URL": "http://localhost"}
    env.update({f"MASTERYHUB_{k}": v for k, v in extra.items()})
    return Settings.from_env(env)


@pytest.fixture
def metrics_app(tmp_path, mongo_server_uri, db_name):
    app = create_app(make_settings(tmp_path, mongo_server_uri, db_name, METRICS_TOKEN=TOKEN))
    app.config["TESTING"] = True
    return app


def scrape(client, token: str = TOKEN) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- request ids ------------------------------------------------------------------------------
def test_request_id_generated_when_absent_and_echoed_when_well_formed(client):
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/healthz").headers["X-Request-ID"] != generated

    given = "req-" + uuid.uuid4().hex
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given
    # on errors too
    assert client.get("/no/such/page", headers={"X-Request-ID": given}).headers[
        "X-Request-ID"] == given


@pytest.mark.parametrize("bad", ["a b", "x" * 200, "<script>", "id\tforged", "-dash", "é"])
def test_malformed_request_ids_are_replaced(client, bad):
    got = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
    assert got != bad and len(got) == 32


# -- logs ---------------------------------------------------------------------------------------
def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextlib.contextmanager
def log_output(formatter: logging.Formatter):
    """What the root logger writes through ``formatter`` (pytest's own handlers keep
    configure_logging from adding its stderr handler in this process)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_json_logs_one_object_per_line_with_the_request_id(tmp_path, mongo_server_uri,
                                                          db_name):
    app = create_app(make_settings(tmp_path, mongo_server_uri, db_name, LOG_FORMAT="json"))

    def noisy():
        logging.getLogger("masteryhub.tests").warning("inside the view: %s", "hello")
        return "ok"

    app.add_url_rule("/test-noisy", "noisy", noisy)
    with log_output(JsonFormatter()) as out:
        response = app.test_client().get("/test-noisy?secret=zzz",
                                         headers={"X-Request-ID": "abc-123"})
        logging.getLogger("masteryhub.tests").warning("outside a request")
    assert response.headers["X-Request-ID"] == "abc-123"
    text = out.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    records = _json_lines(text)
    assert len(records) == len(lines)  # every line is a JSON object
    inside = next(r for r in records if r["logger"] == "masteryhub.tests")
    assert inside["message"] == "inside the view: hello"
    assert inside["request_id"] == "abc-123" and inside["level"] == "WARNING"
    assert inside["time"].endswith("Z")
    access = next(r for r in records if r["logger"] == "masteryhub.access")
    assert access["request_id"] == "abc-123"
    assert access["method"] == "GET" and access["path"] == "/test-noisy"
    assert access["status"] == 200 and access["endpoint"] == "noisy"
    assert isinstance(access["duration_ms"], float)
    assert "zzz" not in text  # query strings are not logged
    assert records[-1]["message"] == "outside a request" and records[-1]["request_id"] is None


def test_text_logs_show_the_request_id(client):
    with log_output(TextFormatter()) as out:
        client.get("/healthz/nope", headers={"X-Request-ID": "text-req-1"})
    line = next(ln for ln in out.getvalue().splitlines() if "masteryhub.access" in ln)
    assert "[text-req-1]" in line and "GET /healthz/nope 404" in line


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_logging_in_a_fresh_process(log_format):
    """Where nothing else configured logging (a server process), one stderr handler in the
    chosen format, at the chosen level."""
    code = ("import logging\n"
            "from masteryhub.config import Settings\n"
            "from masteryhub.observability import configure_logging\n"
            f"s = Settings(log_format={log_format!r}, log_level='INFO')\n"
            "configure_logging(s); configure_logging(s)\n"
            "logging.getLogger('masteryhub.x').debug('hidden')\n"
            "logging.getLogger('masteryhub.x').info('shown %d', 1)\n")
    err = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stderr
    assert "hidden" not in err and err.count("shown 1") == 1
    if log_format == "json":
        record = json.loads(err)
        assert record["logger"] == "masteryhub.x" and record["level"] == "INFO"
    else:
        assert " INFO masteryhub.x [-] shown 1" in err


def test_session_tokens_stay_out_of_logs_and_metric_labels(metrics_app, caplog):
    client = metrics_app.test_client()
    token = "tok" + uuid.uuid4().hex
    with caplog.at_level(logging.INFO, logger="masteryhub.access"):
        for path in (f"/lti/s/{token}/", f"/lti/s/{token}/me"):
            response = client.get(path)
            assert response.status_code < 500
    access = [r for r in caplog.records if r.name == "masteryhub.access"]
    assert access and all(token not in r.getMessage() for r in access)
    assert {r.path for r in access} == {"/lti/s/***/", "/lti/s/***/me"}

    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(
        as_text=True)
    assert token not in body
    samples = scrape(client)
    endpoints = {dict(labels).get("endpoint") for name, labels in samples
                 if name == "masteryhub_http_requests_total"}
    assert {"lti.home", "lti.me"} <= endpoints
    assert all(e is None or "/" not in e for e in endpoints)  # names, never paths


# -- /metrics access ----------------------------------------------------------------------------
def test_metrics_require_the_bearer_token(metrics_app):
    client = metrics_app.test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_disabled_in_production_without_a_token(tmp_path, mongo_server_uri, db_name):
    settings = make_settings(tmp_path, mongo_server_uri, db_name, ENV="production",
                             SECRET_KEY="s" * 40)
    response = create_app(settings).test_client().get("/metrics")
    assert response.status_code == 403 and b"METRICS_TOKEN" in response.data


def test_metrics_open_in_development_without_a_token(client):
    response = client.get("/metrics")
    assert response.status_code == 200 and b"masteryhub_database_up 1.0" in response.data


# -- /metrics content ---------------------------------------------------------------------------
def test_request_counters_and_latencies_increase(metrics_app):
    client = metrics_app.test_client()
    labels = {"method": "GET", "endpoint": "health.healthz", "status": "2xx"}
    before = scrape(client)
    for _ in range(3):
        client.get("/healthz")
    client.get("/definitely/not/here")
    after = scrape(client)
    assert value(after, "masteryhub_http_requests_total", **labels) == \
        value(before, "masteryhub_http_requests_total", **labels) + 3
    assert value(after, "masteryhub_http_requests_total", method="GET", endpoint="unmatched",
                 status="4xx") >= 1
    count = "masteryhub_http_request_duration_seconds_count"
    assert value(after, count, method="GET", endpoint="health.healthz") == \
        value(before, count, method="GET", endpoint="health.healthz") + 3


def _statement(n: int) -> dict:
    return {"id": str(uuid.uuid4()),
            "actor": {"mbox": f"mailto:learner{n}@example.org", "objectType": "Agent"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
            "object": {"id": f"http://example.org/activity/{n}", "objectType": "Activity"}}


def _wait_for(predicate, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_statements_stored_and_worker_lag(metrics_app, xapi_headers):
    client = metrics_app.test_client()
    db = metrics_app.extensions["masteryhub.db"]
    empty = scrape(client)
    assert value(empty, "masteryhub_lrs_statements_stored") == 0
    assert value(empty, "masteryhub_mapping_worker_lag_statements") == 0

    response = client.post("/xapi/statements", json=[_statement(n) for n in range(3)],
                           headers=xapi_headers)
    assert response.status_code == 200, response.data
    samples = _wait_for(lambda: (s := scrape(client)) and value(
        s, "masteryhub_mapping_worker_lag_statements") == 3 and s)
    assert samples, "the lag never reached the 3 unprocessed statements"
    assert value(samples, "masteryhub_lrs_statements_stored") == 3
    assert value(samples, "masteryhub_lrs_consistent_through_sequence") == 3
    assert value(samples, "masteryhub_mapping_worker_position") == 0
    assert value(samples, "masteryhub_database_up") == 1

    from mappings.worker import Worker

    worker = Worker(db, name="metrics-test")
    worker.run_once()
    processed = scrape(client)
    assert value(processed, "masteryhub_mapping_worker_lag_statements") == 0
    assert value(processed, "masteryhub_mapping_worker_position") == 3
    assert value(processed, "masteryhub_mapping_worker_lease_active") == 1
    worker.release()
    assert value(scrape(client), "masteryhub_mapping_worker_lease_active") == 0


def test_lms_sync_failures_and_reviews_are_counted(metrics_app):
    from lti_tool import grades, sync
    from mappings import evidence
    from mappings.models import utcnow

    client = metrics_app.test_client()
    db = metrics_app.extensions["masteryhub.db"]
    assert value(scrape(client), "masteryhub_lms_sync_failing_courses", kind="grades") == 0
    now = utcnow()
    db[sync.FAILURES].insert_many([
        {"_id": "c1", "course": "p|c1", "kind": "grades", "attempts": 2, "last_error": "503",
         "next_attempt_at": now},
        {"_id": "roster:c2", "course": "p|c2", "kind": "roster", "attempts": 1,
         "next_attempt_at": now}])
    db[grades.QUEUE].insert_many([{"_id": "a", "course": "p|c1", "attempts": 3},
                                  {"_id": "b", "course": "p|c1"}])

    def record(learner: str, competency: str, status: str, *, voided: bool = False) -> dict:
        return {"_id": evidence.evidence_id("s1", learner, competency, "r1"),
                "statement": "s1", "seq": 1, "learner": learner, "competency": competency,
                "framework": "fw", "rule": "r1", "points": 1.0, "source_type": "internship",
                "timestamp": now, "activity": None, "activity_name": None, "provider": None,
                "status": status, "voided": voided, "actions": []}

    # counted per record, not per stored document: one learner's bucket holds two
    # pending records; voided pending ones count too (as they always have)
    evidence.insert(db, [record("l1", "c1", "pending"), record("l1", "c2", "pending"),
                         record("l1", "c3", "accepted"),
                         record("l2", "c1", "pending", voided=True),
                         record("l3", "c1", "rejected")], batch=1)
    samples = scrape(client)
    assert value(samples, "masteryhub_lms_sync_failing_courses", kind="grades") == 1
    assert value(samples, "masteryhub_lms_sync_failing_courses", kind="roster") == 1
    assert value(samples, "masteryhub_lms_grade_queue_items") == 2
    assert value(samples, "masteryhub_lms_grade_items_failing") == 1
    assert value(samples, "masteryhub_evidence_pending_review") == 3


def test_database_outage_is_a_metric_not_an_error(tmp_path, db_name):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(tmp_path, f"mongodb://127.0.0.1:{port}/?directConnection=true",
                             db_name, DB_TIMEOUT_MS="200", METRICS_TOKEN=TOKEN)
    client = create_app(settings).test_client()
    samples = scrape(client)
    assert value(samples, "masteryhub_database_up") == 0
    assert ("masteryhub_lrs_statements_stored", ()) not in samples


# -- several processes ----------------------------------------------------------------------------
def test_multiprocess_mode_adds_up_the_processes(tmp_path):
    """What gunicorn workers do: each process writes its values to PROMETHEUS_MULTIPROC_DIR,
    and any process answers with the sum (even when prometheus_client was imported before
    the directory was configured, as under `masteryhub serve`)."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    record = ("import prometheus_client, os, sys\n"
              "from masteryhub import observability as o\n"
              "m = o.request_metrics()\n"
              "for _ in range(int(sys.argv[1])): m.observe('GET', 'health.healthz', 200, 0.01)\n")
    for n in ("2", "3"):
        subprocess.run([sys.executable, "-c", record, n], env=env, check=True, cwd=ROOT)
    show = "from masteryhub import observability as o\nprint(o.request_metrics().exposition()"\
           ".decode())"
    out = subprocess.run([sys.executable, "-c", show], env=env, check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout
    families = {f.name: f for f in text_string_to_metric_families(out)}
    total = [s for s in families["masteryhub_http_requests"].samples
             if s.name == "masteryhub_http_requests_total"]
    assert [s.value for s in total] == [5.0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_gunicorn_workers_share_request_metrics_and_log_json(tmp_path, mongo_server_uri,
                                                             db_name):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTERYHUB_",
                                                                     "PROMETHEUS_"))}
    env.update(MASTERYHUB_MONGODB_URI=mongo_server_uri, MASTERYHUB_DB_NAME=db_name,
               MASTERYHUB_DATA_DIR=str(tmp_path / "data"), MASTERYHUB_PORT=str(port),
               MASTERYHUB_WORKER="off", MASTERYHUB_LOG_FORMAT="json",
               MASTERYHUB_METRICS_TOKEN=TOKEN)
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "masteryhub.cli", "serve", "--workers", "2"],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return urllib.request.urlopen(base + "/healthz", timeout=2).status == 200
            except OSError:
                return False

        assert _wait_for(up, 60), (tmp_path / "serve.log").read_text()
        for _ in range(20):
            urllib.request.urlopen(base + "/healthz", timeout=5).read()
        for n in range(2):  # probes log at DEBUG; other requests at INFO
            request = urllib.request.Request(base + "/xapi/about",
                                             headers={"X-Request-ID": f"gun-{n}"})
            urllib.request.urlopen(request, timeout=5).read()
        request = urllib.request.Request(base + "/metrics",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        text = urllib.request.urlopen(request, timeout=5).read().decode()
        totals = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "masteryhub_http_requests_total"
                  and s.labels.get("endpoint") == "health.healthz"]
        # 20 + the successful polls of up(); each worker saw part of them, the scrape all
        assert len(totals) == 1 and totals[0] >= 21
    finally:
        proc.terminate()
        proc.wait(20)
    records = _json_lines((tmp_path / "serve.log").read_text())
    access = {r.get("request_id"): r for r in records if r["logger"] == "masteryhub.access"}
    assert {"gun-0", "gun-1"} <= set(access)
    assert access["gun-1"]["endpoint"] == "xapi.about" and access["gun-1"]["status"] == 200
