"""What the benchmarks share: the app as a separate `masteryhub serve` process, the
platform's self-submitting launch form, and percentiles. Not a benchmark itself
(`make bench` skips files starting with an underscore)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from html import unescape
from pathlib import Path

import requests

from masteryhub.embedded import free_port

FORM_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


class App:
    """`masteryhub serve` as a separate process, on the benchmark's database.

    ``workers``: gunicorn worker processes (None: the single-process server). ``log``: a
    file for its output (default: discarded). ``settings``: further MASTERYHUB_* variables,
    e.g. ``WORKER="off"``. Variables of the caller's environment never leak in.
    """

    def __init__(self, data_dir: Path, uri: str, db_name: str = "bench", *,
                 workers: int | None = 2, log: Path | None = None, **settings: str):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERYHUB_")}
        env.update(MASTERYHUB_DATA_DIR=str(data_dir), MASTERYHUB_MONGODB_URI=uri,
                   MASTERYHUB_DB_NAME=db_name, MASTERYHUB_PORT=str(self.port),
                   MASTERYHUB_HOST="127.0.0.1", MASTERYHUB_LOG_LEVEL="WARNING",
                   **{f"MASTERYHUB_{k}": v for k, v in settings.items()})
        command = [sys.executable, "-m", "masteryhub.cli", "serve"]
        if workers is not None:
            command += ["--workers", str(workers)]
        self.log = open(log, "ab") if log is not None else None  # noqa: SIM115
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("app did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        if self.log is not None:
            self.log.close()


def auto_post_form(html: str) -> tuple[str, dict[str, str]] | None:
    """(action, fields) of the platform's self-submitting launch form; None if absent."""
    action = FORM_ACTION.search(html)
    if action is None:
        return None
    return unescape(action.group(1)), {unescape(k): unescape(v)
                                       for k, v in FORM_FIELD.findall(html)}


def server_ms(response: requests.Response, metric: str = "app") -> float:
    """A metric of the response's Server-Timing header (the app's own time), in ms."""
    match = re.search(metric + r";dur=([0-9.]+)", response.headers.get("Server-Timing", ""))
    if not match:
        raise RuntimeError(f"no Server-Timing {metric} on {response.url}")
    return float(match.group(1))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * q) - 1)]
