"""Property-based fuzzing of every ``/xapi`` resource through the Flask test client.

Properties checked on every example:

1. Malformed input — statements broken in one place, bodies that are not JSON, bad or
   duplicate or unknown parameters, bad headers, misuse of the alternate request syntax —
   is answered with the 4xx status the specification asks for (never 5xx, never 2xx), and a
   JSON body ``{"error": {"status": ..., "message": ...}}`` (lrs/web.py ``error_response``)
   that says why (Part Three §3.2.s3.b1/b2).
2. A rejected request changes nothing: before the examples, statements (one voided) and
   documents of each kind are stored; after each example every collection of the
   database is compared with that snapshot — statements, documents, counters, attachments,
   activities, credentials. A rejected write must not even leave a sequence range pending
   (that would hold X-Experience-API-Consistent-Through back); only a 409 may have used up
   sequence numbers, because ingest inserts first and undoes the batch on a conflict.
   After each example the database is put back, so one failure cannot cascade.
3. What is valid is kept: random valid statements (built from valid parts) come back with
   ``format=exact`` as sent, apart from what the LRS adds (Part Two §2.4); documents come
   back byte for byte with their SHA-1 ETag and merge by top-level keys; multipart
   attachments come back; any JSON number the LRS accepts it can serve again.

Known bugs found by these tests are pinned with ``@example`` so they stay covered.

Statement validity follows xAPI 1.0.3 Part Two; section numbers below point into
adlnet/xAPI-Spec (``xAPI-Data.md`` is Part Two, ``xAPI-Communication.md`` Part Three).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
import re
import string
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from xapi_auth import basic_auth

VOIDED = "http://adlnet.gov/expapi/verbs/voided"
JSON_CT = "application/json"
FORM_CT = "application/x-www-form-urlencoded"

# Deterministic by default, so a failure is the same failure on every run and machine;
# MASTERYHUB_FUZZ_RANDOM=1 explores new examples instead, MASTERYHUB_FUZZ_SCALE=10 ten
# times as many. No example database: nothing is written into the working tree.
_SCALE = float(os.environ.get("MASTERYHUB_FUZZ_SCALE", "1"))
FUZZ = settings(max_examples=int(150 * _SCALE), deadline=None, database=None,
                derandomize=not os.environ.get("MASTERYHUB_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=int(50 * _SCALE))
MANY = settings(FUZZ, max_examples=int(400 * _SCALE))

STATEMENTS = "/xapi/statements"
STATE = "/xapi/activities/state"
ACTIVITY_PROFILE = "/xapi/activities/profile"
AGENT_PROFILE = "/xapi/agents/profile"
ACTIVITIES = "/xapi/activities"
AGENTS = "/xapi/agents"
ABOUT = "/xapi/about"

# What the seeded documents belong to.
SEED_ACTIVITY = "https://courses.example.com/fuzz/unit-1"
SEED_AGENT = {"objectType": "Agent", "name": "Fuzz", "mbox": "mailto:fuzz@example.edu"}
SEED_REGISTRATION = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
SEED_VERB = "http://adlnet.gov/expapi/verbs/completed"
ANY_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"  # a well-formed id nothing is stored under


# ======================================================================== valid parts


_SAFE = string.ascii_letters + string.digits + "-._~"
_segments = st.text(alphabet=_SAFE, min_size=1, max_size=10)
_hosts = st.sampled_from(["example.com", "courses.example.org", "lrs.example.edu",
                          "xn--bcher-kva.example", "例え.jp"])
http_iris = st.builds(lambda scheme, host, segs: f"{scheme}://{host}/" + "/".join(segs),
                      st.sampled_from(["http", "https"]), _hosts,
                      st.lists(_segments, max_size=3))
iris = st.one_of(
    http_iris,
    st.builds(lambda u: f"urn:uuid:{u}", st.uuids()),
    st.sampled_from(["http://adlnet.gov/expapi/verbs/completed",
                     "https://w3id.org/xapi/cmi5/verbs/passed", "tag:example.com,2024:item-7",
                     "https://例え.jp/パス?q=1#frag", "urn:isbn:0451450523"]),
)
verb_ids = iris.filter(lambda i: i != VOIDED)
LANGUAGE_TAGS = ["en", "en-US", "fr", "fr-CA", "de", "es-419", "zh-Hans", "und", "pt-BR", "ja"]
language_tags = st.sampled_from(LANGUAGE_TAGS)
texts = st.text(max_size=16)
language_maps = st.dictionaries(language_tags, texts, max_size=3)
uuids = st.uuids().map(str)

_local = st.text(alphabet=string.ascii_lowercase + string.digits + "._+-", min_size=1,
                 max_size=10).filter(lambda s: not s.startswith("."))
_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
mboxes = st.builds(lambda local, labels: f"mailto:{local}@{'.'.join(labels)}", _local,
                   st.lists(_label, min_size=1, max_size=3))
sha1s = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
openids = st.builds(lambda seg: f"https://openid.example.com/{seg}", _segments)
accounts = st.fixed_dictionaries({"homePage": http_iris, "name": st.text(min_size=1,
                                                                         max_size=12)})
IFI_STRATEGIES = {"mbox": mboxes, "mbox_sha1sum": sha1s, "openid": openids,
                  "account": accounts}


@st.composite
def agents(draw, object_type: str | None = None) -> dict:
    """An Agent with exactly one IFI (Part Two §2.4.2.1)."""
    ifi = draw(st.sampled_from(sorted(IFI_STRATEGIES)))
    agent: dict = {ifi: draw(IFI_STRATEGIES[ifi])}
    if draw(st.booleans()):
        agent["name"] = draw(texts)
    kind = object_type or draw(st.sampled_from([None, "Agent"]))
    if kind:
        agent["objectType"] = kind
    return agent


@st.composite
def groups(draw) -> dict:
    """An identified Group (one IFI, members optional) or an anonymous one (members)."""
    group: dict = {"objectType": "Group"}
    identified = draw(st.booleans())
    if identified:
        ifi = draw(st.sampled_from(sorted(IFI_STRATEGIES)))
        group[ifi] = draw(IFI_STRATEGIES[ifi])
    if not identified or draw(st.booleans()):
        group["member"] = draw(st.lists(agents(), min_size=0 if identified else 1,
                                        max_size=3))
    if draw(st.booleans()):
        group["name"] = draw(texts)
    return group


actors = st.one_of(agents(), groups())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
extensions = st.dictionaries(iris, json_values, max_size=3)
verbs = st.builds(lambda i, d: {"id": i, **({"display": d} if d is not None else {})},
                  verb_ids, st.none() | language_maps)

_COMPONENTS_BY_TYPE = {
    "true-false": (), "fill-in": (), "long-fill-in": (), "numeric": (), "other": (),
    "choice": ("choices",), "sequencing": ("choices",), "likert": ("scale",),
    "matching": ("source", "target"), "performance": ("steps",),
}


@st.composite
def components(draw) -> list[dict]:
    ids = draw(st.lists(st.text(alphabet=_SAFE, min_size=1, max_size=6), max_size=4,
                        unique=True))
    out = []
    for component_id in ids:
        item: dict = {"id": component_id}
        if draw(st.booleans()):
            item["description"] = draw(language_maps)
        out.append(item)
    return out


@st.composite
def definitions(draw) -> dict:
    definition: dict = {}
    for key, strategy in (("name", language_maps), ("description", language_maps),
                          ("type", iris), ("moreInfo", http_iris), ("extensions", extensions)):
        if draw(st.booleans()):
            definition[key] = draw(strategy)
    if draw(st.booleans()):
        kind = draw(st.sampled_from(sorted(_COMPONENTS_BY_TYPE)))
        definition["interactionType"] = kind
        if draw(st.booleans()):
            definition["correctResponsesPattern"] = draw(st.lists(texts, max_size=2))
        for name in _COMPONENTS_BY_TYPE[kind]:
            if draw(st.booleans()):
                definition[name] = draw(components())
    return definition


@st.composite
def activities(draw, with_object_type: bool | None = None) -> dict:
    activity: dict = {"id": draw(iris)}
    if with_object_type if with_object_type is not None else draw(st.booleans()):
        activity["objectType"] = "Activity"
    if draw(st.booleans()):
        activity["definition"] = draw(definitions())
    return activity


statement_refs = st.builds(lambda i: {"objectType": "StatementRef", "id": i}, uuids)


@st.composite
def scores(draw) -> dict:
    score: dict = {}
    numbers = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
    if draw(st.booleans()):
        score["scaled"] = draw(st.floats(-1, 1) | st.sampled_from([-1, 0, 1]))
    low = draw(st.none() | numbers)
    high = draw(st.none() | numbers)
    if low is not None and high is not None:
        low, high = min(low, high), max(low, high)
        if low == high:
            high = low + 1
    if low is not None:
        score["min"] = low
    if high is not None:
        score["max"] = high
    if draw(st.booleans()):
        raw = draw(numbers)
        if low is not None:
            raw = max(raw, low)
        if high is not None:
            raw = min(raw, high)
        score["raw"] = raw
    return score


@st.composite
def durations(draw) -> str:
    """ISO 8601 §4.4.3.2 durations, a fraction only on the last component."""
    if draw(st.booleans()):
        return f"P{draw(st.integers(0, 99))}W"
    date = [u for u in "YMD" if draw(st.booleans())]
    time = [u for u in "HMS" if draw(st.booleans())]
    if not date and not time:
        time = ["S"]
    parts = [(u, False) for u in date] + [(u, True) for u in time]
    fraction = draw(st.booleans())
    out, in_time = "P", False
    for index, (unit, is_time) in enumerate(parts):
        if is_time and not in_time:
            out += "T"
            in_time = True
        number = str(draw(st.integers(0, 500)))
        if fraction and index == len(parts) - 1:
            number += draw(st.sampled_from([".", ","])) + str(draw(st.integers(0, 999)))
        out += number + unit
    return out


results = st.fixed_dictionaries({}, optional={
    "score": scores(), "success": st.booleans(), "completion": st.booleans(),
    "response": texts, "duration": durations(), "extensions": extensions})

_offsets = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                            dt.timezone(dt.timedelta(hours=-8))])


@st.composite
def timestamps(draw) -> str:
    moment = draw(st.datetimes(min_value=dt.datetime(1970, 1, 2),
                               max_value=dt.datetime(2100, 1, 1), timezones=_offsets))
    text = moment.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds",
                                                           "microseconds"])))
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


@st.composite
def contexts(draw, object_is_activity: bool) -> dict:
    context: dict = {}
    if draw(st.booleans()):
        context["registration"] = draw(uuids)
    if draw(st.booleans()):
        context["instructor"] = draw(actors)
    if draw(st.booleans()):
        context["team"] = draw(groups())
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["parent", "grouping", "category", "other"]),
                             unique=True, max_size=4))
        context["contextActivities"] = {
            key: draw(st.lists(activities(), min_size=1, max_size=2) | activities())
            for key in keys}
    if object_is_activity:
        for key in ("revision", "platform"):
            if draw(st.booleans()):
                context[key] = draw(texts)
    if draw(st.booleans()):
        context["language"] = draw(language_tags)
    if draw(st.booleans()):
        context["statement"] = draw(statement_refs)
    if draw(st.booleans()):
        context["extensions"] = draw(extensions)
    return context


@st.composite
def attachment_lists(draw) -> list[dict]:
    """Attachments with a fileUrl: allowed in an application/json request
    (Part Three §1.5.1.s1.b2)."""
    items = []
    for _ in range(draw(st.integers(1, 2))):
        item = {"usageType": draw(iris), "display": draw(language_maps),
                "contentType": draw(st.sampled_from(["text/plain", "application/pdf",
                                                     "image/png; q=1"])),
                "length": draw(st.integers(0, 10**9)),
                "sha2": draw(st.text(alphabet="0123456789abcdef", min_size=64,
                                     max_size=64)),
                "fileUrl": draw(http_iris)}
        if draw(st.booleans()):
            item["description"] = draw(language_maps)
        items.append(item)
    return items


@st.composite
def substatements(draw) -> dict:
    obj = draw(st.one_of(activities(), agents("Agent"), groups(), statement_refs))
    sub: dict = {"objectType": "SubStatement", "actor": draw(actors), "verb": draw(verbs),
                 "object": obj}
    if draw(st.booleans()):
        sub["result"] = draw(results)
    if draw(st.booleans()):
        sub["context"] = draw(contexts("id" in obj and obj.get("objectType", "Activity")
                                       == "Activity"))
    if draw(st.booleans()):
        sub["timestamp"] = draw(timestamps())
    return sub


@st.composite
def statements(draw) -> dict:
    """A valid statement without id (the tests give ids: hypothesis replays examples,
    and one id with two different contents would rightly be a 409)."""
    obj = draw(st.one_of(activities(), agents("Agent"), groups(), statement_refs,
                         substatements()))
    stmt: dict = {"actor": draw(actors), "verb": draw(verbs), "object": obj}
    is_activity = obj.get("objectType", "Activity") == "Activity"
    if draw(st.booleans()):
        stmt["result"] = draw(results)
    if draw(st.booleans()):
        stmt["context"] = draw(contexts(is_activity))
    if draw(st.booleans()):
        stmt["timestamp"] = draw(timestamps())
    if draw(st.integers(0, 4)) == 0:
        stmt["attachments"] = draw(attachment_lists())
    if draw(st.booleans()):
        stmt["version"] = draw(st.sampled_from(["1.0.0", "1.0.3", "1.0.9"]))
    return stmt


# ================================================================= invalid values


BAD_IRIS = ["", "not an iri", "example.com/path", "/relative/path", "//example.com/x",
            "http://exa mple.com/", "http://[::1/", "http://example.com/\n", "ht tp://x",
            ":no-scheme", "1http://example.com", "http://example.com/<>", "urn"]
BAD_MBOXES = ["ana@example.edu", "mailto:", "mailto:ana", "mailto:@example.edu",
              "mailto:ana@", "mailto:a b@example.edu", "MAILTO ana@example.edu",
              "mailto:ana@@example.edu", "mailto:ana@example..edu", "http://ana@example.edu"]
BAD_SHA1 = ["", "0" * 39, "0" * 41, "g" * 40, "z0" * 20, "0x" + "0" * 38]
BAD_UUIDS = ["", "123", "not-a-uuid", "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b",
             "{6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b}", "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4",
             "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4bb", "gf1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
             "urn:uuid:6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"]
BAD_TIMESTAMPS = ["", "yesterday", "2024-05-01", "2024-13-01T00:00:00Z",
                  "2024-02-30T00:00:00Z", "2024-05-01T25:00:00Z", "2024-05-01 12:00:00Z",
                  "12:00:00Z", "2024-05-01T12:00:00+25:00", "01/05/2024 12:00",
                  "2024-05-01T12:00:00ZZ"]
BAD_DURATIONS = ["", "P", "PT", "1H", "PT1.5H30M", "P4W1D", "-P1D", "P1DT",
                 "P0001-02-03T04:05:06", "PT1H ", "P1H", "PT-1S", "P1.5Y2M", "PTS"]
BAD_TAGS = ["", "en US", "abcdefghi", "-en", "en-", "e", "en--US", "123456789", "*"]
BAD_VERSIONS = ["1.0", "1", "2.0.0", "1.1.0", "0.95", "", "v1.0.3", "1.00.3", "1.0.3.1"]
BAD_OBJECT_TYPES = ["activity", "agent", "group", "Person", "", "Statement",
                    "substatement", "statementref", "ACTIVITY", "Activity "]
BAD_MEDIA_TYPES = ["", "text", "/plain", "text/", "text plain", "text/plain/x"]
BAD_SHA2 = ["", "0" * 63, "0" * 65, "g" * 64, "0" * 40]
BAD_INTERACTION_TYPES = ["Choice", "multiple-choice", "", "true_false", "TRUE-FALSE"]

ALL_PROPERTIES = frozenset({
    "id", "actor", "verb", "object", "result", "context", "timestamp", "stored",
    "authority", "version", "attachments", "objectType", "name", "mbox", "mbox_sha1sum",
    "openid", "account", "member", "homePage", "display", "definition", "description",
    "type", "moreInfo", "extensions", "interactionType", "correctResponsesPattern",
    "choices", "scale", "source", "target", "steps", "score", "success", "completion",
    "response", "duration", "scaled", "raw", "min", "max", "registration", "instructor",
    "team", "contextActivities", "revision", "platform", "language", "statement",
    "parent", "grouping", "category", "other", "usageType", "contentType", "length", "sha2",
    "fileUrl"})
no_colon_text = st.text(max_size=12).filter(lambda s: ":" not in s)
garbage_leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                  | st.text(max_size=8))
garbage = st.recursive(garbage_leaves,
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=10)


def category(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -------------------------------------------------------------- statement walking


@dataclass(frozen=True)
class Node:
    path: tuple
    kind: str
    value: Any


_STATEMENT_CHILDREN = {"actor": "actor", "verb": "verb", "object": "object",
                       "result": "result", "context": "context", "timestamp": "timestamp",
                       "attachments": "attachments", "id": "uuid", "version": "version",
                       "objectType": "objectType"}
_AGENT_CHILDREN = {"mbox": "mbox", "mbox_sha1sum": "sha1", "openid": "openid",
                   "account": "account", "name": "string", "objectType": "objectType",
                   "member": "members"}
_CHILDREN = {
    "statement": _STATEMENT_CHILDREN,
    "substatement": _STATEMENT_CHILDREN,
    "agent": _AGENT_CHILDREN,
    "group": _AGENT_CHILDREN,
    "account": {"homePage": "iri", "name": "string"},
    "verb": {"id": "iri", "display": "langmap"},
    "activity": {"id": "iri", "objectType": "objectType", "definition": "definition"},
    "definition": {"name": "langmap", "description": "langmap", "type": "iri",
                   "moreInfo": "iri", "extensions": "extensions",
                   "interactionType": "interactionType",
                   "correctResponsesPattern": "strings", "choices": "components",
                   "scale": "components", "source": "components", "target": "components",
                   "steps": "components"},
    "component": {"id": "string", "description": "langmap"},
    "statementref": {"objectType": "objectType", "id": "uuid"},
    "result": {"score": "score", "success": "bool", "completion": "bool",
               "response": "string", "duration": "duration", "extensions": "extensions"},
    "score": {"scaled": "number", "raw": "number", "min": "number", "max": "number"},
    "context": {"registration": "uuid", "instructor": "actor", "team": "group",
                "contextActivities": "ctxacts", "revision": "string", "platform": "string",
                "language": "langtag", "statement": "statementref",
                "extensions": "extensions"},
    "attachment": {"usageType": "iri", "fileUrl": "iri", "display": "langmap",
                   "description": "langmap", "contentType": "mediatype",
                   "length": "length", "sha2": "sha2"},
}
_LIST_ITEMS = {"members": "agent", "components": "component", "attachments": "attachment",
               "activities": "activity", "strings": "string"}
_OBJECT_KINDS = {"Activity": "activity", "Agent": "agent", "Group": "group",
                 "StatementRef": "statementref", "SubStatement": "substatement"}


def _resolve(kind: str, value: object) -> str:
    if kind == "actor":
        return "group" if isinstance(value, dict) and value.get("objectType") == "Group" \
            else "agent"
    if kind == "object":
        return _OBJECT_KINDS[value.get("objectType", "Activity")]  # type: ignore[union-attr]
    return kind


def walk(value: object, kind: str = "statement", path: tuple = ()) -> Iterator[Node]:
    """Every node of a valid statement with what it is (the 'slot' it fills)."""
    kind = _resolve(kind, value)
    yield Node(path, kind, value)
    if kind in _CHILDREN:
        for key, child_kind in _CHILDREN[kind].items():
            if key in value:  # type: ignore[operator]
                yield from walk(value[key], child_kind, (*path, key))  # type: ignore[index]
    elif kind in _LIST_ITEMS:
        for index, item in enumerate(value):  # type: ignore[arg-type]
            yield from walk(item, _LIST_ITEMS[kind], (*path, index))
    elif kind == "ctxacts":
        for key, item in value.items():  # type: ignore[union-attr]
            yield from walk(item, "activities" if isinstance(item, list) else "activity",
                            (*path, key))
    elif kind == "langmap":
        for tag in value:  # type: ignore[union-attr]
            yield Node((*path, tag), "string", value[tag])  # type: ignore[index]


def _get(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@dataclass(frozen=True)
class Edit:
    """One change to a statement: set a value at a path, delete it, or add a key."""

    op: str  # "set" | "del" | "add"
    path: tuple
    value: Any = None
    why: str = ""

    def apply(self, stmt: dict) -> dict:
        out = copy.deepcopy(stmt)
        if self.op == "set" and not self.path:
            return self.value
        parent = _get(out, self.path[:-1]) if self.op != "add" else _get(out, self.path)
        if self.op == "set" and isinstance(parent, list) and self.path[-1] == len(parent):
            parent.append(self.value)  # one element more
        elif self.op == "set":
            parent[self.path[-1]] = self.value
        elif self.op == "del":
            del parent[self.path[-1]]
        else:
            key, value = self.value
            parent[key] = value
        return out


def _set(node: Node, values: st.SearchStrategy, why: str) -> st.SearchStrategy[Edit]:
    return values.map(lambda v: Edit("set", node.path, v, why))


def _scalar_edits(node: Node) -> list[st.SearchStrategy[Edit]]:
    bad = {
        "iri": st.sampled_from(BAD_IRIS) | no_colon_text,
        "mbox": st.sampled_from(BAD_MBOXES),
        "sha1": st.sampled_from(BAD_SHA1),
        "openid": st.sampled_from(BAD_IRIS) | no_colon_text,
        "uuid": st.sampled_from(BAD_UUIDS) | st.text(alphabet="xyz-", max_size=36),
        "timestamp": st.sampled_from(BAD_TIMESTAMPS)
        | st.text(alphabet=string.ascii_letters + ":- ", max_size=20),
        "duration": st.sampled_from(BAD_DURATIONS) | st.text(alphabet="TWYMDHS", max_size=6),
        "langtag": st.sampled_from(BAD_TAGS),
        "version": st.sampled_from(BAD_VERSIONS),
        "objectType": st.sampled_from(BAD_OBJECT_TYPES),
        "mediatype": st.sampled_from(BAD_MEDIA_TYPES),
        "sha2": st.sampled_from(BAD_SHA2),
        "interactionType": st.sampled_from(BAD_INTERACTION_TYPES),
        "length": st.sampled_from([-1, 1.5, "10", True, -(2**70)]),
        "bool": st.sampled_from([0, 1, "true", "false", "True"]),
    }
    edits = []
    if node.kind in bad:
        edits.append(_set(node, bad[node.kind], f"invalid {node.kind}"))
    if node.kind == "number":
        edits.append(_set(node, st.just(str(node.value)), "number as string"))
        edits.append(_set(node, st.booleans(), "boolean as number"))
        if node.path[-1] == "scaled":
            edits.append(_set(node, st.sampled_from([1.0001, -1.5, 2, 10**20]),
                              "scaled outside [-1, 1]"))
    if node.kind == "bool":
        edits.append(_set(node, st.just(1 if node.value else 0), "number as boolean"))
    return edits


_REQUIRED = {
    "statement": ("actor", "verb", "object"),
    "substatement": ("actor", "verb", "object", "objectType"),
    "verb": ("id",),
    "activity": ("id",),
    "account": ("homePage", "name"),
    "statementref": ("id", "objectType"),
    "attachment": ("usageType", "display", "contentType", "length", "sha2"),
    "component": ("id",),
}
_IFIS = ("mbox", "mbox_sha1sum", "openid", "account")


def _dict_edits(node: Node) -> list[st.SearchStrategy[Edit]]:
    obj: dict = node.value
    edits = []
    unknown = st.text(min_size=1, max_size=12).filter(lambda k: k not in ALL_PROPERTIES)
    edits.append(st.tuples(unknown, garbage).map(
        lambda kv: Edit("add", node.path, kv, "unknown property")))
    allowed = [k for k in _CHILDREN.get(node.kind, {}) if k not in obj]
    if allowed:
        # Part Two §2.2.s4.b8: property names are case-sensitive.
        wrong_case = st.sampled_from(allowed).map(
            lambda k: k.upper() if k.upper() != k else k.capitalize() + "X")
        edits.append(st.tuples(wrong_case, garbage).map(
            lambda kv: Edit("add", node.path, kv, "property in the wrong case")))
    required = list(_REQUIRED.get(node.kind, ()))
    if node.kind in ("agent", "group") and node.path and node.path[-1] in ("object", "team"):
        required.append("objectType")  # Part Two §2.4.4.2.s1.b1, §2.4.6.s3
    if node.kind == "agent":
        required += [k for k in _IFIS if k in obj]  # exactly one IFI
    if node.kind == "definition" and "interactionType" in obj and any(
            k in obj for k in ("correctResponsesPattern", "choices", "scale", "source",
                               "target", "steps")):
        required.append("interactionType")
    present = [k for k in required if k in obj]
    if present:
        edits.append(st.sampled_from(present).map(
            lambda k: Edit("del", (*node.path, k), why=f"required {k} removed")))
    if node.kind in ("agent", "group"):
        extra = [k for k in _IFIS if k not in obj]
        has_ifi = any(k in obj for k in _IFIS)
        if extra and has_ifi:  # Part Two §2.4.2.1.s2.b1, §2.4.2.2.s5.b1: one IFI at most
            edits.append(st.sampled_from(extra).flatmap(
                lambda k: IFI_STRATEGIES[k].map(
                    lambda v, k=k: Edit("add", node.path, (k, v), "two IFIs"))))
    if node.kind == "group" and obj.get("member"):
        edits.append(groups().map(
            lambda g: Edit("set", (*node.path, "member", 0), g, "Group as member")))
    return edits


def _other_type_values(node: Node) -> st.SearchStrategy:
    excluded = {category(node.value)}
    if not node.path:
        excluded.add("array")  # [] is a valid (empty) batch
    if node.kind == "activities":
        excluded.add("object")  # a single Activity is also valid there
    if node.kind == "activity" and len(node.path) >= 2 and node.path[-2] == "contextActivities":
        excluded.add("array")  # an array of Activities is also valid there
    return garbage.filter(lambda v: category(v) not in excluded)


def node_edits(node: Node) -> st.SearchStrategy[Edit]:
    """Edits that make a valid statement invalid at this node."""
    edits: list[st.SearchStrategy[Edit]] = []
    if node.path:
        # Part Two §2.2.s4.b1.b1: null is not a value anywhere outside extensions.
        edits.append(st.just(Edit("set", node.path, None, "null value")))
    edits.append(_other_type_values(node).map(
        lambda v: Edit("set", node.path, v, "value of the wrong JSON type")))
    edits += _scalar_edits(node)
    if node.kind in _CHILDREN:
        edits += _dict_edits(node)
    if node.kind == "langmap":
        edits.append(st.tuples(st.sampled_from(BAD_TAGS), texts).map(
            lambda kv: Edit("add", node.path, kv, "invalid language tag")))
    if node.kind == "extensions":
        edits.append(st.tuples(st.sampled_from(BAD_IRIS) | no_colon_text, json_values).map(
            lambda kv: Edit("add", node.path, kv, "extension key is not an IRI")))
    if node.kind in _LIST_ITEMS and node.kind != "strings":
        edits.append(garbage_leaves.map(
            lambda v: Edit("set", (*node.path, len(node.value)), v, "garbage element")))
    if node.kind == "components" and node.value:
        edits.append(st.just(Edit("set", (*node.path, len(node.value)),
                                  {"id": node.value[0]["id"]}, "duplicate component id")))
    if node.kind == "strings":
        edits.append(st.sampled_from([1, None, True, {}]).map(
            lambda v: Edit("set", (*node.path, len(node.value)), v, "non-string pattern")))
    return st.one_of(edits)


def _statement_edits(stmt: dict) -> list[st.SearchStrategy[Edit]]:
    """Whole-statement rules that no single node breaks."""
    edits = []
    obj = stmt["object"]
    kind = obj.get("objectType", "Activity")
    if kind != "StatementRef":
        # Part Two §2.3.2.s2.b1: a voiding statement's object is a StatementRef.
        edits.append(st.just(Edit("set", ("verb", "id"), VOIDED, "voiding a non-StatementRef")))
    if kind != "Activity":
        # Part Two §2.4.6.s4.b1/b2: revision and platform only for Activities.
        edits.append(st.sampled_from(["revision", "platform"]).map(
            lambda k: Edit("set", ("context",), dict(stmt.get("context", {}), **{k: "x"}),
                           f"context.{k} without an Activity object")))
    if kind == "SubStatement":
        # Part Two §2.4.4.3.s8.b3/b4.
        edits.append(st.sampled_from(["id", "stored", "version", "authority"]).map(
            lambda k: Edit("add", ("object",), (k, {"id": str(uuid.uuid4()),
                                                     "stored": "2024-05-01T00:00:00Z",
                                                     "version": "1.0.0",
                                                     "authority": SEED_AGENT}[k]),
                           f"{k} in a SubStatement")))
        edits.append(st.just(Edit("set", ("object", "object"), dict(obj),
                                  "nested SubStatement")))
    if kind == "Activity" and isinstance(obj.get("definition"), dict):
        # Part Two §2.4.4.1.s15: component lists belong to particular interaction types.
        edits.append(st.just(Edit("set", ("object", "definition"),
                                  dict(obj["definition"], interactionType="true-false",
                                       choices=[{"id": "a"}]),
                                  "choices on a true-false interaction")))
    score = (stmt.get("result") or {}).get("score")
    if isinstance(score, dict) and "max" in score:
        edits.append(st.just(Edit("set", ("result", "score"),
                                  dict(score, raw=score["max"] + 1), "raw above max")))
        edits.append(st.just(Edit("set", ("result", "score"),
                                  dict(score, min=score["max"]), "min not below max")))
    for index, item in enumerate(stmt.get("attachments") or ()):
        if "fileUrl" in item:
            # Part Three §1.5.2.s2.b1: raw attachment data needs multipart/mixed.
            edits.append(st.just(Edit("del", ("attachments", index, "fileUrl"),
                                      why="attachment without fileUrl in a JSON request")))
    return edits


@st.composite
def invalid_statements(draw, stmt: dict) -> tuple[dict, Edit]:
    nodes = list(walk(stmt))
    choices = [st.sampled_from(nodes).flatmap(node_edits), *_statement_edits(stmt)]
    edit = draw(st.one_of(choices))
    return edit.apply(stmt), edit


# =============================================================== requests, checks


@dataclass
class Call:
    """One request, sent in the normal syntax or tunnelled through the alternate one
    (Part Three §1.3: method in the query string; headers, parameters and content as
    form fields)."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    alternate: bool = False

    def send(self, client):
        if not self.alternate:
            query = urlencode(self.params)
            return client.open(self.path + (f"?{query}" if query else ""), method=self.method,
                               headers=self.headers, data=self.body)
        form = [*self.params, *self.headers.items()]
        if self.body:
            form.append(("content", self.body.decode("utf-8")))
        return client.post(f"{self.path}?method={self.method}", data=urlencode(form),
                           headers={"Content-Type": FORM_CT})

    def describe(self) -> str:
        return (f"{'alternate ' if self.alternate else ''}{self.method} {self.path} "
                f"params={self.params!r} headers={self.headers!r} body={self.body[:300]!r}")


def snapshot(db) -> dict[str, list]:
    """Every document of every collection, in a stable order."""
    return {name: list(db[name].find({}, sort=[("_id", 1)]))
            for name in sorted(db.list_collection_names())}


def settle(store, db) -> None:
    """Release the store's finished sequence ranges and wait until no range is pending.

    ``flush()`` alone is not enough: when the store's 50 ms timer is flushing at the same
    moment, ``flush()`` finds nothing left to do and returns before the timer's update has
    reached the database.
    """
    store.flush()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        doc = db["lrs_counters"].find_one({"_id": "statements"}) or {}
        if not doc.get("pending"):
            return
        time.sleep(0.005)


def _without_next(collections: dict[str, list]) -> dict[str, list]:
    return dict(collections, lrs_counters=[{k: v for k, v in d.items() if k != "next"}
                                           for d in collections.get("lrs_counters", ())])


def restore(db, before: dict) -> None:
    """Put the database back as it was, so one failing example cannot make every later
    example fail too (which would send hypothesis' shrinker after the wrong request)."""
    for name in set(db.list_collection_names()) | set(before):
        db[name].delete_many({})
        if before.get(name):
            db[name].insert_many(before[name])


def check_rejected(client, db, seed: Seed, call: Call, statuses: set[int] | None = None
                   ) -> None:
    """Send a request that must be rejected; check status, error body and database.

    The store releases finished sequence ranges from a timer; flushing it first makes the
    counters comparable, and shows that a rejected write left no range pending (which
    would hold X-Experience-API-Consistent-Through back). Only a 409 may have used up
    sequence numbers: ingest inserts first and undoes the batch on a conflict.
    """
    status = None
    try:
        response = _send(client, call)
        status = response.status_code
        _check_response(call, response, statuses)
    finally:
        settle(seed.store, db)
        after = snapshot(db)
        if after != seed.before:
            restore(db, seed.before)  # every example starts from the same database
        if status == 409:
            unchanged = _without_next(after) == _without_next(seed.before)
        else:
            unchanged = after == seed.before
        if not unchanged:
            changed = sorted(n for n in set(after) | set(seed.before)
                             if after.get(n) != seed.before.get(n))
            raise AssertionError(f"a rejected request changed {', '.join(changed)}: "
                                 f"{call.describe()}")


def _send(client, call: Call):
    try:
        return call.send(client)
    except Exception as exc:  # TESTING propagates exceptions: in production a 500
        raise AssertionError(f"server error ({type(exc).__name__}: {exc}) for "
                             f"{call.describe()}") from exc


def _check_response(call: Call, response, statuses: set[int] | None) -> None:
    status = response.status_code
    assert 400 <= status < 500, f"{status} {response.data[:300]!r} for {call.describe()}"
    if statuses is not None:
        assert status in statuses, (f"{status} (want {sorted(statuses)}) "
                                    f"{response.data[:300]!r} for {call.describe()}")
    if call.method.upper() != "HEAD":
        payload = response.get_json(silent=True)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), dict), (
            f"no JSON error body ({response.content_type}) {response.data[:200]!r} "
            f"for {call.describe()}")
        assert payload["error"]["status"] == status
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    # Part Three §3.3.s3.b1: the version header is in every response.
    assert "X-Experience-API-Version" in response.headers, (
        f"no X-Experience-API-Version header in the {status} answer to {call.describe()}")


# ===================================================================== the seeded LRS


class Seed:
    """What the ``seed`` fixture stored, and the database snapshot taken right after."""

    def __init__(self, headers: dict[str, str], statement_ids: list[str], voided_id: str,
                 voiding_id: str, etags: dict[str, str], store, before: dict) -> None:
        self.headers = headers
        self.store = store
        self.statement_ids = statement_ids
        self.voided_id = voided_id
        self.voiding_id = voiding_id
        self.etags = etags  # resource path -> ETag of its seeded document
        self.before = before

    def __repr__(self) -> str:  # keeps hypothesis' failure reports short
        return "Seed(...)"

    def with_headers(self, **extra: str) -> dict[str, str]:
        return {**self.headers, **{k.replace("_", "-"): v for k, v in extra.items()}}


SEED_STATEMENT = {
    "actor": SEED_AGENT,
    "verb": {"id": SEED_VERB, "display": {"en-US": "completed", "fr-FR": "a terminé"}},
    "object": {"id": SEED_ACTIVITY,
               "definition": {"name": {"en": "Unit 1", "fr": "Unité 1", "de-DE": "Einheit 1"},
                              "description": {"en": "Fractions", "es": "Fracciones"}}},
    "context": {"registration": SEED_REGISTRATION}}
AGENT_JSON = json.dumps(SEED_AGENT)
DOC_PARAMS = {
    STATE: [("activityId", SEED_ACTIVITY), ("agent", AGENT_JSON), ("stateId", "progress")],
    ACTIVITY_PROFILE: [("activityId", SEED_ACTIVITY), ("profileId", "settings")],
    AGENT_PROFILE: [("agent", AGENT_JSON), ("profileId", "prefs")],
}


@pytest.fixture
def seed(app, client, db, xapi_headers) -> Seed:
    """Statements (one voided) and one document of each kind, plus a text/plain state and
    a registration-scoped state."""
    json_headers = dict(xapi_headers, **{"Content-Type": JSON_CT})
    given = str(uuid.uuid4())
    response = client.post(STATEMENTS, headers=json_headers, data=json.dumps([
        SEED_STATEMENT, dict(SEED_STATEMENT, id=given),
        dict(SEED_STATEMENT, result={"score": {"scaled": 0.5}, "success": False})]))
    assert response.status_code == 200, response.data
    ids = response.get_json()
    void = {"actor": SEED_AGENT, "verb": {"id": VOIDED},
            "object": {"objectType": "StatementRef", "id": ids[2]}}
    response = client.post(STATEMENTS, headers=json_headers, data=json.dumps(void))
    assert response.status_code == 200, response.data
    (voiding,) = response.get_json()

    documents = [
        (STATE, DOC_PARAMS[STATE], JSON_CT, b'{"page": 1, "done": false}'),
        (STATE, [*DOC_PARAMS[STATE][:2], ("stateId", "notes")], "text/plain", b"hello"),
        (STATE, [*DOC_PARAMS[STATE], ("registration", SEED_REGISTRATION)], JSON_CT,
         b'{"page": 9}'),
        (ACTIVITY_PROFILE, DOC_PARAMS[ACTIVITY_PROFILE], JSON_CT, b'{"level": 2}'),
        (AGENT_PROFILE, DOC_PARAMS[AGENT_PROFILE], JSON_CT, b'{"theme": "dark"}'),
    ]
    for path, params, content_type, body in documents:
        response = client.put(f"{path}?{urlencode(params)}", data=body,
                              headers=dict(xapi_headers, **{"Content-Type": content_type}))
        assert response.status_code == 204, (path, response.data)
    etags = {}
    for path, params in DOC_PARAMS.items():
        response = client.get(f"{path}?{urlencode(params)}", headers=xapi_headers)
        assert response.status_code == 200, response.data
        etags[path] = response.headers["ETag"]
    store = app.extensions["lrs.store"]
    settle(store, db)  # release the seeding's sequence ranges now rather than in 50 ms
    return Seed(dict(xapi_headers), ids, ids[2], voiding, etags, store, snapshot(db))


def _id_for_put(stmt: object) -> str:
    sid = stmt.get("id") if isinstance(stmt, dict) else None
    if isinstance(sid, str) and re.fullmatch(r"[0-9a-fA-F-]{36}", sid):
        return sid
    return str(uuid.uuid4())


def statement_call(seed: Seed, body: bytes, delivery: str, put_id: str,
                   content_type: str = JSON_CT) -> Call:
    headers = seed.with_headers(Content_Type=content_type)
    method = "PUT" if delivery.endswith("put") else "POST"
    params = [("statementId", put_id)] if method == "PUT" else []
    return Call(method, STATEMENTS, params, headers, body,
                alternate=delivery.startswith("alt"))


# ================================================================== the properties


@MANY
@given(data=st.data())
def test_invalid_statements_are_rejected_and_change_nothing(client, db, seed, data):
    """Part Two §2.2.s4: an LRS rejects a statement breaking any rule with 400; in a
    batch, the whole batch (Part Three §2.1.2.s2.b4 / §3.2.s3.b9)."""
    stmt = data.draw(statements(), label="valid statement")
    if data.draw(st.booleans(), label="with id"):
        stmt["id"] = str(uuid.uuid4())
    bad, _edit = data.draw(invalid_statements(stmt), label="mutation")
    delivery = data.draw(st.sampled_from(["post", "batch", "put", "alt-post", "alt-put"]),
                         label="delivery")
    if delivery == "batch":
        fine = {k: v for k, v in stmt.items() if k != "id"}
        body = json.dumps([fine, bad])
    else:
        body = json.dumps(bad, ensure_ascii=data.draw(st.booleans()))
    call = statement_call(seed, body.encode("utf-8"), delivery, _id_for_put(bad))
    check_rejected(client, db, seed, call, {400})


_STATEMENT_TEXT = json.dumps(SEED_STATEMENT)
# Nesting beyond any parser's depth, with an integer too long for 64 bits inside.
DEEP_WITH_LONG_INTEGER = (b'{"a": ' + b"[" * 3000 + b"1234567890123456789" + b"]" * 3000
                          + b"}")


@st.composite
def malformed_bodies(draw) -> bytes:
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:  # a statement cut short
        text = draw(st.sampled_from([_STATEMENT_TEXT, f"[{_STATEMENT_TEXT}]"]))
        return text[:draw(st.integers(1, len(text) - 1))].encode()
    if choice == 2:  # a complete document followed by more
        return (_STATEMENT_TEXT + draw(st.sampled_from(["}", ",", "x", "1", "{}", "]",
                                                        "\x00"]))).encode()
    if choice == 3:  # JSON that is not a statement or an array of statements
        value = draw(garbage.filter(lambda v: v != []))
        return json.dumps(value).encode()
    if choice == 4:  # not JSON at all, as JSON's cousins would write it
        return draw(st.sampled_from([
            b"{'actor': 1}", b"NaN", b"Infinity", b'{"a": NaN}', b"[1,]", b'{"a":1,}',
            b'"\\ud800"', b"\xef\xbb\xbf" + b"[" * 3, b"[" * 5000 + b"]" * 5000,
            DEEP_WITH_LONG_INTEGER,
            b'{"actor": {"mbox": "mailto:a@example.com"}, "verb": {"id": "http://a.b/c"}, '
            b'"object": {"id": "http://a.b/d"}', b"\xff\xfe{\x00}\x00", b"null", b"true",
            b'{"actor":{"mbox":"mailto:a@example.com"},"verb":{"id":"http://a.b/c"},'
            b'"object":{"id":"http://a.b/d"},"result":{"score":{"raw":1e400}}}']))
    if choice == 5:  # UTF-16 / Latin-1 encodings of a valid statement
        return _STATEMENT_TEXT.replace("Unit 1", "Unité").encode(
            draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1"])))
    return b""


@FUZZ
@given(body=malformed_bodies(),
       content_type=st.sampled_from([JSON_CT, "application/json; charset=utf-8", "",
                                     "text/plain", "application/xml", "multipart/mixed",
                                     "multipart/mixed; boundary=abc", FORM_CT,
                                     "application/octet-stream", "application/jsonx"]),
       delivery=st.sampled_from(["post", "put"]))
@example(body=DEEP_WITH_LONG_INTEGER, content_type=JSON_CT, delivery="post")
def test_malformed_statement_bodies_are_rejected(client, db, seed, body,
                                                 content_type, delivery):
    """Part Three §3.2.s2.b1: malformed JSON or a wrong content type is 400."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        value = None
    assume(value != [])  # an empty batch is a valid POST (stores nothing)
    headers = seed.with_headers(Content_Type=content_type) if content_type else dict(
        seed.headers)
    params = [("statementId", str(uuid.uuid4()))] if delivery == "put" else []
    call = Call(delivery.upper(), STATEMENTS, params, headers, body)
    check_rejected(client, db, seed, call, {400, 413, 415})


@FUZZ
@given(data=st.data())
def test_conflicting_statements_change_nothing(client, db, seed, data):
    """Statements that are well-formed but clash with what is stored or with the batch:
    Part Three §2.1.2 (409 for a different statement under a stored id, 400 for two ids in
    a batch), Part Two §2.3.2 (a voiding statement cannot be voided)."""
    stmt = data.draw(statements(), label="statement")
    stored_id = data.draw(st.sampled_from(seed.statement_ids[:2]), label="stored id")
    assume(stmt != {k: v for k, v in SEED_STATEMENT.items() if k != "id"})
    fresh = str(uuid.uuid4())
    voids = {"actor": SEED_AGENT, "verb": {"id": VOIDED}}
    cases = [
        ("put", [("statementId", stored_id)], dict(stmt, id=stored_id), {409}),
        ("post", [], [dict(stmt), dict(stmt, id=stored_id)], {409}),
        ("post", [], [dict(stmt, id=fresh), dict(stmt, id=fresh.upper())], {400}),
        ("post", [], dict(voids, object={"objectType": "StatementRef",
                                         "id": seed.voiding_id}), {400}),
    ]
    method, params, body, statuses = data.draw(st.sampled_from(cases), label="case")
    call = Call(method.upper(), STATEMENTS, params, seed.with_headers(Content_Type=JSON_CT),
                json.dumps(body).encode(), alternate=data.draw(st.booleans()))
    check_rejected(client, db, seed, call, statuses)


def _multipart(parts: list[tuple[list[tuple[str, str]], bytes]], boundary: bytes,
               closed: bool = True) -> bytes:
    out = b""
    for headers, data in parts:
        out += b"--" + boundary + b"\r\n"
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n"
        out += data + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if closed else b"")


_MULTIPART_DEFECTS = ["missing part", "extra part", "altered data", "part for other data",
                      "statements part not JSON", "no boundary", "no closing boundary",
                      "no hash header", "base64 transfer encoding", "attachment before JSON"]


@FUZZ
@given(data=st.binary(min_size=1, max_size=200), other=st.binary(min_size=1, max_size=50),
       defect=st.sampled_from(_MULTIPART_DEFECTS), method=st.sampled_from(["POST", "PUT"]))
def test_broken_multipart_statement_requests_are_rejected(client, db, seed, data, other,
                                                          defect, method):
    """Part Three §1.5.2: a statement with an Attachment and no fileUrl travels as
    multipart/mixed, the statements first as application/json, then one binary part per
    attachment found by its X-Experience-API-Hash; anything else is 400 and stores
    nothing (not the statement, not the attachment)."""
    assume(hashlib.sha256(data).digest() != hashlib.sha256(other).digest())
    sha, other_sha = hashlib.sha256(data).hexdigest(), hashlib.sha256(other).hexdigest()
    stmt = dict(SEED_STATEMENT, attachments=[{
        "usageType": "https://example.com/attachment-usage/report",
        "display": {"en-US": "report"}, "contentType": "application/octet-stream",
        "length": len(data), "sha2": sha}])
    boundary = b"fuzz-boundary-7f3a"
    first = ([("Content-Type", JSON_CT)], json.dumps(stmt).encode())
    part = [("Content-Type", "application/octet-stream"),
            ("Content-Transfer-Encoding", "binary"), ("X-Experience-API-Hash", sha)]
    parts = [first, (part, data)]
    content_type = f"multipart/mixed; boundary={boundary.decode()}"
    closed = True
    if defect == "missing part":
        parts = [first]
    elif defect == "extra part":
        parts.append(([*part[:2], ("X-Experience-API-Hash", other_sha)], other))
    elif defect == "altered data":
        parts = [first, (part, other)]
    elif defect == "part for other data":
        parts = [first, ([*part[:2], ("X-Experience-API-Hash", other_sha)], other)]
    elif defect == "statements part not JSON":
        parts = [([("Content-Type", "text/plain")], first[1]), (part, data)]
    elif defect == "no boundary":
        content_type = "multipart/mixed"
    elif defect == "no closing boundary":
        closed = False
    elif defect == "no hash header":
        parts = [first, (part[:2], data)]
    elif defect == "base64 transfer encoding":
        parts = [first, ([part[0], ("Content-Transfer-Encoding", "base64"), part[2]],
                         base64.b64encode(data))]
    else:
        parts = [(part, data), first]
    params = [("statementId", str(uuid.uuid4()))] if method == "PUT" else []
    call = Call(method, STATEMENTS, params, seed.with_headers(Content_Type=content_type),
                _multipart(parts, boundary, closed))
    check_rejected(client, db, seed, call, {400})


@FEW
@given(data=st.binary(min_size=0, max_size=300), method=st.sampled_from(["POST", "PUT"]))
def test_a_correct_multipart_statement_request_is_accepted(client, seed, data, method):
    """The control for the test above: the same request without a defect is stored, and
    its attachment comes back byte for byte (``attachments=true``)."""
    sha = hashlib.sha256(data).hexdigest()
    sid = str(uuid.uuid4())
    stmt = dict(SEED_STATEMENT, id=sid, attachments=[{
        "usageType": "https://example.com/attachment-usage/report",
        "display": {"en-US": "report"}, "contentType": "application/octet-stream",
        "length": len(data), "sha2": sha}])
    boundary = b"fuzz-boundary-7f3a"
    body = _multipart([([("Content-Type", JSON_CT)], json.dumps(stmt).encode()),
                       ([("Content-Type", "application/octet-stream"),
                         ("Content-Transfer-Encoding", "binary"),
                         ("X-Experience-API-Hash", sha)], data)], boundary)
    params = [("statementId", sid)] if method == "PUT" else []
    call = Call(method, STATEMENTS, params,
                seed.with_headers(Content_Type=f"multipart/mixed; boundary={boundary.decode()}"),
                body)
    response = call.send(client)
    assert response.status_code in (200, 204), response.data
    got = client.get(f"{STATEMENTS}?statementId={sid}&attachments=true", headers=seed.headers)
    assert got.status_code == 200
    assert got.mimetype == "multipart/mixed"
    assert sha.encode() in got.data and data in got.data


# ---------------------------------------------------------------- query parameters


_GET_PARAMS = ["agent", "verb", "activity", "registration", "related_activities",
               "related_agents", "since", "until", "limit", "format", "attachments",
               "ascending", "statementId", "voidedStatementId", "more"]
KNOWN_PARAMS = frozenset(_GET_PARAMS) | {"stateId", "profileId", "activityId", "method",
                                         "content"}
_bool_garbage = st.sampled_from(["True", "FALSE", "1", "0", "yes", "", "on", "true "])


@st.composite
def bad_statement_queries(draw) -> list[tuple[str, str]]:
    """GET parameters with exactly one thing wrong (Part Three §2.1.3, §3.2.s3.b7/b8)."""
    valid = {"agent": AGENT_JSON, "verb": SEED_VERB, "activity": SEED_ACTIVITY,
             "registration": SEED_REGISTRATION, "related_activities": "true",
             "related_agents": "false", "since": "2000-01-01T00:00:00Z",
             "until": "2999-01-01T00:00:00Z", "limit": "2", "format": "ids",
             "attachments": "false", "ascending": "true"}
    base = [(k, valid[k]) for k in draw(st.lists(st.sampled_from(sorted(valid)),
                                                 unique=True, max_size=4))]
    unknown_name = st.text(min_size=1, max_size=10).filter(lambda k: k not in KNOWN_PARAMS)
    bad = draw(st.one_of(
        st.tuples(unknown_name, st.text(max_size=10)).map(lambda kv: [kv]),
        st.sampled_from(_GET_PARAMS[:12]).map(
            lambda k: [(k.upper() if k.upper() != k else k + "X", valid[k])]),
        st.sampled_from(sorted(valid)).map(lambda k: [(k, valid[k]), (k, valid[k])]),
        st.sampled_from(["not json", "[]", "{}", "1", '{"name": "no ifi"}',
                         '{"mbox": "ana@example.edu"}', '{"mbox": "mailto:a@b.c", '
                         '"openid": "https://id.example.com/a"}', '{"objectType": "Person", '
                         '"mbox": "mailto:a@b.c"}', "null"]).map(lambda v: [("agent", v)]),
        st.sampled_from(["verb", "activity"]).flatmap(
            lambda k: (st.sampled_from(BAD_IRIS) | no_colon_text).map(lambda v: [(k, v)])),
        st.sampled_from(BAD_UUIDS).map(lambda v: [("registration", v)]),
        st.tuples(st.sampled_from(["since", "until"]),
                  st.sampled_from([*BAD_TIMESTAMPS, "0001-01-01T00:00:00+01:00",
                                   "9999-12-31T23:59:59-01:00"])
                  ).map(lambda kv: [kv]),
        st.sampled_from(["-1", "1.5", "ten", "1e3", " 5", "²", "0x10", "+3", ""]).map(
            lambda v: [("limit", v)]),
        st.sampled_from(["EXACT", "json", "", "id", "canonical "]).map(
            lambda v: [("format", v)]),
        st.tuples(st.sampled_from(["attachments", "ascending", "related_activities",
                                   "related_agents"]), _bool_garbage).map(lambda kv: [kv]),
        st.sampled_from(BAD_UUIDS).map(lambda v: [("statementId", v)]),
        st.sampled_from(BAD_UUIDS).map(lambda v: [("voidedStatementId", v)]),
        st.just([("statementId", ANY_ID), ("voidedStatementId", ANY_ID)]),
        st.sampled_from(["agent", "verb", "limit", "since", "ascending"]).map(
            lambda k: [("statementId", ANY_ID), (k, valid[k])]),
        st.text(max_size=40).map(lambda v: [("more", v)]),
    ))
    names = {k for k, _ in bad}
    return [(k, v) for k, v in base if k not in names] + bad


@FUZZ
@given(params=bad_statement_queries(), method=st.sampled_from(["GET", "HEAD"]),
       alternate=st.booleans())
@example(params=[("limit", "²")], method="GET", alternate=False)  # isdigit() but not int()
@example(params=[("since", "0001-01-01T00:00:00+01:00")], method="GET", alternate=False)
@example(params=[("until", "9999-12-31T23:59:59-01:00")], method="GET", alternate=False)
def test_bad_query_parameters_on_statements(client, db, seed, params, method, alternate):
    call = Call(method, STATEMENTS, params, dict(seed.headers), alternate=alternate)
    check_rejected(client, db, seed, call, {400})


@FEW
@given(position=st.integers(0, 10**6), replacement=st.sampled_from("AZaz09-_.~%+/ "),
       extra=st.sampled_from(["", "&limit=1", "&more=x", "&format=ids"]))
def test_tampered_more_links_are_rejected(client, db, seed, position, replacement, extra):
    """A ``more`` link is opaque (Part Three §2.1.3.s4): change it and it is refused."""
    page = client.get(f"{STATEMENTS}?limit=1", headers=seed.headers).get_json()
    link = page["more"]
    assert link.startswith("/xapi/statements?more=")
    token = link.split("more=", 1)[1]
    index = position % len(token)
    tampered = token[:index] + replacement + token[index + 1:]
    assume(tampered != token or extra)
    path, _, query = (link.replace(token, tampered) + extra).partition("?")
    call = Call("GET", path, [tuple(p.split("=", 1)) for p in query.split("&")],
                dict(seed.headers))
    check_rejected(client, db, seed, call, {400})


@FEW
@given(header=st.text(alphabet=string.ascii_letters + string.digits + "-*;=,. q", max_size=40))
def test_any_accept_language_gives_canonical_statements(client, seed, header):
    """Part Three §2.1.3.s4.b1: format=canonical keeps one language per language map,
    whatever the Accept-Language header looks like."""
    got = client.get(f"{STATEMENTS}?format=canonical",
                     headers=dict(seed.headers, **{"Accept-Language": header}))
    assert got.status_code == 200, got.data
    statements_ = got.get_json()["statements"]
    assert statements_
    for stmt in statements_:
        assert len(stmt["verb"].get("display", {"": ""})) == 1
        definition = stmt["object"].get("definition", {})
        for key in ("name", "description"):
            assert len(definition.get(key, {"": ""})) == 1


@FEW
@given(data=st.data())
def test_writes_with_unexpected_parameters_are_rejected(client, db, seed, data):
    """PUT takes statementId only, POST nothing (Part Three §2.1.1/§2.1.2, §3.2.s3.b7);
    the body is a valid statement, so accepting the request would store it."""
    stmt = data.draw(statements(), label="statement")
    sid = str(uuid.uuid4())
    unknown = data.draw(st.text(min_size=1, max_size=8).filter(
        lambda k: k not in KNOWN_PARAMS), label="unknown name")
    cases = [
        ("PUT", [("statementId", sid), (unknown, "1")]),
        ("PUT", [("statementId", sid), ("statementId", sid)]),
        ("PUT", [("statementid", sid)]),
        ("PUT", [("statementId", data.draw(st.sampled_from(BAD_UUIDS)))]),
        ("PUT", [("statementId", sid), ("verb", SEED_VERB)]),
        ("PUT", []),
        ("POST", [("statementId", sid)]),
        ("POST", [(unknown, "1")]),
    ]
    method, params = data.draw(st.sampled_from(cases), label="case")
    call = Call(method, STATEMENTS, params, seed.with_headers(Content_Type=JSON_CT),
                json.dumps(stmt).encode())
    check_rejected(client, db, seed, call, {400})


# ------------------------------------------------------------------------ documents


_DOC_ID = {STATE: "stateId", ACTIVITY_PROFILE: "profileId", AGENT_PROFILE: "profileId"}
_DOC_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


def document_headers(seed: Seed, path: str, method: str) -> dict[str, str]:
    headers = dict(seed.headers)
    if method in ("PUT", "POST"):
        headers["Content-Type"] = JSON_CT
    if method in ("PUT", "POST", "DELETE") and path != STATE:
        headers["If-Match"] = seed.etags[path]  # so only the defect stops the request
    return headers


@st.composite
def bad_document_params(draw, path: str, method: str) -> tuple[list[tuple[str, str]], str]:
    """The seeded document's parameters with exactly one defect
    (Part Three §2.3, §2.6, §2.7, §3.2.s3.b7/b8)."""
    params = list(DOC_PARAMS[path])
    id_name = _DOC_ID[path]
    if path == STATE and draw(st.booleans()):
        params.append(("registration", SEED_REGISTRATION))
    names = [k for k, _ in params]
    mutations: list[st.SearchStrategy] = []
    required = [k for k in names if k != "registration"]
    if method == "GET" or method == "HEAD" or (method == "DELETE" and path == STATE):
        required.remove(id_name)  # without it: listing / State multiple DELETE
    mutations.append(st.sampled_from(required).map(lambda k: ("drop", k, None)))
    if "activityId" in names:
        mutations.append((st.sampled_from(BAD_IRIS) | no_colon_text).map(
            lambda v: ("set", "activityId", v)))
    if "agent" in names:
        mutations.append(st.sampled_from([
            "not json", "[]", "{}", "1", "null", '{"name": "no ifi"}',
            '{"mbox": "fuzz@example.edu"}',
            '{"mbox": "mailto:fuzz@example.edu", "openid": "https://id.example.com/f"}',
            '{"objectType": "Person", "mbox": "mailto:fuzz@example.edu"}',
            '{"mbox": "mailto:fuzz@example.edu", "extra": 1}',
            '{"account": {"homePage": "nope", "name": "x"}}']).map(
            lambda v: ("set", "agent", v)))
    if path == STATE:
        mutations.append(st.sampled_from(BAD_UUIDS).map(lambda v: ("set", "registration", v)))
    else:
        mutations.append(st.just(("set", "registration", SEED_REGISTRATION)))
        other = "agent" if path == ACTIVITY_PROFILE else "activityId"
        value = AGENT_JSON if other == "agent" else SEED_ACTIVITY
        mutations.append(st.just(("set", other, value)))
    if id_name in names:
        mutations.append(st.just(("set", id_name, "")))
    mutations.append(st.tuples(st.text(min_size=1, max_size=10).filter(
        lambda k: k not in KNOWN_PARAMS and k not in ("agent", "registration", "since")),
        st.text(max_size=8)).map(lambda kv: ("set", kv[0], kv[1])))
    mutations.append(st.sampled_from(names).map(
        lambda k: ("set", k.upper() if k.upper() != k else k + "X", dict(params)[k])))
    mutations.append(st.sampled_from(names).map(lambda k: ("dup", k, None)))
    listing = method in ("GET", "HEAD")
    if listing:
        mutations.append(st.sampled_from(BAD_TIMESTAMPS).map(
            lambda v: ("since-list", v, None)))
    # since only filters a listing; with the document id it is not a parameter (§2.3.s3)
    mutations.append(st.just(("set", "since", "2000-01-01T00:00:00Z")))
    op, key, value = draw(st.one_of(mutations))
    if op == "drop":
        params = [(k, v) for k, v in params if k != key]
    elif op == "set":
        params = [(k, v) for k, v in params if k != key] + [(key, value)]
    elif op == "dup":
        params = [*params, (key, dict(params)[key])]
    else:  # an invalid since on a listing
        params = [(k, v) for k, v in params if k != id_name] + [("since", key)]
    return params, f"{op} {key}"


@FUZZ
@given(data=st.data())
def test_bad_document_parameters_are_rejected(client, db, seed, data):
    path = data.draw(st.sampled_from([STATE, ACTIVITY_PROFILE, AGENT_PROFILE]), label="path")
    method = data.draw(st.sampled_from(_DOC_METHODS), label="method")
    params, _ = data.draw(bad_document_params(path, method), label="params")
    body = b'{"fuzz": true}' if method in ("PUT", "POST") else b""
    call = Call(method, path, params, document_headers(seed, path, method), body,
                alternate=data.draw(st.booleans(), label="alternate"))
    check_rejected(client, db, seed, call, {400})


_etag_garbage = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + ' "/,-W', min_size=1,
            max_size=30),
    st.sampled_from(['""', '"', "W/", ",", '"abc', 'W/"x"', '"' + "0" * 40 + '"',
                     '"da39a3ee5e6b4b0d3255bfef95601890afd80709"']),
).filter(lambda v: v.strip() not in ("*", "") and "*" not in v)


@FUZZ
@given(data=st.data())
def test_document_preconditions_and_bodies(client, db, seed, data):
    """Part Three §3.1 (412 for a failed precondition, 409 for a profile PUT without
    one) and §2.2.s8.b1 (POST merges only JSON objects, else 400)."""
    path = data.draw(st.sampled_from([STATE, ACTIVITY_PROFILE, AGENT_PROFILE]), label="path")
    etag = seed.etags[path]
    tag = data.draw(_etag_garbage, label="If-Match")
    assume(etag.strip('"').lower() not in tag.lower())
    params = DOC_PARAMS[path]
    json_headers = dict(seed.headers, **{"Content-Type": JSON_CT})
    if_match = dict(json_headers, **{"If-Match": etag})
    not_json = data.draw(st.sampled_from(["text/plain", "application/octet-stream",
                                          "application/jsonx", "text/json"]))
    non_object = data.draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"true",
                                            b"{nope", b"\xff\xfe", b"", b"[{}]", b"NaN",
                                            b'{"a": 1}{"b": 2}'])
                           | st.binary(max_size=40).filter(_not_a_json_object))
    cases = [
        ("PUT", params, dict(json_headers, **{"If-Match": tag}), b"{}", {400, 412}),
        ("POST", params, dict(json_headers, **{"If-Match": tag}), b"{}", {400, 412}),
        ("DELETE", params, dict(seed.headers, **{"If-Match": tag}), b"", {400, 412}),
        ("PUT", params, dict(json_headers, **{"If-None-Match": "*"}), b"{}", {412}),
        ("POST", params, dict(if_match, **{"Content-Type": not_json}), b"{}", {400}),
        ("POST", params, if_match, non_object, {400}),
    ]
    if path != STATE:
        cases.append(("PUT", params, json_headers, b'{"x": 1}', {409}))
    else:
        notes = [*params[:2], ("stateId", "notes")]  # stored as text/plain
        cases.append(("POST", notes, json_headers, b'{"x": 1}', {400}))
        cases.append(("DELETE", params[:2], dict(seed.headers, **{"If-Match": tag}), b"",
                      {400, 412}))
    method, call_params, headers, body, statuses = data.draw(st.sampled_from(cases),
                                                             label="case")
    alternate = data.draw(st.booleans(), label="alternate") and _utf8(body)
    call = Call(method, path, call_params, headers, body, alternate=alternate)
    check_rejected(client, db, seed, call, statuses)


def _not_a_json_object(body: bytes) -> bool:
    try:
        return not isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return True


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ------------------------------------------------------------------------ headers


def valid_calls(seed: Seed) -> dict[str, Call]:
    """One valid request per endpoint and method: what a broken header must stop."""
    stmt = json.dumps(dict(SEED_STATEMENT, verb={"id": "http://example.com/verbs/fuzzed"}))
    json_headers = dict(seed.headers, **{"Content-Type": JSON_CT})
    calls = [
        Call("GET", STATEMENTS, [("limit", "1")], dict(seed.headers)),
        Call("HEAD", STATEMENTS, [("statementId", seed.statement_ids[0])], dict(seed.headers)),
        Call("POST", STATEMENTS, [], json_headers, stmt.encode()),
        Call("PUT", STATEMENTS, [("statementId", str(uuid.uuid4()))], json_headers,
             stmt.encode()),
        Call("GET", ACTIVITIES, [("activityId", SEED_ACTIVITY)], dict(seed.headers)),
        Call("GET", AGENTS, [("agent", AGENT_JSON)], dict(seed.headers)),
    ]
    for path, params in DOC_PARAMS.items():
        for method in _DOC_METHODS:
            body = b'{"changed": true}' if method in ("PUT", "POST") else b""
            calls.append(Call(method, path, list(params), document_headers(seed, path, method),
                              body))
    return {f"{c.method} {c.path}": c for c in calls}


VALID_CALL_NAMES = [f"{m} {STATEMENTS}" for m in ("GET", "HEAD", "POST", "PUT")] + [
    f"GET {ACTIVITIES}", f"GET {AGENTS}"] + [
    f"{m} {p}" for p in DOC_PARAMS for m in _DOC_METHODS]


_bad_versions = st.one_of(
    st.sampled_from(["", "1", "0.95", "0.9", "1.1", "1.0.3.1", "3.0.0", "2.1", "latest",
                     "1.0.3, 1.0.2", "v1.0.3", "1.0.", "1.0.x", "2.0.1"]),
    st.text(alphabet=string.printable[:95], max_size=12),
).filter(lambda v: not re.fullmatch(r"\s*(1\.0(\.\d+)?|2\.0(\.0)?)\s*", v))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# Stand-ins for credentials that need the fixture's key and secret.
WRONG_SECRET, UNKNOWN_KEY, KEY_ONLY, PADDED = ("<wrong secret>", "<unknown key>",
                                               "<key without secret>", "<valid, extra '='>")
broken_headers = st.one_of(
    st.tuples(st.just("version"), st.none() | _bad_versions),
    st.tuples(st.just("auth"), st.one_of(
        st.none(),
        st.sampled_from(["", "Basic", "Basic ", "Bearer abc", "Digest x", "Basic !!!!",
                         "basic", "Basic é", "Basic " + _b64(b"\xff:\xfe"), "Basic " + _b64(b":"),
                         WRONG_SECRET, UNKNOWN_KEY, KEY_ONLY, PADDED]),
        st.binary(max_size=30).map(lambda b: "Basic " + _b64(b)),
        st.text(alphabet=string.printable[:95], max_size=30),
    )),
)


def _credentials(value: str, key: str, secret: str) -> str:
    return {WRONG_SECRET: basic_auth(key, secret + "x"),
            UNKNOWN_KEY: basic_auth(key + "x", secret),
            KEY_ONLY: "Basic " + _b64(key.encode()),
            PADDED: basic_auth(key, secret) + "="}.get(value, value)


@FUZZ
@given(name=st.sampled_from(VALID_CALL_NAMES), broken=broken_headers, alternate=st.booleans())
@example(name=f"GET {STATEMENTS}", broken=("auth", "Basic é"), alternate=False)
def test_bad_version_or_credentials_are_rejected_everywhere(client, db, seed, xapi_credential,
                                                            name, broken, alternate):
    """Part Three §3.3 (400 for a missing or unsupported X-Experience-API-Version) and §4
    (401 for missing or refused credentials), at every resource and method."""
    call = valid_calls(seed)[name]
    which, value = broken
    headers = dict(call.headers)
    if which == "version":
        headers.pop("X-Experience-API-Version")
        statuses = {400}
    else:
        headers.pop("Authorization")
        value = value if value is None else _credentials(value, *xapi_credential)
        statuses = {401}
    if value is not None:
        headers["X-Experience-API-Version" if which == "version" else "Authorization"] = value
    sent = Call(call.method, call.path, call.params, headers, call.body, alternate=alternate)
    check_rejected(client, db, seed, sent, statuses)


@FEW
@given(version=st.none() | _bad_versions, params=st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)), max_size=2))
@example(version=None, params=[("foo", "bar")])
def test_about_ignores_the_version_but_not_unknown_parameters(client, db, seed, version,
                                                              params):
    """Part Three §2.8.s5.b4: /about never rejects a request for its version header and
    needs no credentials; §3.2.s3.b7: unknown parameters are still a 400."""
    headers = {} if version is None else {"X-Experience-API-Version": version}
    call = Call("GET", ABOUT, params, headers)
    if params:
        check_rejected(client, db, seed, call, {400})
        return
    response = call.send(client)
    assert response.status_code == 200
    assert "1.0.3" in response.get_json()["version"]


# ---------------------------------------------------- /agents, /activities, methods


@FUZZ
@given(data=st.data())
def test_agents_and_activities_reject_bad_parameters(client, db, seed, data):
    """Part Three §2.4 (agent: one Agent, not a Group) and §2.5 (activityId: an IRI)."""
    unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in KNOWN_PARAMS)
    agents_params = st.one_of(
        st.just([]),
        st.sampled_from(["not json", "[]", "{}", "1", "null", '{"name": "x"}',
                         '{"objectType": "Group", "member": [{"mbox": "mailto:a@b.c"}]}',
                         '{"objectType": "Group", "mbox": "mailto:team@b.c"}',
                         '{"mbox": "a@b.c"}', '{"mbox": "mailto:a@b.c", '
                         '"mbox_sha1sum": "' + "0" * 40 + '"}']).map(lambda v: [("agent", v)]),
        st.tuples(unknown, st.text(max_size=5)).map(lambda kv: [("agent", AGENT_JSON), kv]),
        st.just([("agent", AGENT_JSON), ("agent", AGENT_JSON)]),
        st.just([("Agent", AGENT_JSON)]),
        st.just([("agent", AGENT_JSON), ("activityId", SEED_ACTIVITY)]),
    ).map(lambda p: (AGENTS, p))
    activities_params = st.one_of(
        st.just([]),
        (st.sampled_from(BAD_IRIS) | no_colon_text).map(lambda v: [("activityId", v)]),
        st.tuples(unknown, st.text(max_size=5)).map(
            lambda kv: [("activityId", SEED_ACTIVITY), kv]),
        st.just([("activityId", SEED_ACTIVITY), ("activityId", SEED_ACTIVITY)]),
        st.just([("activityid", SEED_ACTIVITY)]),
        st.just([("activityId", SEED_ACTIVITY), ("agent", AGENT_JSON)]),
    ).map(lambda p: (ACTIVITIES, p))
    path, params = data.draw(agents_params | activities_params, label="request")
    method = data.draw(st.sampled_from(["GET", "HEAD"]), label="method")
    call = Call(method, path, params, dict(seed.headers),
                alternate=data.draw(st.booleans(), label="alternate"))
    check_rejected(client, db, seed, call, {400})


_NOT_ALLOWED = [(STATEMENTS, "DELETE"), (ACTIVITIES, "PUT"), (ACTIVITIES, "POST"),
                (ACTIVITIES, "DELETE"), (AGENTS, "PUT"), (AGENTS, "POST"), (AGENTS, "DELETE"),
                (ABOUT, "PUT"), (ABOUT, "POST"), (ABOUT, "DELETE")]


@FEW
@given(case=st.sampled_from(_NOT_ALLOWED), alternate=st.booleans(),
       body=st.sampled_from([b"", b"{}", b'{"a": 1}']))
def test_methods_a_resource_does_not_have_are_405(client, db, seed, case, alternate,
                                                  body):
    path, method = case
    headers = dict(seed.headers, **{"Content-Type": JSON_CT}) if body else dict(seed.headers)
    params = [("activityId", SEED_ACTIVITY)] if path == ACTIVITIES else (
        [("agent", AGENT_JSON)] if path == AGENTS else [])
    call = Call(method, path, params, headers, body, alternate=alternate)
    check_rejected(client, db, seed, call, {405})


@FEW
@given(path=st.sampled_from([STATEMENTS, STATE, ACTIVITY_PROFILE, AGENT_PROFILE,
                             ACTIVITIES, AGENTS, ABOUT]),
       method=st.sampled_from(["PATCH", "TRACE", "PROPFIND", "CONNECT"]))
@example(path=STATEMENTS, method="PATCH")
def test_unknown_http_methods_get_a_json_405(client, db, seed, path, method):
    """Part Three §3.2.s3.b2: an error explains itself, in the LRS's error format."""
    check_rejected(client, db, seed, Call(method, path, [], dict(seed.headers)), {405})


@FEW
@given(tail=st.text(alphabet=string.ascii_letters + string.digits + "/-_.", min_size=1,
                    max_size=20))
@example(tail="statement")
def test_unknown_xapi_paths_are_json_404(client, db, seed, tail):
    path = "/xapi/" + tail
    known = {p.rstrip("/") for p in (STATEMENTS, STATE, ACTIVITY_PROFILE, AGENT_PROFILE,
                                     ACTIVITIES, AGENTS, ABOUT)}
    assume(path.rstrip("/") not in known and "//" not in path and "/." not in path)
    check_rejected(client, db, seed, Call("GET", path, [], dict(seed.headers)), {404})


# ---------------------------------------------------------- alternate request syntax


@FUZZ
@given(data=st.data())
def test_alternate_syntax_misuse_is_rejected(client, db, seed, data):
    """Part Three §1.3: only ``method`` in the query string, a form-encoded body, known
    methods; and §3.2.s3.b7 for what the form carries."""
    name = data.draw(st.sampled_from(VALID_CALL_NAMES), label="valid call")
    call = valid_calls(seed)[name]
    form = [*call.params, *call.headers.items()]
    if call.body:
        form.append(("content", call.body.decode()))
    method = call.method
    query = [("method", method)]
    content_type = FORM_CT
    raw: bytes | None = None
    defect = data.draw(st.sampled_from(["method", "query", "content-type", "duplicate",
                                        "encoding", "unknown-field", "method twice"]),
                       label="defect")
    if defect == "method":
        bad = data.draw(st.sampled_from(["PATCH", "OPTIONS", "TRACE", "", "G ET", "CONNECT"])
                        | st.text(alphabet=string.ascii_letters, max_size=8).filter(
                            lambda m: m.upper() not in ("GET", "PUT", "POST", "DELETE",
                                                        "HEAD")), label="method value")
        query = [("method", bad)]
    elif defect == "method twice":  # which one? ambiguous, like any repeated parameter
        query.append(("method", data.draw(st.sampled_from(
            [m for m in ("GET", "PUT", "POST", "DELETE") if m != method]))))
    elif defect == "query":
        name, _ = data.draw(st.sampled_from(form), label="moved to the query")
        query.append((name, dict(form)[name]))
        form = [(k, v) for k, v in form if k != name]
    elif defect == "content-type":
        content_type = data.draw(st.sampled_from([JSON_CT, "text/plain", "multipart/form-data",
                                                  "application/octet-stream"]))
    elif defect == "duplicate":
        field_ = data.draw(st.sampled_from(form), label="duplicated field")
        form.append(field_)
    elif defect == "encoding":
        raw = urlencode(form).encode() + b"&x=%FF" + data.draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]), label="bad bytes")
    else:
        form.append((data.draw(st.text(min_size=1, max_size=8).filter(
            lambda k: k.lower() not in KNOWN_PARAMS | {k.lower() for k in (
                "authorization", "x-experience-api-version", "content-type",
                "content-length", "if-match", "if-none-match", "agent", "registration",
                "since", "activityid", "profileid", "stateid", "statementid")}),
            label="unknown field"), "1"))
    response_call = _RawAlternate(call.path, query, form, content_type, raw, method)
    check_rejected(client, db, seed, response_call, {400})


@FEW
@given(name=st.sampled_from([n for n in VALID_CALL_NAMES if n.startswith("GET ")]))
@example(name=f"GET {STATEMENTS}")
def test_a_tunnelled_head_has_no_body(client, seed, name):
    """Part Three §1.3: ``method=HEAD`` is a HEAD request, answered without a body even
    though it travelled as a POST."""
    call = valid_calls(seed)[name]
    tunnelled = Call("HEAD", call.path, call.params, call.headers, alternate=True)
    response = tunnelled.send(client)
    assert response.status_code == 200, response.data
    assert response.data == b"", f"{len(response.data)} bytes of body for {tunnelled.describe()}"


class _RawAlternate:
    """An alternate-syntax request exactly as given, to break its rules."""

    def __init__(self, path, query, form, content_type, raw, method):
        self.path, self.method = path, method
        self.query, self.form, self.content_type, self.raw = query, form, content_type, raw

    def send(self, client):
        body = self.raw if self.raw is not None else urlencode(self.form).encode()
        return client.post(f"{self.path}?{urlencode(self.query)}", data=body,
                           headers={"Content-Type": self.content_type})

    def describe(self) -> str:
        return (f"POST {self.path}?{urlencode(self.query)} Content-Type={self.content_type} "
                f"form={self.form!r} raw={self.raw!r}")


# ================================================================ valid statements


def _arrays(context: dict) -> dict:
    groups_ = context.get("contextActivities")
    if not isinstance(groups_, dict):
        return context
    return dict(context, contextActivities={
        k: v if isinstance(v, list) else [v] for k, v in groups_.items()})


def expected_exact(sent: dict) -> dict:
    """Part Two §2.4.6.2.s5: a single context Activity comes back as an array of one —
    in a SubStatement's context too."""
    out = dict(sent)
    if "context" in out:
        out["context"] = _arrays(out["context"])
    obj = out["object"]
    if obj.get("objectType") == "SubStatement" and "context" in obj:
        out["object"] = dict(obj, context=_arrays(obj["context"]))
    return out


NUMBER_LITERALS = ["1e400", "-1e400", "1E-400", "123456789012345678901234567890",
                   "-9223372036854775809", "18446744073709551616", "0.1e1", "-0", "1.0",
                   "12345678901234567890.5", "4.9e-324", "1.7976931348623157e308"]


def _strict_json(data: bytes) -> object:
    def reject(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(data, parse_constant=reject)


@FEW
@given(literals=st.lists(st.sampled_from(NUMBER_LITERALS) | st.from_regex(
    r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    min_size=1, max_size=3))
@example(literals=["1e400", "123456789012345678901234567890"])
def test_numbers_an_lrs_accepts_it_can_serve_again(client, db, seed, literals):
    """Extension values are never judged (Part Two §4.1.s3.b2), so any JSON number may
    arrive. An LRS may refuse one it cannot keep (400), but what it accepts it must serve
    back as JSON, in every format, alone and in lists."""
    extensions = ", ".join(f'"https://example.com/ext/{i}": {literal}'
                           for i, literal in enumerate(literals))
    verb = f"https://example.com/verbs/counted/{uuid.uuid4()}"  # this example's list only
    body = ('{"actor": {"mbox": "mailto:numbers@example.com"}, '
            '"verb": {"id": "' + verb + '"}, '
            '"object": {"id": "https://example.com/numbers"}, '
            '"result": {"extensions": {' + extensions + "}}}")
    response = client.post(STATEMENTS, data=body.encode(),
                           headers=seed.with_headers(Content_Type=JSON_CT))
    assert response.status_code in (200, 400), response.data
    if response.status_code == 400:
        return
    (sid,) = response.get_json()
    for fmt in ("exact", "ids", "canonical"):
        for query in ({"statementId": sid, "format": fmt},
                      {"verb": verb, "format": fmt}):
            got = client.get(f"{STATEMENTS}?{urlencode(query)}", headers=seed.headers)
            assert got.status_code == 200, (fmt, query, got.data[:300])
            value = _strict_json(got.data)
            stmt = value if "statementId" in query else value["statements"][0]
            back = stmt["result"]["extensions"]
            for i, literal in enumerate(literals):
                sent = json.loads(literal)
                assert back[f"https://example.com/ext/{i}"] == sent, (literal, fmt)


# =============================================================== valid documents


_DOC_TARGETS = {
    STATE: lambda doc_id: [("activityId", SEED_ACTIVITY), ("agent", AGENT_JSON),
                           ("stateId", doc_id)],
    ACTIVITY_PROFILE: lambda doc_id: [("activityId", SEED_ACTIVITY), ("profileId", doc_id)],
    AGENT_PROFILE: lambda doc_id: [("agent", AGENT_JSON), ("profileId", doc_id)],
}


@FEW
@given(path=st.sampled_from(sorted(_DOC_TARGETS)), doc_id=st.text(min_size=1, max_size=20),
       content=st.binary(max_size=300),
       content_type=st.sampled_from(["application/octet-stream", "text/plain; charset=utf-8",
                                     "application/json", "image/png", "application/x-thing"]),
       first=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
       second=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_documents_are_stored_exactly_and_merged_by_top_level_keys(
        client, seed, path, doc_id, content, content_type, first, second):
    """Part Three §2.2: a document is arbitrary bytes, returned as stored with the SHA-1
    ETag of §3.1.s4.b2; POST of a JSON object merges its top-level properties into a
    stored JSON object (§2.2.s7)."""
    doc_id = f"{doc_id}-{uuid.uuid4()}"  # a new document for every example
    query = urlencode(_DOC_TARGETS[path](doc_id))
    headers = dict(seed.headers, **{"Content-Type": content_type, "If-None-Match": "*"})
    assert client.put(f"{path}?{query}", data=content, headers=headers).status_code == 204
    got = client.get(f"{path}?{query}", headers=seed.headers)
    assert got.status_code == 200
    assert got.data == content
    assert got.headers["Content-Type"] == content_type
    assert got.headers["ETag"] == '"' + hashlib.sha1(content).hexdigest() + '"'

    json_headers = dict(seed.headers, **{"Content-Type": JSON_CT, "If-Match": got.headers["ETag"]})
    replaced = client.put(f"{path}?{query}", data=json.dumps(first), headers=json_headers)
    assert replaced.status_code == 204, replaced.data
    etag = client.get(f"{path}?{query}", headers=seed.headers).headers["ETag"]
    merged = client.post(f"{path}?{query}", data=json.dumps(second),
                         headers=dict(json_headers, **{"If-Match": etag}))
    assert merged.status_code == 204, merged.data
    got = client.get(f"{path}?{query}", headers=seed.headers)
    assert got.status_code == 200 and got.get_json() == {**first, **second}
    assert got.headers["ETag"] == '"' + hashlib.sha1(got.data).hexdigest() + '"'


SINGLE_CONTEXT_ACTIVITY_IN_SUBSTATEMENT = {
    "actor": {"mbox": "mailto:ana@example.edu"}, "verb": {"id": "https://example.com/v/saw"},
    "object": {"objectType": "SubStatement", "actor": {"mbox": "mailto:ben@example.edu"},
               "verb": {"id": "https://example.com/v/did"},
               "object": {"id": "https://example.com/a"},
               "context": {"contextActivities": {"parent": {"id": "https://example.com/p"}}}}}


@FEW
@given(stmt=statements(), with_id=st.booleans(),
       delivery=st.sampled_from(["post", "batch", "put", "alt-post"]), ascii_only=st.booleans())
@example(stmt=SINGLE_CONTEXT_ACTIVITY_IN_SUBSTATEMENT, with_id=False, delivery="post",
         ascii_only=True)
def test_valid_random_statements_are_stored_exactly(client, db, seed, xapi_credential, stmt,
                                                    with_id, delivery, ascii_only):
    stmt = copy.deepcopy(stmt)
    if with_id:
        stmt["id"] = str(uuid.uuid4())
    put_id = stmt.get("id") or str(uuid.uuid4())
    body = json.dumps([stmt] if delivery == "batch" else stmt,
                      ensure_ascii=ascii_only).encode("utf-8")
    call = statement_call(seed, body, delivery, put_id)
    response = call.send(client)
    if delivery == "put":
        assert response.status_code == 204, (response.data, call.describe())
        sid = put_id
    else:
        assert response.status_code == 200, (response.data, call.describe())
        (sid,) = response.get_json()
    if "id" in stmt:
        assert sid == stmt["id"]

    got = client.get(f"{STATEMENTS}?{urlencode({'statementId': sid, 'format': 'exact'})}",
                     headers=seed.headers)
    assert got.status_code == 200, got.data
    back = got.get_json()
    assert back.pop("id") == sid
    stored = back.pop("stored")
    assert dt.datetime.fromisoformat(stored.replace("Z", "+00:00"))
    assert back.pop("authority")["account"]["name"] == xapi_credential[0]
    if "timestamp" not in stmt:
        assert back.pop("timestamp") == stored
    if "version" not in stmt:
        assert back.pop("version") == "1.0.0"
    expected = expected_exact({k: v for k, v in stmt.items() if k != "id"})
    assert back == expected
