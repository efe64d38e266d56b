"""The LRS through a real xAPI client: ``tincan`` (PyPI 1.0.0) over real HTTP.

Everything here goes through ``tincan.RemoteLRS`` against the app on a loopback server
(the ``live_server`` fixture), the way a provider's course player would talk to it.

tincan 1.0.0 has a few bugs of its own; each is worked around where it bites, with a
comment saying why, and the server is never bent to suit them:

* ``retrieve_state`` / ``retrieve_*_profile`` look for the ETag with
  ``"etag" in response.getheaders()`` — a list of (name, value) pairs — so the document's
  ``etag`` is never set. We read the header from ``lrs_response.response`` ourselves.
* ``retrieve_*`` pass ``ignore404=True``: a 404 is reported as ``success`` with the error
  body as the document's content. We check ``response.status`` to tell.
* ``save_state`` sends its PUT twice and returns the second response. Harmless without
  If-Match (State needs no precondition, Part Three §3.1.s3), fatal with one (the first
  PUT changes the ETag the second is conditioned on), so state documents are saved
  without an ETag.
* ``about()`` accepts only 0.9 to 1.0.3 in ``version`` and raises on "2.0.0", which an LRS
  that also speaks xAPI 2.0 correctly lists (Part Three §2.8.s5.b1: the latest version of
  each major version).
* Document bodies go out as Latin-1 (HTTPRequest makes them ``str`` again and
  http.client encodes ``str`` as Latin-1), so text documents here are ASCII.
* ``save_state`` / ``delete_state`` drop ``StateDocument.registration``; requests with a
  registration go through ``RemoteLRS._send_request`` directly.
* ``query_statements`` sends booleans as ``str(True)`` == "True"; xAPI booleans are
  "true"/"false", so we pass the strings.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import tincan
from tincan import (
    Activity,
    ActivityDefinition,
    ActivityProfileDocument,
    Agent,
    AgentAccount,
    AgentProfileDocument,
    Context,
    ContextActivities,
    Extensions,
    LanguageMap,
    Result,
    Score,
    StateDocument,
    Statement,
    StatementRef,
    Verb,
)
from tincan.http_request import HTTPRequest

COMPLETED = Verb(id="http://adlnet.gov/expapi/verbs/completed",
                 display=LanguageMap({"en-US": "completed"}))
ATTEMPTED = Verb(id="http://adlnet.gov/expapi/verbs/attempted",
                 display=LanguageMap({"en-US": "attempted"}))
VOIDED = Verb(id="http://adlnet.gov/expapi/verbs/voided",
              display=LanguageMap({"en-US": "voided"}))
COURSE = Activity(id="https://courses.example.com/algebra")
UNIT = Activity(
    id="https://courses.example.com/algebra/unit-1",
    definition=ActivityDefinition(
        name=LanguageMap({"en-US": "Unit 1", "fr": "Unité 1"}),
        description=LanguageMap({"en-US": "Linear equations"}),
        type="http://adlnet.gov/expapi/activities/module",
    ),
)


def ana() -> Agent:
    return Agent(name="Ana", mbox="mailto:ana@example.edu")


def ben() -> Agent:
    return Agent(name="Ben", account=AgentAccount(homePage="https://sis.example.edu",
                                                  name="ben-42"))


@pytest.fixture
def lrs(live_server, xapi_credential) -> tincan.RemoteLRS:
    key, secret = xapi_credential
    return tincan.RemoteLRS(endpoint=live_server + "/xapi/", username=key, password=secret,
                            version="1.0.3")


def _status(lrs_response) -> int:
    return lrs_response.response.status


def _etag(lrs_response) -> str | None:
    # tincan bug: it never reads the ETag (see the module docstring); we do.
    return lrs_response.response.getheader("ETag")


def _sha1_etag(content: bytes) -> str:
    """Part Three §3.1.s4.b2/b4: the quoted lower-case hex SHA-1 of the content."""
    return '"' + hashlib.sha1(content).hexdigest() + '"'


def _content(doc) -> bytes:
    return bytes(doc.content)


def _scored_statement(actor: Agent, scaled: float, registration: uuid.UUID) -> Statement:
    return Statement(
        actor=actor,
        verb=COMPLETED,
        object=UNIT,
        result=Result(score=Score(scaled=scaled, raw=scaled * 10, min=0, max=10),
                      success=scaled >= 0.7, completion=True, duration="PT25M30S",
                      response="x = 4"),
        context=Context(registration=registration,
                        context_activities=ContextActivities(parent=[COURSE]),
                        instructor=Agent(name="Ms. Diaz", mbox="mailto:diaz@example.edu"),
                        language="en-US", platform="Course player",
                        extensions=Extensions({"https://masteryhub.org/xapi/ext/attempt": 2})),
        timestamp="2024-05-01T12:00:00.000Z",
    )


# ------------------------------------------------------------------------- statements


def test_save_and_retrieve_one_statement(lrs, xapi_credential):
    registration = uuid.uuid4()
    statement = _scored_statement(ana(), 0.85, registration)
    saved = lrs.save_statement(statement)
    assert saved.success, saved.data
    assert _status(saved) == 200
    sid = saved.content.id
    assert isinstance(sid, uuid.UUID)  # tincan parsed the id the LRS assigned

    got = lrs.retrieve_statement(str(sid))
    assert got.success, got.data
    back: Statement = got.content
    assert back.id == sid
    assert back.actor.mbox == "mailto:ana@example.edu" and back.actor.name == "Ana"
    assert back.verb.id == COMPLETED.id and back.verb.display["en-US"] == "completed"
    assert back.object.id == UNIT.id
    assert back.object.definition.name["fr"] == "Unité 1"
    assert back.result.score.scaled == 0.85 and back.result.score.max == 10
    assert back.result.success is True and back.result.completion is True
    assert back.result.response == "x = 4"
    assert back.context.registration == registration
    assert [a.id for a in back.context.context_activities.parent] == [COURSE.id]
    assert back.context.instructor.mbox == "mailto:diaz@example.edu"
    assert back.context.extensions["https://masteryhub.org/xapi/ext/attempt"] == 2
    # The LRS-set properties (Part Two §2.4.8, §2.4.9).
    assert back.stored is not None
    assert back.authority.account.name == xapi_credential[0]
    assert back.timestamp.isoformat().startswith("2024-05-01T12:00:00")
    # What went over the wire is exactly what tincan sent, plus the LRS's properties.
    raw = json.loads(got.data)
    sent = json.loads(statement.to_json("1.0.3"))
    for key, value in sent.items():
        if key != "id":
            assert raw[key] == value, key
    assert got.response.getheader("X-Experience-API-Version") == "1.0.3"
    assert got.response.getheader("X-Experience-API-Consistent-Through")


def test_put_statement_with_client_chosen_id_is_idempotent(lrs):
    sid = uuid.uuid4()
    statement = Statement(id=sid, actor=ben(), verb=ATTEMPTED, object=UNIT)
    first = lrs.save_statement(statement)  # has an id: tincan PUTs ?statementId=
    assert first.success and _status(first) == 204
    again = lrs.save_statement(Statement(id=sid, actor=ben(), verb=ATTEMPTED, object=UNIT))
    assert again.success and _status(again) == 204  # same statement: accepted, not stored twice
    different = lrs.save_statement(Statement(id=sid, actor=ben(), verb=COMPLETED, object=UNIT))
    assert not different.success and _status(different) == 409
    got = lrs.retrieve_statement(str(sid))
    assert got.success and got.content.verb.id == ATTEMPTED.id
    assert got.content.actor.account.name == "ben-42"


def test_save_statements_batch_keeps_order(lrs):
    registration = uuid.uuid4()
    given = uuid.uuid4()
    batch = [
        _scored_statement(ana(), 0.4, registration),
        Statement(id=given, actor=ben(), verb=ATTEMPTED, object=COURSE),
        _scored_statement(ben(), 0.95, registration),
    ]
    saved = lrs.save_statements(batch)
    assert saved.success, saved.data
    ids = json.loads(saved.data)
    assert len(ids) == 3 and len(set(ids)) == 3 and ids[1] == str(given)
    assert [str(s.id) for s in saved.content] == ids  # tincan set the ids it was given
    for statement, sid in zip(batch, ids, strict=True):
        got = lrs.retrieve_statement(sid)
        assert got.success
        assert got.content.actor.to_json() == statement.actor.to_json()
        assert got.content.verb.id == statement.verb.id
        assert got.content.object.id == statement.object.id
    assert lrs.retrieve_statement(ids[2]).content.result.score.scaled == 0.95


def test_invalid_statement_is_rejected_and_not_stored(lrs):
    bad = Statement(actor=Agent(name="No identifier"), verb=COMPLETED, object=UNIT)
    response = lrs.save_statement(bad)
    assert not response.success and _status(response) == 400
    assert "actor" in json.loads(response.data)["error"]["message"]
    everything = lrs.query_statements({"limit": 10})
    assert everything.success and list(everything.content.statements) == []


def test_query_statements_follows_more_through_every_page(lrs):
    registration = uuid.uuid4()
    saved = lrs.save_statements([_scored_statement(ana(), i / 10, registration)
                                 for i in range(11)])
    assert saved.success
    ids = json.loads(saved.data)
    lrs.save_statements([Statement(actor=ben(), verb=ATTEMPTED, object=COURSE)])  # noise

    # tincan bug: booleans would be sent as "True"; see the module docstring.
    query = {"agent": ana(), "verb": COMPLETED, "activity": UNIT,
             "registration": registration, "limit": 3, "ascending": "true"}
    page = lrs.query_statements(query)
    assert page.success, page.data
    seen = [str(s.id) for s in page.content.statements]
    pages = 1
    while page.content.more:
        assert page.content.more.startswith("/xapi/statements?more=")
        page = lrs.more_statements(page.content)
        assert page.success, page.data
        assert len(page.content.statements) <= 3
        seen += [str(s.id) for s in page.content.statements]
        pages += 1
    assert seen == ids  # every id once, in stored order
    assert pages == 4

    newest_first = lrs.query_statements({"agent": ana(), "limit": 4})
    assert newest_first.success
    collected = [str(s.id) for s in newest_first.content.statements]
    while newest_first.content.more:
        newest_first = lrs.more_statements(newest_first.content.more)
        assert newest_first.success
        collected += [str(s.id) for s in newest_first.content.statements]
    assert collected == ids[::-1]


def test_query_with_related_agents_and_format_ids(lrs):
    registration = uuid.uuid4()
    (sid,) = json.loads(lrs.save_statements([_scored_statement(ben(), 0.9, registration)]).data)
    instructor = Agent(mbox="mailto:diaz@example.edu")
    plain = lrs.query_statements({"agent": instructor})
    assert plain.success and list(plain.content.statements) == []
    related = lrs.query_statements({"agent": instructor, "related_agents": "true",
                                    "format": "ids"})
    assert related.success
    (only,) = related.content.statements
    assert str(only.id) == sid
    assert only.actor.name is None and only.actor.account.name == "ben-42"
    assert only.object.definition is None


def test_voiding_through_tincan(lrs):
    target = lrs.save_statement(Statement(actor=ana(), verb=COMPLETED, object=UNIT))
    assert target.success
    target_id = target.content.id
    void = lrs.save_statement(Statement(actor=ana(), verb=VOIDED,
                                        object=StatementRef(id=target_id)))
    assert void.success, void.data
    voiding_id = void.content.id

    gone = lrs.retrieve_statement(str(target_id))
    assert not gone.success and _status(gone) == 404
    voided = lrs.retrieve_voided_statement(str(target_id))
    assert voided.success, voided.data
    assert voided.content.id == target_id and voided.content.verb.id == COMPLETED.id
    # The voiding statement is an ordinary statement, not a voided one.
    assert lrs.retrieve_statement(str(voiding_id)).content.object.id == target_id
    assert not lrs.retrieve_voided_statement(str(voiding_id)).success

    listed = lrs.query_statements({"agent": ana()})
    assert [s.id for s in listed.content.statements] == [voiding_id]

    # A voiding statement cannot itself be voided (Part Two §2.3.2); the LRS says 400.
    again = lrs.save_statement(Statement(actor=ana(), verb=VOIDED,
                                         object=StatementRef(id=voiding_id)))
    assert not again.success and _status(again) == 400


# -------------------------------------------------------------------------- documents


def test_state_documents(lrs):
    registration = str(uuid.uuid4())
    bookmark = StateDocument(id="bookmark", activity=UNIT, agent=ana(),
                             content='{"page": 3, "section": "2.1"}',
                             content_type="application/json")
    saved = lrs.save_state(bookmark)  # no etag: see the module docstring (double PUT)
    assert saved.success, saved.data
    assert _status(saved) == 204
    # tincan bug: HTTPRequest turns the content back into str and http.client encodes a
    # str body as Latin-1, so a document with "✓" cannot be sent and "é" would go out as
    # the Latin-1 byte 0xE9, not UTF-8. Text documents stay ASCII here.
    notes = StateDocument(id="notes", activity=UNIT, agent=ana(), content="plain notes",
                          content_type="text/plain; charset=utf-8")
    assert lrs.save_state(notes).success
    # The same id under a registration is a different document. tincan bug: save_state
    # drops StateDocument.registration from the request, so this PUT goes raw.
    put = HTTPRequest(method="PUT", resource="activities/state", content='{"scoped": true}',
                      headers={"Content-Type": "application/json"},
                      query_params={"stateId": "bookmark", "activityId": UNIT.id,
                                    "agent": ana().to_json("1.0.3"),
                                    "registration": registration})
    assert lrs._send_request(put).success

    got = lrs.retrieve_state(UNIT, ana(), "bookmark")
    assert got.success and _status(got) == 200
    assert json.loads(_content(got.content)) == {"page": 3, "section": "2.1"}
    assert got.content.id == "bookmark"
    content = _content(got.content)
    assert _etag(got) == _sha1_etag(content)
    assert got.response.getheader("Content-Type").startswith("application/json")
    assert got.response.getheader("Last-Modified")

    plain = lrs.retrieve_state(UNIT, ana(), "notes")
    assert _content(plain.content) == b"plain notes"
    assert plain.response.getheader("Content-Type") == "text/plain; charset=utf-8"
    in_registration = lrs.retrieve_state(UNIT, ana(), "bookmark", registration=registration)
    assert json.loads(_content(in_registration.content)) == {"scoped": True}

    # The same learner written differently (no name, objectType given) is the same agent.
    same_ana = Agent(mbox="mailto:ana@example.edu")
    assert lrs.retrieve_state(UNIT, same_ana, "bookmark").success

    ids = lrs.retrieve_state_ids(UNIT, ana())
    assert ids.success and sorted(ids.content) == ["bookmark", "notes"]
    assert lrs.retrieve_state_ids(UNIT, ana(), registration=registration).content == [
        "bookmark"]
    assert lrs.retrieve_state_ids(UNIT, ben()).content == []
    assert lrs.retrieve_state_ids(COURSE, ana()).content == []

    # Replace the bookmark (PUT without precondition is fine for State, §3.1.s3).
    bookmark.content = '{"page": 7}'
    assert lrs.save_state(bookmark).success
    assert json.loads(_content(lrs.retrieve_state(UNIT, ana(), "bookmark").content)) == {
        "page": 7}
    # POST merges top-level keys into a stored JSON object (Part Three §2.2.s7); tincan
    # has no call for it, so it goes raw.
    merge = HTTPRequest(method="POST", resource="activities/state",
                        content='{"section": "4.2"}',
                        headers={"Content-Type": "application/json"},
                        query_params={"stateId": "bookmark", "activityId": UNIT.id,
                                      "agent": ana().to_json("1.0.3")})
    merged = lrs._send_request(merge)
    assert merged.success and _status(merged) == 204
    assert json.loads(_content(lrs.retrieve_state(UNIT, ana(), "bookmark").content)) == {
        "page": 7, "section": "4.2"}

    # Delete with a stale ETag: 412 and nothing removed; with the current one: gone.
    current = lrs.retrieve_state(UNIT, ana(), "bookmark")
    stale = StateDocument(id="bookmark", activity=UNIT, agent=ana(), etag=_etag(got))
    refused = lrs.delete_state(stale)
    assert not refused.success and _status(refused) == 412
    assert lrs.retrieve_state(UNIT, ana(), "bookmark").response.status == 200
    bookmark.etag = _etag(current)
    deleted = lrs.delete_state(bookmark)
    assert deleted.success and _status(deleted) == 204
    missing = lrs.retrieve_state(UNIT, ana(), "bookmark")
    # tincan bug: a 404 counts as success (ignore404); the status tells the truth.
    assert _status(missing) == 404
    # The registration-scoped "bookmark" is another document and survives; a listing
    # without registration covers every registration (§2.3.s4 "[+ registration if
    # specified]").
    assert lrs.retrieve_state_ids(UNIT, ana(), registration=registration).content == [
        "bookmark"]
    assert sorted(lrs.retrieve_state_ids(UNIT, ana()).content) == ["bookmark", "notes"]

    # clear_state: every state document of the context (Part Three §2.3.s5).
    cleared = lrs.clear_state(UNIT, ana())
    assert cleared.success and _status(cleared) == 204
    assert lrs.retrieve_state_ids(UNIT, ana()).content == []


def test_activity_profile_documents_with_etags(lrs):
    profile = ActivityProfileDocument(id="difficulty", activity=UNIT,
                                      content='{"level": "intermediate"}',
                                      content_type="application/json")
    created = lrs.save_activity_profile(profile)
    assert created.success, created.data
    assert _status(created) == 204

    got = lrs.retrieve_activity_profile(UNIT, "difficulty")
    assert got.success and _status(got) == 200
    assert _content(got.content) == b'{"level": "intermediate"}'
    first_etag = _etag(got)
    assert first_etag == _sha1_etag(b'{"level": "intermediate"}')
    ids = lrs.retrieve_activity_profile_ids(UNIT)
    assert ids.success and ids.content == ["difficulty"]

    # Part Three §3.1.s4.b13: a PUT without If-Match/If-None-Match on an existing
    # document is 409 and changes nothing.
    blind = ActivityProfileDocument(id="difficulty", activity=UNIT, content='{"level": "x"}',
                                    content_type="application/json")
    conflict = lrs.save_activity_profile(blind)
    assert not conflict.success and _status(conflict) == 409
    assert "If-Match" in json.loads(conflict.data)["error"]["message"]

    # With the current ETag the update goes through ...
    profile.content = '{"level": "advanced"}'
    profile.etag = first_etag
    updated = lrs.save_activity_profile(profile)
    assert updated.success, updated.data
    got = lrs.retrieve_activity_profile(UNIT, "difficulty")
    assert _content(got.content) == b'{"level": "advanced"}'
    second_etag = _etag(got)
    assert second_etag == _sha1_etag(b'{"level": "advanced"}') != first_etag

    # ... and with the old one it fails with 412, changing nothing (§3.1.s4.b9/b10).
    profile.content = '{"level": "beginner"}'
    profile.etag = first_etag
    stale = lrs.save_activity_profile(profile)
    assert not stale.success and _status(stale) == 412
    assert _content(lrs.retrieve_activity_profile(UNIT, "difficulty").content) == (
        b'{"level": "advanced"}')

    stale_delete = lrs.delete_activity_profile(
        ActivityProfileDocument(id="difficulty", activity=UNIT, etag=first_etag))
    assert not stale_delete.success and _status(stale_delete) == 412
    profile.etag = second_etag
    deleted = lrs.delete_activity_profile(profile)
    assert deleted.success and _status(deleted) == 204
    assert _status(lrs.retrieve_activity_profile(UNIT, "difficulty")) == 404
    assert lrs.retrieve_activity_profile_ids(UNIT).content == []


def test_agent_profile_documents_with_etags(lrs):
    profile = AgentProfileDocument(id="preferences", agent=ben(),
                                   content='{"theme": "dark"}',
                                   content_type="application/json")
    created = lrs.save_agent_profile(profile)
    assert created.success, created.data

    got = lrs.retrieve_agent_profile(ben(), "preferences")
    assert got.success and _status(got) == 200
    assert json.loads(_content(got.content)) == {"theme": "dark"}
    etag = _etag(got)
    assert etag == _sha1_etag(_content(got.content))
    ids = lrs.retrieve_agent_profile_ids(ben())
    assert ids.success and ids.content == ["preferences"]
    assert lrs.retrieve_agent_profile_ids(ana()).content == []

    # If-None-Match: * on an existing document: 412 (§3.1.s4.b6).
    create_only = HTTPRequest(method="PUT", resource="agents/profile",
                              content='{"theme": "light"}',
                              headers={"Content-Type": "application/json",
                                       "If-None-Match": "*"},
                              query_params={"profileId": "preferences",
                                            "agent": ben().to_json("1.0.3")})
    refused = lrs._send_request(create_only)
    assert not refused.success and _status(refused) == 412

    profile.content = '{"theme": "dark", "font": "large"}'
    profile.etag = etag
    assert lrs.save_agent_profile(profile).success
    got = lrs.retrieve_agent_profile(ben(), "preferences")
    assert json.loads(_content(got.content)) == {"theme": "dark", "font": "large"}
    assert _etag(got) != etag

    profile.etag = _etag(got)
    deleted = lrs.delete_agent_profile(profile)
    assert deleted.success and _status(deleted) == 204
    assert _status(lrs.retrieve_agent_profile(ben(), "preferences")) == 404
    assert lrs.retrieve_agent_profile_ids(ben()).content == []


# ------------------------------------------------------------------------------ about


def test_about(lrs):
    # tincan bug: About rejects "2.0.0" (see the module docstring), so read the raw body.
    with pytest.raises(ValueError, match=r"2\.0\.0"):
        lrs.about()
    response = lrs._send_request(HTTPRequest(method="GET", resource="about"))
    assert response.success and _status(response) == 200
    body = json.loads(response.data)
    assert "1.0.3" in body["version"]
    assert set(body) <= {"version", "extensions"}
    about = tincan.About(version=[v for v in body["version"] if v.startswith("1.")],
                         extensions=body.get("extensions"))
    assert about.version == ["1.0.3"]


def test_about_needs_no_credentials(live_server):
    anonymous = tincan.RemoteLRS(endpoint=live_server + "/xapi/", version="1.0.3")
    response = anonymous._send_request(HTTPRequest(method="GET", resource="about"))
    assert response.success and "1.0.3" in json.loads(response.data)["version"]
    denied = anonymous.query_statements({"limit": 1})
    assert not denied.success and _status(denied) == 401
