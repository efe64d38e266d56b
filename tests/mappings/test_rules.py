"""Mapping rules: loading (with file:line errors), matching, scoring, CASE URIs, explain.

Pure Python: no database. The competencies are plain ``CompetencyInfo`` values whose
scales are unsaved mongoengine embedded documents.
"""

from __future__ import annotations

import copy
import json
import math
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings.models import Level, Scale
from mappings.rules import (
    CASE_RULE,
    Matcher,
    RuleError,
    RuleSet,
    explain_statement,
    load_ruleset,
    load_ruleset_file,
    match_statement,
)
from mappings.types import CompetencyInfo, Draft

V = "http://adlnet.gov/expapi/verbs/"
PASSED, COMPLETED, EXPERIENCED = V + "passed", V + "completed", V + "experienced"
ASSESSMENT = "http://adlnet.gov/expapi/activities/assessment"
COURSE = "https://courses.example.com/algebra/"
UNIT_EXT = "https://courses.example.com/ext/unit"
CASE = "https://case.example.org/uri/"

FOUR = Scale(name="Four levels", levels=[
    Level(name="Beginning", points=1), Level(name="Developing", points=2),
    Level(name="Proficient", points=3, mastery=True), Level(name="Exemplary", points=4)])
PERCENT = Scale(name="Percent", levels=[
    Level(name="Not yet", points=0), Level(name="Approaching", points=50),
    Level(name="Meets", points=70, mastery=True), Level(name="Exceeds", points=100)])
SIGNED = Scale(name="Signed, no mastery level", levels=[
    Level(name="Below", points=-2), Level(name="At", points=0), Level(name="Above", points=2)])
SINGLE = Scale(name="Done", levels=[Level(name="Done", points=1, mastery=True)])


def _info(ident: str, code: str | None, scale: Scale = FOUR, framework: str = "alg",
          uri: str | None = None) -> CompetencyInfo:
    return CompetencyInfo(identifier=ident, framework=framework, code=code, uri=uri, scale=scale)


COMPETENCIES: dict[str, CompetencyInfo] = {c.identifier: c for c in (
    _info("c-11", "ALG.1.1", uri=CASE + "c-11"),
    _info("c-12", "ALG.1.2"),
    _info("c-pct", "ALG.PCT", PERCENT, uri=CASE + "c-pct"),
    _info("c-signed", "ALG.SIGNED", SIGNED, uri=CASE + "c-signed"),
    _info("c-single", "ALG.SINGLE", SINGLE),
    _info("c-dup-a", "DUP", framework="alg"),
    _info("c-dup-b", "DUP", framework="geo"),
)}


def rules(body: str, *, name: str = "algebra", defaults: str = "{source_type: online_course}",
          competencies: dict[str, CompetencyInfo] | None = COMPETENCIES) -> RuleSet:
    """A rule set from the rules part of a file (dedented), with a name and defaults."""
    text = f"ruleset: {name}\ndefaults: {defaults}\nrules:\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "  ") + "\n"
    return load_ruleset(text, filename="t.yaml", competencies=competencies)


def one_rule(match: str, evidence: str = "[{competency: ALG.1.2}]", **kw: object) -> RuleSet:
    return rules(f"- id: r\n  match: {match}\n  evidence: {evidence}", **kw)  # type: ignore[arg-type]


def statement(*, verb: str = PASSED, activity: str = COURSE + "unit-3/quiz-1",
              scaled: float | None = 0.8, success: bool | None = True, **extra: object) -> dict:
    stmt: dict = {
        "id": "2b6a7d0e-4c8f-4b61-9d5a-1f0e3c2b1a00",
        "actor": {"objectType": "Agent", "mbox": "mailto:anna@example.org"},
        "verb": {"id": verb},
        "object": {"objectType": "Activity", "id": activity,
                   "definition": {"type": ASSESSMENT}},
        "result": {"completion": True},
        "authority": {"objectType": "Agent", "account": {"homePage": "https://lrs.example",
                                                         "name": "acme"}},
    }
    if scaled is not None:
        stmt["result"]["score"] = {"scaled": scaled}
    if success is not None:
        stmt["result"]["success"] = success
    stmt.update(extra)
    return stmt


def drafts(ruleset: RuleSet | list[RuleSet], stmt: dict, **kw: object) -> list[Draft]:
    sets = ruleset if isinstance(ruleset, list) else [ruleset]
    return match_statement(stmt, sets, COMPETENCIES, **kw)  # type: ignore[arg-type]


def points(ruleset: RuleSet, stmt: dict) -> list[float]:
    return [d.points for d in drafts(ruleset, stmt)]


def first_failure(ruleset: RuleSet, stmt: dict, **kw: object) -> str | None:
    explanation = explain_statement(stmt, [ruleset], COMPETENCIES, **kw)  # type: ignore[arg-type]
    failed = explanation.rules[0].failed
    return failed.name if failed else None


# ------------------------------------------------------------------------ conditions


CONDITION_CASES = [
    # (match, statement changes that still match, changes that fail, failing condition)
    (f"{{verb: {PASSED}}}", {}, {"verb": {"id": COMPLETED}}, "verb"),
    (f"{{verb: [{PASSED}, {COMPLETED}]}}", {"verb": {"id": COMPLETED}},
     {"verb": {"id": EXPERIENCED}}, "verb"),
    (f"{{activity: {COURSE}unit-3/quiz-1}}", {}, {"object": {"id": COURSE + "unit-3/quiz-2"}},
     "activity"),
    (f"{{activity: [{COURSE}a, {COURSE}b]}}", {"object": {"id": COURSE + "b"}},
     {"object": {"id": COURSE + "c"}}, "activity"),
    (f"{{activity: {{exact: {COURSE}a}}}}", {"object": {"id": COURSE + "a"}},
     {"object": {"id": COURSE + "a/b"}}, "activity"),
    (f"{{activity: {{prefix: '{COURSE}'}}}}", {}, {"object": {"id": "https://other.example/"}},
     "activity"),
    (f"{{activity: {{prefix: ['https://x.example/', '{COURSE}unit-3/']}}}}", {},
     {"object": {"id": COURSE + "unit-4/quiz-1"}}, "activity"),
    (f"{{activity: {{glob: '{COURSE}*/quiz-*'}}}}", {},
     {"object": {"id": COURSE + "a/b/quiz-1"}}, "activity"),  # * stays within a segment
    (f"{{activity: {{glob: '{COURSE}**/quiz-?'}}}}", {"object": {"id": COURSE + "a/b/quiz-1"}},
     {"object": {"id": COURSE + "a/b/quiz-10"}}, "activity"),
    (f"{{activity: {{glob: '{COURSE}unit-[1-3]/*'}}}}", {},
     {"object": {"id": COURSE + "unit-4/quiz-1"}}, "activity"),
    (f"{{activity: {{glob: '{COURSE}unit-[!4]/*'}}}}", {},
     {"object": {"id": COURSE + "unit-4/quiz-1"}}, "activity"),
    (f"{{activity: {{exact: https://x.example/a, prefix: '{COURSE}'}}}}", {},
     {"object": {"id": "https://x.example/b"}}, "activity"),
    (f"{{activity_type: {ASSESSMENT}}}", {},
     {"object": {"definition": {"type": "http://adlnet.gov/expapi/activities/lesson"}}},
     "activity_type"),
    (f"{{activity_type: {ASSESSMENT}}}", {}, {"object": {"definition": None}}, "activity_type"),
    ("{result: {success: true}}", {}, {"result": {"success": False}}, "result.success"),
    ("{result: {success: false}}", {"result": {"success": False}},
     {"result": {"success": True}}, "result.success"),
    ("{result: {success: true}}", {}, {"result": None}, "result.success"),
    ("{result: {completion: true}}", {}, {"result": {"completion": False}}, "result.completion"),
    ("{result: {scaled: {min: 0.5, max: 0.9}}}", {}, {"result": {"score": {"scaled": 0.95}}},
     "result.scaled"),
    ("{result: {scaled: {min: 0.5}}}", {"result": {"score": {"scaled": 0.5}}},
     {"result": {"score": {"scaled": 0.49}}}, "result.scaled"),
    ("{result: {scaled: {max: 0}}}", {"result": {"score": {"scaled": -0.5}}},
     {"result": {"score": {"scaled": 0.1}}}, "result.scaled"),
    ("{result: {scaled: {min: 0}}}", {}, {"result": {"score": None}}, "result.scaled"),
    # scaled derived from raw/min/max when scaled is absent
    ("{result: {scaled: {min: 0.7}}}",
     {"result": {"score": {"scaled": None, "raw": 8, "min": 0, "max": 10}}},
     {"result": {"score": {"raw": 6}}}, "result.scaled"),
    ("{result: {raw: {min: 10, max: 20}}}", {"result": {"score": {"raw": 10}}},
     {"result": {"score": {"raw": 21}}}, "result.raw"),
    (f"{{extensions: {{'{UNIT_EXT}': 3}}}}",
     {"result": {"extensions": {UNIT_EXT: 3}}},
     {"result": {"extensions": {UNIT_EXT: 4}}}, f"extensions[{UNIT_EXT}]"),
    (f"{{extensions: {{'{UNIT_EXT}': 3}}}}",
     {"context": {"extensions": {UNIT_EXT: 3.0}}},  # JSON: 3 == 3.0
     {"context": {"extensions": {UNIT_EXT: "3"}}}, f"extensions[{UNIT_EXT}]"),
    (f"{{extensions: {{'{UNIT_EXT}': 1}}}}",
     {"object": {"definition": {"extensions": {UNIT_EXT: 1}}}},
     {"object": {"definition": {"extensions": {UNIT_EXT: True}}}},  # true is not 1
     f"extensions[{UNIT_EXT}]"),
    (f"{{extensions: {{'{UNIT_EXT}': true}}}}",
     {"result": {"extensions": {UNIT_EXT: True}}},
     {"result": {"extensions": {UNIT_EXT: 1}}}, f"extensions[{UNIT_EXT}]"),
    (f"{{extensions: {{'{UNIT_EXT}': {{unit: 3, tags: [a, b]}}}}}}",
     {"result": {"extensions": {UNIT_EXT: {"tags": ["a", "b"], "unit": 3}}}},
     {"result": {"extensions": {UNIT_EXT: {"tags": ["b", "a"], "unit": 3}}}},
     f"extensions[{UNIT_EXT}]"),
    (f"{{extensions: {{'{UNIT_EXT}': 'unit 3'}}}}",
     {"context": {"extensions": {UNIT_EXT: "unit 3"}}},
     {"context": {"extensions": {UNIT_EXT: "unit 4"}}}, f"extensions[{UNIT_EXT}]"),
    (f"{{context_activity: {{parent: '{COURSE}unit-3'}}}}",
     {"context": {"contextActivities": {"parent": [{"id": COURSE + "unit-3"}]}}},
     {"context": {"contextActivities": {"parent": None,
                                        "grouping": [{"id": COURSE + "unit-3"}]}}},
     "context_activity.parent"),
    (f"{{context_activity: {{grouping: {{prefix: '{COURSE}'}}}}}}",
     {"context": {"contextActivities": {"grouping": {"id": COURSE + "x"}}}},  # single object
     {"context": {"contextActivities": {"grouping": [{"id": "https://x.example/"}]}}},
     "context_activity.grouping"),
    (f"{{context_activity: {{category: {CASE}cat, other: {{glob: '{COURSE}*'}}}}}}",
     {"context": {"contextActivities": {"category": [{"id": CASE + "cat"}],
                                        "other": [{"id": COURSE + "x"}]}}},
     {"context": {"contextActivities": {"other": None}}}, "context_activity.other"),
    (f"{{context_activity: {{any: {CASE}cat}}}}",
     {"context": {"contextActivities": {"other": [{"id": "https://x.example/"},
                                                  {"id": CASE + "cat"}]}}},
     {"context": {}}, "context_activity.any"),
    ("{provider: acme}", {}, {"authority": {"account": {"name": "other"}}}, "provider"),
    ("{provider: [other, acme]}", {}, {"authority": None}, "provider"),
]


def _apply(stmt: dict, changes: dict) -> dict:
    """Deep-merge statement changes; None removes a key."""
    out = copy.deepcopy(stmt)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value:
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("match", "passing", "failing", "condition"), CONDITION_CASES)
def test_each_condition_matches_and_fails(match: str, passing: dict, failing: dict,
                                          condition: str) -> None:
    ruleset = one_rule(match)
    good = _apply(statement(), passing)
    assert [d.competency for d in drafts(ruleset, good)] == ["c-12"]
    bad = _apply(good, failing)
    assert drafts(ruleset, bad) == []
    assert first_failure(ruleset, bad) == condition


def test_all_conditions_must_hold_and_the_first_failure_follows_the_documented_order() -> None:
    ruleset = one_rule(f"{{provider: acme, verb: {PASSED}, activity: {{prefix: '{COURSE}'}}, "
                       f"activity_type: {ASSESSMENT}, result: {{success: true}}}}")
    assert len(drafts(ruleset, statement())) == 1
    wrong_everything = _apply(statement(verb=EXPERIENCED, activity="https://x.example/"),
                              {"result": {"success": False}})
    explanation = explain_statement(wrong_everything, [ruleset], COMPETENCIES, provider="zzz")
    check = explanation.rules[0]
    assert not check.matched
    assert check.failed is not None and check.failed.name == "provider"
    assert [c.name for c in check.checks if not c.passed] == [
        "provider", "verb", "activity", "result.success"]
    assert [c.name for c in check.checks if c.passed] == ["activity_type"]


def test_provider_argument_wins_over_authority() -> None:
    ruleset = one_rule("{provider: vendor-key}")
    assert drafts(ruleset, statement()) == []  # authority says "acme"
    assert len(drafts(ruleset, statement(), provider="vendor-key")) == 1


# ---------------------------------------------------------------------------- scores


@pytest.mark.parametrize(("score", "competency", "stmt_changes", "expected"), [
    ("result", "ALG.1.2", {"result": {"score": {"scaled": 0.0}}}, 1.0),  # lowest, not 0
    ("result", "ALG.1.2", {"result": {"score": {"scaled": 1.0}}}, 4.0),
    ("result", "ALG.1.2", {"result": {"score": {"scaled": 0.5}}}, 2.5),
    ("result", "ALG.PCT", {"result": {"score": {"scaled": 0.83}}}, 83.0),
    ("result", "ALG.1.2", {"result": {"score": {"scaled": -0.7}}}, 1.0),  # clamped
    ("result", "ALG.SIGNED", {"result": {"score": {"scaled": 0.75}}}, 1.0),
    ("result", "ALG.1.2", {"result": {"score": {"scaled": None, "raw": 15, "min": 10,
                                                "max": 20}}}, 2.5),
    ("result", "ALG.1.2", {"result": {"score": {"scaled": math.nan}, "success": True}}, 3.0),
    ("result", "ALG.1.2", {"result": {"score": None, "success": True}}, 3.0),  # -> mastery
    ("result", "ALG.1.2", {"result": {"score": None, "success": False}}, 1.0),  # -> lowest
    ("result", "ALG.SIGNED", {"result": {"score": None, "success": True}}, 2.0),  # no mastery
    ("{result: {mastery_at: 0.8}}", "ALG.1.2", {"result": {"score": {"scaled": 0.8}}}, 3.0),
    ("{result: {mastery_at: 0.8}}", "ALG.1.2", {"result": {"score": {"scaled": 0.4}}}, 2.0),
    ("{result: {mastery_at: 0.8}}", "ALG.1.2", {"result": {"score": {"scaled": 0.9}}}, 3.5),
    ("{result: {mastery_at: 0.7}}", "ALG.PCT", {"result": {"score": {"scaled": 0.7}}}, 70.0),
    ("{result: {mastery_at: 1}}", "ALG.1.2", {"result": {"score": {"scaled": 1}}}, 3.0),
    ("mastery", "ALG.1.2", {"result": None}, 3.0),
    ("mastery", "ALG.PCT", {}, 70.0),
    ("{level: Exemplary}", "ALG.1.2", {"result": {"score": {"scaled": 0.1}}}, 4.0),
    ("{level: Approaching}", "ALG.PCT", {}, 50.0),
    ("{points: 2.5}", "ALG.1.2", {}, 2.5),
])
def test_score_kinds(score: str, competency: str, stmt_changes: dict, expected: float) -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}",
                       f"[{{competency: {competency}, score: {score}}}]")
    got = points(ruleset, _apply(statement(), stmt_changes))
    assert got == [pytest.approx(expected)]


def test_result_score_without_score_or_success_matches_but_gives_no_evidence() -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}")
    stmt = statement(scaled=None, success=None)
    assert drafts(ruleset, stmt) == []
    check = explain_statement(stmt, [ruleset], COMPETENCIES).rules[0]
    assert check.matched and check.drafts == ()
    assert "no usable result.score and no result.success" in check.skipped[0]


def test_fixed_points_outside_the_scale_are_clamped_when_not_checked_at_load() -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: ALG.1.2, score: {points: 7}}]",
                       competencies=None)
    assert points(ruleset, statement()) == [4.0]


def test_points_on_the_mastery_boundary_reach_mastery_exactly() -> None:
    # Rounding keeps 0.1 + (0.3 - 0.1)-style float noise from landing just below mastery.
    scale = Scale(name="tenths", levels=[Level(name="a", points=0.1),
                                         Level(name="b", points=0.3, mastery=True),
                                         Level(name="c", points=0.7)])
    comps = {"t": _info("t", "T", scale)}
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: T, score: {result: "
                       "{mastery_at: 0.6}}}]", competencies=comps)
    [draft] = match_statement(statement(scaled=0.6), [ruleset], comps)
    assert draft.points >= scale.mastery_points
    assert scale.level_for(draft.points).name == "b"  # type: ignore[union-attr]


def test_review_flag_source_type_and_rule_key() -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: ALG.1.1, review: true, "
                       "source_type: internship}, {competency: c-12}]")
    first, second = drafts(ruleset, statement())
    assert (first.competency, first.rule, first.review, first.source_type) == (
        "c-11", "algebra:r", True, "internship")
    assert (second.competency, second.review, second.source_type) == (
        "c-12", False, "online_course")


def test_defaults_apply_and_evidence_overrides_them() -> None:
    ruleset = rules(f"""
        - id: a
          match: {{verb: {PASSED}}}
          evidence:
            - competency: DUP
            - {{competency: ALG.1.2, framework: alg, review: false, source_type: project,
               score: result}}
        - id: b
          match: {{provider: other-key}}
          evidence: [{{competency: ALG.1.2, framework: alg}}]
        """, defaults="{source_type: internship, review: true, score: mastery, "
                      "framework: geo, match: {provider: acme}}")
    got = [(d.rule, d.competency, d.points, d.review, d.source_type)
           for d in drafts(ruleset, statement(scaled=0.5))]
    assert got == [
        ("algebra:a", "c-dup-b", 3.0, True, "internship"),  # all from defaults; geo's DUP
        ("algebra:a", "c-12", 2.5, False, "project"),  # every default overridden
    ]  # rule b sets its own provider, replacing the default one
    got = [(d.rule, d.competency, d.points, d.review)
           for d in drafts(ruleset, statement(), provider="other-key")]
    assert got == [("algebra:b", "c-12", 3.0, True)]


# -------------------------------------------------------------------- CASE and dedupe


def test_case_uri_on_the_object_maps_without_any_rule() -> None:
    stmt = statement(activity=CASE + "c-pct", scaled=0.9)
    assert match_statement(stmt, [], COMPETENCIES) == [
        Draft("c-pct", CASE_RULE, 90.0, "assessment", False)]


def test_case_uri_in_context_activities_maps_each_competency_once() -> None:
    stmt = statement(scaled=0.5, context={"contextActivities": {
        "category": [{"id": CASE + "c-11"}, {"id": CASE + "c-pct"}],
        "other": {"id": CASE + "c-11"}}})
    got = match_statement(stmt, [], COMPETENCIES)
    assert [(d.competency, d.rule, d.points) for d in got] == [
        ("c-11", CASE_RULE, 2.5), ("c-pct", CASE_RULE, 50.0)]


def test_case_uri_without_a_score_or_success_gives_nothing() -> None:
    stmt = statement(activity=CASE + "c-11", scaled=None, success=None, verb=EXPERIENCED)
    assert match_statement(stmt, [], COMPETENCIES) == []
    explanation = explain_statement(stmt, [], COMPETENCIES)
    assert explanation.case_skipped and "no usable result.score" in explanation.case_skipped[0]


def test_case_uri_yields_to_a_rule_for_the_same_competency() -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: ALG.1.1, review: true}]")
    stmt = statement(context={"contextActivities": {"category": [{"id": CASE + "c-11"},
                                                                  {"id": CASE + "c-pct"}]}})
    got = drafts(ruleset, stmt)
    assert [(d.competency, d.rule) for d in got] == [("c-11", "algebra:r"),
                                                    ("c-pct", CASE_RULE)]
    explanation = explain_statement(stmt, [ruleset], COMPETENCIES)
    assert "already produced evidence" in explanation.case_skipped[0]


def test_one_draft_per_competency_and_rule() -> None:
    # the same competency by code and by identifier, twice in one rule
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: ALG.1.2, score: mastery}, "
                       "{competency: c-12, score: {level: Beginning}}]")
    assert [(d.competency, d.points) for d in drafts(ruleset, statement())] == [("c-12", 3.0)]
    # the same rule set passed twice: same rule keys, so no duplicates
    assert len(drafts([ruleset, ruleset], statement())) == 1
    # two rules for one competency: one draft each (distinct evidence keys)
    two = rules(f"""
        - id: a
          match: {{verb: {PASSED}}}
          evidence: [{{competency: ALG.1.2}}]
        - id: b
          match: {{activity: {{prefix: '{COURSE}'}}}}
          evidence: [{{competency: ALG.1.2}}]
        """)
    assert [d.rule for d in drafts(two, statement())] == ["algebra:a", "algebra:b"]


def test_rule_order_then_evidence_order_across_rule_sets() -> None:
    first = one_rule(f"{{verb: {PASSED}}}", "[{competency: ALG.1.2}, {competency: ALG.1.1}]",
                     name="first")
    second = one_rule(f"{{activity: {{glob: '{COURSE}**'}}}}", "[{competency: ALG.PCT}]",
                      name="second")
    got = drafts([first, second], statement())
    assert [(d.rule, d.competency) for d in got] == [
        ("first:r", "c-12"), ("first:r", "c-11"), ("second:r", "c-pct")]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"verb": {"id": V + "voided"}, "object": {"objectType": "StatementRef",
                                              "id": "2b6a7d0e-4c8f-4b61-9d5a-1f0e3c2b1a01"}},
     "voiding statement"),
    ({"object": {"objectType": "SubStatement", "actor": {"mbox": "mailto:a@x"},
                 "verb": {"id": PASSED}, "object": {"id": CASE + "c-11"}}}, "SubStatement"),
    ({"object": {"objectType": "StatementRef", "id": "2b6a7d0e-4c8f-4b61-9d5a-1f0e3c2b1a01"}},
     "'StatementRef', not an Activity"),
    ({"object": {"objectType": "Agent", "mbox": "mailto:b@x"}}, "'Agent', not an Activity"),
])
def test_statements_that_never_produce_evidence(changes: dict, reason: str) -> None:
    ruleset = one_rule("{result: {success: true}}")
    stmt = statement(context={"contextActivities": {"parent": [{"id": CASE + "c-11"}]}})
    stmt.update(changes)
    assert drafts(ruleset, stmt) == []
    explanation = explain_statement(stmt, [ruleset], COMPETENCIES)
    assert explanation.ignored and reason in explanation.ignored
    assert explanation.rules == () and explanation.drafts == ()
    assert "ignored:" in explanation.format()


def test_unresolvable_evidence_is_skipped_when_not_checked_at_load() -> None:
    ruleset = one_rule(f"{{verb: {PASSED}}}", "[{competency: NOPE}, {competency: DUP}, "
                       "{competency: ALG.1.2, score: {level: Expert}}, {competency: ALG.1.1}]",
                       competencies=None)
    assert [d.competency for d in drafts(ruleset, statement())] == ["c-11"]
    skipped = explain_statement(statement(), [ruleset], COMPETENCIES).rules[0].skipped
    assert len(skipped) == 3
    assert "unknown competency 'NOPE'" in skipped[0] and "t.yaml:" in skipped[0]
    assert "ambiguous" in skipped[1]
    assert "level 'Expert' is not on the scale" in skipped[2]


# --------------------------------------------------------------------------- explain


def test_explain_lists_every_rule_and_its_drafts_equal_match_statement() -> None:
    ruleset = rules(f"""
        - id: quiz
          match: {{verb: {PASSED}, activity: {{prefix: '{COURSE}'}}}}
          evidence: [{{competency: ALG.1.2}}]
        - id: project
          match: {{verb: {COMPLETED}}}
          evidence: [{{competency: ALG.1.1}}]
        """)
    stmt = statement(context={"contextActivities": {"category": [{"id": CASE + "c-pct"}]}})
    explanation = explain_statement(stmt, [ruleset], COMPETENCIES)
    assert [(c.rule, c.matched, c.line) for c in explanation.rules] == [
        ("algebra:quiz", True, 4), ("algebra:project", False, 7)]
    failed = explanation.rules[1].failed
    assert failed is not None and failed.name == "verb" and failed.line == 8
    assert str(failed) == f"verb: needs {COMPLETED}; statement has {PASSED}"
    assert explanation.agent == "mbox|mailto:anna@example.org"
    assert explanation.provider == "acme"
    plain = [replace(d, notes=[]) for d in explanation.drafts]
    assert plain == drafts(ruleset, stmt)
    assert explanation.drafts[0].notes[0] == "algebra:quiz (t.yaml:6)"
    assert "scaled 0.8 -> 3.4" in explanation.drafts[0].notes[1]
    text = explanation.format()
    assert "MATCH    algebra:quiz (t.yaml:4)" in text
    assert f"no match algebra:project (t.yaml:7): verb: needs {COMPLETED}" in text
    assert "CASE URI -> c-pct: 80 points (assessment)" in text


# ------------------------------------------------------------------------- loading


def test_a_full_rule_file_loads_and_round_trips_to_json(tmp_path: Path) -> None:
    # anchors and merge keys share a match block between rules
    text = textwrap.dedent(f"""\
        ruleset: algebra-online
        defaults:
          source_type: online_course
          match: {{provider: [acme]}}
        rules:
          - id: quiz-passed
            match: &quiz
              verb: [{PASSED}, {COMPLETED}]
              activity: {{prefix: "{COURSE}", glob: "https://x.example/*/quiz-*"}}
              result: {{success: true, scaled: {{min: 0.5, max: 1.0}}}}
            evidence: [{{competency: ALG.1.2}}]
          - id: quiz-unit-3
            match:
              <<: *quiz
              context_activity: {{parent: "{COURSE}unit-3"}}
            evidence: [{{competency: c-11, score: {{level: Proficient}}, review: true}}]
    """)
    path = tmp_path / "algebra.yaml"
    path.write_text(text, encoding="utf-8")
    ruleset = load_ruleset_file(path, competencies=COMPETENCIES)
    assert ruleset.name == "algebra-online" and ruleset.text == text
    assert [r.key for r in ruleset.rules] == ["algebra-online:quiz-passed",
                                             "algebra-online:quiz-unit-3"]
    stored = json.loads(json.dumps(ruleset.to_dicts()))
    assert stored[1]["match"]["provider"] == ["acme"]
    assert stored[1]["match"]["verb"] == sorted([PASSED, COMPLETED])
    assert stored[1]["match"]["context_activity"] == {"parent": {"exact": [COURSE + "unit-3"]}}
    assert stored[1]["evidence"] == [{"competency": "c-11", "score": {"level": "Proficient"},
                                      "source_type": "online_course", "review": True}]
    stmt = statement(context={"contextActivities": {"parent": [{"id": COURSE + "unit-3"}]}})
    assert [d.rule for d in drafts(ruleset, stmt)] == ["algebra-online:quiz-passed",
                                                      "algebra-online:quiz-unit-3"]


def test_the_module_docstring_example_is_a_valid_rule_file() -> None:
    import mappings.rules as module

    doc = module.__doc__ or ""
    block = doc.split("One YAML document per file::\n\n", 1)[1].split("\n\n``score``")[0]
    text = textwrap.dedent(block)
    comps = dict(COMPETENCIES)
    comps["5c1f0d3e-0f0a-4b59-9d7e-1d2f3a4b5c6d"] = _info(
        "5c1f0d3e-0f0a-4b59-9d7e-1d2f3a4b5c6d", "ALG.9", framework="algebra-2024")
    comps["c-12"] = replace(comps["c-12"], framework="algebra-2024")
    ruleset = load_ruleset(text, filename="example.yaml", competencies=comps)
    assert ruleset.rules[0].key == "algebra-online:quiz-passed"


H = "ruleset: a\ndefaults: {source_type: project}\nrules:\n"  # lines 1-3; rules from line 4
EV = "    evidence: [{competency: ALG.1.2}]\n"
M = f"  - id: x\n    match: {{verb: {PASSED}}}\n    evidence:\n"  # lines 4-6 after H

LOAD_ERRORS = [
    # (file text, expected "file:line: path: message" fragment)
    ("ruleset: a\nrules:\n  - id: x\n    match: {verb: [a, b}\n",
     "bad.yaml:4: YAML syntax error"),
    ("ruleset: a\nrules: []\n---\nruleset: b\n",
     "bad.yaml:3: a rule file holds one YAML document"),
    ("# nothing here\n", "bad.yaml:1: the file is empty"),
    ("- ruleset: a\n", "bad.yaml:1: must be a mapping with 'ruleset' and 'rules', not a list"),
    ("rules: []\n", "bad.yaml:1: missing required key 'ruleset'"),
    ("ruleset: a\nrule: []\n", "bad.yaml:2: rule: unknown key 'rule' (did you mean 'rules'?)"),
    ("ruleset: my rules\nrules: []\n",
     "bad.yaml:1: ruleset: ruleset name 'my rules' may contain only letters"),
    ("ruleset: a\nrules: []\n", "bad.yaml:2: rules: must list at least one rule"),
    ("ruleset: a\nrules: oops\n", "bad.yaml:2: rules: must be a list of rules, not the string"),
    ("ruleset: a\nruleset: b\nrules: []\n",
     "bad.yaml:2: ruleset: duplicate key 'ruleset' (first on line 1)"),
    (H + f"  - id: x\n    match: {{verb: {PASSED}}}\n" + EV
     + f"  - id: x\n    match: {{verb: {PASSED}}}\n" + EV,
     "bad.yaml:7: rules[1].id: duplicate rule id 'x' (first on line 4)"),
    (H + "  - id: x\n    match:\n      verb: passed\n" + EV,
     "bad.yaml:6: rules[0].match.verb: 'passed' is not an absolute IRI (did you mean "
     "http://adlnet.gov/expapi/verbs/passed?)"),
    (H + f"  - id: x\n    match:\n      verb: [{PASSED}, 'not an iri']\n" + EV,
     "bad.yaml:6: rules[0].match.verb[1]: 'not an iri' is not an absolute IRI"),
    (H + f"  - id: x\n    match:\n      verb: {V}voided\n" + EV,
     "bad.yaml:6: rules[0].match.verb: voiding statements never produce evidence"),
    (H + "  - id: x\n    match:\n      activity: {glob: 'https://x.example/[ab'}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.glob: bad glob 'https://x.example/[ab': '[' at "
     "position 19 is never closed"),
    (H + "  - id: x\n    match:\n      activity: {glob: 'https://x.example/***'}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.glob: bad glob 'https://x.example/***': '***' at "
     "position 19"),
    (H + "  - id: x\n    match:\n      activity: {glob: 'x.example/*/quiz'}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.glob: bad glob 'x.example/*/quiz': must start "
     "with an IRI scheme"),
    (H + "  - id: x\n    match:\n      activity: {glob: ['https://x.example/quiz']}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.glob[0]: bad glob 'https://x.example/quiz': has "
     "no wildcard"),
    (H + "  - id: x\n    match:\n      activity: {glob: 'https://x.example/[]'}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.glob: bad glob 'https://x.example/[]': empty "
     "character class"),
    (H + "  - id: x\n    match:\n      activity: {glob: 'https://x.example/[z-a]*'}\n" + EV,
     "bad character class"),
    (H + "  - id: x\n    match:\n      activity: {prefix: courses.example.com/}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.prefix: prefix 'courses.example.com/' must start "
     "with an IRI scheme"),
    (H + "  - id: x\n    match:\n      activity: {}\n" + EV,
     "bad.yaml:6: rules[0].match.activity: give at least one of exact, prefix or glob"),
    (H + "  - id: x\n    match:\n      activity: {regex: '.*'}\n" + EV,
     "bad.yaml:6: rules[0].match.activity.regex: unknown key 'regex'; allowed: exact, "
     "prefix, glob"),
    (H + "  - id: x\n    match:\n      actor: me\n" + EV,
     "bad.yaml:6: rules[0].match.actor: unknown key 'actor'"),
    (H + "  - id: x\n    match:\n      result:\n        scaled: {min: 0.9, max: 0.5}\n" + EV,
     "bad.yaml:7: rules[0].match.result.scaled: min 0.9 is greater than max 0.5"),
    (H + "  - id: x\n    match:\n      result:\n        raw: {min: 9, max: 1}\n" + EV,
     "bad.yaml:7: rules[0].match.result.raw: min 9 is greater than max 1"),
    (H + "  - id: x\n    match:\n      result:\n        scaled: {min: 50}\n" + EV,
     "bad.yaml:7: rules[0].match.result.scaled.min: 50 is outside -1..1"),
    (H + "  - id: x\n    match:\n      result:\n        scaled: {max: high}\n" + EV,
     "bad.yaml:7: rules[0].match.result.scaled.max: must be a finite number, not the "
     "string 'high'"),
    (H + "  - id: x\n    match:\n      result: {success: 'yes please'}\n" + EV,
     "bad.yaml:6: rules[0].match.result.success: must be true or false, not the string "
     "'yes please'"),
    (H + "  - id: x\n    match:\n      context_activity: {parents: 'https://x.example/'}\n" + EV,
     "bad.yaml:6: rules[0].match.context_activity.parents: unknown key 'parents' (did you "
     "mean 'parent'?)"),
    (H + "  - id: x\n    match:\n      extensions: {'https://x.example/e': 2024-01-01}\n" + EV,
     "bad.yaml:6: rules[0].match.extensions[https://x.example/e]: value must be JSON (YAML "
     "read it as a date)"),
    (H + "  - id: x\n    match:\n      extensions: {unit: 3}\n" + EV,
     "bad.yaml:6: rules[0].match.extensions key: 'unit' is not an absolute IRI"),
    (H + "  - id: x\n    match:\n      provider: []\n" + EV,
     "bad.yaml:6: rules[0].match.provider: must not be an empty list"),
    (H + "  - id: x\n    match: {}\n" + EV,
     "bad.yaml:5: rules[0].match: a rule needs at least one condition"),
    (H + "  - id: x\n" + EV, "bad.yaml:4: rules[0]: missing required key 'match'"),
    (H + f"  - id: x\n    match: {{verb: {PASSED}}}\n    evidence: []\n",
     "bad.yaml:6: rules[0].evidence: must list at least one evidence entry"),
    (H + f"  - id: x\n    match: {{verb: {PASSED}}}\n",
     "bad.yaml:4: rules[0]: missing required key 'evidence'"),
    (H + M + "      - competency: ALG.1.2\n        source_type: onlinecourse\n",
     "bad.yaml:8: rules[0].evidence[0].source_type: unknown source type 'onlinecourse' (did "
     "you mean 'online_course'?)"),
    (f"ruleset: a\nrules:\n  - id: x\n    match: {{verb: {PASSED}}}\n" + EV,
     "bad.yaml:5: rules[0].evidence[0]: missing 'source_type' (and defaults.source_type is "
     "not set)"),
    (H + M + "      - competency: ALG.1.2\n        score: scaled\n",
     "bad.yaml:8: rules[0].evidence[0].score: must be 'result', 'mastery', {result: "
     "{mastery_at: X}}, {level: NAME} or {points: N}, not the string 'scaled'"),
    (H + M + "      - competency: ALG.1.2\n        score: {level: Proficient, points: 3}\n",
     "bad.yaml:8: rules[0].evidence[0].score: must have exactly one of result, level, "
     "points; found level, points"),
    (H + M + "      - competency: ALG.1.2\n        score: {result: {mastery_at: 0}}\n",
     "bad.yaml:8: rules[0].evidence[0].score.result.mastery_at: 0 must lie in (0, 1]"),
    (H + M + "      - competency: ALG.1.2\n        review: maybe\n",
     "bad.yaml:8: rules[0].evidence[0].review: must be true or false, not the string 'maybe'"),
    (H + M + "      - competency: ALG.1.9\n",
     "bad.yaml:7: rules[0].evidence[0].competency: unknown competency 'ALG.1.9': no such "
     "identifier or code (did you mean"),
    (H + M + "      - competency: DUP\n",
     "bad.yaml:7: rules[0].evidence[0].competency: competency code 'DUP' is ambiguous: "
     "c-dup-a (alg), c-dup-b (geo)"),
    (H + M + "      - competency: ALG.1.2\n        framework: geo\n",
     "bad.yaml:7: rules[0].evidence[0].competency: unknown competency 'ALG.1.2' in framework "
     "'geo'"),
    (H + M + "      - competency: ALG.1.2\n        score: {level: Mastered}\n",
     "bad.yaml:8: rules[0].evidence[0].score: level 'Mastered' is not on the scale 'Four "
     "levels' of ALG.1.2 (c-12) (levels: Beginning, Developing, Proficient, Exemplary)"),
    (H + M + "      - competency: ALG.PCT\n        score: {points: 101}\n",
     "bad.yaml:8: rules[0].evidence[0].score: 101 points is outside the scale 'Percent' of "
     "ALG.PCT (c-pct) (0..100)"),
    (H + M + "      - competency: ALG.1.2\n        weight: 2\n",
     "bad.yaml:8: rules[0].evidence[0].weight: unknown key 'weight'"),
    ("ruleset: a\ndefaults: {source_type: nope}\nrules: []\n",
     "bad.yaml:2: defaults.source_type: unknown source type 'nope'"),
    (H + "  - id: x\n    match: {verb: !custom x}\n" + EV,
     "bad.yaml:5: rules[0].match.verb: cannot read this value"),
    ("ruleset: a\nrules:\n  - {id: x, match: {verb: 'https://x/\x07'}}\n",
     "bad.yaml:3: YAML error: special characters are not allowed"),
]


@pytest.mark.parametrize(("text", "expected"), LOAD_ERRORS)
def test_load_errors_name_file_line_and_problem(text: str, expected: str) -> None:
    with pytest.raises(RuleError) as caught:
        load_ruleset(text, filename="bad.yaml", competencies=COMPETENCIES)
    messages = [str(p) for p in caught.value.problems]
    assert any(expected in m for m in messages), messages
    assert all(m.startswith("bad.yaml:") for m in messages)


def test_a_bad_default_source_type_is_reported_once_not_per_evidence_entry() -> None:
    text = ("ruleset: a\ndefaults: {source_type: nope}\nrules:\n"
            + M + "      - competency: ALG.1.2\n      - competency: ALG.1.1\n")
    with pytest.raises(RuleError) as caught:
        load_ruleset(text, filename="bad.yaml", competencies=COMPETENCIES)
    assert [p.line for p in caught.value.problems] == [2]


def test_every_problem_is_reported_sorted_by_line() -> None:
    text = textwrap.dedent(f"""\
        ruleset: a
        defaults: {{source_type: project}}
        rules:
          - id: x
            match: {{verb: passed}}
            evidence: [{{competency: ALG.1.2, source_type: nope}}]
          - id: y
            match: {{verb: {PASSED}, result: {{scaled: {{min: 1, max: 0}}}}}}
            evidence: [{{competency: ALG.404}}]
    """)
    with pytest.raises(RuleError) as caught:
        load_ruleset(text, filename="multi.yaml", competencies=COMPETENCIES)
    assert [(p.line, p.path) for p in caught.value.problems] == [
        (5, "rules[0].match.verb"), (6, "rules[0].evidence[0].source_type"),
        (8, "rules[1].match.result.scaled"), (9, "rules[1].evidence[0].competency")]
    assert str(caught.value).splitlines()[0] == (
        "multi.yaml:5: rules[0].match.verb: 'passed' is not an absolute IRI (did you mean "
        "http://adlnet.gov/expapi/verbs/passed?)")


def test_competency_checks_happen_only_when_competencies_are_given() -> None:
    text = ("ruleset: a\ndefaults: {source_type: project}\nrules:\n"
            f"  - id: x\n    match: {{verb: {PASSED}}}\n"
            "    evidence: [{competency: ALG.404, score: {level: Whatever}}]\n")
    assert load_ruleset(text, filename="a.yaml").rules[0].evidence[0].competency == "ALG.404"
    with pytest.raises(RuleError, match=r"a\.yaml:6: .*unknown competency 'ALG\.404'"):
        load_ruleset(text, filename="a.yaml", competencies=COMPETENCIES)


# ------------------------------------------------------------------------ properties

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=6))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=8)
ids = st.sampled_from([
    COURSE + "unit-3/quiz-1", COURSE + "unit-3", COURSE + "a/b/quiz-1", COURSE,
    "https://x.example/", CASE + "c-11", CASE + "c-pct", CASE + "c-signed", CASE + "cat",
]) | st.text(max_size=12)
numbers = st.floats() | st.integers(min_value=-10**400, max_value=10**400) | json_scalars
activity = st.fixed_dictionaries({"id": ids | json_scalars}, optional={
    "objectType": st.sampled_from(["Activity", "Agent", "SubStatement", "StatementRef"])
    | json_scalars,
    "definition": st.fixed_dictionaries({}, optional={
        "type": st.sampled_from([ASSESSMENT]) | json_values,
        "extensions": st.dictionaries(st.sampled_from([UNIT_EXT]) | st.text(max_size=4),
                                      json_values, max_size=2)}) | json_values,
})
result = st.fixed_dictionaries({}, optional={
    "success": st.booleans() | json_scalars, "completion": st.booleans() | json_scalars,
    "score": st.fixed_dictionaries({}, optional={k: numbers for k in ("scaled", "raw", "min",
                                                                       "max")}) | json_values,
    "extensions": st.dictionaries(st.sampled_from([UNIT_EXT]), json_values) | json_values,
}) | json_values
context = st.fixed_dictionaries({}, optional={
    "contextActivities": st.dictionaries(
        st.sampled_from(["parent", "grouping", "category", "other"]) | st.text(max_size=4),
        activity | st.lists(activity | json_scalars, max_size=3) | json_scalars, max_size=4)
    | json_values,
    "extensions": st.dictionaries(st.sampled_from([UNIT_EXT]), json_values) | json_values,
}) | json_values
random_statements = st.fixed_dictionaries({}, optional={
    "actor": st.fixed_dictionaries({"mbox": st.just("mailto:a@x")}) | json_values,
    "verb": st.fixed_dictionaries({}, optional={
        "id": st.sampled_from([PASSED, COMPLETED, EXPERIENCED, V + "voided"]) | json_scalars})
    | json_values,
    "object": activity | json_values,
    "result": result,
    "context": context,
    "authority": st.fixed_dictionaries({"account": st.fixed_dictionaries(
        {"name": st.sampled_from(["acme", "other"]) | json_scalars})}) | json_values,
}) | json_values
# Mostly well-formed statements with tricky values, so that rules really match and score.
known_ids = st.sampled_from([COURSE + "unit-3/quiz-1", COURSE + "a/b/quiz-1", COURSE + "u",
                             "https://x.example/", CASE + "c-11", CASE + "c-pct",
                             CASE + "c-signed", CASE + "cat"])
ext_values = st.sampled_from([3, 3.0, "3", True, 1, None, [3]])
scores = (st.floats(min_value=-2, max_value=2) | st.sampled_from([math.nan, math.inf, -1, 1, 0])
          | st.integers(min_value=-10**400, max_value=10**400))
plausible_statements = st.fixed_dictionaries({
    "verb": st.fixed_dictionaries({"id": st.sampled_from([PASSED, COMPLETED, EXPERIENCED])}),
    "object": st.fixed_dictionaries({
        "id": known_ids,
        "definition": st.fixed_dictionaries({"type": st.sampled_from([ASSESSMENT, COURSE])},
                                            optional={"extensions": st.fixed_dictionaries(
                                                {UNIT_EXT: ext_values})})},
        optional={"objectType": st.just("Activity")}),
    "result": st.fixed_dictionaries({
        "success": st.booleans() | st.none(), "completion": st.booleans(),
        "score": st.fixed_dictionaries({}, optional={k: scores for k in ("scaled", "raw",
                                                                          "min", "max")}),
    }, optional={"extensions": st.fixed_dictionaries({UNIT_EXT: ext_values})}),
}, optional={
    "context": st.fixed_dictionaries({}, optional={
        "contextActivities": st.dictionaries(
            st.sampled_from(["parent", "grouping", "category", "other"]),
            st.lists(st.fixed_dictionaries({"id": known_ids}), max_size=3)
            | st.fixed_dictionaries({"id": known_ids})),
        "extensions": st.fixed_dictionaries({UNIT_EXT: ext_values})}),
    "authority": st.just({"account": {"homePage": "https://lrs", "name": "acme"}}),
})
statements = plausible_statements | plausible_statements | random_statements

PROPERTY_RULES = rules(f"""
    - id: all-kinds
      match:
        verb: [{PASSED}, {COMPLETED}]
        activity: {{prefix: '{COURSE}', glob: '{COURSE}**/quiz-?', exact: https://x.example/}}
        activity_type: {ASSESSMENT}
        result: {{scaled: {{min: -0.5}}}}
      evidence:
        - {{competency: ALG.1.2, score: result}}
        - {{competency: ALG.SIGNED, score: {{result: {{mastery_at: 0.6}}}}, review: true}}
        - {{competency: ALG.SINGLE, score: result}}
        - {{competency: ALG.PCT, score: {{level: Approaching}}}}
    - id: context-and-extensions
      match:
        context_activity: {{any: {{prefix: '{CASE}'}}, parent: {{glob: '{COURSE}*'}}}}
        extensions: {{'{UNIT_EXT}': 3}}
      evidence:
        - {{competency: ALG.PCT, score: result}}
        - {{competency: ALG.1.1, score: mastery}}
    - id: flags
      match:
        provider: acme
        result: {{success: true, completion: false, raw: {{min: 0}}}}
      evidence:
        - {{competency: ALG.SIGNED, score: {{points: 1.5}}}}
        - {{competency: ALG.1.2, score: {{result: {{mastery_at: 1}}}}}}
""")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stmt=statements, provider=st.none() | st.sampled_from(["acme", "other"]))
def test_random_statements_never_raise_and_points_stay_on_the_scale(
        stmt: object, provider: str | None) -> None:
    got = match_statement(stmt, [PROPERTY_RULES], COMPETENCIES,  # type: ignore[arg-type]
                          provider=provider)
    assert isinstance(got, list)
    assert len({(d.competency, d.rule) for d in got}) == len(got)
    for draft in got:
        assert isinstance(draft, Draft)
        scale = COMPETENCIES[draft.competency].scale
        low = min(level.points for level in scale.levels)
        assert low <= draft.points <= scale.top_points
        assert math.isfinite(draft.points)
    explanation = explain_statement(stmt, [PROPERTY_RULES], COMPETENCIES,  # type: ignore[arg-type]
                                    provider=provider)
    assert [replace(d, notes=[]) for d in explanation.drafts] == got
    assert isinstance(explanation.format(), str)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ruleset: id-\n []{}&*<>!'\"#,rules"
                                                   "matchverbevidence0123.:/-_"))
                    | st.characters(), max_size=120))
def test_random_rule_text_raises_only_rule_errors(text: str) -> None:
    try:
        load_ruleset(text, filename="fuzz.yaml", competencies=COMPETENCIES)
    except RuleError as exc:
        assert all(str(p).startswith("fuzz.yaml:") for p in exc.problems)
        assert exc.problems


def test_a_held_matcher_equals_match_statement() -> None:
    matcher = Matcher([PROPERTY_RULES], COMPETENCIES)
    stmt = statement(activity=COURSE + "x/quiz-1",
                     context={"contextActivities": {"parent": [{"id": COURSE + "u"}],
                                                    "category": [{"id": CASE + "c-signed"}]},
                              "extensions": {UNIT_EXT: 3}})
    got = matcher.match(stmt)
    assert got == match_statement(stmt, [PROPERTY_RULES], COMPETENCIES)
    assert {d.rule for d in got} == {"algebra:all-kinds", "algebra:context-and-extensions"}
