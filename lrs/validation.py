"""Syntax validation of xAPI 1.0.3 statements, as an LRS has to enforce it.

Section references ("Part Two §2.4.2.1") point into adlnet/xAPI-Spec 1.0.3:
Part Two is ``xAPI-Data.md``, Part Three is ``xAPI-Communication.md``.

Why it is written this way:

* Every statement that reaches the LRS passes through here, so the happy path is plain
  dict/type checks with no exceptions, no schema engine and no allocation beyond the
  property paths. The costly checks (IRI grammar, language-tag registry, e-mail shape)
  are memoised: the same verb ids, activity ids, extension keys, language tags and
  learner mailboxes come back in statement after statement.
* The LRS MUST reject a statement that breaks a rule (Part Two §2.2.s4) and SHOULD say
  why (Part Three §3.2.s3.b2), so every error names the property path that is wrong,
  e.g. ``statement[3].verb.id: must be an absolute IRI, got 'completed'``.
* Validation is about structure, not meaning (Part Three §3.0.s2): nothing here looks at
  what a verb or an extension means, and extension values are never inspected
  (Part Two §4.1.s3.b2).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from functools import lru_cache
from typing import Any, NoReturn

import ciso8601
import langcodes
import rfc3987

from .errors import XAPIValidationError

__all__ = [
    "VOIDED_VERB",
    "is_iri",
    "parse_timestamp",
    "validate_activity_id",
    "validate_agent",
    "validate_duration",
    "validate_language_map",
    "validate_statement",
    "validate_statements",
]

# Part Two §2.3.2: the one verb the specification reserves.
VOIDED_VERB = "http://adlnet.gov/expapi/verbs/voided"
# Part Two §2.6.s4.b1: a signature travels as an attachment of this usage type.
_SIGNATURE_USAGE = "http://adlnet.gov/expapi/attachments/signature"

_UTC = _dt.UTC
_NO_VALUE: Any = object()

# Part Two §4.4: "UUIDs MUST be in the standard string form"; any version, any variant.
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Part Two §2.4.2.3: mbox_sha1sum is the hex-encoded SHA-1 (160 bits) of a mailto IRI.
_SHA1_RE = re.compile(r"[0-9a-fA-F]{40}")
# Part Two §2.4.2.3: mbox is "mailto:email address". Best effort (§2.2.s4.b6): one '@',
# a non-empty local part, and a domain of non-empty dot-separated labels.
_MBOX_RE = re.compile(
    r"mailto:[^\s@\"<>()\[\],;:\\]+@[^\s@\"<>()\[\],;:\\/?#.]+(?:\.[^\s@\"<>()\[\],;:\\/?#.]+)*"
)
# RFC 5646 §2.1: subtags of 1-8 alphanumerics separated by hyphens. langcodes alone also
# accepts '_' as a separator, which RFC 5646 does not.
_LANG_SHAPE_RE = re.compile(r"[A-Za-z0-9]{1,8}(?:-[A-Za-z0-9]{1,8})*")
# Part Two §2.4.10 / Part Three §3.3: Semantic Versioning 1.0.0 "X.Y.Z".
_VERSION_1_RE = re.compile(r"1\.0\.(?:0|[1-9][0-9]*)")
_VERSION_1_OR_2_RE = re.compile(r"[12]\.0\.(?:0|[1-9][0-9]*)")
# Part Two §2.4.11: contentType is an Internet Media Type (RFC 2046): type/subtype[;params].
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[^\r\n]*)?")
# Part Two §2.4.11: sha2 is a SHA-2 digest, hex-encoded like the X-Experience-API-Hash
# header it must match (Part Three §1.5.2): SHA-224, -256, -384 or -512.
_SHA2_RE = re.compile(r"[0-9a-fA-F]{56}|[0-9a-fA-F]{64}|[0-9a-fA-F]{96}|[0-9a-fA-F]{128}")
# Part Two §4.6: ISO 8601:2004 §4.4.3.2 "PnYnMnDTnHnMnS" or "PnW"; at least one component,
# 'T' only when a time component follows; the alternative format (§4.4.3.3,
# "P0001-02-03T04:05:06") MUST NOT be used. Decimal fractions may use '.' or ','.
_N = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION_RE = re.compile(
    rf"P(?:{_N}W|(?=[0-9]|T[0-9])(?:{_N}Y)?(?:{_N}M)?(?:{_N}D)?"
    rf"(?:T(?=[0-9])(?:{_N}H)?(?:{_N}M)?(?:{_N}S)?)?)"
)
# ISO 8601 §4.4.3.2: only the lowest-order component may carry a decimal fraction.
_DECIMAL_MARK_RE = re.compile(r"[.,]")
_FRACTION_TAIL_RE = re.compile(r"[.,][0-9]+[YMWDHS]")

_STATEMENT_KEYS = frozenset(
    {
        "id",
        "actor",
        "verb",
        "object",
        "result",
        "context",
        "timestamp",
        "stored",
        "authority",
        "version",
        "attachments",
    }
)
# Part Two §2.4.4.3.s8.b3: a SubStatement MUST NOT have id, stored, version or authority.
_NOT_IN_SUBSTATEMENT = frozenset({"id", "stored", "version", "authority"})
_SUBSTATEMENT_KEYS = (_STATEMENT_KEYS - _NOT_IN_SUBSTATEMENT) | {"objectType"}
_AGENT_KEYS = frozenset({"objectType", "name", "mbox", "mbox_sha1sum", "openid", "account"})
_GROUP_KEYS = _AGENT_KEYS | {"member"}
_ACCOUNT_KEYS = frozenset({"homePage", "name"})
_VERB_KEYS = frozenset({"id", "display"})
_ACTIVITY_KEYS = frozenset({"objectType", "id", "definition"})
_STATEMENT_REF_KEYS = frozenset({"objectType", "id"})
_DEFINITION_KEYS = frozenset(
    {
        "name",
        "description",
        "type",
        "moreInfo",
        "extensions",
        "interactionType",
        "correctResponsesPattern",
        "choices",
        "scale",
        "source",
        "target",
        "steps",
    }
)
_INTERACTION_PROPS = frozenset(
    {"correctResponsesPattern", "choices", "scale", "source", "target", "steps"}
)
_COMPONENT_LISTS = ("choices", "scale", "source", "target", "steps")
_COMPONENT_KEYS = frozenset({"id", "description"})
# Part Two §2.4.4.1.s8 (the interactionType values) and §2.4.4.1.s15 (which interaction
# component lists each type supports).
_INTERACTION_TYPES: dict[str, frozenset[str]] = {
    "true-false": frozenset(),
    "choice": frozenset({"choices"}),
    "fill-in": frozenset(),
    "long-fill-in": frozenset(),
    "matching": frozenset({"source", "target"}),
    "performance": frozenset({"steps"}),
    "sequencing": frozenset({"choices"}),
    "likert": frozenset({"scale"}),
    "numeric": frozenset(),
    "other": frozenset(),
}
_RESULT_KEYS = frozenset({"score", "success", "completion", "response", "duration", "extensions"})
_SCORE_KEYS = frozenset({"scaled", "raw", "min", "max"})
_CONTEXT_KEYS = frozenset(
    {
        "registration",
        "instructor",
        "team",
        "contextActivities",
        "revision",
        "platform",
        "language",
        "statement",
        "extensions",
    }
)
_CONTEXT_ACTIVITIES_KEYS = frozenset({"parent", "grouping", "category", "other"})
_ATTACHMENT_KEYS = frozenset(
    {"usageType", "display", "description", "contentType", "length", "sha2", "fileUrl"}
)
_ATTACHMENT_REQUIRED = ("usageType", "display", "contentType", "length", "sha2")


# --------------------------------------------------------------------------- errors


def _show(value: object) -> str:
    """Render a rejected value in JSON terms, short enough for a response body."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if type(value) is int and value.bit_length() > 128:
        return "a very large integer"  # repr() of a huge int can itself raise
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def _fail(path: str, problem: str, value: object = _NO_VALUE) -> NoReturn:
    if value is _NO_VALUE:
        raise XAPIValidationError(f"{path}: {problem}")
    raise XAPIValidationError(f"{path}: {problem}, got {_show(value)}")


def _unknown_property(obj: dict, allowed: frozenset, path: str, where: str) -> NoReturn:
    # Part Two §2.2.s4.b1.b5/b7 and §2.2.s4.b8: keys not in the specification (including
    # keys whose case differs from it) are rejected.
    for key in obj:
        if key not in allowed:
            _fail(f"{path}.{key}", f"is not an allowed property of {where}")
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------- primitives


@lru_cache(maxsize=65536)
def is_iri(value: str) -> bool:
    """Best-effort IRI check (Part Two §2.2.s4.b6), memoised because ids repeat.

    xAPI IRIs must be absolute: a value without a scheme is rejected
    (Part Two §2.2.s4.b1.b8), so RFC 3987's ``IRI`` rule, not ``IRI_reference``.
    """
    # rfc3987's patterns end in '$', which also matches just before a final newline.
    return (
        isinstance(value, str)
        and not value.endswith("\n")
        and rfc3987.match(value, rule="IRI") is not None
    )


@lru_cache(maxsize=4096)
def _is_uri(value: str) -> bool:
    return not value.endswith("\n") and rfc3987.match(value, rule="URI") is not None


@lru_cache(maxsize=65536)
def _is_mbox(value: str) -> bool:
    return _MBOX_RE.fullmatch(value) is not None and is_iri(value)


@lru_cache(maxsize=4096)
def _is_language_tag(tag: str) -> bool:
    # Part Two §2.2.s4.b2: at least the token-length sequence of RFC 5646; langcodes
    # also checks the subtags against the IANA registry (§2.2.s4.b7 allows best effort).
    return _LANG_SHAPE_RE.fullmatch(tag) is not None and langcodes.tag_is_valid(tag)


def _is_number(value: object) -> bool:
    # Part Two §2.2.s4.b1.b2: strings are not numbers, and neither are JSON booleans
    # (Python's bool is an int subclass, hence the exact type test).
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))  # type: ignore[arg-type]


def is_uuid(value: object) -> bool:
    """A UUID in the standard hyphenated form (Part Two §4.4); parameters use it too."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def _uuid(value: object, path: str) -> None:
    if not is_uuid(value):
        _fail(path, "must be a UUID in standard hyphenated form", value)


def _string(value: object, path: str) -> None:
    if not isinstance(value, str):
        _fail(path, "must be a string", value)


def _iri(value: object, path: str) -> None:
    if not (isinstance(value, str) and is_iri(value)):
        _fail(path, "must be an absolute IRI", value)


def validate_activity_id(value: object, path: str) -> None:
    """Reject an Activity id that is not an absolute IRI (Part Two §2.4.4.1).

    Shared with the State and Activity Profile resources, whose ``activityId`` parameter
    must meet the same standard as the property (Part Two §2.2.s4.b4).
    """
    _iri(value, path)


def validate_language_map(obj: object, path: str) -> None:
    """Reject a language map the LRS could not later filter by Accept-Language
    (Part Two §4.2, §2.2.s4.b2: keys are RFC 5646 tags, values strings).

    An empty map is accepted: §2.2.s2.b1 only says empty objects SHOULD NOT be sent.
    Public because Activity and Agent metadata documents carry language maps too.
    """
    if not isinstance(obj, dict):
        _fail(path, "must be a language map (an object of language tag to string)", obj)
    for tag, text in obj.items():
        if not (isinstance(tag, str) and _is_language_tag(tag)):
            _fail(path, f"key {_show(tag)} is not a valid RFC 5646 language tag")
        if not isinstance(text, str):
            _fail(f"{path}.{tag}", "must be a string", text)


def _extensions(obj: object, path: str) -> None:
    # Part Two §4.1.s3.b1: keys MUST be IRIs; §4.1.s3.b2: values are never judged
    # (null included: §2.2.s4.b1.b1 exempts the inside of extensions).
    if not isinstance(obj, dict):
        _fail(path, "must be an object whose keys are IRIs", obj)
    for key in obj:
        if not (isinstance(key, str) and is_iri(key)):
            _fail(path, f"key {_show(key)} must be an absolute IRI")


def parse_timestamp(value: object, path: str) -> _dt.datetime:
    """Parse an ISO 8601 date-time (Part Two §4.5) into an aware datetime.

    A time zone SHOULD* be included (§4.5.s1.b4), so one without an offset is accepted
    and read as UTC. A date alone is not a Timestamp: the time part is required.
    """
    if not isinstance(value, str):
        _fail(path, "must be an ISO 8601 timestamp string", value)
    try:
        parsed = ciso8601.parse_datetime(value)
    except (ValueError, OverflowError):
        parsed = None
    # ciso8601 also reads a bare date and RFC 3339's ' ' separator; ISO 8601 combined
    # date-time representations separate the time with 'T'.
    if parsed is None or ("T" not in value and "t" not in value):
        _fail(path, "must be an ISO 8601 date and time, e.g. '2024-05-01T12:00:00Z'", value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    return parsed


@lru_cache(maxsize=4096)
def _is_duration(value: str) -> bool:
    if _DURATION_RE.fullmatch(value) is None:
        return False
    mark = _DECIMAL_MARK_RE.search(value)
    return mark is None or _FRACTION_TAIL_RE.fullmatch(value, mark.start()) is not None


def validate_duration(value: object, path: str) -> None:
    """Reject a Duration outside ISO 8601:2004 §4.4.3.2 (Part Two §4.6.s1.b1).

    Any precision is accepted: an LRS SHOULD* NOT reject more than 0.01 s precision
    (§4.6.s1.b4). Checked with a strict pattern rather than ``isodate.parse_duration``,
    which also accepts what the spec forbids ("P4W1D", "-P1D", "PT", "P1DT" and the
    alternative format "P0001-02-03T04:05:06").
    """
    if not (isinstance(value, str) and _is_duration(value)):
        _fail(path, "must be an ISO 8601 duration such as 'PT1H30M' or 'P4W'", value)


# ----------------------------------------------------------------- agents, groups


def _ifi_count(obj: dict, path: str) -> int:
    """Check the values of whichever Inverse Functional Identifiers are present
    (Part Two §2.4.2.3) and return how many there are."""
    count = 0
    if "mbox" in obj:
        count += 1
        value = obj["mbox"]
        if not (isinstance(value, str) and _is_mbox(value)):
            _fail(f"{path}.mbox", "must be a 'mailto:' IRI", value)
    if "mbox_sha1sum" in obj:
        count += 1
        value = obj["mbox_sha1sum"]
        if not (isinstance(value, str) and _SHA1_RE.fullmatch(value)):
            _fail(f"{path}.mbox_sha1sum", "must be a hex-encoded SHA-1 (40 hex digits)", value)
    if "openid" in obj:
        count += 1
        value = obj["openid"]
        if not (isinstance(value, str) and _is_uri(value)):
            _fail(f"{path}.openid", "must be an absolute URI", value)
    if "account" in obj:
        count += 1
        _account(obj["account"], f"{path}.account")
    return count


def _account(obj: object, path: str) -> None:
    # Part Two §2.4.2.4: homePage (IRL) and name (string), both required, nothing else.
    if not isinstance(obj, dict):
        _fail(path, "must be an object with 'homePage' and 'name'", obj)
    if not obj.keys() <= _ACCOUNT_KEYS:
        _unknown_property(obj, _ACCOUNT_KEYS, path, "an Account")
    if "homePage" not in obj:
        _fail(f"{path}.homePage", "is required")
    _iri(obj["homePage"], f"{path}.homePage")
    if "name" not in obj:
        _fail(f"{path}.name", "is required")
    _string(obj["name"], f"{path}.name")


def _agent(obj: dict, path: str) -> None:
    if not obj.keys() <= _AGENT_KEYS:
        if "member" in obj:
            _fail(f"{path}.member", "is only allowed on a Group (objectType 'Group')")
        _unknown_property(obj, _AGENT_KEYS, path, "an Agent")
    # Part Two §2.4.2.1.s2.b1/b2: exactly one Inverse Functional Identifier.
    count = _ifi_count(obj, path)
    if count != 1:
        _fail(
            path,
            "an Agent must have exactly one inverse functional identifier "
            f"(mbox, mbox_sha1sum, openid or account), found {count}",
        )
    if "name" in obj:
        _string(obj["name"], f"{path}.name")


def _group(obj: dict, path: str) -> None:
    if not obj.keys() <= _GROUP_KEYS:
        _unknown_property(obj, _GROUP_KEYS, path, "a Group")
    count = _ifi_count(obj, path)
    # Part Two §2.4.2.2.s5.b1: an Identified Group has exactly one IFI.
    if count > 1:
        _fail(
            path,
            f"a Group must have at most one inverse functional identifier, found {count}",
        )
    if "name" in obj:
        _string(obj["name"], f"{path}.name")
    if "member" not in obj:
        # Part Two §2.4.2.2.s4.b1: an Anonymous Group MUST list its members.
        if count == 0:
            _fail(
                f"{path}.member",
                "is required for an anonymous Group (one without an inverse functional identifier)",
            )
        return
    members = obj["member"]
    if not isinstance(members, list):
        _fail(f"{path}.member", "must be an array of Agents", members)
    if count == 0 and not members:
        _fail(f"{path}.member", "an anonymous Group must list at least one Agent")
    for index, member in enumerate(members):
        member_path = f"{path}.member[{index}]"
        if not isinstance(member, dict):
            _fail(member_path, "must be an Agent object", member)
        kind = member.get("objectType", "Agent")
        if kind != "Agent":
            # Part Two §2.4.2.2.s4.b2 and §2.4.2.2.s5.b2: Groups do not nest.
            if kind == "Group":
                _fail(f"{member_path}.objectType", "a Group's members must be Agents, not Groups")
            _fail(f"{member_path}.objectType", "must be 'Agent'", kind)
        _agent(member, member_path)


def validate_agent(obj: object, path: str, *, allow_group: bool = True) -> None:
    """Validate an Agent, or a Group when allowed, as an actor (Part Two §2.4.2).

    Also serves the ``agent`` parameters of the Statement, State and Agent Profile
    resources, which must meet the same standard as statements (Part Two §2.2.s4.b4).
    Without ``objectType`` the object is an Agent (Part Two §2.4.2.1 table).
    """
    if not isinstance(obj, dict):
        _fail(path, "must be an Agent or Group object", obj)
    kind = obj.get("objectType", "Agent")
    if kind == "Agent":
        _agent(obj, path)
    elif kind == "Group" and allow_group:
        _group(obj, path)
    elif kind == "Group":
        _fail(f"{path}.objectType", "must be 'Agent' here, a Group is not accepted", kind)
    else:
        # Part Two §2.2.s4.b1.b6: enumerated values match exactly, case included.
        _fail(f"{path}.objectType", "must be 'Agent' or 'Group'", kind)


def _authority(obj: object, path: str) -> None:
    validate_agent(obj, path)
    # Part Two §2.4.9.s3.b1: an Agent, or in 3-legged OAuth a Group of two Agents.
    if obj.get("objectType") == "Group":  # type: ignore[union-attr]
        members = obj.get("member")  # type: ignore[union-attr]
        if not (isinstance(members, list) and len(members) == 2):
            _fail(
                f"{path}.member",
                "an authority Group must consist of exactly two Agents (3-legged OAuth)",
                members,
            )


# ------------------------------------------------------------- verb and object


def _verb(obj: object, path: str) -> str:
    # Part Two §2.4.3: id (IRI) required, display (language map) recommended.
    if not isinstance(obj, dict):
        _fail(path, "must be a Verb object", obj)
    if not obj.keys() <= _VERB_KEYS:
        _unknown_property(obj, _VERB_KEYS, path, "a Verb")
    if "id" not in obj:
        _fail(f"{path}.id", "is required")
    verb_id = obj["id"]
    if not (isinstance(verb_id, str) and is_iri(verb_id)):
        _fail(f"{path}.id", "must be an absolute IRI", verb_id)
    if "display" in obj:
        validate_language_map(obj["display"], f"{path}.display")
    return verb_id


def _activity(obj: dict, path: str) -> None:
    # Part Two §2.4.4.1: id (IRI) required, definition optional.
    if not obj.keys() <= _ACTIVITY_KEYS:
        _unknown_property(obj, _ACTIVITY_KEYS, path, "an Activity")
    if "id" not in obj:
        _fail(f"{path}.id", "is required")
    activity_id = obj["id"]
    if not (isinstance(activity_id, str) and is_iri(activity_id)):
        _fail(f"{path}.id", "must be an absolute IRI", activity_id)
    if "definition" in obj:
        _definition(obj["definition"], f"{path}.definition")


def _definition(obj: object, path: str) -> None:
    # Part Two §2.4.4.1.s2: the Activity Definition object.
    if not isinstance(obj, dict):
        _fail(path, "must be an Activity Definition object", obj)
    if not obj.keys() <= _DEFINITION_KEYS:
        _unknown_property(obj, _DEFINITION_KEYS, path, "an Activity Definition")
    if "name" in obj:
        validate_language_map(obj["name"], f"{path}.name")
    if "description" in obj:
        validate_language_map(obj["description"], f"{path}.description")
    if "type" in obj:
        _iri(obj["type"], f"{path}.type")
    if "moreInfo" in obj:
        # An IRL; best effort (§2.2.s4.b6) is the IRI grammar, scheme required.
        _iri(obj["moreInfo"], f"{path}.moreInfo")
    if "extensions" in obj:
        _extensions(obj["extensions"], f"{path}.extensions")
    if "interactionType" in obj:
        _interaction(obj, path)
    elif not obj.keys().isdisjoint(_INTERACTION_PROPS):
        # Part Two §2.4.4.1.s13.b1: Interaction Activities MUST have a valid interactionType.
        for key in obj:
            if key in _INTERACTION_PROPS:
                _fail(f"{path}.{key}", "is only allowed together with 'interactionType'")


def _interaction(obj: dict, path: str) -> None:
    kind = obj["interactionType"]
    supported = _INTERACTION_TYPES.get(kind) if isinstance(kind, str) else None
    if supported is None:
        # Part Two §2.4.4.1.s8 / §2.4.4.1.s13.b1.
        _fail(
            f"{path}.interactionType",
            "must be one of " + ", ".join(repr(name) for name in _INTERACTION_TYPES),
            kind,
        )
    if "correctResponsesPattern" in obj:
        # Part Two §2.4.4.1.s8: an array of strings; their content is not validated
        # (§2.4.4.1.s12 and §2.4.4.1.s13.b4/b5 leave patterns to the consumer).
        patterns = obj["correctResponsesPattern"]
        if not isinstance(patterns, list):
            _fail(f"{path}.correctResponsesPattern", "must be an array of strings", patterns)
        for index, pattern in enumerate(patterns):
            if not isinstance(pattern, str):
                _fail(f"{path}.correctResponsesPattern[{index}]", "must be a string", pattern)
    for name in _COMPONENT_LISTS:
        if name in obj:
            # Part Two §2.4.4.1.s15: each list belongs to particular interaction types;
            # §2.4.4.1.s13.b3 lets the LRS answer 400 for the others.
            if name not in supported:
                _fail(f"{path}.{name}", f"is not supported for interactionType {kind!r}")
            _components(obj[name], f"{path}.{name}")


def _components(items: object, path: str) -> None:
    if not isinstance(items, list):
        _fail(path, "must be an array of interaction components", items)
    seen: set[str] = set()
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            _fail(item_path, "must be an interaction component object", item)
        if not item.keys() <= _COMPONENT_KEYS:
            _unknown_property(item, _COMPONENT_KEYS, item_path, "an interaction component")
        if "id" not in item:
            _fail(f"{item_path}.id", "is required")
        component_id = item["id"]
        if not isinstance(component_id, str):
            _fail(f"{item_path}.id", "must be a string", component_id)
        # Part Two §2.4.4.1.s16.b1: ids within one list MUST be distinct.
        if component_id in seen:
            _fail(f"{item_path}.id", f"duplicates the id {_show(component_id)} earlier in the list")
        seen.add(component_id)
        if "description" in item:
            validate_language_map(item["description"], f"{item_path}.description")


def _statement_ref(obj: object, path: str) -> None:
    # Part Two §2.4.4.3.s4: objectType "StatementRef" and the id (UUID), nothing else.
    if not isinstance(obj, dict):
        _fail(path, "must be a StatementRef object", obj)
    if not obj.keys() <= _STATEMENT_REF_KEYS:
        _unknown_property(obj, _STATEMENT_REF_KEYS, path, "a StatementRef")
    if "objectType" not in obj:
        _fail(f"{path}.objectType", "is required and must be 'StatementRef'")
    if obj["objectType"] != "StatementRef":
        _fail(f"{path}.objectType", "must be 'StatementRef'", obj["objectType"])
    if "id" not in obj:
        _fail(f"{path}.id", "is required")
    _uuid(obj["id"], f"{path}.id")


def _object(obj: object, path: str, in_substatement: bool, version_re: re.Pattern) -> bool:
    """Validate a statement's object; True when it is an Activity (which decides
    whether context.revision and context.platform may be used)."""
    if not isinstance(obj, dict):
        _fail(path, "must be an object", obj)
    # Part Two §2.4.4.s2: objectType defaults to Activity.
    kind = obj.get("objectType", "Activity")
    if kind == "Activity":
        _activity(obj, path)
        return True
    # Part Two §2.4.4.2.s1.b1: an Agent or Group as object states its objectType, which
    # is how it got here.
    if kind == "Agent":
        _agent(obj, path)
    elif kind == "Group":
        _group(obj, path)
    elif kind == "StatementRef":
        _statement_ref(obj, path)
    elif kind == "SubStatement":
        # Part Two §2.4.4.3.s8.b4: SubStatements do not nest.
        if in_substatement:
            _fail(f"{path}.objectType", "a SubStatement cannot contain another SubStatement")
        _statement(obj, path, True, version_re)
    else:
        _fail(
            f"{path}.objectType",
            "must be one of 'Activity', 'Agent', 'Group', 'StatementRef', 'SubStatement'",
            kind,
        )
    return False


# ------------------------------------------------------------ result, context


def _result(obj: object, path: str) -> None:
    # Part Two §2.4.5.
    if not isinstance(obj, dict):
        _fail(path, "must be a Result object", obj)
    if not obj.keys() <= _RESULT_KEYS:
        _unknown_property(obj, _RESULT_KEYS, path, "a Result")
    if "score" in obj:
        _score(obj["score"], f"{path}.score")
    # Part Two §2.2.s4.b1.b3: booleans must be JSON booleans, not "true" nor 1.
    if "success" in obj and type(obj["success"]) is not bool:
        _fail(f"{path}.success", "must be a boolean", obj["success"])
    if "completion" in obj and type(obj["completion"]) is not bool:
        _fail(f"{path}.completion", "must be a boolean", obj["completion"])
    if "response" in obj:
        _string(obj["response"], f"{path}.response")
    if "duration" in obj:
        validate_duration(obj["duration"], f"{path}.duration")
    if "extensions" in obj:
        _extensions(obj["extensions"], f"{path}.extensions")


def _score(obj: object, path: str) -> None:
    # Part Two §2.4.5.1.s2.
    if not isinstance(obj, dict):
        _fail(path, "must be a Score object", obj)
    if not obj.keys() <= _SCORE_KEYS:
        _unknown_property(obj, _SCORE_KEYS, path, "a Score")
    for key, value in obj.items():
        if not _is_number(value):
            _fail(f"{path}.{key}", "must be a number", value)
    scaled = obj.get("scaled")
    if scaled is not None and not -1 <= scaled <= 1:
        _fail(f"{path}.scaled", "must be between -1 and 1 inclusive", scaled)
    low = obj.get("min")
    high = obj.get("max")
    if low is not None and high is not None and not low < high:
        _fail(f"{path}.min", f"must be less than max ({_show(high)})", low)
    raw = obj.get("raw")
    if raw is not None:
        if low is not None and raw < low:
            _fail(f"{path}.raw", f"must not be less than min ({_show(low)})", raw)
        if high is not None and raw > high:
            _fail(f"{path}.raw", f"must not be greater than max ({_show(high)})", raw)


def _context(obj: object, path: str, object_is_activity: bool) -> None:
    # Part Two §2.4.6.
    if not isinstance(obj, dict):
        _fail(path, "must be a Context object", obj)
    if not obj.keys() <= _CONTEXT_KEYS:
        _unknown_property(obj, _CONTEXT_KEYS, path, "a Context")
    if "registration" in obj:
        _uuid(obj["registration"], f"{path}.registration")
    if "instructor" in obj:
        validate_agent(obj["instructor"], f"{path}.instructor")
    if "team" in obj:
        team = obj["team"]
        if not isinstance(team, dict):
            _fail(f"{path}.team", "must be a Group object", team)
        # Part Two §2.4.6.s3: team is a Group, whose objectType is required (§2.4.2.2).
        if "objectType" not in team:
            _fail(f"{path}.team.objectType", "is required: a team is a Group")
        if team["objectType"] != "Group":
            _fail(f"{path}.team.objectType", "must be 'Group'", team["objectType"])
        _group(team, f"{path}.team")
    if "contextActivities" in obj:
        _context_activities(obj["contextActivities"], f"{path}.contextActivities")
    for key in ("revision", "platform"):
        if key in obj:
            _string(obj[key], f"{path}.{key}")
            # Part Two §2.4.6.s4.b1/b2: only when the statement's object is an Activity.
            if not object_is_activity:
                _fail(f"{path}.{key}", "is only allowed when the statement's object is an Activity")
    if "language" in obj:
        language = obj["language"]
        if not (isinstance(language, str) and _is_language_tag(language)):
            _fail(f"{path}.language", "must be an RFC 5646 language tag", language)
    if "statement" in obj:
        _statement_ref(obj["statement"], f"{path}.statement")
    if "extensions" in obj:
        _extensions(obj["extensions"], f"{path}.extensions")


def _context_activities(obj: object, path: str) -> None:
    # Part Two §2.4.6.2.s4.b1/b2: keys parent/grouping/category/other; each value an
    # Activity or an array of Activities (the single form is accepted, §2.4.6.2.s3).
    if not isinstance(obj, dict):
        _fail(path, "must be an object with keys parent, grouping, category or other", obj)
    if not obj.keys() <= _CONTEXT_ACTIVITIES_KEYS:
        _unknown_property(obj, _CONTEXT_ACTIVITIES_KEYS, path, "contextActivities")
    for key, value in obj.items():
        key_path = f"{path}.{key}"
        if isinstance(value, list):
            for index, activity in enumerate(value):
                _context_activity(activity, f"{key_path}[{index}]")
        elif isinstance(value, dict):
            _context_activity(value, key_path)
        else:
            _fail(key_path, "must be an Activity or an array of Activities", value)


def _context_activity(obj: object, path: str) -> None:
    if not isinstance(obj, dict):
        _fail(path, "must be an Activity object", obj)
    kind = obj.get("objectType", "Activity")
    if kind != "Activity":
        _fail(f"{path}.objectType", "must be 'Activity'", kind)
    _activity(obj, path)


def _attachments(items: object, path: str) -> None:
    # Part Two §2.4.11.
    if not isinstance(items, list):
        _fail(path, "must be an array of Attachment objects", items)
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            _fail(item_path, "must be an Attachment object", item)
        if not item.keys() <= _ATTACHMENT_KEYS:
            _unknown_property(item, _ATTACHMENT_KEYS, item_path, "an Attachment")
        for key in _ATTACHMENT_REQUIRED:
            if key not in item:
                _fail(f"{item_path}.{key}", "is required")
        usage = item["usageType"]
        _iri(usage, f"{item_path}.usageType")
        validate_language_map(item["display"], f"{item_path}.display")
        if "description" in item:
            validate_language_map(item["description"], f"{item_path}.description")
        content_type = item["contentType"]
        if not (isinstance(content_type, str) and _MEDIA_TYPE_RE.fullmatch(content_type)):
            _fail(f"{item_path}.contentType", "must be an Internet Media Type", content_type)
        # Part Two §2.6.s4.b1: a signature is an application/octet-stream attachment.
        if usage == _SIGNATURE_USAGE and content_type != "application/octet-stream":
            _fail(
                f"{item_path}.contentType",
                "must be 'application/octet-stream' for a signature attachment",
                content_type,
            )
        length = item["length"]
        if type(length) is not int or length < 0:
            _fail(f"{item_path}.length", "must be a non-negative integer", length)
        sha2 = item["sha2"]
        if not (isinstance(sha2, str) and _SHA2_RE.fullmatch(sha2)):
            _fail(f"{item_path}.sha2", "must be a hex-encoded SHA-2 digest", sha2)
        if "fileUrl" in item:
            _iri(item["fileUrl"], f"{item_path}.fileUrl")


# -------------------------------------------------------------------- statements


def _statement(obj: object, path: str, is_substatement: bool, version_re: re.Pattern) -> None:
    if not isinstance(obj, dict):
        _fail(path, "must be a JSON object", obj)
    if is_substatement:
        if not obj.keys() <= _SUBSTATEMENT_KEYS:
            for key in obj:
                if key in _NOT_IN_SUBSTATEMENT:
                    # Part Two §2.4.4.3.s8.b3.
                    _fail(f"{path}.{key}", "is not allowed in a SubStatement")
            _unknown_property(obj, _SUBSTATEMENT_KEYS, path, "a SubStatement")
    else:
        if not obj.keys() <= _STATEMENT_KEYS:
            _unknown_property(obj, _STATEMENT_KEYS, path, "a Statement")
        if "id" in obj:
            # Part Two §2.4.1.
            _uuid(obj["id"], f"{path}.id")
    # Part Two §2.2.s2.b3: actor, verb and object are required.
    for key in ("actor", "verb", "object"):
        if key not in obj:
            _fail(f"{path}.{key}", "is required")
    validate_agent(obj["actor"], f"{path}.actor")
    verb_id = _verb(obj["verb"], f"{path}.verb")
    target = obj["object"]
    object_is_activity = _object(target, f"{path}.object", is_substatement, version_re)
    # Part Two §2.3.2.s2.b1: a voiding statement's object is a StatementRef.
    if verb_id == VOIDED_VERB and target.get("objectType") != "StatementRef":
        _fail(
            f"{path}.object.objectType",
            "must be 'StatementRef' in a voiding statement",
            target.get("objectType", "Activity"),
        )
    if "result" in obj:
        _result(obj["result"], f"{path}.result")
    if "context" in obj:
        _context(obj["context"], f"{path}.context", object_is_activity)
    if "timestamp" in obj:
        # Part Two §2.4.7; a future time is not rejected (§2.4.7.s3.b6).
        parse_timestamp(obj["timestamp"], f"{path}.timestamp")
    if "attachments" in obj:
        _attachments(obj["attachments"], f"{path}.attachments")
    if is_substatement:
        return
    if "stored" in obj:
        # Part Two §2.4.8.s3.b2: validated here, overwritten by the LRS.
        parse_timestamp(obj["stored"], f"{path}.stored")
    if "authority" in obj:
        _authority(obj["authority"], f"{path}.authority")
    if "version" in obj:
        # Part Two §2.4.10.s3.b1/b2: accept "1.0.x", reject anything else.
        version = obj["version"]
        if not (isinstance(version, str) and version_re.fullmatch(version)):
            expected = "'1.0.x' or '2.0.x'" if version_re is _VERSION_1_OR_2_RE else "'1.0.x'"
            _fail(f"{path}.version", f"must be {expected}", version)


def _version_pattern(version: str) -> re.Pattern:
    # A 2.0 LRS still takes 1.0.x statements; a 1.0.x request only 1.0.x statements.
    return _VERSION_1_OR_2_RE if version.startswith("2.") else _VERSION_1_RE


def validate_statement(stmt: object, *, path: str = "statement", version: str = "1.0.3") -> None:
    """Reject a statement the LRS must not store, with the offending property path.

    ``version`` is the request's X-Experience-API-Version: with "2.0.0" a statement
    ``version`` of "2.0.x" is accepted as well as "1.0.x".
    """
    _statement(stmt, path, False, _version_pattern(version))


def validate_statements(body: object, *, version: str = "1.0.3") -> list[dict]:
    """Validate a POST /statements body: one statement or an array of them.

    The whole batch is rejected if one statement is (Part Three §3.2.s3.b9), and a batch
    with two statements of the same id is rejected too (Part Three §2.1.2.s2.b6).
    An empty array is valid and yields an empty list.
    """
    version_re = _version_pattern(version)
    if isinstance(body, dict):
        _statement(body, "statement", False, version_re)
        return [body]
    if not isinstance(body, list):
        _fail("statement", "must be a statement object or an array of statements", body)
    first_index: dict[str, int] = {}
    for index, stmt in enumerate(body):
        stmt_path = f"statement[{index}]"
        _statement(stmt, stmt_path, False, version_re)
        stmt_id = stmt.get("id")
        if stmt_id is not None:
            key = stmt_id.lower()
            if key in first_index:
                _fail(
                    f"{stmt_path}.id",
                    f"duplicates the id of statement[{first_index[key]}] in the same batch",
                )
            first_index[key] = index
    return body
