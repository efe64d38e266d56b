"""Migration in and out: `masteryhub statements export|import` (NDJSON, and another LRS
over HTTP through tincan's RemoteLRS) and `masteryhub backup|restore`, each run as the
real command in a child process against the test's MongoDB-wire server."""

from __future__ import annotations

import json
import os
import random
import stat
import time
import uuid
from pathlib import Path

import orjson
import pymongo
import pytest
import requests
import tincan
from opskit import Serve, basic_auth, cli, env_for, quiz, snapshot, void

from lrs.jsonio import loads_json

pytestmark = pytest.mark.slow

BIG = 123456789012345678901234567890  # longer than 64 bits: kept exactly, not as a float


@pytest.fixture
def other_db(mongo_server_uri):
    """A second database on the same server (the migration's destination)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = pymongo.MongoClient(mongo_server_uri, tz_aware=True)
    yield client[name]
    client.drop_database(name)
    client.close()


def env_of(db, mongo_server_uri, tmp_path: Path, **extra) -> dict:
    return env_for(mongo_server_uri, db.name, tmp_path / f"data-{db.name}", **extra)


def provider_statements(lrs: tincan.RemoteLRS, live_server: str, auth: str) -> list[str]:
    """What a provider sends: through tincan, plus raw JSON tincan cannot express (a
    number longer than 64 bits, `$` keys in extensions); one statement is voided."""
    ids = []
    for i in range(7):
        statement = tincan.Statement(
            actor=tincan.Agent(name=f"Learner {i % 3}", mbox=f"mailto:l{i % 3}@school.example"),
            verb=tincan.Verb(id="http://adlnet.gov/expapi/verbs/passed",
                             display=tincan.LanguageMap({"en-US": "passed"})),
            object=tincan.Activity(
                id=f"https://courses.example.com/algebra-1/ALG.1.{1 + i % 4}/quiz-{i}",
                definition=tincan.ActivityDefinition(
                    name=tincan.LanguageMap({"en-US": f"Quiz {i}", "fr": f"Quiz {i} é"}))),
            result=tincan.Result(score=tincan.Score(scaled=0.5 + i / 20), success=True,
                                 extensions=tincan.Extensions(
                                     {"https://example.com/ext/attempt": i})),
            context=tincan.Context(registration=uuid.uuid4(), platform="Course player"),
            timestamp=f"2026-09-0{1 + i}T10:00:00.000Z")
        saved = lrs.save_statement(statement)
        assert saved.success, saved.data
        ids.append(str(saved.content.id))
    raw = (b'{"actor":{"mbox":"mailto:l1@school.example"},"verb":{"id":"http://adlnet.gov/'
           b'expapi/verbs/experienced"},"object":{"id":"https://example.com/big"},"result":'
           b'{"extensions":{"https://example.com/ext/big":' + str(BIG).encode()
           + b',"https://example.com/ext/$odd.key":{"$gt":1.5e-7}}}}')
    response = requests.post(live_server + "/xapi/statements", data=raw, timeout=10,
                             headers={"Authorization": auth, "X-Experience-API-Version":
                                      "1.0.3", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    ids.append(response.json()[0])
    voiding = tincan.Statement(actor=tincan.Agent(mbox="mailto:teacher@school.example"),
                               verb=tincan.Verb(id="http://adlnet.gov/expapi/verbs/voided"),
                               object=tincan.StatementRef(id=ids[2]))
    saved = lrs.save_statement(voiding)
    assert saved.success, saved.data
    ids.append(str(saved.content.id))
    return ids


def listing(url: str, auth: str, **params) -> list[dict]:
    """Every statement of GET /xapi/statements (format=exact), following `more`."""
    headers = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}
    out = []
    response = requests.get(url + "/xapi/statements", headers=headers, timeout=10,
                            params=dict(params, format="exact", limit=3))
    while True:
        assert response.status_code == 200, response.text
        page = loads_json(response.content)
        out.extend(page["statements"])
        if not page["more"]:
            return out
        response = requests.get(url + page["more"], headers=headers, timeout=10)


def single(url: str, auth: str, sid: str, voided: bool) -> bytes:
    name = "voidedStatementId" if voided else "statementId"
    response = requests.get(url + "/xapi/statements", params={name: sid, "format": "exact"},
                            headers={"Authorization": auth, "X-Experience-API-Version":
                                     "1.0.3"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.content


def test_export_import_round_trip_is_exact(live_server, xapi_credential, db, other_db,
                                           mongo_server_uri, tmp_path):
    auth = basic_auth(*xapi_credential)
    lrs = tincan.RemoteLRS(endpoint=live_server + "/xapi/", username=xapi_credential[0],
                           password=xapi_credential[1], version="1.0.3")
    ids = provider_statements(lrs, live_server, auth)
    time.sleep(0.1)  # finished ranges are released within 50 ms

    exported = tmp_path / "statements.ndjson"
    env_a = env_of(db, mongo_server_uri, tmp_path)
    done = cli(["statements", "export", "-o", str(exported), "--json"], env_a)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stderr.decode().strip().splitlines()[-1])["statements"] == len(ids)
    lines = exported.read_bytes().splitlines()
    assert [loads_json(line)["id"] for line in lines] == ids  # stored order, voided included

    env_b = env_of(other_db, mongo_server_uri, tmp_path)
    done = cli(["statements", "import", str(exported), "--json"], env_b)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    report = json.loads(done.stdout)
    assert (report["read"], report["stored"], report["present"]) == (len(ids), len(ids), 0)
    assert report["conflicts"] == [] and report["bad_lines"] == []
    # Idempotent: again, nothing new and nothing in conflict.
    again = json.loads(cli(["statements", "import", str(exported), "--json"], env_b).stdout)
    assert (again["stored"], again["present"], again["conflicts"]) == (0, len(ids), [])

    made = cli(["credentials", "create", "--name", "Reader", "--scopes", "all", "--json"],
               env_b)
    assert made.returncode == 0, made.stderr.decode()
    cred_b = json.loads(made.stdout)
    auth_b = basic_auth(cred_b["key"], cred_b["secret"])
    app_b = Serve(dict(env_b, MASTERYHUB_WORKER="off"), tmp_path / "serve-b.log")
    try:
        for order in ("true", "false"):
            a = listing(live_server, auth, ascending=order)
            b = listing(app_b.url, auth_b, ascending=order)
            assert [s["id"] for s in a] == [s["id"] for s in b]
            assert a == b
        assert len(a) == len(ids) - 1  # the voided one is not listed
        for sid in ids:
            voided = sid == ids[2]
            assert single(app_b.url, auth_b, sid, voided) == single(live_server, auth, sid,
                                                                      voided)
        big = loads_json(single(app_b.url, auth_b, ids[7], False))
        assert big["result"]["extensions"]["https://example.com/ext/big"] == BIG
        original = loads_json(single(live_server, auth, ids[0], False))
        copy = loads_json(single(app_b.url, auth_b, ids[0], False))
        assert copy["stored"] == original["stored"]
        assert copy["authority"] == original["authority"]  # kept, not the importer's
        assert copy["timestamp"] == original["timestamp"]
    finally:
        app_b.stop()


def test_export_filters_by_learner_provider_and_time(live_server, xapi_credential, db,
                                                     mongo_server_uri, tmp_path):
    from lrs.auth import create_credential

    other, other_secret = create_credential("Other provider", ["statements/write"])
    rng = random.Random(7)
    mine = [quiz("ana@school.example", "ALG.1.1", 0.9, n, rng) for n in range(3)]
    theirs = [quiz("ben@school.example", "ALG.1.2", 0.9, n, rng) for n in range(2)]
    headers = {"X-Experience-API-Version": "1.0.3", "Content-Type": "application/json"}
    first = requests.post(live_server + "/xapi/statements", json=mine[:2], timeout=10,
                          headers=dict(headers, Authorization=basic_auth(*xapi_credential)))
    assert first.status_code == 200
    time.sleep(0.05)
    middle = requests.get(live_server + "/xapi/statements", params={"limit": 1}, timeout=10,
                          headers=dict(headers, Authorization=basic_auth(*xapi_credential)))
    cut = middle.json()["statements"][0]["stored"]
    time.sleep(0.05)
    for body, key in ((theirs, (other.key, other_secret)), (mine[2:], xapi_credential)):
        assert requests.post(live_server + "/xapi/statements", json=body, timeout=10,
                             headers=dict(headers, Authorization=basic_auth(*key))
                             ).status_code == 200
    time.sleep(0.1)
    env = env_of(db, mongo_server_uri, tmp_path)

    def exported(*args) -> list[str]:
        done = cli(["statements", "export", *args], env)
        assert done.returncode == 0, done.stderr.decode()
        return [orjson.loads(line)["id"] for line in done.stdout.splitlines()]

    assert exported("--agent", "ana@school.example") == [s["id"] for s in mine]
    assert exported("--agent", '{"mbox": "mailto:ben@school.example"}') == \
        [s["id"] for s in theirs]
    assert exported("--provider", other.key) == [s["id"] for s in theirs]
    assert exported("--since", cut) == [s["id"] for s in theirs + mine[2:]]
    assert exported("--until", cut) == [s["id"] for s in mine[:2]]
    assert exported("--agent", "ana@school.example", "--since", cut) == [mine[2]["id"]]
    bad = cli(["statements", "export", "--agent", "nobody"], env)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr


def test_import_reports_bad_lines_and_conflicts_without_stopping(db, other_db,
                                                                 mongo_server_uri, tmp_path):
    rng = random.Random(3)
    good = [quiz("cy@school.example", "ALG.2.1", 0.8, n, rng) for n in range(3)]
    clash = dict(good[0], result={"score": {"scaled": 0.1}})  # same id, other content
    path = tmp_path / "in.ndjson"
    path.write_bytes(b"\n".join([
        orjson.dumps(good[0]),
        b"{not json",
        orjson.dumps({"actor": {"mbox": "mailto:x@y.z"}, "object": {"id": "https://x.y"}}),
        b"",
        orjson.dumps(clash),
        orjson.dumps(good[1]),
        b"[1, 2]",
        orjson.dumps({k: v for k, v in good[2].items() if k != "id"}),  # an id is made
    ]) + b"\n")
    env = env_of(other_db, mongo_server_uri, tmp_path)
    done = cli(["statements", "import", str(path), "--json"], env)
    assert done.returncode == 1, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["stored"] == 3 and report["read"] == 4
    assert report["conflicts"] == [good[0]["id"]]
    assert [b["line"] for b in report["bad_lines"]] == [2, 3, 7]
    assert "verb" in report["bad_lines"][1]["message"]
    # A second run makes the same id for the statement that had none.
    again = json.loads(cli(["statements", "import", str(path), "--json"], env).stdout)
    assert (again["stored"], again["present"]) == (0, 3)
    human = cli(["statements", "import", str(path)], env)
    assert b"line 2:" in human.stdout and b"conflict:" in human.stdout

    strict_env = env_of(db, mongo_server_uri, tmp_path)
    strict = cli(["statements", "import", str(path), "--strict"], strict_env)
    assert strict.returncode == 2 and b"line 2" in strict.stderr
    assert b"Traceback" not in strict.stderr
    stored = {d["sid"] for d in db["lrs_statements"].find({}, {"sid": 1})}
    assert stored == {good[0]["id"]}  # what came before the bad line, nothing after
    missing = cli(["statements", "import", str(tmp_path / "nope.ndjson")], env)
    assert missing.returncode == 2 and b"no such file" in missing.stderr


def test_import_from_another_lrs_follows_more_and_resumes(
        live_server, xapi_credential, db, other_db, mongo_server_uri, tmp_path):
    auth = basic_auth(*xapi_credential)
    lrs = tincan.RemoteLRS(endpoint=live_server + "/xapi/", username=xapi_credential[0],
                           password=xapi_credential[1], version="1.0.3")
    ids = provider_statements(lrs, live_server, auth)
    time.sleep(0.1)
    env = env_of(other_db, mongo_server_uri, tmp_path, MASTERYHUB_IMPORT_USERNAME=
                 xapi_credential[0], MASTERYHUB_IMPORT_PASSWORD=xapi_credential[1])
    source = live_server + "/xapi/"
    # Interrupted after two pages of three...
    first = cli(["statements", "import", source, "--page-size", "3", "--max-pages", "2",
                 "--json"], env)
    assert first.returncode == 0, first.stderr.decode()
    report = json.loads(first.stdout)
    assert report["pages"] == 2 and report["complete"] is False
    assert report["stored"] == 6
    # ...then resumed from the saved `more` link to the end.
    second = cli(["statements", "import", source, "--page-size", "3", "--json"], env)
    assert second.returncode == 0, second.stderr.decode()
    report = json.loads(second.stdout)
    assert report["complete"] is True and report["present"] == 0
    # The voided statement is not listed by an LRS: it was fetched by voidedStatementId.
    assert report["stored"] == len(ids) - 6
    place = other_db["lrs_import_progress"].find_one()
    assert place["more"] is None and place["pages"] == 3  # 8 listed, 3 a page

    def stored(database) -> dict:
        return {d["sid"]: (bytes(d["j"]), bool(d.get("v")))
                for d in database["lrs_statements"].find()}

    assert stored(other_db) == stored(db)
    assert stored(other_db)[ids[2]][1] is True  # voided here too
    # A later run only asks for what was stored since.
    third = json.loads(cli(["statements", "import", source, "--json"], env).stdout)
    assert third["stored"] == 0 and third["read"] <= 1
    wrong = cli(["statements", "import", source, "--password", "nope", "--restart"], env)
    assert wrong.returncode == 1 and b"401" in wrong.stderr
    assert b"Traceback" not in wrong.stderr


def test_backup_restore_then_statements_reproduce_mastery_and_credit(
        app, client, xapi_headers, db, other_db, mongo_server_uri, tmp_path):
    from opskit import load_sample_catalog

    from lti_tool.keys import active_key
    from lti_tool.models import Platform
    from mappings import evidence
    from mappings.review import decide
    from mappings.worker import Worker

    load_sample_catalog()
    Platform(identifier="canvas-test", name="Canvas (test)", issuer="https://canvas.test",
             client_id="1000", auth_login_url="https://canvas.test/auth",
             auth_token_url="https://canvas.test/token",
             key_set_url="https://canvas.test/jwks", deployments=["d1"]).save()
    active_key()
    rng = random.Random(11)
    codes = ["ALG.1.1", "ALG.1.2", "ALG.1.3", "ALG.1.4", "ALG.2.1", "ALG.2.2", "ALG.2.3",
             "ALG.3.1", "ALG.3.2", "ALG.4.1"]
    statements = [quiz(f"s{n % 4}@school.example", codes[n % 10], 0.6 + (n % 5) / 10, n, rng)
                  for n in range(60)]
    internship = {"id": str(uuid.uuid4()), "actor": {"mbox": "mailto:s1@school.example"},
                  "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
                  "object": {"id": "https://internships.example.org/tasks/budget",
                             "definition": {"type": "https://w3id.org/xapi/masteryhub/"
                                                    "activities/internship-task"}}}
    headers = dict(xapi_headers, **{"Content-Type": "application/json"})
    for i in range(0, 60, 20):
        assert client.post("/xapi/statements", data=json.dumps(statements[i:i + 20]),
                           headers=headers).status_code == 200
    assert client.post("/xapi/statements", data=json.dumps([internship]),
                       headers=headers).status_code == 200
    assert client.post("/xapi/statements", data=json.dumps([void(statements[5]["id"], rng)]),
                       headers=headers).status_code == 200
    worker = Worker(db, name="test")
    time.sleep(0.1)
    for _ in range(20):
        worker.run_once()
    pending = evidence.pending(db)
    assert len(pending) == 2
    decide(db, pending[0]["_id"], "approve", by="Ms Rivera", comment="seen on site")
    decide(db, pending[1]["_id"], "override", by="Ms Rivera", points=5)
    worker.run_once()
    worker.release()
    before = snapshot(db)
    assert any(c[0] == "awarded" for c in before["credits"].values()) or before["credits"]

    env_a = env_of(db, mongo_server_uri, tmp_path, MASTERYHUB_BACKUP_PASSPHRASE="correct horse")
    archive = tmp_path / "backup.tar.gz"
    done = cli(["backup", str(archive), "--encrypt", "--json"], env_a)
    assert done.returncode == 0, done.stderr.decode()
    manifest = json.loads(done.stdout)
    assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
    backed = manifest["collections"]
    for name in ("frameworks", "competencies", "credit_rules", "rule_sets", "learners",
                 "evidence", "audit", "lrs_credentials", "lti_platforms", "lti_keys"):
        assert backed[name]["documents"] > 0, name
    assert backed["lti_keys"]["encrypted"] and not backed["evidence"]["encrypted"]
    assert "lrs_statements" not in backed and "worker_state" not in backed
    plain = tmp_path / "plain-backup"
    warned = cli(["backup", str(plain)], env_a)
    assert warned.returncode == 0 and b"Warning" in warned.stderr
    assert stat.S_IMODE(os.stat(plain).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(plain / "lti_keys.jsonl").st_mode) == 0o600
    exported = tmp_path / "statements.ndjson"
    assert cli(["statements", "export", "-o", str(exported)], env_a).returncode == 0

    env_b = env_of(other_db, mongo_server_uri, tmp_path)
    wrong = cli(["restore", str(archive)], dict(env_b, MASTERYHUB_BACKUP_PASSPHRASE="nope"))
    assert wrong.returncode == 1 and b"wrong passphrase" in wrong.stderr
    assert other_db["frameworks"].count_documents({}) == 0  # nothing half-restored
    env_b["MASTERYHUB_BACKUP_PASSPHRASE"] = "correct horse"
    done = cli(["restore", str(archive)], env_b)
    assert done.returncode == 0, done.stderr.decode()
    refused = cli(["restore", str(archive)], env_b)
    assert refused.returncode == 1 and b"not empty" in refused.stderr
    forced = cli(["restore", str(archive), "--force"], env_b)
    assert forced.returncode == 0, forced.stderr.decode()
    assert cli(["statements", "import", str(exported)], env_b).returncode == 0
    done = cli(["recompute"], env_b)
    assert done.returncode == 0, done.stderr.decode()
    assert snapshot(other_db) == before
    for name in ("lti_platforms", "lti_keys", "lrs_credentials", "learners", "audit"):
        assert list(other_db[name].find(sort=[("_id", 1)])) == \
            list(db[name].find(sort=[("_id", 1)])), name
