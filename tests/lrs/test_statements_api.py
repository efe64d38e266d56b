"""The Statements resource through HTTP, as a provider's client sees it."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid

import pytest
from xapi_auth import basic_auth

from lrs.auth import create_credential, revoke_credential

ACTOR = {"objectType": "Agent", "name": "Ana", "mbox": "mailto:ana@example.edu"}
VERB = {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "completed"}}
ACTIVITY = {"objectType": "Activity", "id": "https://courses.example.com/algebra/unit-1",
            "definition": {"name": {"en-US": "Unit 1", "fr": "Unité 1"},
                           "type": "http://adlnet.gov/expapi/activities/module"}}


def statement(**overrides) -> dict:
    stmt = {"actor": ACTOR, "verb": VERB, "object": ACTIVITY}
    stmt.update(overrides)
    return stmt


def post(client, headers, body, **kw):
    return client.post("/xapi/statements", data=json.dumps(body),
                       headers=dict(headers, **{"Content-Type": "application/json"}), **kw)


def get(client, headers, **params):
    query = urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, dict) else v
                                    for k, v in params.items()})
    return client.get(f"/xapi/statements?{query}", headers=headers)


def count(db):
    return db["lrs_statements"].count_documents({})


def test_post_single_then_get_it_with_lrs_properties(client, xapi_headers, xapi_credential):
    response = post(client, xapi_headers, statement())
    assert response.status_code == 200, response.data
    (sid,) = response.get_json()
    assert response.headers["X-Experience-API-Version"] == "1.0.3"

    got = get(client, xapi_headers, statementId=sid)
    assert got.status_code == 200
    stmt = got.get_json()
    assert stmt["id"] == sid
    assert stmt["actor"] == ACTOR and stmt["verb"] == VERB
    assert stmt["authority"]["account"]["name"] == xapi_credential[0]
    assert stmt["version"] == "1.0.0"
    assert stmt["stored"].endswith("Z") and stmt["timestamp"] == stmt["stored"]
    assert "X-Experience-API-Consistent-Through" in got.headers
    assert "Last-Modified" in got.headers


def test_post_array_keeps_given_ids_in_order(client, xapi_headers):
    given = str(uuid.uuid4())
    response = post(client, xapi_headers, [statement(), statement(id=given), statement()])
    ids = response.get_json()
    assert response.status_code == 200 and len(ids) == 3 and ids[1] == given
    assert len(set(ids)) == 3


def test_put_is_idempotent_and_conflict_changes_nothing(client, xapi_headers, db):
    sid = str(uuid.uuid4())
    headers = dict(xapi_headers, **{"Content-Type": "application/json"})
    url = f"/xapi/statements?statementId={sid}"
    assert client.put(url, data=json.dumps(statement()), headers=headers).status_code == 204
    before = get(client, xapi_headers, statementId=sid).get_json()
    assert client.put(url, data=json.dumps(statement()), headers=headers).status_code == 204
    other = statement(verb={"id": "http://adlnet.gov/expapi/verbs/failed"})
    conflict = client.put(url, data=json.dumps(other), headers=headers)
    assert conflict.status_code == 409
    assert "already stored" in conflict.get_json()["error"]["message"]
    assert get(client, xapi_headers, statementId=sid).get_json() == before
    assert count(db) == 1


def test_batch_with_a_conflict_stores_nothing(client, xapi_headers, db):
    sid = str(uuid.uuid4())
    post(client, xapi_headers, statement(id=sid))
    changed = statement(id=sid, result={"success": False})
    response = post(client, xapi_headers, [statement(), changed])
    assert response.status_code == 409
    assert count(db) == 1


def test_put_requires_matching_statement_id(client, xapi_headers):
    headers = dict(xapi_headers, **{"Content-Type": "application/json"})
    body = statement(id=str(uuid.uuid4()))
    response = client.put(f"/xapi/statements?statementId={uuid.uuid4()}",
                          data=json.dumps(body), headers=headers)
    assert response.status_code == 400
    assert client.put("/xapi/statements", data=json.dumps(statement()),
                      headers=headers).status_code == 400


def test_invalid_statement_names_the_property_and_stores_nothing(client, xapi_headers, db):
    bad = statement(actor={"mbox": "ana@example.edu"})
    response = post(client, xapi_headers, [statement(), bad])
    assert response.status_code == 400
    assert "statement[1].actor.mbox" in response.get_json()["error"]["message"]
    assert count(db) == 0
    for body in (None, {"actor": None, "verb": VERB, "object": ACTIVITY}, "text", 3):
        assert post(client, xapi_headers, body).status_code == 400
    not_json = client.post("/xapi/statements", data=b"{nope",
                           headers=dict(xapi_headers, **{"Content-Type": "application/json"}))
    assert not_json.status_code == 400
    assert count(db) == 0


def test_voiding(client, xapi_headers):
    (target,) = post(client, xapi_headers, statement()).get_json()
    void = statement(verb={"id": "http://adlnet.gov/expapi/verbs/voided"},
                     object={"objectType": "StatementRef", "id": target})
    (voiding,) = post(client, xapi_headers, void).get_json()

    assert get(client, xapi_headers, statementId=target).status_code == 404
    voided = get(client, xapi_headers, voidedStatementId=target)
    assert voided.status_code == 200 and voided.get_json()["id"] == target
    assert get(client, xapi_headers, voidedStatementId=voiding).status_code == 404
    ids = [s["id"] for s in get(client, xapi_headers).get_json()["statements"]]
    assert target not in ids and voiding in ids

    again = statement(verb={"id": "http://adlnet.gov/expapi/verbs/voided"},
                      object={"objectType": "StatementRef", "id": voiding})
    response = post(client, xapi_headers, again)
    assert response.status_code == 400
    assert "cannot be voided" in response.get_json()["error"]["message"]
    assert get(client, xapi_headers, statementId=voiding).status_code == 200


def test_statement_voided_before_it_arrives_stays_voided(client, xapi_headers):
    late = str(uuid.uuid4())
    void = statement(verb={"id": "http://adlnet.gov/expapi/verbs/voided"},
                     object={"objectType": "StatementRef", "id": late})
    assert post(client, xapi_headers, void).status_code == 200
    post(client, xapi_headers, statement(id=late))
    assert get(client, xapi_headers, statementId=late).status_code == 404
    assert get(client, xapi_headers, voidedStatementId=late).status_code == 200


def test_filters(client, xapi_headers):
    other_actor = {"mbox": "mailto:ben@example.edu"}
    reg = str(uuid.uuid4())
    parent = {"id": "https://courses.example.com/algebra"}
    instructor = {"mbox": "mailto:teacher@example.edu"}
    ids = post(client, xapi_headers, [
        statement(),
        statement(actor=other_actor, context={"registration": reg,
                                              "contextActivities": {"parent": parent},
                                              "instructor": instructor}),
        statement(verb={"id": "http://adlnet.gov/expapi/verbs/attempted"}),
    ]).get_json()

    def found(**params):
        response = get(client, xapi_headers, **params)
        assert response.status_code == 200, response.data
        return {s["id"] for s in response.get_json()["statements"]}

    assert found(agent=ACTOR) == {ids[0], ids[2]}
    assert found(verb=VERB["id"]) == {ids[0], ids[1]}
    assert found(verb=VERB["id"], agent=ACTOR) == {ids[0]}
    assert found(registration=reg) == {ids[1]}
    assert found(activity=parent["id"]) == set()
    assert found(activity=parent["id"], related_activities="true") == {ids[1]}
    assert found(agent=instructor) == set()
    assert found(agent=instructor, related_agents="true") == {ids[1]}
    assert found(activity=ACTIVITY["id"]) == set(ids)


def test_statement_ref_is_found_by_its_targets_filters(client, xapi_headers):
    (target,) = post(client, xapi_headers, statement()).get_json()
    ref = statement(actor={"mbox": "mailto:teacher@example.edu"},
                    verb={"id": "http://example.com/verbs/endorsed"},
                    object={"objectType": "StatementRef", "id": target})
    (referring,) = post(client, xapi_headers, ref).get_json()
    ids = {s["id"] for s in get(client, xapi_headers, agent=ACTOR).get_json()["statements"]}
    assert ids == {target, referring}


def test_paging_with_more_is_stable_while_statements_arrive(client, xapi_headers):
    first = post(client, xapi_headers, [statement() for _ in range(7)]).get_json()
    page = get(client, xapi_headers, limit=3).get_json()
    seen = [s["id"] for s in page["statements"]]
    assert seen == first[::-1][:3]
    post(client, xapi_headers, [statement() for _ in range(4)])  # arrive mid-paging
    while page["more"]:
        response = client.get(page["more"], headers=xapi_headers)
        assert response.status_code == 200
        page = response.get_json()
        seen += [s["id"] for s in page["statements"]]
    assert seen == first[::-1]

    ascending = get(client, xapi_headers, limit=4, ascending="true").get_json()
    assert [s["id"] for s in ascending["statements"]] == first[:4]


def test_more_link_is_checked(client, xapi_headers, app):
    assert get(client, xapi_headers, more="garbage").status_code == 400
    post(client, xapi_headers, [statement(), statement()])
    more = get(client, xapi_headers, limit=1).get_json()["more"]
    other, secret = create_credential("Other provider", ["all"])
    headers = dict(xapi_headers, Authorization=basic_auth(other.key, secret))
    assert client.get(more, headers=headers).status_code == 403


def test_since_and_until(client, xapi_headers):
    (early,) = post(client, xapi_headers, statement()).get_json()
    time.sleep(0.01)
    middle = get(client, xapi_headers, statementId=early).get_json()["stored"]
    time.sleep(0.01)
    (late,) = post(client, xapi_headers, statement()).get_json()
    since = {s["id"] for s in get(client, xapi_headers, since=middle).get_json()["statements"]}
    until = {s["id"] for s in get(client, xapi_headers, until=middle).get_json()["statements"]}
    assert since == {late} and until == {early}
    assert get(client, xapi_headers, since="yesterday").status_code == 400


def test_formats(client, xapi_headers):
    (sid,) = post(client, xapi_headers, statement()).get_json()
    ids = get(client, xapi_headers, statementId=sid, format="ids").get_json()
    assert ids["object"] == {"objectType": "Activity", "id": ACTIVITY["id"]}
    assert ids["verb"] == {"id": VERB["id"]}
    assert "name" not in ids["actor"]
    headers = dict(xapi_headers, **{"Accept-Language": "fr, en;q=0.5"})
    canonical = get(client, headers, statementId=sid, format="canonical").get_json()
    assert canonical["object"]["definition"]["name"] == {"fr": "Unité 1"}
    assert get(client, xapi_headers, statementId=sid, format="pretty").status_code == 400


def test_bad_parameters_are_400(client, xapi_headers):
    cases = [{"agent": "not json"}, {"agent": {"name": "no ifi"}}, {"verb": "not an iri"},
             {"registration": "123"}, {"limit": "-1"}, {"ascending": "yes"}, {"foo": "bar"},
             {"statementId": "nope"}, {"statementId": str(uuid.uuid4()), "verb": VERB["id"]}]
    for params in cases:
        response = get(client, xapi_headers, **params)
        assert response.status_code == 400, params
        assert response.get_json()["error"]["message"]


def test_authentication_and_scopes(client, xapi_headers, db):
    no_auth = {"X-Experience-API-Version": "1.0.3"}
    response = get(client, no_auth)
    assert response.status_code == 401 and "Basic" in response.headers["WWW-Authenticate"]
    wrong = dict(no_auth, Authorization=basic_auth("nobody", "nothing"))
    assert get(client, wrong).status_code == 401

    writer, secret = create_credential("Writer", ["statements/write"])
    writer_headers = dict(no_auth, Authorization=basic_auth(writer.key, secret))
    assert post(client, writer_headers, statement()).status_code == 200
    assert get(client, writer_headers).status_code == 403

    reader, rsecret = create_credential("Reader", ["statements/read"])
    assert post(client, dict(no_auth, Authorization=basic_auth(reader.key, rsecret)),
                statement()).status_code == 403

    revoke_credential(writer.key)
    assert post(client, writer_headers, statement()).status_code == 401
    assert count(db) == 1


def test_read_mine_sees_only_own_statements(client, xapi_headers):
    (theirs,) = post(client, xapi_headers, statement()).get_json()
    mine_cred, secret = create_credential("Mine", ["statements/write", "statements/read/mine"])
    headers = dict(xapi_headers, Authorization=basic_auth(mine_cred.key, secret))
    (mine,) = post(client, headers, statement()).get_json()
    listed = {s["id"] for s in get(client, headers).get_json()["statements"]}
    assert listed == {mine}
    assert get(client, headers, statementId=theirs).status_code == 404
    assert get(client, headers, statementId=mine).status_code == 200


@pytest.mark.parametrize(("version", "status", "answer"), [
    ("1.0.3", 200, "1.0.3"), ("1.0.0", 200, "1.0.3"), ("1.0", 200, "1.0.3"),
    ("2.0.0", 200, "2.0.0"), ("2.0", 200, "2.0.0"), ("0.95", 400, None), ("3.0", 400, None),
    (None, 400, None),
])
def test_version_header(client, xapi_headers, version, status, answer):
    headers = {k: v for k, v in xapi_headers.items() if k != "X-Experience-API-Version"}
    if version:
        headers["X-Experience-API-Version"] = version
    response = get(client, headers)
    assert response.status_code == status
    if answer:
        assert response.headers["X-Experience-API-Version"] == answer


def test_head_cors_and_alternate_syntax(client, xapi_headers):
    (sid,) = post(client, xapi_headers, statement()).get_json()
    head = client.head(f"/xapi/statements?statementId={sid}", headers=xapi_headers)
    assert head.status_code == 200 and head.data == b""

    preflight = client.options("/xapi/statements", headers={"Origin": "https://app.example"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

    form = {"Authorization": xapi_headers["Authorization"],
            "X-Experience-API-Version": "1.0.3", "statementId": sid}
    tunnelled = client.post("/xapi/statements?method=GET", data=form,
                            content_type="application/x-www-form-urlencoded")
    assert tunnelled.status_code == 200 and tunnelled.get_json()["id"] == sid

    new_id = str(uuid.uuid4())
    form = {"Authorization": xapi_headers["Authorization"], "X-Experience-API-Version": "1.0.3",
            "Content-Type": "application/json", "statementId": new_id,
            "content": json.dumps(statement())}
    put = client.post("/xapi/statements?method=PUT", data=form,
                      content_type="application/x-www-form-urlencoded")
    assert put.status_code == 204
    assert get(client, xapi_headers, statementId=new_id).status_code == 200
    extra = client.post("/xapi/statements?method=GET&verb=x", data=form,
                        content_type="application/x-www-form-urlencoded")
    assert extra.status_code == 400
