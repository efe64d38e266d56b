"""Request ids, structured logs and Prometheus metrics (``GET /metrics``).

Request ids. Each request gets an id: the incoming ``X-Request-ID`` when it is well formed
(a proxy or the caller chose it, so one id follows the request through every hop), else a
new one. It is returned in the response's ``X-Request-ID`` and attached to every log record
emitted while the request runs (a log-record factory reads it from the request context, so
records of any logger carry it, whatever handler formats them).

Logs. ``MASTERYHUB_LOG_FORMAT=json`` writes one JSON object per line (``time``, ``level``,
``logger``, ``message``, ``request_id`` and, on access lines, ``method``, ``path``,
``endpoint``, ``status``, ``duration_ms``); ``text`` is the readable development format.
One access line per request, on the ``masteryhub.access`` logger. Paths are logged with
launch-session tokens masked and without query strings: both can carry credentials.

Metrics, two kinds:

- *per process* (request counts and latencies), labelled by HTTP method, the Flask endpoint
  name (never the raw path, which holds tokens and ids: the label set stays bounded) and
  status class. Under ``masteryhub serve --workers N`` the gunicorn processes share them
  through prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by
  ``serve``), so any process answers a scrape with the totals of all of them.
- *from the database*, computed at scrape time (statements stored, the LRS watermark, the
  mapping worker's position and lag, LMS sync failures, evidence awaiting review): they are
  the same whichever process or pod answers, so aggregate them with ``max``, not ``sum``.

``/metrics`` is not public: it requires ``Authorization: Bearer <MASTERYHUB_METRICS_TOKEN>``;
without a token it is open in development and disabled in production.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, has_request_context, request

from masteryhub import __version__
from masteryhub.config import PREFIX, Settings

REQUEST_ID_HEADER = "X-Request-ID"
# Ids we accept from outside: what proxies generate (uuid, hex, AWS trace ids), nothing that
# could forge a log line or smuggle markup.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# View arguments never written to logs: launch-session tokens are bearer credentials.
_SECRET_ARGS = ("token", "secret", "password")
# Probes and scrapes: access lines at DEBUG unless they fail, so they do not drown the log.
_QUIET_ENDPOINTS = frozenset({"health.healthz", "observability.livez", "observability.metrics"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_ACCESS_FIELDS = ("method", "path", "endpoint", "status", "duration_ms", "remote_addr")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

access_log = logging.getLogger("masteryhub.access")


# -- request ids and logging ---------------------------------------------------------------
def current_request_id() -> str | None:
    """The id of the request being handled by this thread, if any."""
    if not has_request_context():
        return None
    return g.get("request_id")


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_masteryhub", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id()
        return record

    factory._masteryhub = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; log shippers need no parsing rules."""

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, dt.UTC)
        payload: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name in _ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        try:
            return super().format(record)
        finally:
            if record.request_id == "-":
                record.request_id = None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners and CLIs swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(settings: Settings) -> logging.Handler | None:
    """Route every logger to one stderr handler in the configured format.

    Like ``logging.basicConfig``, it leaves alone a process whose logging someone else has
    configured (a test runner, an embedding application): there it only makes the request
    id available to their handlers. A second app in the same process reconfigures our own
    handler. Returns that handler, or None when logging was configured elsewhere.
    """
    _install_record_factory()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_masteryhub", False)), None)
    if handler is None and root.handlers:
        return None
    root.setLevel(settings.log_level)
    if handler is None:
        handler = _StderrHandler()
        handler._masteryhub = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    # Our access line replaces the development server's, which logs raw paths (tokens).
    logging.getLogger("werkzeug").setLevel(max(logging.WARNING, root.level))
    return handler


_TOKEN_PATH = re.compile(r"^/lti/(s|confirm)/[^/]+")


def _loggable_path() -> str:
    # Unmatched routes (404, 405) have no view_args: mask launch tokens by shape too.
    path = _TOKEN_PATH.sub(lambda m: f"/lti/{m.group(1)}/***", request.path)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and value and any(s in name.lower() for s in _SECRET_ARGS):
            path = path.replace(value, "***")
    return path


# -- metrics ---------------------------------------------------------------------------------
class _RequestMetrics:
    def __init__(self) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        # No `*_created` series: they double the output and few dashboards use them.
        getattr(prometheus_client, "disable_created_metrics", lambda: None)()

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if self.multiprocess and values.ValueClass.__name__ != "MmapedValue":
            # prometheus_client picks its value class at import; the directory may have been
            # configured after that (by `serve`), so pick again before creating metrics.
            values.ValueClass = values.get_value_class()
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "masteryhub_http_requests", "HTTP requests handled, by method, Flask endpoint "
            "and status class", ["method", "endpoint", "status"], registry=self.registry)
        self.duration = Histogram(
            "masteryhub_http_request_duration_seconds", "Time to produce the response, by "
            "method and Flask endpoint", ["method", "endpoint"], buckets=DURATION_BUCKETS,
            registry=self.registry)

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(method, endpoint, f"{status // 100}xx").inc()
        self.duration.labels(method, endpoint).observe(seconds)

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self.registry is not None
        return generate_latest(self.registry)


_metrics: _RequestMetrics | None = None
_metrics_lock = threading.Lock()


def request_metrics() -> _RequestMetrics:
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = _RequestMetrics()
        return _metrics


def prepare_multiprocess_metrics() -> str:
    """For gunicorn: a fresh directory where the worker processes keep their metric values
    (``PROMETHEUS_MULTIPROC_DIR`` as given, emptied, or a new temporary one)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):  # values of a previous run would be added to ours
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix="masteryhub-metrics-")
        os.environ[MULTIPROC_ENV] = path
    return path


def cleanup_multiprocess_metrics(path: str) -> None:
    if os.path.basename(path).startswith("masteryhub-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """gunicorn ``child_exit`` hook: drop the live gauges of a dead worker process."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class DatabaseCollector:
    """Gauges read from MongoDB at scrape time (a few small queries, bounded by a timeout)."""

    TIMEOUT_S = 3.0

    def __init__(self, db: Any) -> None:
        self.db = db

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        info = GaugeMetricFamily("masteryhub_build_info", "Version of the answering process",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        up = GaugeMetricFamily("masteryhub_database_up",
                               "1 when the database answered the metrics queries")
        try:
            values = self._read()
        except Exception as exc:  # the scrape still says what is wrong
            logging.getLogger(__name__).warning("metrics: database unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, help_text, labelled in values:
            labels = sorted({k for key in labelled for k, _ in key})
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for key, value in labelled.items():
                family.add_metric([v for _, v in sorted(key)], value)
            yield family

    def _read(self) -> list[tuple[str, str, dict[tuple, float]]]:
        import pymongo

        from lrs.store import StatementStore
        from mappings import evidence
        from mappings.models import utcnow
        from mappings.worker import worker_status_of

        db = self.db
        with pymongo.timeout(self.TIMEOUT_S):
            now = utcnow()
            stored = db["lrs_statements"].estimated_document_count()
            status = worker_status_of(db)
            lease_until = status.lease_until
            if lease_until is not None and lease_until.tzinfo is None:
                lease_until = lease_until.replace(tzinfo=dt.UTC)
            mapper_active = bool(status.holder and lease_until and lease_until > now)
            dirty = db["mapping_dirty"].estimated_document_count()
            pending = len(evidence.pending(db))  # voided ones too, as ever
            failing = {"grades": 0, "roster": 0}
            for doc in db["lti_sync_failures"].find({}, {"kind": 1}):
                kind = str(doc.get("kind") or "grades")
                failing[kind] = failing.get(kind, 0) + 1
            queue = db["lti_grade_queue"].estimated_document_count()
            queue_failing = db["lti_grade_queue"].count_documents({"attempts": {"$gt": 0}},
                                                                  limit=100_000)
            sync = db["lti_sync_state"].find_one({"_id": "lms-sync"}, {"holder": 1,
                                                                       "lease_until": 1}) or {}
            sync_until = sync.get("lease_until")
            if sync_until is not None and sync_until.tzinfo is None:
                sync_until = sync_until.replace(tzinfo=dt.UTC)
            sync_active = bool(sync.get("holder") and sync_until and sync_until > now)
            # the watermark after the counts: lag is never understated by a late read
            watermark = StatementStore(db).watermark().seq
        one = ()
        return [
            ("masteryhub_lrs_statements_stored", "Statements in the LRS (voided included)",
             {one: stored}),
            ("masteryhub_lrs_consistent_through_sequence", "LRS watermark: every statement "
             "with this sequence number or lower is visible (monotonic; rate() = ingest)",
             {one: watermark}),
            ("masteryhub_mapping_worker_position", "Sequence number the mapping worker has "
             "processed up to", {one: status.position}),
            ("masteryhub_mapping_worker_lag_statements", "Statements stored but not yet "
             "mapped (watermark - position)", {one: max(0, watermark - status.position)}),
            ("masteryhub_mapping_worker_lease_active", "1 when a mapping worker holds a live "
             "lease", {one: int(mapper_active)}),
            ("masteryhub_mapping_recompute_queue", "Learner-competency pairs queued for "
             "recomputation", {one: dirty}),
            ("masteryhub_evidence_pending_review", "Evidence awaiting a teacher's review",
             {one: pending}),
            ("masteryhub_lms_sync_failing_courses", "Courses whose LMS sync (AGS grades, "
             "NRPS roster) is failing and backing off", {(("kind", k),): v
                                                         for k, v in failing.items()}),
            ("masteryhub_lms_grade_queue_items", "Scores waiting to be posted to LMSs",
             {one: queue}),
            ("masteryhub_lms_grade_items_failing", "Queued scores whose last post failed",
             {one: queue_failing}),
            ("masteryhub_lms_sync_lease_active", "1 when a process holds a live LMS sync "
             "lease", {one: int(sync_active)}),
        ]


def render_metrics(db: Any) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db))
    return request_metrics().exposition() + generate_latest(registry)


bp = Blueprint("observability", __name__)


@bp.get("/livez")
def livez() -> Response:
    """Liveness: the process answers requests. Unlike /healthz it does not touch the
    database, so an orchestrator does not restart every pod during a database outage."""
    return Response('{"status": "ok"}\n', 200, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


@bp.get("/metrics")
def metrics() -> Response:
    settings: Settings = current_app.extensions["masteryhub.settings"]
    token = settings.metrics_token
    if token is None:
        if settings.production:
            return Response(f"/metrics is disabled: set {PREFIX}METRICS_TOKEN and scrape with "
                            "that bearer token.\n", 403, mimetype="text/plain")
    else:
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), token.encode()):
            return Response("bearer token required\n", 401, mimetype="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    from prometheus_client import exposition

    # The 0.0.4 text format: what every Prometheus version (and other scrapers) reads.
    content_type = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4",
                           exposition.CONTENT_TYPE_LATEST)
    body = render_metrics(current_app.extensions["masteryhub.db"])
    return Response(body, 200, headers={"Content-Type": content_type,
                                        "Cache-Control": "no-store"})


# -- wiring ------------------------------------------------------------------------------------
def init_app(app: Flask, settings: Settings) -> None:
    """Register first, so the request id exists before any other hook logs."""
    metrics_ = request_metrics()

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        started = g.get("request_started")
        seconds = time.perf_counter() - started if started is not None else 0.0
        rule = request.url_rule
        endpoint = rule.endpoint if rule is not None else "unmatched"
        try:
            metrics_.observe(request.method, endpoint, response.status_code, seconds)
        except Exception:  # metrics must never fail a request
            logging.getLogger(__name__).exception("could not record request metrics")
        status = response.status_code
        level = logging.DEBUG if endpoint in _QUIET_ENDPOINTS and status < 400 else logging.INFO
        if access_log.isEnabledFor(level):
            path = _loggable_path()
            duration_ms = round(seconds * 1000, 2)
            access_log.log(level, "%s %s %s %.1fms", request.method, path, status, duration_ms,
                           extra={"method": request.method, "path": path,
                                  "endpoint": endpoint, "status": status,
                                  "duration_ms": duration_ms,
                                  "remote_addr": request.remote_addr})
        return response

    app.register_blueprint(bp)


# -- `masteryhub health` ---------------------------------------------------------------------
def health_report(uri: str, settings: Settings, *, max_lag: int | None = None) -> dict:
    """Database reachability and the mapping worker's progress, for ``masteryhub health``."""
    import pymongo

    from mappings.worker import worker_status_of
    from masteryhub.database import database_name

    timeout_ms = min(settings.db_timeout_ms, 5000)
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        db = client[database_name(uri, settings.db_name)]
        started = time.perf_counter()
        try:
            with pymongo.timeout(timeout_ms / 1000):
                db.command("ping")
                latency_ms = round((time.perf_counter() - started) * 1000, 2)
                status = worker_status_of(db)
        except pymongo.errors.PyMongoError as exc:
            reason = str(exc).split(", Timeout:")[0][:300] or exc.__class__.__name__
            return {"status": "unavailable",
                    "database": {"status": "unavailable", "reason": reason}}
    finally:
        client.close()
    lease_until = status.lease_until
    if lease_until is not None and lease_until.tzinfo is None:
        lease_until = lease_until.replace(tzinfo=dt.UTC)
    active = bool(status.holder and lease_until
                  and lease_until > dt.datetime.now(dt.UTC))
    report: dict[str, Any] = {
        "status": "ok", "version": __version__,
        "database": {"status": "ok", "latency_ms": latency_ms},
        "worker": {"position": status.position, "watermark": status.watermark,
                   "lag": status.lag, "holder": status.holder, "lease_active": active}}
    if max_lag is not None and status.lag > max_lag:
        report["status"] = "lagging"
    return report
