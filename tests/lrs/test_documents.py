"""State, Activity Profile and Agent Profile documents, /agents and /activities, through
HTTP as providers see them (xAPI 1.0.3 Part Three §2.2 to §2.7, §3.1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import urllib.parse

import pytest
from xapi_auth import basic_auth

from lrs.auth import create_credential

AGENT = {"objectType": "Agent", "name": "Ana", "mbox": "mailto:ana@example.edu"}
# The same learner, written differently: the documents must be the same.
AGENT_BARE = {"mbox": "mailto:ana@example.edu"}
OTHER = {"account": {"homePage": "https://lms.example.edu", "name": "u-42"}}
ACT = "https://courses.example.com/algebra/unit-1"
REG = "6E4F8A52-1B0C-4B1E-9D52-3C9B8E7A1F00"
REG2 = "0b6f4c7e-2d3a-4f5b-8c9d-0e1f2a3b4c5d"

STATE = "/xapi/activities/state"
APROF = "/xapi/activities/profile"
GPROF = "/xapi/agents/profile"


def url(path: str, **params) -> str:
    query = urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, dict) else v
                                    for k, v in params.items()})
    return f"{path}?{query}" if query else path


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def quoted(data: bytes) -> str:
    """The ETag header the LRS must send for this content (Part Three §3.1.s4.b2/b4)."""
    return '"' + sha1(data) + '"'


def req(client, method, path, headers, *, body=None, content_type=None, extra=None, **params):
    hdrs = dict(headers)
    if content_type:
        hdrs["Content-Type"] = content_type
    hdrs.update(extra or {})
    return client.open(url(path, **params), method=method, headers=hdrs, data=body)


def error(response) -> str:
    return response.get_json()["error"]["message"]


# ------------------------------------------------------------------------------ State


def test_state_crud_round_trip(client, xapi_headers, db):
    params = {"activityId": ACT, "agent": AGENT, "stateId": "bookmark"}
    put = req(client, "PUT", STATE, xapi_headers, body=b'{"page": 3}',
              content_type="application/json", **params)
    assert put.status_code == 204, put.data

    got = req(client, "GET", STATE, xapi_headers, **params)
    assert got.status_code == 200
    assert got.data == b'{"page": 3}'
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["ETag"] == quoted(b"{\"page\": 3}")
    assert "Last-Modified" in got.headers
    # The agent is matched by its identifier, not by its spelling.
    same = req(client, "GET", STATE, xapi_headers,
               **dict(params, agent=AGENT_BARE))
    assert same.status_code == 200 and same.data == got.data

    # A State PUT needs no precondition to replace (Part Three §3.1.s3).
    assert req(client, "PUT", STATE, xapi_headers, body=b"plain", content_type="text/plain",
               **params).status_code == 204
    got = req(client, "GET", STATE, xapi_headers, **params)
    assert got.data == b"plain" and got.headers["Content-Type"] == "text/plain"

    stored = db["lrs_documents"].find_one({"kind": "state"})
    assert stored["agent"] == "mbox|mailto:ana@example.edu"
    assert stored["activity"] == ACT and stored["registration"] is None
    assert stored["doc_id"] == "bookmark" and stored["etag"] == sha1(b"plain")
    assert stored["updated"].microsecond % 1000 == 0

    assert req(client, "DELETE", STATE, xapi_headers, **params).status_code == 204
    missing = req(client, "GET", STATE, xapi_headers, **params)
    assert missing.status_code == 404 and "bookmark" in error(missing)
    # Deleting what is gone is still a success.
    assert req(client, "DELETE", STATE, xapi_headers, **params).status_code == 204


def test_state_binary_content_is_kept_exactly(client, xapi_headers):
    blob = bytes(range(256)) * 10
    params = {"activityId": ACT, "agent": AGENT, "stateId": "blob"}
    assert req(client, "PUT", STATE, xapi_headers, body=blob,
               content_type="application/octet-stream", **params).status_code == 204
    got = req(client, "GET", STATE, xapi_headers, **params)
    assert got.data == blob
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["ETag"] == quoted(blob)


def test_state_registration_scopes_documents(client, xapi_headers):
    base = {"activityId": ACT, "agent": AGENT, "stateId": "s"}
    for reg, content in ((None, b"none"), (REG, b"one"), (REG2, b"two")):
        params = dict(base, registration=reg) if reg else base
        assert req(client, "PUT", STATE, xapi_headers, body=content,
                   content_type="text/plain", **params).status_code == 204
    # Registrations are UUIDs: compared without regard to case.
    got = req(client, "GET", STATE, xapi_headers, **dict(base, registration=REG.lower()))
    assert got.data == b"one"
    assert req(client, "GET", STATE, xapi_headers, **base).data == b"none"


def test_state_list_ids_and_since(client, xapi_headers):
    base = {"activityId": ACT, "agent": AGENT}
    for state_id in ("a", "b"):
        req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain",
            **dict(base, stateId=state_id))
    time.sleep(0.01)
    listed = req(client, "GET", STATE, xapi_headers, **base)
    assert listed.status_code == 200 and listed.get_json() == ["a", "b"]
    assert listed.headers["ETag"] == quoted(listed.data)
    assert "Last-Modified" in listed.headers

    between = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    req(client, "PUT", STATE, xapi_headers, body=b"2", content_type="text/plain",
        **dict(base, stateId="a"))
    req(client, "PUT", STATE, xapi_headers, body=b"3", content_type="text/plain",
        **dict(base, stateId="c", registration=REG))
    since = req(client, "GET", STATE, xapi_headers, **dict(base, since=between))
    assert since.get_json() == ["a", "c"]
    # A registration narrows the listing; without it every registration is listed.
    assert req(client, "GET", STATE, xapi_headers,
               **dict(base, registration=REG)).get_json() == ["c"]
    # Another agent sees nothing.
    assert req(client, "GET", STATE, xapi_headers,
               **dict(base, agent=OTHER)).get_json() == []
    # A timestamp in the future lists nothing.
    assert req(client, "GET", STATE, xapi_headers,
               **dict(base, since="2999-01-01T00:00:00Z")).get_json() == []


def test_state_multiple_delete_with_and_without_registration(client, xapi_headers, db):
    base = {"activityId": ACT, "agent": AGENT}
    for state_id, reg in (("x", None), ("y", REG), ("z", REG), ("w", REG2)):
        params = dict(base, stateId=state_id, **({"registration": reg} if reg else {}))
        req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain", **params)
    req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain",
        **dict(base, agent=OTHER, stateId="keep"))

    gone = req(client, "DELETE", STATE, xapi_headers, **dict(base, registration=REG))
    assert gone.status_code == 204
    assert req(client, "GET", STATE, xapi_headers, **base).get_json() == ["w", "x"]

    assert req(client, "DELETE", STATE, xapi_headers, **base).status_code == 204
    assert req(client, "GET", STATE, xapi_headers, **base).get_json() == []
    assert db["lrs_documents"].count_documents({}) == 1  # the other agent's document


def test_state_multiple_delete_honours_if_match_on_the_id_list(client, xapi_headers):
    base = {"activityId": ACT, "agent": AGENT}
    req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain",
        **dict(base, stateId="a"))
    listed = req(client, "GET", STATE, xapi_headers, **base)
    req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain",
        **dict(base, stateId="b"))
    stale = req(client, "DELETE", STATE, xapi_headers, extra={"If-Match": listed.headers["ETag"]},
                **base)
    assert stale.status_code == 412
    assert req(client, "GET", STATE, xapi_headers, **base).get_json() == ["a", "b"]
    fresh = req(client, "GET", STATE, xapi_headers, **base).headers["ETag"]
    assert req(client, "DELETE", STATE, xapi_headers, extra={"If-Match": fresh},
               **base).status_code == 204
    assert req(client, "GET", STATE, xapi_headers, **base).get_json() == []


# ------------------------------------------------------------------------- JSON merge


@pytest.mark.parametrize("path,params", [
    (STATE, {"activityId": ACT, "agent": AGENT, "stateId": "vars"}),
    (APROF, {"activityId": ACT, "profileId": "vars"}),
    (GPROF, {"agent": AGENT, "profileId": "vars"}),
])
def test_post_merges_top_level_properties(client, xapi_headers, path, params):
    created = req(client, "POST", path, xapi_headers, body=b'{"x": "foo", "y": "bar"}',
                  content_type="application/json", **params)
    assert created.status_code == 204, created.data
    merged = req(client, "POST", path, xapi_headers,
                 body=b'{"x": "bash", "z": {"deep": 1}, "big": 123456789012345678901234567890}',
                 content_type="application/json; charset=utf-8", **params)
    assert merged.status_code == 204, merged.data
    got = req(client, "GET", path, xapi_headers, **params)
    assert json.loads(got.data) == {"x": "bash", "y": "bar", "z": {"deep": 1},
                                    "big": 123456789012345678901234567890}
    assert got.headers["ETag"] == quoted(got.data)


def test_post_merge_rejections_change_nothing(client, xapi_headers):
    params = {"activityId": ACT, "agent": AGENT, "stateId": "vars"}
    req(client, "PUT", STATE, xapi_headers, body=b'{"a": 1}', content_type="application/json",
        **params)
    before = req(client, "GET", STATE, xapi_headers, **params).data

    cases = [
        (b'{"b": 2}', "text/plain", "application/json"),
        (b"[1, 2]", "application/json", "not a JSON object"),
        (b"{nope", "application/json", "cannot be parsed"),
        (b'{"n": NaN}', "application/json", "cannot be parsed"),
    ]
    for body, content_type, message in cases:
        response = req(client, "POST", STATE, xapi_headers, body=body,
                       content_type=content_type, **params)
        assert response.status_code == 400 and message in error(response), (body, response.data)
    assert req(client, "GET", STATE, xapi_headers, **params).data == before

    # The stored document is not JSON: a JSON POST cannot merge into it.
    other = dict(params, stateId="text")
    req(client, "PUT", STATE, xapi_headers, body=b"hello", content_type="text/plain", **other)
    response = req(client, "POST", STATE, xapi_headers, body=b'{"a": 1}',
                   content_type="application/json", **other)
    assert response.status_code == 400 and "text/plain" in error(response)
    # Stored as application/json but not a JSON object.
    broken = dict(params, stateId="broken")
    req(client, "PUT", STATE, xapi_headers, body=b"[1]", content_type="application/json",
        **broken)
    response = req(client, "POST", STATE, xapi_headers, body=b'{"a": 1}',
                   content_type="application/json", **broken)
    assert response.status_code == 400 and "stored document" in error(response)
    assert req(client, "GET", STATE, xapi_headers, **broken).data == b"[1]"
    # Creating through POST also needs a JSON object (adlnet/xAPI-Spec#641).
    fresh = dict(params, stateId="fresh")
    response = req(client, "POST", STATE, xapi_headers, body=b"x", content_type="text/plain",
                   **fresh)
    assert response.status_code == 400
    assert req(client, "GET", STATE, xapi_headers, **fresh).status_code == 404


# ----------------------------------------------------------------------- Concurrency


@pytest.mark.parametrize("path,params", [
    (APROF, {"activityId": ACT, "profileId": "p"}),
    (GPROF, {"agent": AGENT, "profileId": "p"}),
])
def test_profile_concurrency(client, xapi_headers, path, params):
    # Creating without a precondition is fine: nothing exists to conflict with.
    assert req(client, "PUT", path, xapi_headers, body=b"v1", content_type="text/plain",
               **params).status_code == 204
    etag = req(client, "GET", path, xapi_headers, **params).headers["ETag"]
    assert etag == quoted(b"v1")

    # Part Three §3.1.s4.b13: a PUT on an existing profile without either header is 409.
    conflict = req(client, "PUT", path, xapi_headers, body=b"v2", content_type="text/plain",
                   **params)
    assert conflict.status_code == 409
    assert "If-Match" in error(conflict) and etag in error(conflict)
    # If-None-Match: * on an existing document fails.
    exists = req(client, "PUT", path, xapi_headers, body=b"v2", content_type="text/plain",
                 extra={"If-None-Match": "*"}, **params)
    assert exists.status_code == 412
    # A stale If-Match fails, for PUT, POST and DELETE.
    wrong = quoted(b"other")
    for method, body, ctype in (("PUT", b"v2", "text/plain"),
                                ("POST", b'{"a":1}', "application/json"),
                                ("DELETE", None, None)):
        stale = req(client, method, path, xapi_headers, body=body, content_type=ctype,
                    extra={"If-Match": wrong}, **params)
        assert stale.status_code == 412, (method, stale.data)
    assert req(client, "GET", path, xapi_headers, **params).data == b"v1"

    # The right ETag (quoted or not, in a list) replaces it.
    ok = req(client, "PUT", path, xapi_headers, body=b'{"a": 1}',
             content_type="application/json", extra={"If-Match": f"{wrong}, {etag}"}, **params)
    assert ok.status_code == 204
    etag2 = quoted(b"{\"a\": 1}")
    assert req(client, "GET", path, xapi_headers, **params).headers["ETag"] == etag2
    # POST without headers merges (only PUT needs a precondition).
    assert req(client, "POST", path, xapi_headers, body=b'{"b": 2}',
               content_type="application/json", **params).status_code == 204
    etag3 = req(client, "GET", path, xapi_headers, **params).headers["ETag"]
    assert req(client, "PUT", path, xapi_headers, body=b"v4", content_type="text/plain",
               extra={"If-Match": etag3.strip('"')}, **params).status_code == 204
    # DELETE with the matching ETag.
    etag4 = req(client, "GET", path, xapi_headers, **params).headers["ETag"]
    assert req(client, "DELETE", path, xapi_headers, extra={"If-Match": etag4},
               **params).status_code == 204
    assert req(client, "GET", path, xapi_headers, **params).status_code == 404

    # If-Match on a missing document fails; If-None-Match: * creates.
    assert req(client, "PUT", path, xapi_headers, body=b"n", content_type="text/plain",
               extra={"If-Match": "*"}, **params).status_code == 412
    assert req(client, "PUT", path, xapi_headers, body=b"n", content_type="text/plain",
               extra={"If-None-Match": "*"}, **params).status_code == 204


def test_state_put_needs_no_precondition_but_honours_one(client, xapi_headers):
    params = {"activityId": ACT, "agent": AGENT, "stateId": "s"}
    req(client, "PUT", STATE, xapi_headers, body=b"1", content_type="text/plain", **params)
    assert req(client, "PUT", STATE, xapi_headers, body=b"2", content_type="text/plain",
               **params).status_code == 204
    assert req(client, "PUT", STATE, xapi_headers, body=b"3", content_type="text/plain",
               extra={"If-Match": quoted(b"1")}, **params).status_code == 412
    assert req(client, "PUT", STATE, xapi_headers, body=b"3", content_type="text/plain",
               extra={"If-None-Match": "*"}, **params).status_code == 412
    assert req(client, "DELETE", STATE, xapi_headers, extra={"If-Match": quoted(b"1")},
               **params).status_code == 412
    assert req(client, "GET", STATE, xapi_headers, **params).data == b"2"


def test_get_with_matching_if_none_match_is_304(client, xapi_headers):
    params = {"activityId": ACT, "profileId": "p"}
    req(client, "PUT", APROF, xapi_headers, body=b"v", content_type="text/plain", **params)
    etag = req(client, "GET", APROF, xapi_headers, **params).headers["ETag"]
    cached = req(client, "GET", APROF, xapi_headers, extra={"If-None-Match": etag}, **params)
    assert cached.status_code == 304 and cached.data == b""


# ------------------------------------------------------------------- Profiles (CRUD)


def test_activity_profile_crud_and_list(client, xapi_headers, db):
    for pid in ("one", "two"):
        assert req(client, "PUT", APROF, xapi_headers, body=pid.encode(),
                   content_type="text/plain", activityId=ACT, profileId=pid).status_code == 204
    req(client, "PUT", APROF, xapi_headers, body=b"x", content_type="text/plain",
        activityId=ACT + "/other", profileId="three")
    assert req(client, "GET", APROF, xapi_headers, activityId=ACT).get_json() == ["one", "two"]
    got = req(client, "GET", APROF, xapi_headers, activityId=ACT, profileId="two")
    assert got.data == b"two" and got.headers["Content-Type"] == "text/plain"
    assert req(client, "GET", APROF, xapi_headers,
               activityId=ACT, since="2999-01-01T00:00:00Z").get_json() == []
    assert req(client, "DELETE", APROF, xapi_headers, activityId=ACT,
               extra={"If-Match": got.headers["ETag"]}, profileId="two").status_code == 204
    assert req(client, "GET", APROF, xapi_headers, activityId=ACT).get_json() == ["one"]
    doc = db["lrs_documents"].find_one({"kind": "activity_profile", "doc_id": "one"})
    assert doc["agent"] is None and doc["registration"] is None
    # Activity profiles have no multiple-document DELETE.
    response = req(client, "DELETE", APROF, xapi_headers, activityId=ACT)
    assert response.status_code == 400 and "profileId" in error(response)


def test_agent_profile_crud_and_list(client, xapi_headers):
    assert req(client, "PUT", GPROF, xapi_headers, body=b'{"theme": "dark"}',
               content_type="application/json", agent=AGENT, profileId="prefs").status_code == 204
    assert req(client, "PUT", GPROF, xapi_headers, body=b"x", content_type="text/plain",
               agent=OTHER, profileId="other").status_code == 204
    assert req(client, "GET", GPROF, xapi_headers, agent=AGENT_BARE).get_json() == ["prefs"]
    got = req(client, "GET", GPROF, xapi_headers, agent=AGENT, profileId="prefs")
    assert got.get_json() == {"theme": "dark"}
    assert req(client, "DELETE", GPROF, xapi_headers, agent=AGENT, profileId="prefs",
               extra={"If-Match": got.headers["ETag"]}).status_code == 204
    assert req(client, "GET", GPROF, xapi_headers, agent=AGENT).get_json() == []
    # The agent parameter is an Agent, not a Group (Part Three §2.6.s3 note).
    group = {"objectType": "Group", "mbox": "mailto:team@example.edu"}
    response = req(client, "GET", GPROF, xapi_headers, agent=group)
    assert response.status_code == 400 and "Group" in error(response)


# ------------------------------------------------------------------ /agents, /activities


def test_agents_returns_a_person(client, xapi_headers):
    got = req(client, "GET", "/xapi/agents", xapi_headers, agent=AGENT)
    assert got.status_code == 200
    assert got.get_json() == {"objectType": "Person", "name": ["Ana"],
                              "mbox": ["mailto:ana@example.edu"]}
    assert got.headers["ETag"] == quoted(got.data)
    account = req(client, "GET", "/xapi/agents", xapi_headers, agent=OTHER).get_json()
    assert account == {"objectType": "Person", "account": [OTHER["account"]]}


def test_agents_collects_names_from_statements(client, xapi_headers):
    stmt = {"actor": {"mbox": "mailto:bo@example.edu", "name": "Bo Lind"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
            "object": {"id": ACT}}
    posted = client.post("/xapi/statements", data=json.dumps(stmt),
                         headers=dict(xapi_headers, **{"Content-Type": "application/json"}))
    assert posted.status_code == 200, posted.data
    got = req(client, "GET", "/xapi/agents", xapi_headers,
              agent={"mbox": "mailto:bo@example.edu", "name": "Bo"}).get_json()
    assert got == {"objectType": "Person", "name": ["Bo", "Bo Lind"],
                   "mbox": ["mailto:bo@example.edu"]}


def test_activities_returns_canonical_or_bare_activity(client, xapi_headers, db):
    bare = req(client, "GET", "/xapi/activities", xapi_headers, activityId=ACT)
    assert bare.status_code == 200
    assert bare.get_json() == {"objectType": "Activity", "id": ACT}
    assert bare.headers["ETag"] == quoted(bare.data)

    stmt = {"actor": AGENT, "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"},
            "object": {"id": ACT, "definition": {"name": {"en-US": "Unit 1"}}}}
    posted = client.post("/xapi/statements", data=json.dumps(stmt),
                         headers=dict(xapi_headers, **{"Content-Type": "application/json"}))
    assert posted.status_code == 200, posted.data
    known = req(client, "GET", "/xapi/activities", xapi_headers, activityId=ACT).get_json()
    assert known == {"objectType": "Activity", "id": ACT,
                     "definition": {"name": {"en-US": "Unit 1"}}}

    for params, message in (({}, "activityId"), ({"activityId": "unit-1"}, "IRI"),
                            ({"activityId": ACT, "activityID": ACT}, "activityID")):
        response = req(client, "GET", "/xapi/activities", xapi_headers, **params)
        assert response.status_code == 400 and message in error(response), params


# -------------------------------------------------------------------------- Bad input


@pytest.mark.parametrize("method,path,params,message", [
    ("GET", STATE, {"activityId": ACT}, "'agent'"),
    ("PUT", STATE, {"activityId": ACT, "agent": AGENT}, "'stateId'"),
    ("GET", STATE, {"agent": AGENT, "stateId": "s"}, "'activityId'"),
    ("GET", STATE, {"activityId": ACT, "agent": "{not json", "stateId": "s"}, "not valid JSON"),
    ("GET", STATE, {"activityId": ACT, "agent": {"mbox": "ana@example.edu"}, "stateId": "s"},
     "agent.mbox"),
    ("GET", STATE, {"activityId": ACT, "agent": {"name": "Ana"}, "stateId": "s"},
     "inverse functional identifier"),
    ("GET", STATE, {"activityId": ACT, "agent": "[1]", "stateId": "s"}, "agent"),
    ("GET", STATE, {"activityId": "not an iri", "agent": AGENT, "stateId": "s"}, "activityId"),
    ("GET", STATE, {"activityId": ACT, "agent": AGENT, "registration": "nope"},
     "'registration'"),
    ("GET", STATE, {"activityId": ACT, "agent": AGENT, "since": "yesterday"}, "since"),
    ("GET", STATE, {"activityId": ACT, "agent": AGENT, "stateId": "s", "since":
                    "2024-01-01T00:00:00Z"}, "since"),
    ("GET", STATE, {"activityId": ACT, "agent": AGENT, "stateid": "s"}, "'stateId'"),
    ("GET", STATE, {"activityId": ACT, "agent": AGENT, "colour": "blue"}, "'colour'"),
    ("PUT", STATE, {"activityId": ACT, "agent": AGENT, "stateId": ""}, "empty"),
    ("GET", APROF, {"activityId": ACT, "agent": AGENT}, "'agent'"),
    ("GET", GPROF, {"agent": AGENT, "registration": REG}, "'registration'"),
    ("PUT", GPROF, {"agent": AGENT}, "'profileId'"),
    ("GET", "/xapi/agents", {}, "'agent'"),
    ("GET", "/xapi/agents", {"agent": AGENT, "profileId": "x"}, "'profileId'"),
])
def test_bad_parameters_are_400_and_store_nothing(client, xapi_headers, db, method, path,
                                                  params, message):
    response = req(client, method, path, xapi_headers, body=b"{}",
                   content_type="application/json", **params)
    assert response.status_code == 400, response.data
    assert message in error(response)
    assert db["lrs_documents"].count_documents({}) == 0


def test_bad_precondition_headers_are_400(client, xapi_headers):
    params = {"activityId": ACT, "profileId": "p"}
    response = req(client, "PUT", APROF, xapi_headers, body=b"x", content_type="text/plain",
                   extra={"If-Match": " , "}, **params)
    assert response.status_code == 400 and "If-Match" in error(response)


def test_unknown_method_is_405(client, xapi_headers):
    response = client.open(url(STATE, activityId=ACT, agent=AGENT), method="PATCH",
                           headers=xapi_headers)
    assert response.status_code == 405


# --------------------------------------------------------------------- Authorization


def test_scopes(client, app):
    write_only, secret = create_credential("Writer", ["statements/write"])
    headers = {"Authorization": basic_auth(write_only.key, secret),
               "X-Experience-API-Version": "1.0.3"}
    params = {"activityId": ACT, "agent": AGENT, "stateId": "s"}
    for method in ("GET", "PUT", "POST", "DELETE"):
        response = req(client, method, STATE, headers, body=b"{}",
                       content_type="application/json", **params)
        assert response.status_code == 403, method
        assert "'state'" in error(response)
    assert req(client, "GET", APROF, headers, activityId=ACT).status_code == 403
    assert req(client, "GET", GPROF, headers, agent=AGENT).status_code == 403
    assert req(client, "GET", "/xapi/activities", headers, activityId=ACT).status_code == 403
    assert req(client, "GET", "/xapi/agents", headers, agent=AGENT).status_code == 403

    reader, secret = create_credential("Reader", ["all/read"])
    headers = {"Authorization": basic_auth(reader.key, secret),
               "X-Experience-API-Version": "1.0.3"}
    assert req(client, "GET", STATE, headers, activityId=ACT, agent=AGENT).status_code == 200
    assert req(client, "PUT", STATE, headers, body=b"x", content_type="text/plain",
               **params).status_code == 403
    assert req(client, "PUT", APROF, headers, body=b"x", content_type="text/plain",
               activityId=ACT, profileId="p").status_code == 403

    state_only, secret = create_credential("Stateful", ["state"])
    headers = {"Authorization": basic_auth(state_only.key, secret),
               "X-Experience-API-Version": "1.0.3"}
    assert req(client, "PUT", STATE, headers, body=b"x", content_type="text/plain",
               **params).status_code == 204
    assert req(client, "GET", GPROF, headers, agent=AGENT).status_code == 403

    no_auth = client.get(url(STATE, **params), headers={"X-Experience-API-Version": "1.0.3"})
    assert no_auth.status_code == 401


# ------------------------------------------------------------- HEAD, alternate syntax


def test_head_has_headers_but_no_body(client, xapi_headers):
    params = {"activityId": ACT, "agent": AGENT, "stateId": "s"}
    req(client, "PUT", STATE, xapi_headers, body=b"hello", content_type="text/plain", **params)
    head = req(client, "HEAD", STATE, xapi_headers, **params)
    assert head.status_code == 200 and head.data == b""
    assert head.headers["ETag"] == quoted(b"hello")
    assert head.headers["Content-Type"] == "text/plain"
    assert "Last-Modified" in head.headers
    assert req(client, "HEAD", STATE, xapi_headers,
               **dict(params, stateId="nope")).status_code == 404
    listed = req(client, "HEAD", STATE, xapi_headers, activityId=ACT, agent=AGENT)
    assert listed.status_code == 200 and listed.data == b"" and "ETag" in listed.headers


def test_alternate_request_syntax(client, xapi_headers):
    """Part Three §1.3: method, headers, parameters and content as form fields."""
    form = {"Authorization": xapi_headers["Authorization"],
            "X-Experience-API-Version": "1.0.3", "Content-Type": "application/json",
            "activityId": ACT, "agent": json.dumps(AGENT), "profileId": "alt",
            "content": '{"tunnelled": true}'}
    put = client.post(f"{APROF}?method=PUT", data=urllib.parse.urlencode(form),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    # 'agent' is no Activity Profile parameter: rejected like any unknown one.
    assert put.status_code == 400 and "'agent'" in error(put)
    del form["agent"]
    put = client.post(f"{APROF}?method=PUT", data=urllib.parse.urlencode(form),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert put.status_code == 204, put.data
    got = req(client, "GET", APROF, xapi_headers, activityId=ACT, profileId="alt")
    assert got.get_json() == {"tunnelled": True}
    assert got.headers["Content-Type"] == "application/json"

    # A PUT tunnelled the same way on an existing profile needs If-Match, given as a field.
    form["content"] = '{"tunnelled": false}'
    again = client.post(f"{APROF}?method=PUT", data=urllib.parse.urlencode(form),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.status_code == 409
    form["If-Match"] = got.headers["ETag"]
    again = client.post(f"{APROF}?method=PUT", data=urllib.parse.urlencode(form),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.status_code == 204
    fetch = {k: form[k] for k in ("Authorization", "X-Experience-API-Version", "activityId",
                                  "profileId")}
    got = client.post(f"{APROF}?method=GET", data=urllib.parse.urlencode(fetch),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert got.status_code == 200 and got.get_json() == {"tunnelled": False}


def test_documents_index(app, db):
    indexes = db["lrs_documents"].index_information()
    assert set(indexes) == {"_id_", "document_identity"}
    assert indexes["document_identity"]["unique"] is True
    assert [k for k, _ in indexes["document_identity"]["key"]] == [
        "kind", "activity", "agent", "registration", "doc_id"]


# ------------------------------------------------------------- a real xAPI client


def test_tincan_round_trip(live_server, xapi_credential):
    """The documents of a real provider library (tincan), over a real socket."""
    from tincan import (
        Activity,
        ActivityProfileDocument,
        Agent,
        AgentAccount,
        AgentProfileDocument,
        RemoteLRS,
        StateDocument,
    )

    key, secret = xapi_credential
    lrs = RemoteLRS(endpoint=f"{live_server}/xapi/", username=key, password=secret,
                    version="1.0.3")
    agent = Agent(name="Ana", mbox="mailto:ana@example.edu")
    activity = Activity(id=ACT)

    # State: save, list, retrieve, delete with the ETag, clear.
    state = StateDocument(id="bookmark", activity=activity, agent=agent,
                          content='{"page": 3}', content_type="application/json")
    saved = lrs.save_state(state)
    assert saved.success, saved.data
    listed = lrs.retrieve_state_ids(activity=activity, agent=agent)
    assert listed.success and listed.content == ["bookmark"]
    got = lrs.retrieve_state(activity=activity, agent=agent, state_id="bookmark")
    assert got.success and bytes(got.content.content) == b'{"page": 3}'
    etag = dict(got.response.getheaders())["ETag"]
    assert etag == quoted(b"{\"page\": 3}")
    stale = StateDocument(id="bookmark", activity=activity, agent=agent, content="x",
                          etag=quoted(b"old"))
    assert lrs.delete_state(stale).response.status == 412
    got.content.etag = etag
    assert lrs.delete_state(got.content).success
    assert lrs.retrieve_state(activity=activity, agent=agent,
                              state_id="bookmark").response.status == 404
    lrs.save_state(StateDocument(id="a", activity=activity, agent=agent, content="1"))
    assert lrs.clear_state(activity=activity, agent=agent).success
    assert lrs.retrieve_state_ids(activity=activity, agent=agent).content == []

    # Activity profile: create, update with If-Match, refuse without it, delete.
    profile = ActivityProfileDocument(id="settings", activity=activity,
                                      content='{"level": 1}', content_type="application/json")
    assert lrs.save_activity_profile(profile).success
    got = lrs.retrieve_activity_profile(activity=activity, profile_id="settings")
    assert got.success and bytes(got.content.content) == b'{"level": 1}'
    assert lrs.retrieve_activity_profile_ids(activity=activity).content == ["settings"]
    update = ActivityProfileDocument(id="settings", activity=activity,
                                     content='{"level": 2}', content_type="application/json")
    assert lrs.save_activity_profile(update).response.status == 409
    update.etag = dict(got.response.getheaders())["ETag"]
    assert lrs.save_activity_profile(update).success
    got = lrs.retrieve_activity_profile(activity=activity, profile_id="settings")
    assert bytes(got.content.content) == b'{"level": 2}'
    got.content.etag = dict(got.response.getheaders())["ETag"]
    assert lrs.delete_activity_profile(got.content).success
    assert lrs.retrieve_activity_profile_ids(activity=activity).content == []

    # Agent profile, for an account-identified agent.
    learner = Agent(account=AgentAccount(home_page="https://lms.example.edu", name="u-42"))
    prefs = AgentProfileDocument(id="prefs", agent=learner, content='{"theme": "dark"}',
                                 content_type="application/json")
    assert lrs.save_agent_profile(prefs).success
    got = lrs.retrieve_agent_profile(agent=learner, profile_id="prefs")
    assert got.success and json.loads(bytes(got.content.content)) == {"theme": "dark"}
    assert lrs.retrieve_agent_profile_ids(agent=learner).content == ["prefs"]
    got.content.etag = dict(got.response.getheaders())["ETag"]
    assert lrs.delete_agent_profile(got.content).success
    assert lrs.retrieve_agent_profile(agent=learner,
                                      profile_id="prefs").response.status == 404


def test_concurrent_merges_lose_nothing(live_server, xapi_headers):
    """Parallel POSTs to one document over real sockets: each merge is applied to the
    version it read, so every key survives (compare-and-swap with retry)."""
    import http.client
    from concurrent.futures import ThreadPoolExecutor

    params = {"activityId": ACT, "agent": AGENT, "stateId": "shared"}
    target = url(STATE, **params)
    host, port = live_server.removeprefix("http://").split(":")

    def post(i: int) -> int:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("POST", target, body=json.dumps({f"k{i}": i}),
                         headers=dict(xapi_headers, **{"Content-Type": "application/json"}))
            return conn.getresponse().status
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(24)))
    assert set(statuses) == {204}, statuses
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", target, headers=xapi_headers)
    merged = json.loads(conn.getresponse().read())
    conn.close()
    assert merged == {f"k{i}": i for i in range(24)}
