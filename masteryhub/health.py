"""``GET /healthz`` for load balancers, orchestrators and humans."""

from __future__ import annotations

import time

import pymongo
from flask import Blueprint, current_app, jsonify
from pymongo.errors import PyMongoError

from masteryhub import __version__

bp = Blueprint("health", __name__)

PING_TIMEOUT_S = 2.0


@bp.get("/healthz")
def healthz():
    """Unauthenticated on purpose (probes have no credentials); reveals no data, only status."""
    db = current_app.extensions["masteryhub.db"]
    started = time.perf_counter()
    try:
        with pymongo.timeout(PING_TIMEOUT_S):
            db.command("ping")
    except PyMongoError as exc:
        reason = str(exc).split(", Timeout:")[0][:300] or exc.__class__.__name__
        body = {"status": "unavailable", "version": __version__, "app": "ok",
                "database": {"status": "unavailable", "reason": reason}}
        return jsonify(body), 503
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    body = {"status": "ok", "version": __version__, "app": "ok",
            "database": {"status": "ok", "latency_ms": latency_ms}}
    return jsonify(body), 200
