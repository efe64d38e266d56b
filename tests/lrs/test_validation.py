"""Unit tests of the xAPI 1.0.3 statement validator (no database).

Valid examples come from the specification (adlnet/xAPI-Spec, xAPI-Data.md appendices);
each invalid mutation breaks exactly one rule and must be reported at its property path.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrs.errors import XAPIError, XAPIValidationError
from lrs.validation import (
    is_iri,
    parse_timestamp,
    validate_activity_id,
    validate_agent,
    validate_duration,
    validate_language_map,
    validate_statement,
    validate_statements,
)

UUID_A = "fd41c918-b88b-4b20-a0a5-a4c32391aaa0"
UUID_B = "e05aa883-acaf-40ad-bf54-02c8ce485fb0"
SHA256 = "495395e777cd98da653df9615d09c0fd6bb2f8d4788394cd53c56a3bfdcd848a"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"


# ------------------------------------------------------------------ valid statements


def minimal() -> dict:
    return {
        "actor": {"mbox": "mailto:xapi@adlnet.gov"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/created", "display": {"en-US": "created"}},
        "object": {"id": "http://example.adlnet.gov/xapi/example/activity"},
    }


def full() -> dict:
    """Appendix A's long example, with a score and a definition extension added."""
    return {
        "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee",
        "actor": {
            "name": "Team PB",
            "mbox": "mailto:teampb@example.com",
            "member": [
                {
                    "name": "Andrew Downes",
                    "account": {"homePage": "http://www.example.com", "name": "13936749"},
                    "objectType": "Agent",
                },
                {
                    "name": "Toby Nichols",
                    "openid": "http://toby.openid.example.org/",
                    "objectType": "Agent",
                },
                {
                    "name": "Ena Hills",
                    "mbox_sha1sum": "ebd31e95054c018b10727ccffd2ef2ec3a016ee9",
                    "objectType": "Agent",
                },
            ],
            "objectType": "Group",
        },
        "verb": {
            "id": "http://adlnet.gov/expapi/verbs/attended",
            "display": {"en-GB": "attended", "en-US": "attended"},
        },
        "result": {
            "extensions": {
                "http://example.com/profiles/meetings/resultextensions/minuteslocation": "X:\\m"
            },
            "score": {"scaled": 0.5, "raw": 5, "min": 0, "max": 10.0},
            "success": True,
            "completion": True,
            "response": "We agreed on some example actions.",
            "duration": "PT1H0M0S",
        },
        "context": {
            "registration": "ec531277-b57b-4c15-8d91-d292c5b2b8f7",
            "contextActivities": {
                "parent": [
                    {"id": "http://www.example.com/meetings/series/267", "objectType": "Activity"}
                ],
                "category": [
                    {
                        "id": "http://www.example.com/meetings/categories/teammeeting",
                        "objectType": "Activity",
                        "definition": {
                            "name": {"en": "team meeting"},
                            "description": {"en": "A category of meeting."},
                            "type": "http://example.com/expapi/activities/meetingcategory",
                        },
                    }
                ],
                "other": [
                    {"id": "http://www.example.com/meetings/occurances/34257"},
                    {"id": "http://www.example.com/meetings/occurances/3425567"},
                ],
            },
            "instructor": {
                "name": "Andrew Downes",
                "account": {"homePage": "http://www.example.com", "name": "13936749"},
                "objectType": "Agent",
            },
            "team": {"name": "Team PB", "mbox": "mailto:teampb@example.com", "objectType": "Group"},
            "revision": "1",
            "platform": "Example virtual meeting software",
            "language": "tlh",
            "statement": {"objectType": "StatementRef", "id": UUID_A},
            "extensions": {"http://example.com/ext/room": {"name": "Kilby"}},
        },
        "timestamp": "2013-05-18T05:32:34.804+00:00",
        "stored": "2013-05-18T05:32:34.804Z",
        "authority": {
            "account": {"homePage": "http://cloud.scorm.com/", "name": "anonymous"},
            "objectType": "Agent",
        },
        "version": "1.0.0",
        "object": {
            "id": "http://www.example.com/meetings/occurances/34534",
            "definition": {
                "extensions": {
                    "http://example.com/profiles/meetings/activitydefinitionextensions/room": {
                        "name": "Kilby",
                        "id": "http://example.com/rooms/342",
                    }
                },
                "name": {"en-GB": "example meeting", "en-US": "example meeting"},
                "description": {"en-US": "An example meeting."},
                "type": "http://adlnet.gov/expapi/activities/meeting",
                "moreInfo": "http://virtualmeeting.example.com/345256",
            },
            "objectType": "Activity",
        },
    }


def substatement() -> dict:
    return {
        "actor": {"objectType": "Agent", "mbox": "mailto:test@example.com"},
        "verb": {"id": "http://example.com/planned", "display": {"en-US": "planned"}},
        "object": {
            "objectType": "SubStatement",
            "actor": {"objectType": "Agent", "mbox": "mailto:test@example.com"},
            "verb": {"id": "http://example.com/visited", "display": {"en-US": "will visit"}},
            "object": {
                "objectType": "Activity",
                "id": "http://example.com/website",
                "definition": {"name": {"en-US": "Some Awesome Website"}},
            },
            "result": {"completion": False},
            "context": {
                "platform": "web",
                "extensions": {"http://example.com/ext/planned-at": None},
            },
            # A SubStatement may be in the future (Part Two §2.4.7.s3.b5).
            "timestamp": "2999-01-01T00:00:00Z",
        },
    }


def group_actor() -> dict:
    return {
        "actor": {
            "objectType": "Group",
            "name": "Example Group",
            "account": {"homePage": "http://example.com/homePage", "name": "GroupAccount"},
            "member": [
                {"name": "Andrew Downes", "mbox": "mailto:andrew@example.com"},
                {
                    "name": "Aaron Silvers",
                    "openid": "http://aaron.openid.example.org",
                    "objectType": "Agent",
                },
            ],
        },
        "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
        "object": {"id": "http://example.com/meetings/1"},
    }


def anonymous_group_actor() -> dict:
    stmt = group_actor()
    del stmt["actor"]["account"]
    return stmt


def voiding() -> dict:
    return {
        "actor": {
            "objectType": "Agent",
            "name": "Example Admin",
            "mbox": "mailto:admin@example.adlnet.gov",
        },
        "verb": {"id": VOIDED, "display": {"en-US": "voided"}},
        "object": {"objectType": "StatementRef", "id": UUID_B},
    }


def attachments() -> dict:
    return {
        "actor": {"mbox": "mailto:sample.agent@example.com", "name": "Sample Agent"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/answered", "display": {"en-US": "answered"}},
        "object": {
            "id": "http://www.example.com/tincan/activities/multipart",
            "objectType": "Activity",
        },
        "attachments": [
            {
                "usageType": "http://example.com/attachment-usage/test",
                "display": {"en-US": "A test attachment"},
                "description": {"en-US": "A test attachment (description)"},
                "contentType": "text/plain; charset=ascii",
                "length": 27,
                "sha2": SHA256,
            },
            {
                "usageType": "http://adlnet.gov/expapi/attachments/signature",
                "display": {"en-US": "Signature"},
                "contentType": "application/octet-stream",
                "length": 4235,
                "sha2": "a" * 128,
            },
            {
                "usageType": "http://example.com/attachment-usage/certificate",
                "display": {"und": "certificate"},
                "contentType": "image/png",
                "length": 0,
                "sha2": "b" * 96,
                "fileUrl": "https://files.example.com/cert.png",
            },
        ],
    }


def agent_object() -> dict:
    return {
        "actor": {"mbox": "mailto:nellie@example.com"},
        "verb": {"id": "http://example.com/interviewed"},
        "object": {"objectType": "Agent", "mbox": "mailto:jeff@example.com"},
        "context": {"contextActivities": {"grouping": {"id": "http://example.com/algebra-1"}}},
    }


def statement_ref_object() -> dict:
    return {
        "actor": {"mbox": "mailto:test@example.com"},
        "verb": {"id": "http://example.com/commented", "display": {"en-US": "commented"}},
        "object": {"objectType": "StatementRef", "id": UUID_A},
        "result": {"response": "Wow, nice work!"},
    }


def interaction(kind: str, **definition: object) -> Callable[[], dict]:
    def build() -> dict:
        return {
            "actor": {"account": {"homePage": "https://lms.example.com", "name": "42"}},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
            "object": {
                "id": f"http://example.com/questions/{kind}",
                "definition": {
                    "description": {"en-US": "A question"},
                    "type": "http://adlnet.gov/expapi/activities/cmi.interaction",
                    "interactionType": kind,
                    **copy.deepcopy(definition),
                },
            },
        }

    return build


def _components(*ids: str) -> list[dict]:
    return [{"id": item, "description": {"en-US": item.title()}} for item in ids]


VALID: dict[str, Callable[[], dict]] = {
    "minimal": minimal,
    "full": full,
    "substatement": substatement,
    "group_actor": group_actor,
    "anonymous_group_actor": anonymous_group_actor,
    "voiding": voiding,
    "attachments": attachments,
    "agent_object": agent_object,
    "statement_ref_object": statement_ref_object,
    "true-false": interaction("true-false", correctResponsesPattern=["true"]),
    "choice": interaction(
        "choice",
        correctResponsesPattern=["golf[,]tetris"],
        choices=_components("golf", "facebook", "tetris", "scrabble"),
    ),
    "fill-in": interaction("fill-in", correctResponsesPattern=["Bob's your uncle"]),
    "long-fill-in": interaction(
        "long-fill-in", correctResponsesPattern=["{case_matters=false}{lang=en}To store."]
    ),
    "likert": interaction(
        "likert", correctResponsesPattern=["likert_3"], scale=_components("likert_0", "likert_3")
    ),
    "matching": interaction(
        "matching",
        correctResponsesPattern=["ben[.]3[,]chris[.]2"],
        source=_components("ben", "chris"),
        target=_components("2", "3"),
    ),
    "performance": interaction(
        "performance",
        correctResponsesPattern=["pong[.]1:[,]dg[.]:10[,]lunch[.]"],
        steps=_components("pong", "dg", "lunch"),
    ),
    "sequencing": interaction(
        "sequencing", correctResponsesPattern=["tim[,]mike"], choices=_components("tim", "mike")
    ),
    "numeric": interaction("numeric", correctResponsesPattern=["4[:]"]),
    "other": interaction("other", correctResponsesPattern=[]),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_statements_pass(name: str) -> None:
    stmt = VALID[name]()
    before = copy.deepcopy(stmt)
    assert validate_statement(stmt) is None
    assert stmt == before, "validation must not modify the statement"


@pytest.mark.parametrize(
    ("name", "location", "value"),
    [
        # Empty extensions and language maps are only SHOULD NOT (Part Two §2.2.s2.b1).
        ("minimal", ("object", "definition"), {"extensions": {}, "name": {}}),
        ("full", ("result", "extensions"), {}),
        # Valid, if unusual, RFC 5646 tags.
        ("minimal", ("verb", "display"), {"und": "x", "zh-Hant-TW": "y", "es-419": "z"}),
        ("minimal", ("verb", "display"), {"de-CH-1901": "x", "x-private": "y", "EN-us": "z"}),
        ("full", ("context", "language"), "sgn-BE-FR"),
        # contextActivities values in the single-object form (Part Two §2.4.6.2.s3).
        ("full", ("context", "contextActivities", "parent"), {"id": "http://example.com/p"}),
        ("full", ("context", "contextActivities", "grouping"), []),
        # A timestamp without an offset (read as UTC), with 'Z', with an offset.
        ("minimal", ("timestamp",), "2015-11-18T12:17:00"),
        ("minimal", ("timestamp",), "2015-11-18T12:17:00.123456789-05:00"),
        ("minimal", ("timestamp",), "20151118T121700Z"),
        ("minimal", ("version",), "1.0.3"),
        ("minimal", ("version",), "1.0.10"),
        ("minimal", ("id",), "FD41C918-B88B-4B20-A0A5-A4C32391AAA0"),
        ("minimal", ("id",), "00000000-0000-0000-0000-000000000000"),
        # Any JSON value, null included, inside extensions (Part Two §4.1.s3.b2).
        ("minimal", ("result",), {"extensions": {"urn:example:x": None}}),
        ("minimal", ("result",), {"score": {"raw": -3}}),
        ("minimal", ("result",), {"score": {"scaled": -1, "raw": 10, "min": 10, "max": 11}}),
        ("minimal", ("result",), {"duration": "P3Y1M29DT4H35M59.14S"}),
        ("minimal", ("result",), {"duration": "PT0.001S", "response": ""}),
        ("minimal", ("result",), {"duration": "P4W"}),
        ("minimal", ("actor",), {"openid": "http://openid.example.org/x", "objectType": "Agent"}),
        ("minimal", ("actor", "mbox"), "mailto:first.last+tag@sub.example.co.uk"),
        ("minimal", ("object", "id"), "http://example.com/فعل/خواندن"),
        ("minimal", ("object", "id"), "urn:uuid:fd41c918-b88b-4b20-a0a5-a4c32391aaa0"),
        ("minimal", ("object", "id"), "http://example.com/xapi/verbs#defenestrated"),
        (
            "minimal",
            ("authority",),
            {
                "objectType": "Group",
                "member": [
                    {"account": {"homePage": "http://example.com/OAuth/Token", "name": "oc"}},
                    {"mbox": "mailto:bob@example.com"},
                ],
            },
        ),
        # An identified Group need not list members, and may list none.
        ("group_actor", ("actor", "member"), []),
    ],
)
def test_valid_edge_cases_pass(name: str, location: tuple, value: object) -> None:
    stmt = VALID[name]()
    _put(stmt, location, value)
    validate_statement(stmt)


def test_version_2_statement_needs_a_2_0_request() -> None:
    stmt = minimal()
    stmt["version"] = "2.0.0"
    validate_statement(stmt, version="2.0.0")
    stmt["version"] = "1.0.0"
    validate_statement(stmt, version="2.0.0")
    stmt["version"] = "2.0.0"
    with pytest.raises(XAPIValidationError, match=r"^statement\.version: "):
        validate_statement(stmt)


# ----------------------------------------------------------------- invalid mutations

DELETE = object()


def _put(stmt: dict, location: tuple, value: object) -> None:
    parent = stmt
    for key in location[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[location[-1]]
    elif isinstance(parent, list) and location[-1] == len(parent):
        parent.append(value)
    else:
        parent[location[-1]] = value


INVALID = [
    # statement
    ("minimal", ("id",), "abc", "statement.id"),
    ("minimal", ("id",), "fd41c918b88b4b20a0a5a4c32391aaa0", "statement.id"),
    ("minimal", ("id",), 12345, "statement.id"),
    ("minimal", ("actor",), DELETE, "statement.actor"),
    ("minimal", ("verb",), DELETE, "statement.verb"),
    ("minimal", ("object",), DELETE, "statement.object"),
    ("minimal", ("actor",), None, "statement.actor"),
    ("minimal", ("object",), None, "statement.object"),
    ("minimal", ("verb",), "http://adlnet.gov/expapi/verbs/created", "statement.verb"),
    ("minimal", ("foo",), "bar", "statement.foo"),
    ("minimal", ("Actor",), {"mbox": "mailto:a@example.com"}, "statement.Actor"),
    ("minimal", ("objectType",), "Statement", "statement.objectType"),
    # actor: Agent
    ("minimal", ("actor", "mbox"), "bob@example.com", "statement.actor.mbox"),
    ("minimal", ("actor", "mbox"), "mailto:", "statement.actor.mbox"),
    ("minimal", ("actor", "mbox"), "mailto:bob at example.com", "statement.actor.mbox"),
    ("minimal", ("actor", "mbox"), None, "statement.actor.mbox"),
    ("minimal", ("actor", "openid"), "http://openid.example.org/x", "statement.actor"),
    ("minimal", ("actor",), {"name": "No Identifier"}, "statement.actor"),
    (
        "minimal",
        ("actor",),
        {"mbox_sha1sum": "ebd31e95054c018b1072"},
        "statement.actor.mbox_sha1sum",
    ),
    ("minimal", ("actor",), {"openid": "not a uri"}, "statement.actor.openid"),
    ("minimal", ("actor",), {"account": {"name": "x"}}, "statement.actor.account.homePage"),
    (
        "minimal",
        ("actor",),
        {"account": {"homePage": "http://example.com"}},
        "statement.actor.account.name",
    ),
    (
        "minimal",
        ("actor",),
        {"account": {"homePage": "example.com", "name": "x"}},
        "statement.actor.account.homePage",
    ),
    (
        "minimal",
        ("actor",),
        {"account": {"homePage": "http://example.com", "name": 7}},
        "statement.actor.account.name",
    ),
    (
        "minimal",
        ("actor",),
        {"account": {"homePage": "http://example.com", "name": "x", "id": "y"}},
        "statement.actor.account.id",
    ),
    ("minimal", ("actor", "name"), 42, "statement.actor.name"),
    ("minimal", ("actor", "objectType"), "agent", "statement.actor.objectType"),
    ("minimal", ("actor", "objectType"), None, "statement.actor.objectType"),
    ("minimal", ("actor", "member"), [], "statement.actor.member"),
    # actor: Group
    ("group_actor", ("actor", "mbox"), "mailto:g@example.com", "statement.actor"),
    ("anonymous_group_actor", ("actor", "member"), DELETE, "statement.actor.member"),
    ("anonymous_group_actor", ("actor", "member"), [], "statement.actor.member"),
    ("group_actor", ("actor", "member"), {"mbox": "mailto:a@b.c"}, "statement.actor.member"),
    (
        "group_actor",
        ("actor", "member", 0),
        {"objectType": "Group", "mbox": "mailto:sub@example.com"},
        "statement.actor.member[0].objectType",
    ),
    ("group_actor", ("actor", "member", 1), "mailto:a@b.c", "statement.actor.member[1]"),
    ("group_actor", ("actor", "member", 0, "mbox"), DELETE, "statement.actor.member[0]"),
    ("group_actor", ("actor", "member", 2), None, "statement.actor.member[2]"),
    # verb
    ("minimal", ("verb", "id"), DELETE, "statement.verb.id"),
    ("minimal", ("verb", "id"), "completed", "statement.verb.id"),
    ("minimal", ("verb", "id"), "", "statement.verb.id"),
    ("minimal", ("verb", "id"), "http://example.com/a verb", "statement.verb.id"),
    ("minimal", ("verb", "display"), "created", "statement.verb.display"),
    ("minimal", ("verb", "display"), {"en_US": "created"}, "statement.verb.display"),
    ("minimal", ("verb", "display"), {"english": "created"}, "statement.verb.display"),
    ("minimal", ("verb", "display", "en-US"), 3, "statement.verb.display.en-US"),
    ("minimal", ("verb", "display", "en-US"), None, "statement.verb.display.en-US"),
    ("minimal", ("verb", "name"), {"en-US": "created"}, "statement.verb.name"),
    ("voiding", ("object",), {"id": "http://example.com/a"}, "statement.object.objectType"),
    # object: Activity
    ("minimal", ("object", "objectType"), "activity", "statement.object.objectType"),
    ("minimal", ("object", "id"), DELETE, "statement.object.id"),
    ("minimal", ("object", "id"), "activity/1", "statement.object.id"),
    ("minimal", ("object", "name"), "x", "statement.object.name"),
    ("full", ("object", "definition"), [], "statement.object.definition"),
    ("full", ("object", "definition", "name"), "meeting", "statement.object.definition.name"),
    ("full", ("object", "definition", "type"), "meeting", "statement.object.definition.type"),
    (
        "full",
        ("object", "definition", "moreInfo"),
        "/345256",
        "statement.object.definition.moreInfo",
    ),
    ("full", ("object", "definition", "foo"), 1, "statement.object.definition.foo"),
    (
        "full",
        ("object", "definition", "extensions"),
        {"room": "Kilby"},
        "statement.object.definition.extensions",
    ),
    (
        "full",
        ("object", "definition", "choices"),
        [{"id": "a"}],
        "statement.object.definition.choices",
    ),
    (
        "choice",
        ("object", "definition", "interactionType"),
        "multiple-choice",
        "statement.object.definition.interactionType",
    ),
    (
        "choice",
        ("object", "definition", "interactionType"),
        "Choice",
        "statement.object.definition.interactionType",
    ),
    (
        "true-false",
        ("object", "definition", "choices"),
        [{"id": "true"}],
        "statement.object.definition.choices",
    ),
    (
        "matching",
        ("object", "definition", "steps"),
        [{"id": "a"}],
        "statement.object.definition.steps",
    ),
    (
        "choice",
        ("object", "definition", "correctResponsesPattern"),
        "golf",
        "statement.object.definition.correctResponsesPattern",
    ),
    (
        "choice",
        ("object", "definition", "correctResponsesPattern", 0),
        True,
        "statement.object.definition.correctResponsesPattern[0]",
    ),
    (
        "choice",
        ("object", "definition", "choices", 1, "id"),
        "golf",
        "statement.object.definition.choices[1].id",
    ),
    (
        "choice",
        ("object", "definition", "choices", 0, "id"),
        DELETE,
        "statement.object.definition.choices[0].id",
    ),
    (
        "choice",
        ("object", "definition", "choices", 0, "id"),
        1,
        "statement.object.definition.choices[0].id",
    ),
    (
        "likert",
        ("object", "definition", "scale", 0, "name"),
        "x",
        "statement.object.definition.scale[0].name",
    ),
    (
        "likert",
        ("object", "definition", "scale", 0, "description"),
        "x",
        "statement.object.definition.scale[0].description",
    ),
    # object: StatementRef, Agent, Group, SubStatement
    ("statement_ref_object", ("object", "id"), "not-a-uuid", "statement.object.id"),
    ("statement_ref_object", ("object", "id"), DELETE, "statement.object.id"),
    ("statement_ref_object", ("object", "definition"), {}, "statement.object.definition"),
    (
        "statement_ref_object",
        ("object", "objectType"),
        "statementref",
        "statement.object.objectType",
    ),
    ("agent_object", ("object", "mbox"), DELETE, "statement.object"),
    ("agent_object", ("object", "objectType"), "Person", "statement.object.objectType"),
    ("agent_object", ("object",), {"objectType": "Group"}, "statement.object.member"),
    ("substatement", ("object", "id"), UUID_A, "statement.object.id"),
    ("substatement", ("object", "stored"), "2013-05-18T05:32:34Z", "statement.object.stored"),
    ("substatement", ("object", "version"), "1.0.0", "statement.object.version"),
    (
        "substatement",
        ("object", "authority"),
        {"mbox": "mailto:a@b.c"},
        "statement.object.authority",
    ),
    ("substatement", ("object", "verb"), DELETE, "statement.object.verb"),
    (
        "substatement",
        ("object", "actor", "mbox"),
        "test@example.com",
        "statement.object.actor.mbox",
    ),
    (
        "substatement",
        ("object", "object"),
        copy.deepcopy(substatement()["object"]),
        "statement.object.object.objectType",
    ),
    ("substatement", ("object", "timestamp"), "tomorrow", "statement.object.timestamp"),
    (
        "substatement",
        ("object", "object"),
        {"objectType": "StatementRef", "id": UUID_A},
        "statement.object.context.platform",
    ),
    # result
    ("full", ("result",), None, "statement.result"),
    ("full", ("result",), [], "statement.result"),
    ("full", ("result", "success"), "true", "statement.result.success"),
    ("full", ("result", "success"), 1, "statement.result.success"),
    ("full", ("result", "completion"), None, "statement.result.completion"),
    ("full", ("result", "response"), 42, "statement.result.response"),
    ("full", ("result", "foo"), 1, "statement.result.foo"),
    ("full", ("result", "score"), 0.5, "statement.result.score"),
    ("full", ("result", "score", "scaled"), 1.5, "statement.result.score.scaled"),
    ("full", ("result", "score", "scaled"), -1.01, "statement.result.score.scaled"),
    ("full", ("result", "score", "raw"), "5", "statement.result.score.raw"),
    ("full", ("result", "score", "raw"), True, "statement.result.score.raw"),
    ("full", ("result", "score", "raw"), 11, "statement.result.score.raw"),
    ("full", ("result", "score", "raw"), -1, "statement.result.score.raw"),
    ("full", ("result", "score", "min"), 10, "statement.result.score.min"),
    ("full", ("result", "score", "max"), None, "statement.result.score.max"),
    ("full", ("result", "score", "percent"), 50, "statement.result.score.percent"),
    ("full", ("result", "duration"), "1 hour", "statement.result.duration"),
    ("full", ("result", "duration"), "P4W1D", "statement.result.duration"),
    ("full", ("result", "duration"), "PT", "statement.result.duration"),
    ("full", ("result", "duration"), "P1DT", "statement.result.duration"),
    ("full", ("result", "duration"), "-P1D", "statement.result.duration"),
    ("full", ("result", "duration"), "P0001-02-03T04:05:06", "statement.result.duration"),
    ("full", ("result", "duration"), "PT1.5H30M", "statement.result.duration"),
    ("full", ("result", "duration"), 3600, "statement.result.duration"),
    ("full", ("result", "extensions"), {"minutes": 1}, "statement.result.extensions"),
    # context
    ("full", ("context",), "context", "statement.context"),
    ("full", ("context", "registration"), "abc", "statement.context.registration"),
    ("full", ("context", "instructor"), {"name": "Nobody"}, "statement.context.instructor"),
    ("full", ("context", "team", "objectType"), "Agent", "statement.context.team.objectType"),
    ("full", ("context", "team", "objectType"), DELETE, "statement.context.team.objectType"),
    (
        "full",
        ("context", "contextActivities", "parents"),
        [],
        "statement.context.contextActivities.parents",
    ),
    (
        "full",
        ("context", "contextActivities", "parent"),
        "http://www.example.com/meetings/series/267",
        "statement.context.contextActivities.parent",
    ),
    (
        "full",
        ("context", "contextActivities", "other", 1, "id"),
        "occurances/3425567",
        "statement.context.contextActivities.other[1].id",
    ),
    (
        "full",
        ("context", "contextActivities", "parent", 0, "objectType"),
        "Agent",
        "statement.context.contextActivities.parent[0].objectType",
    ),
    (
        "full",
        ("context", "contextActivities", "category", 0, "definition", "type"),
        None,
        "statement.context.contextActivities.category[0].definition.type",
    ),
    ("full", ("context", "revision"), 1, "statement.context.revision"),
    ("full", ("context", "platform"), ["web"], "statement.context.platform"),
    ("full", ("context", "language"), "klingon", "statement.context.language"),
    ("full", ("context", "language"), "en_US", "statement.context.language"),
    ("full", ("context", "statement"), {"id": UUID_A}, "statement.context.statement.objectType"),
    (
        "full",
        ("context", "statement"),
        {"objectType": "StatementRef", "id": "x"},
        "statement.context.statement.id",
    ),
    ("full", ("context", "extensions"), [], "statement.context.extensions"),
    ("full", ("context", "Extensions"), {}, "statement.context.Extensions"),
    ("agent_object", ("context", "revision"), "2", "statement.context.revision"),
    ("statement_ref_object", ("context",), {"platform": "web"}, "statement.context.platform"),
    # timestamp, stored, authority, version
    ("full", ("timestamp",), "2013-13-01T00:00:00Z", "statement.timestamp"),
    ("full", ("timestamp",), "2013-05-18", "statement.timestamp"),
    ("full", ("timestamp",), "2013-05-18 05:32:34Z", "statement.timestamp"),
    ("full", ("timestamp",), "yesterday", "statement.timestamp"),
    ("full", ("timestamp",), 1368855154, "statement.timestamp"),
    ("full", ("timestamp",), "2013-05-18T05:32:34Z ", "statement.timestamp"),
    ("full", ("stored",), "2013-05-18T25:00:00Z", "statement.stored"),
    ("full", ("authority",), {"name": "No Identifier"}, "statement.authority"),
    (
        "full",
        ("authority",),
        {"objectType": "Group", "member": [{"mbox": "mailto:a@example.com"}]},
        "statement.authority.member",
    ),
    ("full", ("version",), "1.1.0", "statement.version"),
    ("full", ("version",), "2.0.0", "statement.version"),
    ("full", ("version",), "1.0", "statement.version"),
    ("full", ("version",), 1.0, "statement.version"),
    ("full", ("version",), "0.95", "statement.version"),
    # attachments
    ("attachments", ("attachments",), {}, "statement.attachments"),
    ("attachments", ("attachments", 0), "x", "statement.attachments[0]"),
    ("attachments", ("attachments", 0, "sha2"), DELETE, "statement.attachments[0].sha2"),
    ("attachments", ("attachments", 0, "sha2"), "not-hex", "statement.attachments[0].sha2"),
    ("attachments", ("attachments", 0, "length"), "27", "statement.attachments[0].length"),
    ("attachments", ("attachments", 0, "length"), True, "statement.attachments[0].length"),
    ("attachments", ("attachments", 0, "length"), -1, "statement.attachments[0].length"),
    ("attachments", ("attachments", 0, "length"), 27.5, "statement.attachments[0].length"),
    ("attachments", ("attachments", 0, "usageType"), "test", "statement.attachments[0].usageType"),
    ("attachments", ("attachments", 0, "display"), DELETE, "statement.attachments[0].display"),
    (
        "attachments",
        ("attachments", 0, "description"),
        {"en-US": 1},
        "statement.attachments[0].description.en-US",
    ),
    (
        "attachments",
        ("attachments", 0, "contentType"),
        "plain text",
        "statement.attachments[0].contentType",
    ),
    (
        "attachments",
        ("attachments", 1, "contentType"),
        "application/jose",
        "statement.attachments[1].contentType",
    ),
    ("attachments", ("attachments", 2, "fileUrl"), "cert.png", "statement.attachments[2].fileUrl"),
    ("attachments", ("attachments", 2, "url"), "http://x.example", "statement.attachments[2].url"),
]


@pytest.mark.parametrize(
    ("name", "location", "value", "expected_path"),
    INVALID,
    ids=[f"{row[3]}={row[2]!r}"[:90] for row in INVALID],
)
def test_invalid_mutation_is_rejected_at_its_path(
    name: str, location: tuple, value: object, expected_path: str
) -> None:
    stmt = VALID[name]()
    _put(stmt, location, value)
    with pytest.raises(XAPIValidationError) as caught:
        validate_statement(stmt)
    assert caught.value.message.startswith(expected_path + ":"), caught.value.message
    assert caught.value.status == 400


def test_there_are_enough_invalid_mutations() -> None:
    assert len(INVALID) >= 60


def test_message_names_path_and_value() -> None:
    stmt = minimal()
    stmt["actor"]["mbox"] = "bob@example.com"
    with pytest.raises(XAPIValidationError) as caught:
        validate_statement(stmt)
    assert str(caught.value) == (
        "statement.actor.mbox: must be a 'mailto:' IRI, got 'bob@example.com'"
    )


def test_statement_must_be_an_object() -> None:
    for body in (None, [], "statement", 1, True):
        with pytest.raises(XAPIValidationError, match=r"^statement: "):
            validate_statement(body)


def test_custom_root_path() -> None:
    stmt = minimal()
    stmt["verb"]["id"] = "nope"
    with pytest.raises(XAPIValidationError, match=r"^body\.verb\.id: "):
        validate_statement(stmt, path="body")


# ------------------------------------------------------------------------ batches


def test_validate_statements_accepts_one_or_many() -> None:
    one = minimal()
    assert validate_statements(one) == [one]
    many = [minimal(), full(), voiding()]
    assert validate_statements(many) == many
    assert validate_statements([]) == []


def test_validate_statements_names_the_index() -> None:
    batch = [minimal(), minimal(), minimal(), minimal()]
    batch[3]["verb"]["id"] = "completed"
    with pytest.raises(XAPIValidationError, match=r"^statement\[3\]\.verb\.id: "):
        validate_statements(batch)


def test_validate_statements_rejects_duplicate_ids_in_a_batch() -> None:
    first, second = minimal(), minimal()
    first["id"] = UUID_A
    second["id"] = UUID_A.upper()
    with pytest.raises(XAPIValidationError, match=r"^statement\[1\]\.id: duplicates"):
        validate_statements([first, second])


@pytest.mark.parametrize("body", [None, "[]", 3, True, [None], [[]]])
def test_validate_statements_rejects_other_bodies(body: object) -> None:
    with pytest.raises(XAPIValidationError, match=r"^statement(\[0\])?: "):
        validate_statements(body)


# ---------------------------------------------------------------- public helpers


def test_errors_carry_status() -> None:
    error = XAPIValidationError("x: bad")
    assert isinstance(error, XAPIError)
    assert (error.status, error.message, str(error)) == (400, "x: bad", "x: bad")
    assert XAPIError("gone", status=404).status == 404
    assert XAPIError("bad").status == 400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://example.com/a", True),
        ("urn:x:y", True),
        ("mailto:a@example.com", True),
        ("http://example.com/فعل", True),
        ("http://example.com/#frag", True),
        ("relative/path", False),
        ("/absolute/path", False),
        ("", False),
        ("http://example.com/a b", False),
        ("http://example.com\n", False),
    ],
)
def test_is_iri(value: str, expected: bool) -> None:
    assert is_iri(value) is expected


def test_parse_timestamp_is_timezone_aware() -> None:
    utc = dt.UTC
    assert parse_timestamp("2013-05-18T05:32:34.804Z", "t") == dt.datetime(
        2013, 5, 18, 5, 32, 34, 804000, tzinfo=utc
    )
    shifted = parse_timestamp("2013-05-18T05:32:34+02:00", "t")
    assert shifted == dt.datetime(2013, 5, 18, 3, 32, 34, tzinfo=utc)
    naive = parse_timestamp("2013-05-18T05:32:34", "t")
    assert naive.tzinfo is not None and naive == dt.datetime(2013, 5, 18, 5, 32, 34, tzinfo=utc)


@pytest.mark.parametrize(
    "value", ["2013-13-01T00:00:00Z", "2013-05-18", "", "T", "2013-05-18T05:32:34+25:00", None]
)
def test_parse_timestamp_rejects(value: object) -> None:
    with pytest.raises(XAPIValidationError, match=r"^since: "):
        parse_timestamp(value, "since")


@pytest.mark.parametrize(
    "value",
    ["PT4H35M59.14S", "P3Y1M29DT4H35M59.14S", "P3Y", "P4W", "PT1234S", "PT0S", "P1DT2H", "PT1,5S"],
)
def test_durations_accepted(value: str) -> None:
    validate_duration(value, "d")


@pytest.mark.parametrize(
    "value",
    [
        *("P16559.14S", "P", "PT", "P4W1D", "P1Y2M3W", "-P1D", "p1d", "P1.5Y2M", "PT1,5H1.5S"),
        *("PT1H ", "1H", "PT1H\n", None, 5),
    ],
)
def test_durations_rejected(value: object) -> None:
    with pytest.raises(XAPIValidationError, match=r"^d: "):
        validate_duration(value, "d")


def test_validate_agent_for_query_parameters() -> None:
    validate_agent({"mbox": "mailto:a@example.com"}, "agent")
    group = {"objectType": "Group", "mbox": "mailto:g@example.com"}
    validate_agent(group, "agent")
    with pytest.raises(XAPIValidationError, match=r"^agent\.objectType: "):
        validate_agent(group, "agent", allow_group=False)
    with pytest.raises(XAPIValidationError, match=r"^agent: "):
        validate_agent("mailto:a@example.com", "agent")


def test_validate_activity_id_and_language_map() -> None:
    validate_activity_id("http://example.com/a", "activityId")
    with pytest.raises(XAPIValidationError, match=r"^activityId: "):
        validate_activity_id("a", "activityId")
    validate_language_map({"en": "x", "und": "y"}, "name")
    with pytest.raises(XAPIValidationError, match=r"^name: "):
        validate_language_map({"": "x"}, "name")
    with pytest.raises(XAPIValidationError, match=r"^name: "):
        validate_language_map(["en"], "name")


# ------------------------------------------------------------------ property test

# Strings the validator treats specially, so random values reach its deeper branches.
INTERESTING = [
    "Agent",
    "Group",
    "Activity",
    "StatementRef",
    "SubStatement",
    "choice",
    "matching",
    "mailto:a@example.com",
    "http://example.com/x",
    VOIDED,
    UUID_A,
    "en-US",
    "PT1S",
    "2013-05-18T05:32:34Z",
    "1.0.0",
]
PROPERTY_NAMES = sorted(
    {
        "id", "actor", "verb", "object", "result", "context", "timestamp", "stored",
        "authority", "version", "attachments", "objectType", "name", "mbox", "mbox_sha1sum",
        "openid", "account", "homePage", "member", "display", "definition", "description",
        "type", "moreInfo", "interactionType", "correctResponsesPattern", "choices", "scale",
        "source", "target", "steps", "extensions", "score", "scaled", "raw", "min", "max",
        "success", "completion", "response", "duration", "registration", "instructor", "team",
        "contextActivities", "parent", "grouping", "category", "other", "revision", "platform",
        "language", "statement", "usageType", "contentType", "length", "sha2", "fileUrl",
    }
)  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(PROPERTY_NAMES), children, max_size=3
        )
    ),
    max_leaves=10,
)


def _locations(node: object, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _locations(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _locations(child, (*prefix, index))


def _mutate(data: st.DataObject, stmt: object) -> object:
    location = data.draw(st.sampled_from(list(_locations(stmt))))
    node = stmt
    for key in location:
        node = node[key]
    action = data.draw(st.sampled_from(["replace", "add", "delete"]))
    if not location:
        return data.draw(json_values)
    if action == "add" and isinstance(node, dict):
        node[data.draw(st.sampled_from(PROPERTY_NAMES))] = data.draw(json_values)
    elif action == "add" and isinstance(node, list):
        node.append(data.draw(json_values))
    elif action == "delete":
        _put(stmt, location, DELETE)
    else:
        _put(stmt, location, data.draw(json_values))
    return stmt


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_values_only_raise_validation_errors(data: st.DataObject) -> None:
    stmt: object = VALID[data.draw(st.sampled_from(sorted(VALID)))]()
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        stmt = _mutate(data, stmt)
    try:
        validate_statement(stmt)
    except XAPIValidationError as error:
        assert error.status == 400
        assert error.message.startswith("statement")
    try:
        validate_statements([stmt, stmt] if isinstance(stmt, dict) else stmt)
    except XAPIValidationError as error:
        assert error.message.startswith("statement")
