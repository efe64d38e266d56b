"""Declarative mapping rules: which xAPI statements are evidence of which competencies.

Why declarative: providers (course vendors, internship platforms, colleges) each describe
their activities differently, and the people who know which activity shows which competency
are admins and teachers, not programmers. A YAML file per provider that is validated on load
(every problem named ``file:line``), dry-run with ``masteryhub rules test statement.json``
(:func:`explain_statement`) and stored with its text (``models.RuleSet``) keeps that knowledge
reviewable and its effect reproducible.

API
===
* ``load_ruleset(text, *, filename, competencies=None) -> RuleSet`` (and
  ``load_ruleset_file(path, ...)``) -- raises :class:`RuleError`, whose ``problems`` are
  :class:`RuleProblem` (``filename``, ``line``, ``column``, ``path``, ``message``; ``str()``
  gives ``file:line: path: message``). ``RuleSet.to_dicts()`` is what ``models.RuleSet.rules``
  stores; ``RuleSet.text`` what ``models.RuleSet.text`` stores.
* ``match_statement(stmt, rulesets, competencies, *, provider=None) -> list[Draft]`` -- the
  worker's call; ``Matcher(rulesets, competencies).match(stmt, provider=...)`` is the same
  with the compilation held explicitly.
* ``explain_statement(...) -> Explanation`` -- for ``masteryhub rules test``: per rule
  (:class:`RuleCheck`) matched or not, the first failed condition and every condition's
  outcome (:class:`ConditionCheck`), the drafts with ``notes`` saying how they were scored,
  and evidence entries skipped and why; ``Explanation.format()`` renders it as text.

Format
======
One YAML document per file::

    ruleset: algebra-online               # name: letters, digits, . _ - ; rule keys are
                                          # "ruleset:rule-id", evidence keys embed them
    description: Acme's online algebra course        # optional
    defaults:                             # optional; each evidence entry may override
      source_type: online_course          # one of mappings.types.SOURCE_TYPES
      review: false                       # true: a teacher approves before it counts
      score: result                       # see "score" below; default: result
      framework: algebra-2024             # optional: look codes up in this framework only
      match:                              # optional: conditions every rule gets unless the
        provider: [acme-key]              # rule sets the same condition itself
    rules:
      - id: quiz-passed                   # unique in the file
        description: Unit quizzes         # optional
        match:                            # every condition given must hold
          verb: [http://adlnet.gov/expapi/verbs/passed,
                 http://adlnet.gov/expapi/verbs/completed]      # one IRI or a list
          activity:                       # the object Activity's id; a bare IRI or list
            prefix: "https://courses.example.com/algebra/"     # of IRIs means exact:
            # exact: IRI | [IRI, ...]
            # glob: "https://courses.example.com/*/quiz-*"    # * within one path segment,
            #                                 # ** across segments, ? one char, [a-z], [!x]
          activity_type: http://adlnet.gov/expapi/activities/assessment   # IRI or list
          extensions:                     # each key must be present, with an equal JSON
            "https://courses.example.com/ext/unit": 3   # value, in the result's, the
                                          # context's or the object definition's extensions
          result:
            success: true
            completion: true
            scaled: {min: 0.5, max: 1.0}  # inclusive; either bound may be left out
            raw: {min: 10}
          context_activity:               # parent / grouping / category / other / any;
            parent: "https://courses.example.com/algebra/unit-3"  # same forms as activity;
            category: {prefix: "https://courses.example.com/"}    # all kinds given must hold
          provider: [acme-key, acme-key-2]  # the credential key that stored the statement
        evidence:                         # one or more
          - competency: ALG.1.2           # a competency identifier or code (humanCodingScheme)
            score: result                 # see below
          - competency: 5c1f0d3e-0f0a-4b59-9d7e-1d2f3a4b5c6d
            score: {level: Proficient}
            source_type: assessment
            review: true

``score`` is one of:

* ``result`` -- the statement's ``result.score.scaled`` (else ``(raw-min)/(max-min)`` when
  ``raw``, ``min`` and ``max`` are given), clamped to 0..1 and mapped linearly from the
  scale's lowest level's points (0) to its top level's points (1). Lowest-to-top, not
  ``scaled * top``: on a 1..4 scale a 0 must still be a point *on* the scale.
* ``{result: {mastery_at: 0.8}}`` -- the same, piecewise: 0..0.8 onto lowest..mastery points
  and 0.8..1 onto mastery..top, so the provider's pass mark lands exactly on mastery.
* ``mastery`` -- the points of the scale's mastery level (e.g. "internship completed").
* ``{level: Proficient}`` -- that level's points on the competency's scale.
* ``{points: 3}`` -- fixed points (clamped into the scale's range at match time).

Validation (:func:`load_ruleset`) rejects, with ``file:line``: YAML syntax errors, several
documents, unknown or duplicate keys (with a "did you mean"), missing ``ruleset``/``rules``/
``evidence``, rules without any condition, duplicate rule ids, bad names, IRIs that are not
absolute (bare ADL verb words get a suggestion), the voided verb, bad prefixes and globs
(empty, unclosed ``[``, empty class, ``***``, no scheme, whitespace), non-boolean flags,
ranges with ``min > max`` or ``scaled`` outside -1..1, ``mastery_at`` outside (0, 1],
unknown source types, extension values that are not JSON (e.g. unquoted dates). Given the
competencies, also unknown or ambiguous competency codes/ids, level names that are not on
that competency's scale, and fixed points outside it. YAML anchors, aliases and merge keys
(``<<: *common``) work.

Matching decisions
==================
* A statement produces nothing when it is a voiding statement (the engine retracts the
  target's evidence instead), or its object is not an Activity: an Agent/Group or
  StatementRef names no activity to map, and a **SubStatement** describes an experience that
  is planned or reported ("Anna *will* attend"), not evidence of it, so it is not mapped.
* The provider is the ``provider`` argument (the credential key the LRS stored the statement
  under); when it is None, ``authority.account.name`` of the statement (the LRS writes the
  key there). A ``provider`` condition fails when neither is known.
* A ``result`` score with no usable score in the statement falls back to ``result.success``:
  true gives the mastery level's points, false the lowest level's; without ``success`` the
  rule still matches but that evidence is skipped (``explain_statement`` says so). Scores
  that are not finite numbers count as absent.
* **CASE URIs**: when the object's id or any context activity's id equals a competency's
  ``uri``, that competency gets a Draft with rule ``"case-uri"``, ``source_type
  "assessment"`` (the provider aligned an assessment item to the standard itself),
  ``review=False``, scored like ``result`` (no usable score and no success: nothing). When a
  rule already produced evidence from the same statement for that competency, the case-uri
  draft is left out: the admin's explicit rule decides, and one statement must not count
  twice for one competency.
* One Draft per (competency, rule key): the first wins (rule order, then evidence order).
* Conditions are checked in a fixed order -- provider, verb, activity, activity_type,
  context_activity, result.*, extensions -- and the "first failed condition" of
  :func:`explain_statement` refers to that order.

Speed: :class:`Matcher` precompiles everything (verb -> rules index, frozensets, prefix
tuples, one regex per glob set, code/uri -> competency dicts, scale points per competency).
:func:`match_statement` keeps a few Matchers keyed by the identity of its arguments, so pass
the same RuleSet objects and the same competencies mapping each time -- and a new mapping
(not an in-place edit) when competencies change, or hold a :class:`Matcher` yourself.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lrs.keys import VOIDED_VERB, ifi
from lrs.validation import is_iri
from mappings.types import SOURCE_TYPES, CompetencyInfo, Draft

__all__ = [
    "CASE_RULE",
    "CASE_SOURCE_TYPE",
    "ConditionCheck",
    "EvidenceSpec",
    "Explanation",
    "Matcher",
    "Rule",
    "RuleCheck",
    "RuleError",
    "RuleProblem",
    "RuleSet",
    "Score",
    "explain_statement",
    "load_ruleset",
    "load_ruleset_file",
    "match_statement",
]

CASE_RULE = "case-uri"
CASE_SOURCE_TYPE = "assessment"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_ADL_VERBS = frozenset((  # bare words an admin may write instead of the verb's IRI
    "answered", "asked", "attempted", "attended", "commented", "completed", "exited",
    "experienced", "failed", "imported", "initialized", "interacted", "launched", "mastered",
    "passed", "preferred", "progressed", "registered", "responded", "resumed", "scored",
    "shared", "suspended", "terminated", "voided", "waived", "satisfied",
))
_CONTEXT_KINDS = ("parent", "grouping", "category", "other")
_CONDITION_ORDER = ("provider", "verb", "activity", "activity_type", "context_activity",
                    "result", "extensions")

_TOP_KEYS = ("ruleset", "description", "defaults", "rules")
_DEFAULT_KEYS = ("source_type", "review", "score", "framework", "match")
_RULE_KEYS = ("id", "description", "match", "evidence")
_EVIDENCE_KEYS = ("competency", "framework", "score", "source_type", "review")
_RESULT_KEYS = ("success", "completion", "scaled", "raw")
_PATTERN_KEYS = ("exact", "prefix", "glob")
_CONTEXT_KEYS = (*_CONTEXT_KINDS, "any")
_SCORE_FORMS = ("'result', 'mastery', {result: {mastery_at: X}}, {level: NAME} or "
                "{points: N}")


# ------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class RuleProblem:
    """One thing wrong with a rule file, located so an admin can go straight to it."""

    filename: str
    line: int  # 1-based
    column: int  # 1-based
    path: str  # where in the document, e.g. "rules[0].match.verb"
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.filename}:{self.line}: {where}{self.message}"


class RuleError(ValueError):
    """A rule file that must not be used; carries every problem found, not just the first,
    so one edit-and-reload round fixes them all."""

    def __init__(self, problems: Sequence[RuleProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))


# ------------------------------------------------------------------------- the rule model


@dataclass(frozen=True)
class Score:
    """How an evidence entry scores: kind is "result", "mastery", "level" or "points"."""

    kind: str
    level: str | None = None
    points: float | None = None
    mastery_at: float | None = None  # for "result": where on 0..1 mastery lies
    line: int = 0

    def as_dict(self) -> str | dict:
        if self.kind == "result":
            return "result" if self.mastery_at is None else {
                "result": {"mastery_at": self.mastery_at}}
        if self.kind == "mastery":
            return "mastery"
        return {"level": self.level} if self.kind == "level" else {"points": self.points}


@dataclass(frozen=True)
class EvidenceSpec:
    """One ``evidence`` entry of a rule, defaults applied."""

    competency: str  # as written: identifier or code
    framework: str | None
    score: Score
    source_type: str
    review: bool
    line: int

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"competency": self.competency, "score": self.score.as_dict(),
                               "source_type": self.source_type, "review": self.review}
        if self.framework:
            out["framework"] = self.framework
        return out


class _View:
    """The parts of one statement that conditions look at, extracted once per statement."""

    __slots__ = ("completion", "ctx", "ctx_all", "exts", "oid", "otype", "provider", "raw",
                 "scaled", "stmt", "success", "verb")

    verb: str
    oid: str
    otype: object
    provider: str | None
    success: object
    completion: object
    scaled: float | None
    raw: float | None
    ctx: dict[str, tuple[str, ...]]
    ctx_all: tuple[str, ...]
    exts: tuple[dict, ...]
    stmt: dict


class _Condition:
    """One compiled match condition; ``test`` is the hot path, the rest serves explain."""

    name = ""
    line = 0

    def test(self, v: _View) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def wants(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def found(self, v: _View) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def _short(values: Sequence[str] | frozenset[str]) -> str:
    items = sorted(values)
    return items[0] if len(items) == 1 else "one of " + ", ".join(items)


class _SetCondition(_Condition):
    """verb / provider / activity_type: the statement's value is one of a set."""

    def __init__(self, name: str, values: list[str], line: int,
                 get: Callable[[_View], object]) -> None:
        self.name, self.line, self.values, self._get = name, line, frozenset(values), get
        # A closure reading the attribute directly: the hot path runs these per rule.
        vals = self.values
        self.test = {  # type: ignore[method-assign]
            "verb": lambda v: v.verb in vals,
            "provider": lambda v: v.provider in vals,
            "activity_type": lambda v: v.otype in vals,
        }[name]

    def wants(self) -> str:
        return _short(self.values)

    def found(self, v: _View) -> str:
        value = self._get(v)
        return "none" if value is None else str(value)


class _Pattern:
    """Exact IRIs, prefixes and globs, any of which may match."""

    __slots__ = ("exact", "globs", "prefixes", "regex")

    def __init__(self, exact: list[str], prefixes: list[str], globs: list[tuple[str, str]]):
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.globs = tuple(g for g, _ in globs)
        self.regex = (re.compile("|".join(f"(?:{rx})" for _, rx in globs), re.DOTALL)
                      if globs else None)

    def matches(self, value: str) -> bool:
        if value in self.exact:
            return True
        if self.prefixes and value.startswith(self.prefixes):
            return True
        return self.regex is not None and self.regex.fullmatch(value) is not None

    def describe(self) -> str:
        parts = [*sorted(self.exact), *(f"{p}*(prefix)" for p in self.prefixes),
                 *(f"{g}(glob)" for g in self.globs)]
        return parts[0] if len(parts) == 1 else "one of " + ", ".join(parts)

    def as_dict(self) -> dict:
        out: dict[str, list[str]] = {}
        if self.exact:
            out["exact"] = sorted(self.exact)
        if self.prefixes:
            out["prefix"] = list(self.prefixes)
        if self.globs:
            out["glob"] = list(self.globs)
        return out


class _ActivityCondition(_Condition):
    name = "activity"

    def __init__(self, pattern: _Pattern, line: int) -> None:
        self.pattern, self.line = pattern, line
        self.test = lambda v, m=pattern.matches: m(v.oid)  # type: ignore[method-assign]

    def wants(self) -> str:
        return self.pattern.describe()

    def found(self, v: _View) -> str:
        return v.oid


class _ContextCondition(_Condition):
    def __init__(self, kind: str, pattern: _Pattern, line: int) -> None:
        self.kind, self.pattern, self.line = kind, pattern, line
        self.name = f"context_activity.{kind}"

    def _ids(self, v: _View) -> tuple[str, ...]:
        return v.ctx_all if self.kind == "any" else v.ctx.get(self.kind, ())

    def test(self, v: _View) -> bool:
        matches = self.pattern.matches
        for activity_id in v.ctx_all if self.kind == "any" else v.ctx.get(self.kind, ()):
            if matches(activity_id):
                return True
        return False

    def wants(self) -> str:
        return self.pattern.describe()

    def found(self, v: _View) -> str:
        ids = self._ids(v)
        return ", ".join(ids) if ids else "no such context activity"


class _RangeCondition(_Condition):
    """result.scaled / result.raw within inclusive bounds."""

    def __init__(self, name: str, low: float | None, high: float | None, line: int,
                 get: Callable[[_View], float | None]) -> None:
        self.name, self.low, self.high, self.line, self._get = name, low, high, line, get
        lo = -math.inf if low is None else low
        hi = math.inf if high is None else high
        if name == "result.scaled":
            self.test = lambda v: (x := v.scaled) is not None and lo <= x <= hi  # type: ignore[method-assign]
        else:
            self.test = lambda v: (x := v.raw) is not None and lo <= x <= hi  # type: ignore[method-assign]

    def wants(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g}..{self.high:g}"
        return f">= {self.low:g}" if self.low is not None else f"<= {self.high:g}"

    def found(self, v: _View) -> str:
        value = self._get(v)
        return "no value" if value is None else f"{value:g}"


class _FlagCondition(_Condition):
    """result.success / result.completion is exactly true or false (absent fails both)."""

    def __init__(self, name: str, wanted: bool, line: int, attr: str) -> None:
        self.name, self.wanted, self.line, self.attr = name, wanted, line, attr
        if attr == "success":
            self.test = lambda v: v.success is wanted  # type: ignore[method-assign]
        else:
            self.test = lambda v: v.completion is wanted  # type: ignore[method-assign]

    def wants(self) -> str:
        return str(self.wanted).lower()

    def found(self, v: _View) -> str:
        value = getattr(v, self.attr)
        return "no value" if value is None else _json_text(value)


class _ExtensionCondition(_Condition):
    def __init__(self, key: str, value: object, line: int) -> None:
        self.key, self.value, self.line = key, value, line
        self.name = f"extensions[{key}]"

        # JSON scalars (the usual case) compare without the general _json_eq.
        kind = type(value)
        if kind is str or kind is int or kind is float:
            kinds = (str,) if kind is str else (int, float)

            def test(v: _View) -> bool:
                for exts in v.exts:  # a loop: 4x faster than any(genexpr)
                    found = exts.get(key)
                    if type(found) in kinds and found == value:
                        return True
                return False

            self.test = test  # type: ignore[method-assign]

    def test(self, v: _View) -> bool:
        key, wanted = self.key, self.value
        for exts in v.exts:  # noqa: SIM110 - a loop is 4x faster than any(genexpr)
            if key in exts and _json_eq(exts[key], wanted):
                return True
        return False

    def wants(self) -> str:
        return _json_text(self.value)

    def found(self, v: _View) -> str:
        values = [_json_text(e[self.key]) for e in v.exts if self.key in e]
        return ", ".join(values) if values else "no such extension"


@dataclass(frozen=True)
class Rule:
    """One compiled rule: its conditions (in evaluation order) and its evidence."""

    ruleset: str
    id: str
    filename: str
    line: int
    description: str | None
    conditions: tuple[_Condition, ...]
    evidence: tuple[EvidenceSpec, ...]
    match: dict  # the conditions as written (defaults merged), for storage and display

    @property
    def key(self) -> str:
        """What Draft.rule and Evidence.rule carry: ``ruleset:rule-id``."""
        return f"{self.ruleset}:{self.id}"

    @property
    def verbs(self) -> frozenset[str] | None:
        for cond in self.conditions:
            if cond.name == "verb":
                return cond.values  # type: ignore[attr-defined, no-any-return]
        return None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "line": self.line, "match": self.match,
                               "evidence": [e.as_dict() for e in self.evidence]}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class RuleSet:
    """A validated rule file. ``text`` is kept for provenance (``models.RuleSet.text``)."""

    name: str
    filename: str
    text: str
    description: str | None
    rules: tuple[Rule, ...]

    def to_dicts(self) -> list[dict]:
        """The parsed rules as JSON-compatible dicts, for ``models.RuleSet.rules``."""
        return [rule.as_dict() for rule in self.rules]


# ------------------------------------------------------------------------------ loading


def load_ruleset_file(path: str | Path, *,
                      competencies: Mapping[str, CompetencyInfo] | None = None) -> RuleSet:
    """Read and validate a rule file; errors name the path as given."""
    return load_ruleset(Path(path).read_text(encoding="utf-8"), filename=str(path),
                        competencies=competencies)


def load_ruleset(text: str, *, filename: str,
                 competencies: Mapping[str, CompetencyInfo] | None = None) -> RuleSet:
    """Parse and validate one rule file, raising :class:`RuleError` with every problem.

    With ``competencies`` (keyed by identifier), competency references, level names and
    fixed points are checked against them too; without, they are resolved when matching
    (and a reference that does not resolve then only skips that evidence).
    """
    return _Loader(text, filename, competencies).load()


_STR = "tag:yaml.org,2002:str"


class _Loader:
    """Walks the composed YAML node tree, so every value still knows its line."""

    def __init__(self, text: str, filename: str,
                 competencies: Mapping[str, CompetencyInfo] | None) -> None:
        self.text, self.filename = text, filename
        self.problems: list[RuleProblem] = []
        self.yaml: yaml.SafeLoader = None  # type: ignore[assignment]  # set by compose()
        self.index = _CompetencyIndex(competencies) if competencies is not None else None

    # ------------------------------------------------------------------ plumbing
    def err(self, node: yaml.Node | None, path: str, message: str) -> None:
        mark = node.start_mark if node is not None else None
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        self.problems.append(RuleProblem(self.filename, line, column, path, message))

    def value(self, node: yaml.Node, path: str) -> tuple[bool, Any]:
        try:
            return True, self.yaml.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.err(node, path, f"cannot read this value: {_yaml_message(exc)}")
            return False, None

    def kind(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        ok, value = self.value(node, "")
        if not ok:
            return "an unreadable value"
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return f"the number {value}"
        if isinstance(value, str):
            return f"the string {value!r}"
        return f"a {type(value).__name__} ({node.value!r})"

    def mapping(self, node: yaml.Node, path: str, allowed: Sequence[str],
                required: Sequence[str] = (), what: str = "a mapping",
                ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """Keys and value nodes of a mapping; unknown, duplicate and missing keys reported."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, path, f"must be {what}, not {self.kind(node)}")
            return None
        seen: dict[str, int] = {}
        for key_node, _ in node.value:  # duplicates among the node's own keys, pre-merge
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR:
                if key_node.value in seen:
                    self.err(key_node, _join(path, key_node.value),
                             f"duplicate key '{key_node.value}' (first on line "
                             f"{seen[key_node.value]})")
                seen.setdefault(key_node.value, key_node.start_mark.line + 1)
        try:
            self.yaml.flatten_mapping(node)  # YAML merge keys: << *anchor
        except yaml.YAMLError as exc:
            self.err(node, path, f"bad merge key: {_yaml_message(exc)}")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR):
                self.err(key_node, path, f"keys must be strings, not {self.kind(key_node)}")
                continue
            name = key_node.value
            if name not in allowed:
                self.err(key_node, _join(path, name), _unknown(name, allowed, "key"))
                continue
            out[name] = (key_node, value_node)
        for name in required:
            if name not in out:
                self.err(node, path, f"missing required key '{name}'")
        return out

    def string(self, node: yaml.Node, path: str) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            ok, value = self.value(node, path)
            if ok and isinstance(value, str) and value.strip():
                return value
            if not ok:
                return None
        self.err(node, path, f"must be a non-empty string, not {self.kind(node)}")
        return None

    def name(self, node: yaml.Node, path: str, what: str) -> str | None:
        value = self.string(node, path)
        if value is not None and not _NAME_RE.fullmatch(value):
            self.err(node, path, f"{what} {value!r} may contain only letters, digits, '.', '_' "
                                 "and '-' (at most 100; it becomes part of evidence keys)")
            return None
        return value

    def boolean(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode):
            ok, value = self.value(node, path)
            if ok and isinstance(value, bool):
                return value
            if not ok:
                return None
        self.err(node, path, f"must be true or false, not {self.kind(node)}")
        return None

    def number(self, node: yaml.Node, path: str) -> float | None:
        if isinstance(node, yaml.ScalarNode):
            ok, value = self.value(node, path)
            if (ok and isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value)):
                return float(value)
            if not ok:
                return None
        self.err(node, path, f"must be a finite number, not {self.kind(node)}")
        return None

    def one_or_many(self, node: yaml.Node, path: str,
                    item: Callable[[yaml.Node, str], Any]) -> list[Any] | None:
        """A single item or a non-empty list of them; None when any item is bad."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                self.err(node, path, "must not be an empty list")
                return None
            items = [item(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
            return None if any(i is None for i in items) else items
        single = item(node, path)
        return None if single is None else [single]

    def iri(self, node: yaml.Node, path: str) -> str | None:
        value = self.string(node, path)
        if value is None:
            return None
        if not is_iri(value):
            hint = ""
            if value.lower() in _ADL_VERBS:
                hint = f" (did you mean http://adlnet.gov/expapi/verbs/{value.lower()}?)"
            self.err(node, path, f"{value!r} is not an absolute IRI{hint}")
            return None
        return value

    # ------------------------------------------------------------------ document
    def load(self) -> RuleSet:
        try:
            return self._load()
        except RecursionError:
            self.problems.append(RuleProblem(self.filename, 1, 1, "", "a YAML alias refers "
                                             "to a node that contains it (recursive rules)"))
            raise RuleError(self.problems) from None

    def _load(self) -> RuleSet:
        root = self.compose()
        if root is None:
            raise RuleError(self.problems)
        top = self.mapping(root, "", _TOP_KEYS, required=("ruleset", "rules"),
                           what="a mapping with 'ruleset' and 'rules'")
        if top is None:
            raise RuleError(self.problems)
        name = self.name(top["ruleset"][1], "ruleset", "ruleset name") \
            if "ruleset" in top else None
        description = self.string(top["description"][1], "description") \
            if "description" in top else None
        defaults = self.defaults(top["defaults"][1]) if "defaults" in top else _Defaults()
        rules: list[Rule] = []
        if "rules" in top:
            rules = self.rules(top["rules"][1], name or "?", defaults)
        if self.problems:
            raise RuleError(self.problems)
        assert name is not None
        return RuleSet(name=name, filename=self.filename, text=self.text,
                       description=description, rules=tuple(rules))

    def compose(self) -> yaml.Node | None:
        try:
            self.yaml = yaml.SafeLoader(self.text)  # its reader may already reject the text
            root = self.yaml.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            column = mark.column + 1 if mark else 1
            message = f"YAML syntax error: {_yaml_message(exc)}"
            if isinstance(exc, yaml.composer.ComposerError) and "another document" in message:
                message = "a rule file holds one YAML document; found a second one"
            self.problems.append(RuleProblem(self.filename, line, column, "", message))
            return None
        except yaml.YAMLError as exc:
            position = getattr(exc, "position", 0) or 0
            before = self.text[:position]
            line, column = before.count("\n") + 1, position - before.rfind("\n")
            self.problems.append(RuleProblem(self.filename, line, column, "",
                                             f"YAML error: {_yaml_message(exc)}"))
            return None
        if root is None:
            self.problems.append(RuleProblem(self.filename, 1, 1, "", "the file is empty; "
                                             "expected a mapping with 'ruleset' and 'rules'"))
        return root

    def defaults(self, node: yaml.Node) -> _Defaults:
        keys = self.mapping(node, "defaults", _DEFAULT_KEYS)
        out = _Defaults()
        if not keys:
            return out
        out.given = set(keys)
        if "source_type" in keys:
            out.source_type = self.source_type(keys["source_type"][1], "defaults.source_type")
        if "review" in keys:
            out.review = self.boolean(keys["review"][1], "defaults.review") or False
        if "score" in keys:
            out.score = self.score(keys["score"][1], "defaults.score")
        if "framework" in keys:
            out.framework = self.string(keys["framework"][1], "defaults.framework")
        if "match" in keys:
            out.match, out.match_raw = self.match(keys["match"][1], "defaults.match")
        return out

    def rules(self, node: yaml.Node, ruleset: str, defaults: _Defaults) -> list[Rule]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, "rules", f"must be a list of rules, not {self.kind(node)}")
            return []
        if not node.value:
            self.err(node, "rules", "must list at least one rule")
        out: list[Rule] = []
        first_line: dict[str, int] = {}
        for index, rule_node in enumerate(node.value):
            path = f"rules[{index}]"
            keys = self.mapping(rule_node, path, _RULE_KEYS, required=("id", "evidence"),
                                what="a rule mapping with 'id', 'match' and 'evidence'")
            if keys is None:
                continue
            rule_id = self.name(keys["id"][1], f"{path}.id", "rule id") if "id" in keys \
                else None
            if rule_id is not None:
                line = keys["id"][1].start_mark.line + 1
                if rule_id in first_line:
                    self.err(keys["id"][1], f"{path}.id", f"duplicate rule id {rule_id!r} "
                                                          f"(first on line {first_line[rule_id]})")
                first_line.setdefault(rule_id, line)
            description = (self.string(keys["description"][1], f"{path}.description")
                           if "description" in keys else None)
            conditions, raw = dict(defaults.match), dict(defaults.match_raw)
            if "match" in keys:
                own, own_raw = self.match(keys["match"][1], f"{path}.match")
                conditions.update(own)
                raw.update(own_raw)
            if not conditions and "match" not in keys:
                self.err(rule_node, path, "missing required key 'match' (and defaults.match "
                                          "sets no condition)")
            elif not conditions and not self._has_problem_below(rule_node):
                self.err(keys["match"][1], f"{path}.match", "a rule needs at least one "
                         "condition; one that matches every statement is almost surely a "
                         "mistake")
            evidence = (self.evidence(keys["evidence"][1], f"{path}.evidence", defaults)
                        if "evidence" in keys else [])
            ordered = tuple(cond for name in _CONDITION_ORDER
                            for cond in conditions.get(name, ()))
            out.append(Rule(ruleset=ruleset, id=rule_id or "?", filename=self.filename,
                            line=rule_node.start_mark.line + 1, description=description,
                            conditions=ordered, evidence=tuple(evidence),
                            match={k: raw[k] for k in _CONDITION_ORDER if k in raw}))
        return out

    def _has_problem_below(self, node: yaml.Node) -> bool:
        start, end = node.start_mark.line + 1, node.end_mark.line + 1
        return any(start <= p.line <= end for p in self.problems)

    # ------------------------------------------------------------------ match
    def match(self, node: yaml.Node, path: str,
              ) -> tuple[dict[str, list[_Condition]], dict[str, Any]]:
        keys = self.mapping(node, path, _CONDITION_ORDER)
        conds: dict[str, list[_Condition]] = {}
        raw: dict[str, Any] = {}
        if not keys:
            return conds, raw
        for name, (_, value) in keys.items():
            sub = f"{path}.{name}"
            line = value.start_mark.line + 1
            built: list[_Condition] | None = None
            if name == "verb":
                verbs = self.one_or_many(value, sub, self.iri)
                if verbs and VOIDED_VERB in verbs:
                    self.err(value, sub, "voiding statements never produce evidence (they "
                                         "retract it); remove the voided verb")
                elif verbs:
                    built = [_SetCondition("verb", verbs, line, _get_verb)]
            elif name == "provider":
                keys_ = self.one_or_many(value, sub, self.string)
                if keys_:
                    built = [_SetCondition("provider", keys_, line, _get_provider)]
            elif name == "activity_type":
                types = self.one_or_many(value, sub, self.iri)
                if types:
                    built = [_SetCondition("activity_type", types, line, _get_otype)]
            elif name == "activity":
                pattern = self.pattern(value, sub)
                if pattern:
                    built = [_ActivityCondition(pattern, line)]
            elif name == "context_activity":
                built = self.context(value, sub)
            elif name == "result":
                built = self.result(value, sub)
            elif name == "extensions":
                built = self.extensions(value, sub)
            if built:
                conds[name] = built
                raw[name] = _raw_condition(name, built)
        return conds, raw

    def pattern(self, node: yaml.Node, path: str) -> _Pattern | None:
        if not isinstance(node, yaml.MappingNode):
            exact = self.one_or_many(node, path, self.iri)
            return _Pattern(exact, [], []) if exact else None
        keys = self.mapping(node, path, _PATTERN_KEYS)
        if keys is None:
            return None
        if not keys:
            self.err(node, path, "give at least one of exact, prefix or glob")
            return None
        exact = prefixes = globs = None
        ok = True
        if "exact" in keys:
            exact = self.one_or_many(keys["exact"][1], f"{path}.exact", self.iri)
            ok = ok and exact is not None
        if "prefix" in keys:
            prefixes = self.one_or_many(keys["prefix"][1], f"{path}.prefix", self.prefix)
            ok = ok and prefixes is not None
        if "glob" in keys:
            globs = self.one_or_many(keys["glob"][1], f"{path}.glob", self.glob)
            ok = ok and globs is not None
        return _Pattern(exact or [], prefixes or [], globs or []) if ok else None

    def prefix(self, node: yaml.Node, path: str) -> str | None:
        value = self.string(node, path)
        if value is None:
            return None
        if any(c.isspace() for c in value):
            self.err(node, path, f"prefix {value!r} contains whitespace, which no IRI does")
            return None
        if not _SCHEME_RE.match(value):
            self.err(node, path, f"prefix {value!r} must start with an IRI scheme such as "
                                 "'https:' (activity ids are absolute IRIs)")
            return None
        return value

    def glob(self, node: yaml.Node, path: str) -> tuple[str, str] | None:
        value = self.string(node, path)
        if value is None:
            return None
        try:
            return value, _glob_to_regex(value)
        except ValueError as exc:
            self.err(node, path, f"bad glob {value!r}: {exc}")
            return None

    def context(self, node: yaml.Node, path: str) -> list[_Condition] | None:
        keys = self.mapping(node, path, _CONTEXT_KEYS)
        if keys is None:
            return None
        if not keys:
            self.err(node, path, "give at least one of parent, grouping, category, other, any")
            return None
        out: list[_Condition] = []
        for kind in _CONTEXT_KEYS:
            if kind in keys:
                value = keys[kind][1]
                pattern = self.pattern(value, f"{path}.{kind}")
                if pattern is None:
                    return None
                out.append(_ContextCondition(kind, pattern, value.start_mark.line + 1))
        return out

    def result(self, node: yaml.Node, path: str) -> list[_Condition] | None:
        keys = self.mapping(node, path, _RESULT_KEYS)
        if keys is None:
            return None
        if not keys:
            self.err(node, path, "give at least one of success, completion, scaled, raw")
            return None
        out: list[_Condition] = []
        for flag in ("success", "completion"):
            if flag in keys:
                value = keys[flag][1]
                wanted = self.boolean(value, f"{path}.{flag}")
                if wanted is None:
                    return None
                out.append(_FlagCondition(f"result.{flag}", wanted,
                                          value.start_mark.line + 1, flag))
        for name, getter, bounds in (("scaled", _get_scaled, (-1.0, 1.0)),
                                     ("raw", _get_raw, None)):
            if name in keys:
                cond = self.range(keys[name][1], f"{path}.{name}", f"result.{name}", getter,
                                  bounds)
                if cond is None:
                    return None
                out.append(cond)
        return out

    def range(self, node: yaml.Node, path: str, name: str,
              getter: Callable[[_View], float | None],
              bounds: tuple[float, float] | None) -> _Condition | None:
        keys = self.mapping(node, path, ("min", "max"), what="a mapping with min and/or max")
        if keys is None:
            return None
        if not keys:
            self.err(node, path, "give min, max or both")
            return None
        low = self.number(keys["min"][1], f"{path}.min") if "min" in keys else None
        high = self.number(keys["max"][1], f"{path}.max") if "max" in keys else None
        if ("min" in keys and low is None) or ("max" in keys and high is None):
            return None
        if bounds is not None:
            for key, value in (("min", low), ("max", high)):
                if value is not None and not bounds[0] <= value <= bounds[1]:
                    self.err(keys[key][1], f"{path}.{key}",
                             f"{value:g} is outside {bounds[0]:g}..{bounds[1]:g}, the range of "
                             "xAPI scaled scores")
                    return None
        if low is not None and high is not None and low > high:
            self.err(node, path, f"min {low:g} is greater than max {high:g}; nothing could "
                                 "match")
            return None
        return _RangeCondition(name, low, high, node.start_mark.line + 1, getter)

    def extensions(self, node: yaml.Node, path: str) -> list[_Condition] | None:
        keys_node_ok = isinstance(node, yaml.MappingNode)
        if not keys_node_ok:
            self.err(node, path, f"must be a mapping of extension IRIs to values, not "
                                 f"{self.kind(node)}")
            return None
        seen: dict[str, int] = {}
        out: list[_Condition] = []
        ok = True
        for key_node, value_node in node.value:
            key = self.iri(key_node, f"{path} key")
            if key is None:
                ok = False
                continue
            if key in seen:
                self.err(key_node, f"{path}[{key}]",
                         f"duplicate key '{key}' (first on line {seen[key]})")
                ok = False
                continue
            seen[key] = key_node.start_mark.line + 1
            read, value = self.value(value_node, f"{path}[{key}]")
            if not read:
                ok = False
                continue
            problem = _json_problem(value)
            if problem:
                self.err(value_node, f"{path}[{key}]", f"value must be JSON ({problem}); "
                                                       "quote it to compare as a string")
                ok = False
                continue
            out.append(_ExtensionCondition(key, value, value_node.start_mark.line + 1))
        if ok and not out:
            self.err(node, path, "give at least one extension")
        return out if ok and out else None

    # ------------------------------------------------------------------ evidence
    def evidence(self, node: yaml.Node, path: str, defaults: _Defaults) -> list[EvidenceSpec]:
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, path, f"must be a list of evidence entries, not {self.kind(node)}")
            return []
        if not node.value:
            self.err(node, path, "must list at least one evidence entry")
        out: list[EvidenceSpec] = []
        for index, entry in enumerate(node.value):
            sub = f"{path}[{index}]"
            keys = self.mapping(entry, sub, _EVIDENCE_KEYS, required=("competency",),
                                what="a mapping with 'competency'")
            if keys is None or "competency" not in keys:
                continue
            competency = self.string(keys["competency"][1], f"{sub}.competency")
            framework = (self.string(keys["framework"][1], f"{sub}.framework")
                         if "framework" in keys else defaults.framework)
            score = (self.score(keys["score"][1], f"{sub}.score") if "score" in keys
                     else defaults.score or Score("result"))
            source_type = (self.source_type(keys["source_type"][1], f"{sub}.source_type")
                           if "source_type" in keys else defaults.source_type)
            if source_type is None and "source_type" not in keys.keys() | defaults.given:
                self.err(entry, sub, "missing 'source_type' (and defaults.source_type is not "
                                     f"set); one of: {', '.join(SOURCE_TYPES)}")
            review = (self.boolean(keys["review"][1], f"{sub}.review") if "review" in keys
                      else defaults.review)
            if competency is None or score is None or source_type is None or review is None:
                continue
            if self.index is not None:
                self.check_reference(keys, competency, framework, score, sub)
            out.append(EvidenceSpec(competency=competency, framework=framework, score=score,
                                    source_type=source_type, review=review,
                                    line=entry.start_mark.line + 1))
        return out

    def check_reference(self, keys: dict[str, tuple[yaml.Node, yaml.Node]], ref: str,
                        framework: str | None, score: Score, path: str) -> None:
        assert self.index is not None
        node = keys["competency"][1]
        info, problem = self.index.resolve(ref, framework)
        if info is None:
            self.err(node, f"{path}.competency", problem or "unknown competency")
            return
        numbers = _ScaleNumbers.of(info)
        if isinstance(numbers, str):
            self.err(node, f"{path}.competency", numbers)
            return
        score_node = keys["score"][1] if "score" in keys else node
        if score.kind == "level" and score.level not in numbers.levels:
            self.err(score_node, f"{path}.score", f"level {score.level!r} is not on the scale "
                     f"{info.scale.name!r} of {_label(info)} (levels: "
                     f"{', '.join(numbers.levels)})")
        if score.kind == "points" and score.points is not None and not (
                numbers.low - 1e-9 <= score.points <= numbers.top + 1e-9):
            self.err(score_node, f"{path}.score", f"{score.points:g} points is outside the "
                     f"scale {info.scale.name!r} of {_label(info)} "
                     f"({numbers.low:g}..{numbers.top:g})")

    def score(self, node: yaml.Node, path: str) -> Score | None:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            ok, value = self.value(node, path)
            if ok and value in ("result", "mastery"):
                return Score(kind=value, line=line)
            if ok:
                self.err(node, path, f"must be {_SCORE_FORMS}, not {self.kind(node)}")
            return None
        keys = self.mapping(node, path, ("result", "level", "points"), what=_SCORE_FORMS)
        if keys is None:
            return None
        if len(keys) != 1:
            self.err(node, path, f"must have exactly one of result, level, points; "
                                 f"{'found ' + ', '.join(keys) if keys else 'found none'}")
            return None
        kind, (_, value) = next(iter(keys.items()))
        if kind == "level":
            level = self.string(value, f"{path}.level")
            return None if level is None else Score("level", level=level, line=line)
        if kind == "points":
            points = self.number(value, f"{path}.points")
            return None if points is None else Score("points", points=points, line=line)
        sub = self.mapping(value, f"{path}.result", ("mastery_at",))
        if sub is None:
            return None
        if "mastery_at" not in sub:
            return Score("result", line=line)
        at_node = sub["mastery_at"][1]
        at = self.number(at_node, f"{path}.result.mastery_at")
        if at is None:
            return None
        if not 0 < at <= 1:
            self.err(at_node, f"{path}.result.mastery_at", f"{at:g} must lie in (0, 1]: the "
                                                           "scaled score that means mastery")
            return None
        return Score("result", mastery_at=at, line=line)

    def source_type(self, node: yaml.Node, path: str) -> str | None:
        value = self.string(node, path)
        if value is not None and value not in SOURCE_TYPES:
            self.err(node, path, _unknown(value, SOURCE_TYPES, "source type"))
            return None
        return value


@dataclass
class _Defaults:
    source_type: str | None = None
    review: bool = False
    score: Score | None = None
    framework: str | None = None
    match: dict[str, list[_Condition]] = field(default_factory=dict)
    match_raw: dict[str, Any] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)  # keys present, valid or not


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(name: str, allowed: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {what} '{name}'{hint}; allowed: {', '.join(allowed)}"


def _yaml_message(exc: BaseException) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{problem} ({context})" if context else str(problem)
    return str(getattr(exc, "reason", None) or exc).splitlines()[0]


def _raw_condition(name: str, built: list[_Condition]) -> Any:
    """The JSON form of a compiled condition, for storage and display."""
    first = built[0]
    if name in ("verb", "provider", "activity_type"):
        return sorted(first.values)  # type: ignore[attr-defined]
    if name == "activity":
        return first.pattern.as_dict()  # type: ignore[attr-defined]
    if name == "context_activity":
        return {c.kind: c.pattern.as_dict() for c in built}  # type: ignore[attr-defined]
    if name == "extensions":
        return {c.key: c.value for c in built}  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for cond in built:
        if isinstance(cond, _FlagCondition):
            out[cond.attr] = cond.wanted
        elif isinstance(cond, _RangeCondition):
            bounds = {"min": cond.low, "max": cond.high}
            out[cond.name.split(".", 1)[1]] = {k: v for k, v in bounds.items()
                                               if v is not None}
    return out


def _glob_to_regex(glob: str) -> str:
    """Translate an activity-id glob: ``*`` within one path segment, ``**`` across them.

    Why not fnmatch.translate: its ``*`` crosses ``/``, so ``https://x/*/quiz-*`` would also
    match ``https://x/a/b/quiz-1``; path-segment semantics is what admins expect of URLs.
    """
    if not glob:
        raise ValueError("empty")
    if any(c.isspace() for c in glob):
        raise ValueError("contains whitespace, which no IRI does")
    if glob[0] not in "*?[" and not _SCHEME_RE.match(glob):
        raise ValueError("must start with an IRI scheme such as 'https:' or a wildcard")
    if not any(c in glob for c in "*?["):
        raise ValueError("has no wildcard (*, **, ?, [...]); use exact: or prefix:")
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        if char == "*":
            j = i
            while j < n and glob[j] == "*":
                j += 1
            if j - i > 2:
                raise ValueError(f"'{'*' * (j - i)}' at position {i + 1}: use * (within one "
                                 "path segment) or ** (across segments)")
            out.append("[^/]*" if j - i == 1 else ".*")
            i = j
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            start = i + 1
            negate = start < n and glob[start] in "!^"
            if negate:
                start += 1
            end = glob.find("]", start)
            if end == -1:
                raise ValueError(f"'[' at position {i + 1} is never closed")
            if end == start:
                raise ValueError(f"empty character class at position {i + 1}")
            body = "".join("\\" + c if c in "\\^[]&~|" else c for c in glob[start:end])
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    regex = "".join(out)
    try:
        re.compile(regex)
    except re.error as exc:
        raise ValueError(f"bad character class ({exc})") from None
    return regex


# ------------------------------------------------------------------------- JSON values


def _json_problem(value: object, depth: int = 0) -> str | None:
    """Why a YAML value cannot equal anything in a JSON statement (None: it can)."""
    if depth > 50:
        return "nested too deeply"
    if value is None or isinstance(value, bool | str | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a JSON number"
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"object key {key!r} is not a string"
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"YAML read it as a {type(value).__name__}"


def _json_eq(a: object, b: object) -> bool:
    """JSON equality: 3 == 3.0, but true is not 1 (Python's bool is an int)."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float) and tb in (int, float):
        return a == b
    if ta is str or tb is str or a is None or b is None:
        return ta is tb and a == b
    if ta is list and tb is list:
        return len(a) == len(b) and all(  # type: ignore[arg-type]
            _json_eq(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(  # type: ignore[attr-defined]
            _json_eq(v, b[k]) for k, v in a.items())  # type: ignore[attr-defined, index]
    return False


def _json_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------- statement view


def _get_verb(v: _View) -> str:
    return v.verb


def _get_provider(v: _View) -> str | None:
    return v.provider


def _get_otype(v: _View) -> object:
    return v.otype


def _get_scaled(v: _View) -> float | None:
    return v.scaled


def _get_raw(v: _View) -> float | None:
    return v.raw


def _finite(value: object) -> float | None:
    """A JSON number as a finite float; None for anything else (bool, NaN, 10**400...)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None  # type: ignore[arg-type, return-value]
    if kind is int:
        try:
            return float(value)  # type: ignore[arg-type]
        except OverflowError:
            return None
    return None


_EMPTY: dict[str, tuple[str, ...]] = {}


def _ignored(stmt: object) -> str | None:
    """Why a statement produces no evidence at all (None: it may)."""
    if not isinstance(stmt, dict):
        return "not a statement object"
    verb = stmt.get("verb")
    verb_id = verb.get("id") if isinstance(verb, dict) else None
    if not isinstance(verb_id, str):
        return "the statement has no verb id"
    if verb_id == VOIDED_VERB:
        return "a voiding statement: it retracts its target's evidence instead"
    obj = stmt.get("object")
    if not isinstance(obj, dict):
        return "the statement has no object"
    kind = obj.get("objectType", "Activity")
    if kind == "SubStatement":
        return "the object is a SubStatement (a planned or reported experience, not evidence)"
    if kind != "Activity":
        return f"the object is {kind!r}, not an Activity"
    if not isinstance(obj.get("id"), str):
        return "the object Activity has no id"
    return None


def _view(stmt: Any, provider: str | None) -> _View | None:
    """Extract what conditions need, or None when the statement is ignored (``_ignored``).

    Defensive throughout: the worker must never crash on a statement, whatever its shape.
    """
    if not isinstance(stmt, dict):
        return None
    verb = stmt.get("verb")
    if not isinstance(verb, dict):
        return None
    verb_id = verb.get("id")
    if not isinstance(verb_id, str) or verb_id == VOIDED_VERB:
        return None
    obj = stmt.get("object")
    if not isinstance(obj, dict) or obj.get("objectType", "Activity") != "Activity":
        return None
    oid = obj.get("id")
    if not isinstance(oid, str):
        return None
    v = _View()
    v.stmt, v.verb, v.oid = stmt, verb_id, oid
    exts: list[dict] = []
    definition = obj.get("definition")
    otype = None
    if isinstance(definition, dict):
        otype = definition.get("type")
        ext = definition.get("extensions")
        if isinstance(ext, dict):
            exts.append(ext)
    v.otype = otype if isinstance(otype, str) else None  # hashable: it meets a frozenset
    result = stmt.get("result")
    scaled = raw = success = completion = None
    if isinstance(result, dict):
        success, completion = result.get("success"), result.get("completion")
        score = result.get("score")
        if isinstance(score, dict):
            scaled = _finite(score.get("scaled"))
            raw = _finite(score.get("raw"))
            if scaled is None and raw is not None:
                low, high = _finite(score.get("min")), _finite(score.get("max"))
                if low is not None and high is not None and high > low:
                    scaled = (raw - low) / (high - low)
                    if not math.isfinite(scaled):
                        scaled = None
        ext = result.get("extensions")
        if isinstance(ext, dict):
            exts.append(ext)
    v.success, v.completion, v.scaled, v.raw = success, completion, scaled, raw
    context = stmt.get("context")
    ctx: dict[str, tuple[str, ...]] = _EMPTY
    ctx_all: list[str] = []
    if isinstance(context, dict):
        activities = context.get("contextActivities")
        if isinstance(activities, dict) and activities:
            ctx = {}
            for kind, value in activities.items():
                if kind not in _CONTEXT_KINDS:
                    continue
                ids: list[str] = []
                for activity in value if isinstance(value, list) else (value,):
                    if isinstance(activity, dict):
                        activity_id = activity.get("id")
                        if isinstance(activity_id, str):
                            ids.append(activity_id)
                if ids:
                    ctx[kind] = tuple(ids)
                    ctx_all += ids
        ext = context.get("extensions")
        if isinstance(ext, dict):
            exts.append(ext)
    v.ctx, v.ctx_all, v.exts = ctx, tuple(ctx_all), tuple(exts)
    if provider is None:
        authority = stmt.get("authority")
        account = authority.get("account") if isinstance(authority, dict) else None
        name = account.get("name") if isinstance(account, dict) else None
        provider = name if isinstance(name, str) else None
    v.provider = provider
    return v


# ------------------------------------------------------------------ competencies, scores


def _label(info: CompetencyInfo) -> str:
    return f"{info.code} ({info.identifier})" if info.code else info.identifier


class _CompetencyIndex:
    """Identifier and code lookups over the competencies given (codes may repeat across
    frameworks, so a code resolves only when unique, optionally within one framework)."""

    def __init__(self, competencies: Mapping[str, CompetencyInfo]) -> None:
        self.by_id: dict[str, CompetencyInfo] = {}
        self.by_code: dict[str, list[CompetencyInfo]] = {}
        self.by_uri: dict[str, list[CompetencyInfo]] = {}
        for key, info in competencies.items():
            self.by_id[info.identifier] = info
            self.by_id.setdefault(key, info)
            if info.code:
                self.by_code.setdefault(info.code, []).append(info)
            if info.uri:
                self.by_uri.setdefault(info.uri, []).append(info)

    def resolve(self, ref: str, framework: str | None,
                ) -> tuple[CompetencyInfo | None, str | None]:
        info = self.by_id.get(ref)
        if info is not None and (framework is None or info.framework == framework):
            return info, None
        candidates = [c for c in self.by_code.get(ref, ())
                      if framework is None or c.framework == framework]
        if len(candidates) == 1:
            return candidates[0], None
        if candidates:
            ids = ", ".join(f"{c.identifier} ({c.framework})" for c in candidates)
            return None, (f"competency code {ref!r} is ambiguous: {ids}; set 'framework' "
                          "or use the identifier")
        where = f" in framework {framework!r}" if framework else ""
        close = difflib.get_close_matches(ref, [*self.by_code, *self.by_id], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return None, f"unknown competency {ref!r}{where}: no such identifier or code{hint}"


@dataclass(frozen=True)
class _ScaleNumbers:
    low: float
    mastery: float
    top: float
    levels: dict[str, float]
    text: str

    @staticmethod
    def of(info: CompetencyInfo) -> _ScaleNumbers | str:
        """The points that matter on a competency's scale, or why the scale is unusable."""
        try:
            levels = list(info.scale.levels or ())
            points = [float(level.points) for level in levels]
        except (AttributeError, TypeError, ValueError):
            return f"competency {_label(info)} has no usable scale"
        if not points or not all(math.isfinite(p) for p in points):
            return f"competency {_label(info)} has no usable scale levels"
        low, top = min(points), max(points)
        mastery = next((p for level, p in zip(levels, points, strict=True) if level.mastery),
                       top)
        named: dict[str, float] = {}
        for level, p in zip(levels, points, strict=True):
            named.setdefault(str(level.name), p)
        return _ScaleNumbers(low, mastery, top, named,
                             f"{getattr(info.scale, 'name', '')} {low:g}..{top:g}".strip())


class _Target:
    """One evidence entry resolved against one competency: how to score, where to put it."""

    __slots__ = ("competency", "fixed", "kind", "low", "mastery", "mastery_at", "problem",
                 "review", "rule", "scale", "source", "source_type", "top", "what")

    def __init__(self, rule: str, source: str, spec_score: Score, source_type: str,
                 review: bool, info: CompetencyInfo | None, problem: str | None) -> None:
        self.rule, self.source, self.source_type, self.review = rule, source, source_type, review
        self.kind, self.mastery_at = spec_score.kind, spec_score.mastery_at
        self.competency = info.identifier if info else None
        self.problem, self.fixed = problem, None
        self.low = self.mastery = self.top = 0.0
        self.scale = ""
        self.what = spec_score.kind if spec_score.kind != "level" else f"level {spec_score.level}"
        if info is None or problem:
            return
        numbers = _ScaleNumbers.of(info)
        if isinstance(numbers, str):
            self.problem = numbers
            return
        self.low, self.mastery, self.top, self.scale = (numbers.low, numbers.mastery,
                                                         numbers.top, numbers.text)
        if self.kind == "mastery":
            self.fixed = numbers.mastery
        elif self.kind == "level":
            if spec_score.level not in numbers.levels:
                self.problem = (f"level {spec_score.level!r} is not on the scale of "
                                f"{_label(info)} ({', '.join(numbers.levels)})")
            else:
                self.fixed = numbers.levels[spec_score.level]  # type: ignore[index]
        elif self.kind == "points":
            assert spec_score.points is not None
            self.fixed = min(max(spec_score.points, numbers.low), numbers.top)

    def points(self, v: _View) -> float | None:
        """Points on the competency's scale, or None when the statement gives no score."""
        if self.fixed is not None:
            return self.fixed
        scaled = v.scaled
        if scaled is None:
            success = v.success
            if success is True:
                return self.mastery
            return self.low if success is False else None
        s = 0.0 if scaled < 0 else 1.0 if scaled > 1 else scaled
        low, top = self.low, self.top
        at = self.mastery_at
        if at is None:
            points = low + s * (top - low)
        elif s <= at:
            points = low + s / at * (self.mastery - low)
        else:
            points = self.mastery + (s - at) / (1 - at) * (top - self.mastery)
        points = round(points, 6)
        return low if points < low else top if points > top else points

    def why(self, v: _View, points: float | None) -> str:
        """How the points came about (or why there are none), for explain."""
        if self.kind == "points":
            return f"fixed {self.fixed:g} points (scale {self.scale})"
        if self.kind in ("level", "mastery"):
            return f"{self.what}: {self.fixed:g} points (scale {self.scale})"
        if points is None:
            return "no usable result.score and no result.success: no evidence"
        if v.scaled is None:
            return (f"no usable result.score; result.success {_json_text(v.success)} -> "
                    f"{points:g} (scale {self.scale})")
        how = f", mastery at {self.mastery_at:g}" if self.mastery_at is not None else ""
        return f"scaled {v.scaled:g} -> {points:g} (scale {self.scale}{how})"


# ----------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class ConditionCheck:
    """One condition of one rule, evaluated against one statement."""

    name: str
    passed: bool
    wants: str
    found: str
    line: int

    def __str__(self) -> str:
        return f"{self.name}: needs {self.wants}; statement has {self.found}"


@dataclass(frozen=True)
class RuleCheck:
    """Whether a rule matched a statement and, if not, why (``failed``: the first failing
    condition in evaluation order; ``checks``: every condition, so all problems show)."""

    rule: str
    filename: str
    line: int
    matched: bool
    failed: ConditionCheck | None
    checks: tuple[ConditionCheck, ...]
    drafts: tuple[Draft, ...]
    skipped: tuple[str, ...]  # evidence entries that produced nothing, and why


@dataclass(frozen=True)
class Explanation:
    """What ``masteryhub rules test statement.json`` shows an admin."""

    ignored: str | None  # why the statement produces nothing at all
    agent: str | None  # lrs.keys.ifi() of the actor: whose evidence it would be
    provider: str | None
    rules: tuple[RuleCheck, ...]
    case_uri: tuple[Draft, ...]
    case_skipped: tuple[str, ...]
    drafts: tuple[Draft, ...]  # what match_statement returns (with notes filled in)

    def format(self) -> str:
        """Plain text, one line per rule, failing condition or drafts indented below."""
        lines = [f"actor: {self.agent or '(unidentified)'}; "
                 f"provider: {self.provider or '(unknown)'}"]
        if self.ignored:
            lines.append(f"ignored: {self.ignored}")
            return "\n".join(lines)
        for check in self.rules:
            where = f"{check.filename}:{check.line}"
            if check.matched:
                lines.append(f"MATCH    {check.rule} ({where})")
            else:
                lines.append(f"no match {check.rule} ({where}): {check.failed}")
            lines.extend(f"    -> {_draft_text(d)}" for d in check.drafts)
            lines.extend(f"    skipped: {s}" for s in check.skipped)
        lines.extend(f"CASE URI -> {_draft_text(d)}" for d in self.case_uri)
        lines.extend(f"CASE URI skipped: {s}" for s in self.case_skipped)
        lines.append(f"{len(self.drafts)} draft(s)")
        return "\n".join(lines)


def _draft_text(d: Draft) -> str:
    review = ", needs review" if d.review else ""
    notes = f" [{'; '.join(d.notes)}]" if d.notes else ""
    return f"{d.competency}: {d.points:g} points ({d.source_type}{review}){notes}"


class _Compiled:
    """A rule with its evidence resolved against the competencies."""

    __slots__ = ("live", "rule", "targets", "tests")

    def __init__(self, rule: Rule, targets: list[_Target]) -> None:
        self.rule, self.targets = rule, tuple(targets)
        self.live = tuple(t for t in targets if t.problem is None)
        # the verb is already guaranteed by the verb index, so the hot path skips it
        self.tests = tuple(c.test for c in rule.conditions if c.name != "verb")


class Matcher:
    """Rule sets compiled against one set of competencies; build once, match many.

    Why a class: the worker maps every statement, so all per-rule and per-competency work
    (verb index, competency resolution, scale points, the CASE uri dict) happens here once.
    """

    def __init__(self, rulesets: Sequence[RuleSet],
                 competencies: Mapping[str, CompetencyInfo]) -> None:
        self.rulesets = tuple(rulesets)
        self.competencies = competencies
        index = _CompetencyIndex(competencies)
        self._all: list[_Compiled] = []
        for ruleset in self.rulesets:
            for rule in ruleset.rules:
                targets = []
                for spec in rule.evidence:
                    info, problem = index.resolve(spec.competency, spec.framework)
                    targets.append(_Target(rule.key, f"{rule.filename}:{spec.line}",
                                           spec.score, spec.source_type, spec.review, info,
                                           problem))
                self._all.append(_Compiled(rule, targets))
        any_verb = [c for c in self._all if c.rule.verbs is None]
        self._any_verb = tuple(any_verb)
        verbs = {v for c in self._all for v in (c.rule.verbs or ())}
        self._by_verb = {
            verb: tuple(c for c in self._all
                        if c.rule.verbs is None or verb in c.rule.verbs)  # type: ignore[operator]
            for verb in verbs
        }
        self._uri: dict[str, tuple[_Target, ...]] = {
            uri: tuple(_Target(CASE_RULE, "competency uri", Score("result"), CASE_SOURCE_TYPE,
                               False, info, None) for info in infos)
            for uri, infos in index.by_uri.items()
        }

    def match(self, stmt: dict, *, provider: str | None = None) -> list[Draft]:
        """The evidence drafts a statement produces (see the module docstring)."""
        try:
            v = _view(stmt, provider)
        except Exception:  # a statement of impossible shape is no evidence, never a crash
            return []
        if v is None:
            return []
        drafts: list[Draft] = []
        seen: set[tuple[str | None, str]] = set()
        for compiled in self._by_verb.get(v.verb, self._any_verb):
            for test in compiled.tests:
                if not test(v):
                    break
            else:
                for target in compiled.live:
                    key = (target.competency, target.rule)
                    if key in seen:
                        continue
                    points = target.points(v)
                    if points is not None:
                        seen.add(key)
                        drafts.append(Draft(target.competency, target.rule,  # type: ignore[arg-type]
                                            points, target.source_type, target.review))
        if self._uri:
            for target in self._case_targets(v):
                if any(d.competency == target.competency for d in drafts):
                    continue
                points = target.points(v)
                if points is not None:
                    drafts.append(Draft(target.competency, CASE_RULE,  # type: ignore[arg-type]
                                        points, CASE_SOURCE_TYPE, False))
        return drafts

    def _case_targets(self, v: _View) -> list[_Target]:
        """CASE targets named by the object or a context activity, each competency once."""
        uri = self._uri
        found: list[_Target] = []
        for activity_id in (v.oid, *v.ctx_all):
            for target in uri.get(activity_id, ()):
                if target.problem is None and target not in found:
                    found.append(target)
        return found

    def explain(self, stmt: dict, *, provider: str | None = None) -> Explanation:
        """Every rule, whether it matched and why not; the drafts, with notes filled in."""
        actor = stmt.get("actor") if isinstance(stmt, dict) else None
        agent = ifi(actor) if isinstance(actor, dict) else None
        try:
            v = _view(stmt, provider)
            ignored = _ignored(stmt) if v is None else None
        except Exception as exc:  # mirror match(): impossible shapes produce nothing
            v, ignored = None, f"unreadable statement ({type(exc).__name__})"
        if v is None:
            return Explanation(ignored or "ignored", agent, provider, (), (), (), ())
        checks: list[RuleCheck] = []
        drafts: list[Draft] = []
        seen: set[tuple[str | None, str]] = set()
        for compiled in self._all:
            rule = compiled.rule
            results = tuple(ConditionCheck(c.name, c.test(v), c.wants(), c.found(v), c.line)
                            for c in rule.conditions)
            failed = next((r for r in results if not r.passed), None)
            mine: list[Draft] = []
            skipped: list[str] = []
            if failed is None:
                for target in compiled.targets:
                    if target.problem:
                        skipped.append(f"{target.source}: {target.problem}")
                        continue
                    key = (target.competency, target.rule)
                    if key in seen:
                        skipped.append(f"{target.source}: {target.competency} already has a "
                                       "draft from this rule")
                        continue
                    points = target.points(v)
                    why = target.why(v, points)
                    if points is None:
                        skipped.append(f"{target.source}: {target.competency}: {why}")
                        continue
                    seen.add(key)
                    mine.append(Draft(target.competency, target.rule,  # type: ignore[arg-type]
                                      points, target.source_type, target.review,
                                      notes=[f"{rule.key} ({target.source})", why]))
            drafts.extend(mine)
            checks.append(RuleCheck(rule.key, rule.filename, rule.line, failed is None,
                                    failed, results, tuple(mine), tuple(skipped)))
        case: list[Draft] = []
        case_skipped: list[str] = []
        for target in self._case_targets(v) if self._uri else ():
            if any(d.competency == target.competency for d in drafts):
                case_skipped.append(f"{target.competency}: a rule already produced evidence "
                                    "for it from this statement")
                continue
            points = target.points(v)
            why = target.why(v, points)
            if points is None:
                case_skipped.append(f"{target.competency}: {why}")
                continue
            case.append(Draft(target.competency, CASE_RULE,  # type: ignore[arg-type]
                              points, CASE_SOURCE_TYPE, False,
                              notes=["the statement names the competency's CASE URI", why]))
        drafts.extend(case)
        return Explanation(None, agent, v.provider, tuple(checks), tuple(case),
                           tuple(case_skipped), tuple(drafts))


_MATCHERS: dict[tuple[int, ...], Matcher] = {}


def _matcher(rulesets: Sequence[RuleSet],
             competencies: Mapping[str, CompetencyInfo]) -> Matcher:
    """A cached Matcher for these exact objects. The Matcher holds them, so their ids
    cannot be reused by other objects while the entry lives; the length check catches
    the commonest in-place edit (adding or removing a competency)."""
    key = (id(competencies), len(competencies), *map(id, rulesets))
    matcher = _MATCHERS.get(key)
    if matcher is None:
        if len(_MATCHERS) >= 16:
            _MATCHERS.clear()
        matcher = _MATCHERS[key] = Matcher(rulesets, competencies)
    return matcher


def match_statement(stmt: dict, rulesets: Sequence[RuleSet],
                    competencies: Mapping[str, CompetencyInfo], *,
                    provider: str | None = None) -> list[Draft]:
    """The evidence drafts one statement produces under the rule sets and CASE URIs.

    Never raises for any statement shape: a statement that cannot be evidence gives [].
    """
    return _matcher(rulesets, competencies).match(stmt, provider=provider)


def explain_statement(stmt: dict, rulesets: Sequence[RuleSet],
                      competencies: Mapping[str, CompetencyInfo], *,
                      provider: str | None = None) -> Explanation:
    """For ``masteryhub rules test``: every rule, matched or the first condition that
    failed, and the drafts (equal to :func:`match_statement`'s, plus notes)."""
    return _matcher(rulesets, competencies).explain(stmt, provider=provider)
