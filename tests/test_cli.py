"""The `masteryhub` command line, run as a user runs it: as a separate process."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from masteryhub.embedded import _pid_alive, free_port

pytestmark = pytest.mark.slow


def cli_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERYHUB_")}
    env["MASTERYHUB_DATA_DIR"] = str(tmp_path / "data")
    env.update(extra)
    return env


def run_cli(*args, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "masteryhub.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_healthy(url, process, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            status, body = get_json(url)
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not healthy within {timeout} s")


def wait_dead(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
    return not _pid_alive(pid)


def test_help_reads_well(tmp_path):
    result = run_cli("--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    for word in ("serve", "db", "MASTERYHUB_MONGODB_URI", "MASTERYHUB_DATA_DIR"):
        assert word in result.stdout
    serve_help = run_cli("serve", "--help", env=cli_env(tmp_path)).stdout
    assert "--workers" in serve_help and "--port" in serve_help


def test_bad_configuration_exits_with_the_problem(tmp_path):
    result = run_cli("serve", env=cli_env(tmp_path, MASTERYHUB_PORT="abc"))
    assert result.returncode != 0
    assert "MASTERYHUB_PORT='abc': must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_db_start_status_stop(tmp_path):
    env = cli_env(tmp_path)
    assert run_cli("db", "status", env=env).returncode == 1
    started = run_cli("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    status = run_cli("db", "status", "--json", env=env)
    info = json.loads(status.stdout)
    assert status.returncode == 0 and info["running"] is True and info["mode"] == "embedded"
    stopped = run_cli("db", "stop", env=env)
    assert "stopped" in stopped.stdout
    assert wait_dead(info["pid"])
    assert run_cli("db", "status", env=env).returncode == 1


@pytest.mark.timeout(120)
def test_serve_is_healthy_refuses_a_second_copy_and_stops_cleanly(tmp_path):
    port = free_port()
    env = cli_env(tmp_path, MASTERYHUB_PORT=str(port))
    started = time.monotonic()
    app = subprocess.Popen([sys.executable, "-m", "masteryhub.cli", "serve"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = wait_healthy(f"http://127.0.0.1:{port}/healthz", app)
        assert body["database"]["status"] == "ok"
        assert time.monotonic() - started < 15
        state = json.loads((tmp_path / "data" / "db.json").read_text())
        db_pid = state["pid"]
        import pymongo

        with pymongo.MongoClient(state["uri"]) as mongo:  # demo data on first start
            assert mongo["masteryhub"]["frameworks"].find_one({"_id": "algebra-1-cbe"})
            assert mongo["masteryhub"]["rule_sets"].count_documents({}) == 1

        second = run_cli("serve", "--port", str(free_port()), env=env)
        assert second.returncode != 0
        assert "already running" in second.stderr
        assert "WiredTiger" not in second.stderr

        app.send_signal(signal.SIGINT)  # what Ctrl-C sends
        app.wait(30)
        assert wait_dead(db_pid), "embedded database left running after Ctrl-C"
        assert not (tmp_path / "data" / "db.json").exists()
    finally:
        if app.poll() is None:
            app.kill()


@pytest.mark.timeout(120)
def test_serve_with_gunicorn_workers_and_sigterm(tmp_path):
    port = free_port()
    env = cli_env(tmp_path, MASTERYHUB_PORT=str(port))
    app = subprocess.Popen([sys.executable, "-m", "masteryhub.cli", "serve", "--workers", "2"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", app, timeout=30)
        db_pid = json.loads((tmp_path / "data" / "db.json").read_text())["pid"]
        app.terminate()
        app.wait(30)
        assert wait_dead(db_pid)
    finally:
        if app.poll() is None:
            app.kill()


def test_credentials_create_list_revoke(tmp_path, mongo_server_uri, db_name):
    env = cli_env(tmp_path, MASTERYHUB_MONGODB_URI=mongo_server_uri, MASTERYHUB_DB_NAME=db_name)
    created = run_cli("credentials", "create", "--name", "Algebra Online",
                      "--scopes", "statements/write,state", "--json", env=env)
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["scopes"] == ["statements/write", "state"] and len(info["secret"]) >= 30

    listed = json.loads(run_cli("credentials", "list", "--json", env=env).stdout)
    assert [c["key"] for c in listed] == [info["key"]]
    assert info["secret"] not in json.dumps(listed)
    assert "Algebra Online" in run_cli("credentials", "list", env=env).stdout

    bad = run_cli("credentials", "create", "--name", "x", "--scopes", "everything", env=env)
    assert bad.returncode == 2 and "unknown scope(s) everything" in bad.stderr

    assert run_cli("credentials", "revoke", info["key"], env=env).returncode == 0
    assert json.loads(run_cli("credentials", "list", "--json", env=env).stdout) == []
    missing = run_cli("credentials", "revoke", "nope", env=env)
    assert missing.returncode == 1 and "no credential with key 'nope'" in missing.stderr


def test_credentials_start_the_embedded_database_when_none_runs(tmp_path):
    env = cli_env(tmp_path)
    created = run_cli("credentials", "create", "--name", "P", "--json", env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    listed = run_cli("credentials", "list", "--json", env=env)
    assert key in listed.stdout  # stored durably in DATA_DIR/db, across two servers
    assert not (tmp_path / "data" / "db.json").exists()  # and none left running


def test_frameworks_rules_and_recompute_commands(tmp_path, mongo_server_uri, db_name):
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "mappings" / "data"
    env = cli_env(tmp_path, MASTERYHUB_MONGODB_URI=mongo_server_uri, MASTERYHUB_DB_NAME=db_name)
    imported = run_cli("frameworks", "import", str(data / "sample_framework.yaml"), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "13 competencies" in imported.stdout or "competencies" in imported.stdout
    assert "algebra-1-cbe" in run_cli("frameworks", "list", env=env).stdout

    bad_rules = tmp_path / "bad.yaml"
    bad_rules.write_text("ruleset: x\nrules:\n  - id: r\n    match: {verb: passed}\n"
                         "    evidence: [{competency: NOPE}]\n")
    result = run_cli("rules", "load", str(bad_rules), env=env)
    assert result.returncode == 1 and f"{bad_rules}:4" in result.stderr

    loaded = run_cli("rules", "load", str(data / "sample_rules.yaml"), env=env)
    assert loaded.returncode == 0, loaded.stderr
    statement = tmp_path / "statement.json"
    statement.write_text(json.dumps({
        "actor": {"mbox": "mailto:ana@school.example.edu"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed"},
        "object": {"id": "https://courses.example.com/algebra-1/ALG.1.2/quiz-3"},
        "result": {"score": {"scaled": 0.9}}}))
    tested = run_cli("rules", "test", str(statement), "--json", env=env)
    assert tested.returncode == 0, tested.stderr
    drafts = json.loads(tested.stdout)
    assert [d["competency"] for d in drafts] == ["alg1-1-2"]
    assert drafts[0]["rule"] == "algebra-1-sample:quiz-alg-1-2"

    exported = run_cli("frameworks", "export", "algebra-1-cbe", env=env)
    package = json.loads(exported.stdout)
    assert package["CFDocument"]["title"] and len(package["CFItems"]) == 17

    recomputed = run_cli("recompute", env=env)
    assert recomputed.returncode == 0 and "Recomputed from 0 statement(s)" in recomputed.stdout
