"""Frameworks: CASE 1.0/1.1 import, the native YAML format, saving in place, CASE 1.1 export,
built-in scales, and fetching packages from a CASE server over real HTTP."""

from __future__ import annotations

import copy
import datetime as dt
import http.server
import json
import re
import socket
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from mappings import evidence, models, records
from mappings.frameworks import (
    EXTENSION_KEY,
    FrameworkError,
    ImportedFramework,
    build_case_package,
    builtin_scales,
    check_calculation,
    export_case,
    fetch_case_package,
    parse_case_package,
    parse_yaml_framework,
    sample_case_package,
    sample_framework,
    save_framework,
    scale_from_data,
    to_documents,
)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# --------------------------------------------------------------------------- helpers


def imported_tree(imported: ImportedFramework, key: str = "code") -> list:
    """[(label, type, [children...]), ...] in sibling order."""
    def build(parent: str | None) -> list:
        return [(getattr(c, key), c.type, build(c.identifier)) for c in imported.children(parent)]
    return build(None)


def imported_precedes(imported: ImportedFramework) -> set[tuple[str, str]]:
    codes = {c.identifier: c.code for c in imported.competencies}
    return {(c.code, codes[s]) for c in imported.competencies for s in c.precedes}


def stored_tree(framework_id: str) -> list:
    comps = list(models.Competency.objects(framework=framework_id))

    def build(parent: str | None) -> list:
        kids = sorted((c for c in comps if c.parent == parent), key=lambda c: c.position)
        return [(c.code, c.type, build(c.identifier)) for c in kids]
    return build(None)


def stored_precedes(framework_id: str) -> set[tuple[str, str]]:
    comps = {c.identifier: c for c in models.Competency.objects(framework=framework_id)}
    return {(c.code, comps[s].code) for c in comps.values() for s in c.precedes}


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


SAMPLE_TREE = [
    ("ALG.1", "Strand", [("ALG.1.1", "Competency", []), ("ALG.1.2", "Competency", []),
                         ("ALG.1.3", "Competency", []), ("ALG.1.4", "Competency", [])]),
    ("ALG.2", "Strand", [("ALG.2.1", "Competency", []), ("ALG.2.2", "Competency", []),
                         ("ALG.2.3", "Competency", [])]),
    ("ALG.3", "Strand", [("ALG.3.1", "Competency", []), ("ALG.3.2", "Competency", [])]),
    ("ALG.4", "Strand", [("ALG.4.1", "Competency", []), ("ALG.4.2", "Competency", []),
                         ("ALG.4.3", "Competency", []), ("ALG.4.4", "Competency", [])]),
]
SAMPLE_PRECEDES = {
    ("ALG.1.1", "ALG.1.2"), ("ALG.1.1", "ALG.4.1"), ("ALG.1.2", "ALG.1.3"),
    ("ALG.1.3", "ALG.1.4"), ("ALG.1.3", "ALG.2.1"), ("ALG.2.1", "ALG.2.2"),
    ("ALG.2.2", "ALG.2.3"), ("ALG.2.2", "ALG.3.1"), ("ALG.2.2", "ALG.4.4"),
    ("ALG.3.1", "ALG.3.2"), ("ALG.4.1", "ALG.4.2"), ("ALG.4.2", "ALG.4.3"),
    ("ALG.4.2", "ALG.4.4"),
}

# Small CASE packages written by hand, in the shape real servers send.
DOC = "c1a7d1a0-0000-4000-8000-000000000001"
A = "c1a7d1a0-0000-4000-8000-00000000000a"
A1 = "c1a7d1a0-0000-4000-8000-0000000000a1"
A2 = "c1a7d1a0-0000-4000-8000-0000000000a2"
B = "c1a7d1a0-0000-4000-8000-00000000000b"
SRV = "https://case.example.org/ims/case/v1p0"


def node(ident: str, title: str = "", kind: str = "CFItems") -> dict[str, str]:
    return {"title": title or ident[-2:], "identifier": ident, "uri": f"{SRV}/{kind}/{ident}"}


def item(ident: str, code: str, statement: str, **extra: Any) -> dict[str, Any]:
    return {"identifier": ident, "uri": f"{SRV}/CFItems/{ident}", "humanCodingScheme": code,
            "fullStatement": statement, "lastChangeDateTime": "2017-11-03T23:02:07+00:00",
            **extra}


def assoc(n: int, kind: str, origin: str, dest: str, seq: int | None = None,
          dest_kind: str = "CFItems") -> dict[str, Any]:
    data: dict[str, Any] = {
        "identifier": f"c1a7d1a0-0000-4000-8000-{n:012d}", "associationType": kind,
        "uri": f"{SRV}/CFAssociations/{n}", "originNodeURI": node(origin),
        "destinationNodeURI": node(dest, kind=dest_kind),
        "lastChangeDateTime": "2017-11-03T23:02:07+00:00"}
    if seq is not None:
        data["sequenceNumber"] = seq
    return data


def case_v1p0() -> dict[str, Any]:
    """A CASE 1.0 package: no caseVersion, CFPackageURI/CFDocumentURI (1.0-only), siblings
    listed out of order with sequenceNumbers putting them right, an exactMatchOf link to
    another framework (ignored)."""
    return {
        "CFDocument": {
            "identifier": DOC, "uri": f"{SRV}/CFDocuments/{DOC}", "creator": "State DOE",
            "title": "Science Practices", "lastChangeDateTime": "2017-11-03T23:00:33+00:00",
            "CFPackageURI": node(DOC, "Science Practices", "CFPackages"),
            "subject": "Science", "statusStartDate": "2017-08-01T00:00:00+00:00",
            "licenseURI": None,
        },
        "CFItems": [
            item(A2, "SP.1.2", "Plan and carry out investigations.", CFItemType="Standard",
                 CFDocumentURI=node(DOC, "Science Practices", "CFDocuments")),
            item(A, "SP.1", "Investigating", CFItemType="Domain"),
            item(A1, "SP.1.1", "Ask questions and define problems.", CFItemType="Standard",
                 educationLevel="09"),
            item(B, "SP.2", "Communicating", CFItemTypeURI={
                "title": "Domain", "identifier": DOC, "uri": f"{SRV}/CFItemTypes/x"}),
        ],
        "CFAssociations": [
            assoc(1, "isChildOf", A2, A, 2),
            assoc(2, "isChildOf", A, DOC, 1, "CFDocuments"),
            assoc(3, "isChildOf", A1, A, 1),
            assoc(4, "isChildOf", B, DOC, 2, "CFDocuments"),
            assoc(5, "precedes", A1, A2),
            {**assoc(6, "exactMatchOf", A1, A1),
             "destinationNodeURI": {"title": "NGSS SEP-1", "identifier": "sep-1",
                                    "uri": "https://other.example.org/sep-1"}},
        ],
        "CFDefinitions": {"CFConcepts": [], "CFSubjects": [], "CFLicenses": [],
                          "CFItemTypes": [], "CFAssociationGroupings": []},
    }


def case_v1p1() -> dict[str, Any]:
    """A CASE 1.1 package: caseVersion, frameworkType, third-party extensions, targetType,
    an ``ext:`` association type, string sequenceNumbers, an association that identifies
    its nodes by URI only, and an item reused under two parents."""
    pkg = case_v1p0()
    doc = pkg["CFDocument"]
    del doc["CFPackageURI"]
    doc.update(caseVersion="1.1", frameworkType="Competency",
               extensions={"vendor": {"color": "blue"}})
    for entry in pkg["CFItems"]:
        entry.pop("CFDocumentURI", None)
    pkg["CFItems"][0]["extensions"] = {"vendor": {"note": "kept in raw"}}
    for entry in pkg["CFAssociations"]:
        entry["originNodeURI"]["targetType"] = "CASE"
        if "sequenceNumber" in entry:
            entry["sequenceNumber"] = str(entry["sequenceNumber"])
    # By URI only (identifier field holds something else).
    pkg["CFAssociations"][2]["originNodeURI"]["identifier"] = "see-uri"
    pkg["CFAssociations"].append(assoc(7, "ext:isPrerequisiteOf", A1, B))
    pkg["CFAssociations"].append(assoc(8, "isChildOf", A2, B, 1))  # second parent
    return pkg


# --------------------------------------------------------------------------- scales


def test_builtin_scales() -> None:
    scales = builtin_scales()
    assert set(scales) == {"four-level", "performance-levels"}
    four = scales["four-level"]
    assert [(lv.name, lv.points) for lv in four.levels] == [
        ("Beginning", 1), ("Developing", 2), ("Proficient", 3), ("Advanced", 4)]
    assert four.mastery_points == 3
    perf = scales["performance-levels"]
    assert [lv.points for lv in perf.levels] == list(range(1, 11))
    assert perf.mastery_points == 7 and perf.top_points == 10
    assert perf.level_for(7.4).name == "Level 7 (Proficient)"
    # Fresh objects each call: changing one does not change the next.
    four.levels[0].name = "changed"
    assert builtin_scales()["four-level"].levels[0].name == "Beginning"


@pytest.mark.parametrize("levels, problem", [
    ([{"name": "a", "points": 1, "mastery": True}, {"name": "b", "points": 2, "mastery": True}],
     "has 2 mastery levels"),
    ([{"name": "a", "points": 1}, {"name": "b", "points": 2}], "has 0 mastery levels"),
    ([{"name": "a", "points": 2}, {"name": "b", "points": 2, "mastery": True}],
     "level 'b' (2 points) does not rise above 'a'"),
    ([{"name": "a", "points": 3, "mastery": True}, {"name": "b", "points": 1}],
     "points must strictly increase"),
    ([{"name": "a", "points": "high", "mastery": True}], "points must be a number"),
    ([], "has no levels"),
])
def test_scale_validation(levels: list, problem: str) -> None:
    with pytest.raises(FrameworkError, match=re.escape(problem)) as err:
        scale_from_data({"name": "custom", "levels": levels}, "here")
    assert str(err.value).startswith("here")


@pytest.mark.parametrize("text, expected", [
    ("decaying_average(0.65)", "decaying_average(0.65)"), ("highest", "highest"),
    (" n_mastery( 3 ) ", "n_mastery(3)"), ("weighted_average(0.5)", "weighted_average(0.5)"),
])
def test_calculation_accepted(text: str, expected: str) -> None:
    assert check_calculation(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("decaying_average(65)", "between 0 and 1"), ("median", "unknown calculation"),
    ("decaying_average(1)", "between 0 and 1"),
    ("n_mastery(0)", "positive integer"), ("highest(2)", "takes no parameter"),
    ("decaying_average", "needs a parameter"),
])
def test_calculation_rejected(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_calculation(text)


# --------------------------------------------------------------------------- sample YAML


def test_sample_yaml_parses_into_the_course() -> None:
    sample = sample_framework()
    assert sample.identifier == "algebra-1-cbe"
    assert sample.title == "Algebra I (competency-based)"
    assert sample.scale.name == "performance-levels" and sample.scale.mastery_points == 7
    assert sample.calculation == "decaying_average(0.65)"
    assert imported_tree(sample) == SAMPLE_TREE
    assert imported_precedes(sample) == SAMPLE_PRECEDES
    assert 12 <= len(sample.competencies) <= 18 and sample.warnings == []
    rollups = {c.code: (c.rollup.method, c.rollup.required, c.rollup.points)
               for c in sample.competencies if c.rollup}
    assert rollups == {"ALG.1": ("points", ["alg1-1-2"], 28), "ALG.2": ("all_children", [], None),
                       "ALG.3": ("average", [], None), "ALG.4": ("points", ["alg1-4-3"], 28)}
    [credit] = sample.credit_rules
    assert credit.name == "Algebra I credit" and credit.min_percent == 70
    assert credit.competencies == [c.identifier for c in sample.leaves()]
    assert len(credit.competencies) == 13


def test_save_sample_yaml(app) -> None:
    from mappings.catalog import current_version

    before = current_version()
    framework = save_framework(sample_framework())
    assert current_version() == before + 1  # running workers reload the frameworks
    assert framework.identifier == "algebra-1-cbe" and framework.source == "yaml"
    assert framework.scale.mastery_points == 7
    assert stored_tree("algebra-1-cbe") == SAMPLE_TREE
    assert stored_precedes("algebra-1-cbe") == SAMPLE_PRECEDES
    strand = models.Competency.objects.get(identifier="alg1-1")
    assert strand.rollup.method == "points" and strand.rollup.required == ["alg1-1-2"]
    leaf = models.Competency.objects.get(identifier="alg1-4-3")
    assert leaf.parent == "alg1-4" and leaf.position == 2 and leaf.rollup.method == "none"
    credit = models.CreditRule.objects.get(identifier="algebra-1-cbe-credit")
    assert credit.framework == "algebra-1-cbe" and len(credit.competencies) == 13
    assert credit.min_percent == 70


# --------------------------------------------------------------------------- CASE import


def test_sample_case_package_is_the_same_framework() -> None:
    package = sample_case_package()
    imported = parse_case_package(package, source="sample_case_package.json")
    assert imported.case_version == "1.1" and imported.warnings == []
    assert imported.title == "Algebra I (competency-based)"
    assert imported_tree(imported) == SAMPLE_TREE
    assert imported_precedes(imported) == SAMPLE_PRECEDES
    assert imported.scale.name == "performance-levels"
    assert imported.calculation == "decaying_average(0.65)"
    assert all(UUID.match(c.identifier) for c in imported.competencies)
    [credit] = imported.credit_rules
    by_id = {c.identifier: c for c in imported.competencies}
    assert sorted(by_id[i].code for i in credit.competencies) == sorted(
        c.code for c in sample_framework().leaves())
    strand = next(c for c in imported.competencies if c.code == "ALG.4")
    assert [by_id[i].code for i in strand.rollup.required] == ["ALG.4.3"]


def test_sample_case_package_matches_the_yaml() -> None:
    """The committed JSON is the export of the committed YAML. If this fails after editing
    the YAML, regenerate it: build_case_package(*to_documents(sample_framework()),
    last_change=2025-06-01T00:00:00Z) written with json.dumps(indent=2)."""
    fresh = build_case_package(*to_documents(sample_framework()),
                               last_change=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    assert json.loads(json.dumps(fresh)) == sample_case_package()


def test_case_1_0_package() -> None:
    imported = parse_case_package(case_v1p0(), source="v1p0.json")
    assert imported.case_version == "1.0"
    assert imported.identifier == DOC and imported.title == "Science Practices"
    assert imported.creator == "State DOE" and imported.uri == f"{SRV}/CFDocuments/{DOC}"
    # sequenceNumber, not document order, orders the siblings.
    assert imported_tree(imported) == [
        ("SP.1", "Domain", [("SP.1.1", "Standard", []), ("SP.1.2", "Standard", [])]),
        ("SP.2", "Domain", [])]
    assert imported_precedes(imported) == {("SP.1.1", "SP.1.2")}
    comp = imported.get(A1)
    assert comp.statement == "Ask questions and define problems."
    assert comp.uri == f"{SRV}/CFItems/{A1}" and comp.raw["humanCodingScheme"] == "SP.1.1"
    # No scale in the package and none passed: the four-level default.
    assert imported.scale.name == "four-level" and imported.warnings == []


def test_case_1_1_package() -> None:
    imported = parse_case_package(case_v1p1(), source="v1p1.json")
    assert imported.case_version == "1.1"
    assert imported_tree(imported) == [
        ("SP.1", "Domain", [("SP.1.1", "Standard", []), ("SP.1.2", "Standard", [])]),
        ("SP.2", "Domain", [])]
    assert imported.get(A2).raw["extensions"] == {"vendor": {"note": "kept in raw"}}
    assert imported.raw["frameworkType"] == "Competency"
    [warning] = imported.warnings
    assert f"'{A2}' (SP.1.2) is a child of several nodes" in warning


def test_case_scale_and_calculation_from_caller() -> None:
    imported = parse_case_package(case_v1p0(), scale="performance-levels",
                                  calculation="n_mastery(2)")
    assert imported.scale.mastery_points == 7 and imported.calculation == "n_mastery(2)"
    custom = scale_from_data({"name": "pass", "levels": [
        {"name": "not yet", "points": 0}, {"name": "pass", "points": 1, "mastery": True}]}, "x")
    assert parse_case_package(case_v1p0(), scale=custom).scale.name == "pass"
    with pytest.raises(FrameworkError, match="unknown scale 'nine'"):
        parse_case_package(case_v1p0(), scale="nine")


def test_case_items_without_parent_go_to_the_top() -> None:
    pkg = case_v1p0()
    pkg["CFAssociations"] = [a for a in pkg["CFAssociations"]
                             if a["originNodeURI"]["identifier"] != B]
    imported = parse_case_package(pkg)
    assert [c.code for c in imported.children(None)] == ["SP.1", "SP.2"]
    assert any(f"'{B}' (SP.2) has no isChildOf" in w for w in imported.warnings)


def _broken(change) -> dict[str, Any]:
    pkg = case_v1p0()
    change(pkg)
    return pkg


def _set(path: list, value: Any):
    def change(pkg: dict) -> None:
        target = pkg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize("package, fragments", [
    (["not", "a", "package"], ["not a CFPackage"]),
    ({"CFItems": []}, ["not a CFPackage"]),
    (_broken(_set(["CFItems"], {"a": 1})), ["CFItems must be a list"]),
    (_broken(_set(["CFDocument", "title"], "")), [DOC, "missing title"]),
    (_broken(_set(["CFItems", 2, "fullStatement"], "  ")), [A1, "SP.1.1", "missing fullStatement"]),
    (_broken(lambda p: p["CFItems"][2].pop("fullStatement")), [A1, "missing fullStatement"]),
    (_broken(lambda p: p["CFItems"][2].pop("identifier")), ["CFItems[2] (SP.1.1)",
                                                            "missing identifier"]),
    (_broken(lambda p: p["CFItems"].append(item(A1, "SP.9", "Again"))),
     [A1, "SP.9", "duplicate identifier", "CFItems[2]"]),
    (_broken(lambda p: p["CFItems"].append(item(DOC, "SP.9", "Doc"))),
     [DOC, "duplicate identifier", "the CFDocument"]),
    (_broken(_set(["CFAssociations", 0, "destinationNodeURI"], node(
        "c1a7d1a0-0000-4000-8000-0000000000ff"))),
     ["association to an unknown item", "0000000000ff", A2, "SP.1.2"]),
    (_broken(_set(["CFAssociations", 0, "originNodeURI"], node("nope"))),
     ["association to an unknown item", "origin 'nope'"]),
    (_broken(lambda p: p["CFAssociations"].__setitem__(1, assoc(2, "isChildOf", A, A2, 1))),
     ["cycle in isChildOf", A, "SP.1", "SP.1.2"]),
    (_broken(lambda p: p["CFAssociations"].__setitem__(3, assoc(4, "isChildOf", B, B, 1))),
     ["cycle in isChildOf", B, "SP.2", "itself"]),
    (_broken(lambda p: p["CFAssociations"].append(assoc(9, "precedes", A2, A1))),
     ["cycle in precedes", "SP.1.1", "SP.1.2"]),
    (_broken(_set(["CFAssociations", 0, "sequenceNumber"], "first")),
     [A2, "sequenceNumber 'first' is not an integer"]),
    (_broken(lambda p: p["CFAssociations"].append(
        assoc(9, "precedes", A1, DOC, dest_kind="CFDocuments"))),
     ["SP.1.1", "precedes the CFDocument"]),
])
def test_invalid_case_packages(package: Any, fragments: list[str]) -> None:
    with pytest.raises(FrameworkError) as err:
        parse_case_package(package, source="pkg.json")
    message = str(err.value)
    assert message.startswith("pkg.json: ")
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- YAML errors


GOOD_YAML = textwrap.dedent("""\
    id: tiny
    title: Tiny course
    scale: four-level
    competencies:
      - id: t-1
        code: T.1
        statement: Strand one
        rollup: {method: points, required: [T.1.1], points: 6}
        children:
          - id: t-1-1
            code: T.1.1
            statement: First skill
            precedes: [T.1.2]
          - id: t-1-2
            code: T.1.2
            statement: Second skill
    credit_rules:
      - id: tiny-credit
        name: Tiny credit
        competencies: [T.1.1, t-1-2]
        min_percent: 50
""")


def test_good_yaml_variants() -> None:
    imported = parse_yaml_framework(GOOD_YAML, filename="tiny.yaml")
    assert imported_tree(imported, "identifier") == [("t-1", None, [("t-1-1", None, []),
                                                                    ("t-1-2", None, [])])]
    assert imported.scale.name == "four-level"
    assert imported.calculation == "decaying_average(0.65)"
    assert imported.credit_rules[0].competencies == ["t-1-1", "t-1-2"]
    # Inline scale, per-competency overrides, rollup shorthand.
    text = GOOD_YAML.replace("scale: four-level", textwrap.dedent("""\
        scale:
          name: pass-fail
          levels:
            - {name: Not yet, points: 0}
            - {name: Pass, points: 1, mastery: true}
        calculation: latest""")).replace(
        "rollup: {method: points, required: [T.1.1], points: 6}", "rollup: all_children").replace(
        "statement: Second skill",
        "statement: Second skill\n        scale: performance-levels\n"
        "        calculation: n_mastery(2)")
    imported = parse_yaml_framework(text, filename="tiny.yaml")
    assert imported.scale.name == "pass-fail" and imported.calculation == "latest"
    assert imported.get("t-1").rollup.method == "all_children"
    second = imported.get("t-1-2")
    assert second.scale.name == "performance-levels" and second.calculation == "n_mastery(2)"


YAML_ERRORS = [
    # (replace this, with that, line marker (a text on the expected line), fragments)
    ("statement: First skill\n", "\n", "- id: t-1-1", ["competency 't-1-1' (T.1.1)",
                                                      "missing statement"]),
    ("id: t-1-2", "id: t-1-1", "id: t-1-1\n        code: T.1.2",
     ["'t-1-1' (T.1.2)", "duplicate id (first on line 10)"]),
    ("code: T.1.2", "code: T.1.1", "code: T.1.1\n        statement: Second",
     ["competency 't-1-2'", "duplicate code 'T.1.1'"]),
    ("statement: Second skill", "statment: Second skill", "statment",
     ["competency 't-1-2' (T.1.2)", "unknown key 'statment'"]),
    ("precedes: [T.1.2]", "precedes: [T.9]", "precedes", ["'t-1-1' (T.1.1)",
                                                          "unknown competency 'T.9'"]),
    ("statement: Second skill", "statement: Second skill\n        precedes: [t-1-1]",
     "precedes: [T.1.2]", ["competency 't-1-1' (T.1.1): cycle in precedes",
                           "(T.1.1) -> 't-1-2' (T.1.2) -> 't-1-1'"]),
    ("required: [T.1.1]", "required: [T.1]", "required", ["'t-1' (T.1)",
                                                          "which is not one of its children"]),
    ("points: 6}", "points: 9}", "rollup:", ["'t-1' (T.1)", "exceed the 8"]),
    ("statement: Second skill", "statement: Second skill\n        rollup: average",
     "rollup: average", ["'t-1-2' (T.1.2)", "without children"]),
    ("scale: four-level", "scale: five-level", "scale:", ["framework 'tiny'",
                                                         "unknown scale 'five-level'"]),
    ("scale: four-level", "scale: four-level\ncalculation: decaying_average(65)",
     "calculation:", ["framework 'tiny'", "between 0 and 1"]),
    ("code: T.1.2", "code: 1.10", "code: 1.10", ["competency 't-1-2'", "read as a number",
                                                 "quote it"]),
    ("title: Tiny course", "title: [Tiny", "scale: four-level",
     ["invalid YAML", "while parsing a flow sequence on line 2"]),
    ("code: T.1.2", "code: T.1.2\n        code: T.1.3", "code: T.1.3",
     ["invalid YAML", "duplicate key 'code'"]),
    ("competencies: [T.1.1, t-1-2]", "competencies: [T.1.1, T.7]", "competencies: [T.1.1",
     ["credit rule 'tiny-credit'", "unknown competency 'T.7'"]),
    ("min_percent: 50", "min_percent: 150", "min_percent", ["credit rule 'tiny-credit'",
                                                           "from 0 to 100"]),
    ("scale: four-level", "scale:\n  name: odd\n  levels:\n    - {name: a, points: 1}\n"
     "    - {name: b, points: 1, mastery: true}", "scale:", ["scale 'odd'", "does not rise"]),
    ("scale: four-level", "scale:\n  name: odd\n  levels:\n    - {name: a, points: 1}\n"
     "    - {name: b, points: high, mastery: true}", "name: b", ["level 'b'",
                                                                "points must be a number"]),
]


@pytest.mark.parametrize("old, new, marker, fragments", YAML_ERRORS,
                         ids=[f"{i}-{e[3][-1][:24]}" for i, e in enumerate(YAML_ERRORS)])
def test_yaml_errors_name_file_line_and_item(old: str, new: str, marker: str,
                                             fragments: list[str]) -> None:
    assert old in GOOD_YAML
    text = GOOD_YAML.replace(old, new, 1)
    with pytest.raises(FrameworkError) as err:
        parse_yaml_framework(text, filename="courses/tiny.yaml")
    message = str(err.value)
    line = line_of(text, marker.split("\n")[0]) if "\n" not in marker else \
        line_of(text, marker.split("\n")[1]) - 1
    assert message.startswith(f"courses/tiny.yaml:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_not_a_framework() -> None:
    with pytest.raises(FrameworkError, match=r"^x\.yaml:1: a framework file is a mapping"):
        parse_yaml_framework("- just\n- a list\n", filename="x.yaml")
    with pytest.raises(FrameworkError, match=r"^x\.yaml:1: framework 'e': competencies must"):
        parse_yaml_framework("id: e\ntitle: Empty\n", filename="x.yaml")


# --------------------------------------------------------------------------- saving


def _revised_yaml() -> str:
    """GOOD_YAML, revised: a statement reworded, T.1.2 dropped, a new T.1.3 placed first,
    the framework retitled."""
    return (GOOD_YAML.replace("title: Tiny course", "title: Tiny course (2025)")
            .replace("statement: First skill", "statement: First skill, reworded")
            .replace("      - id: t-1-2\n        code: T.1.2\n        statement: Second skill\n",
                     "")
            .replace("precedes: [T.1.2]", "precedes: [T.1.3]")
            .replace("    children:\n",
                     "    children:\n      - id: t-1-3\n        code: T.1.3\n"
                     "        statement: Third skill\n", 1)
            .replace("competencies: [T.1.1, t-1-2]", "competencies: all"))


def _evidence_record(learner: str, competency: str, framework: str, points: float) -> dict:
    """A stored evidence record, as the worker writes them."""
    return {"_id": evidence.evidence_id("stmt-1", learner, competency, "rules:r1"),
            "statement": "stmt-1", "seq": 1, "learner": learner, "competency": competency,
            "framework": framework, "rule": "rules:r1", "points": points,
            "source_type": "assessment", "timestamp": dt.datetime(2026, 9, 1, tzinfo=dt.UTC),
            "activity": None, "activity_name": None, "provider": None,
            "status": "accepted", "voided": False, "actions": []}


def test_reimport_updates_in_place_and_keeps_evidence(app, db) -> None:
    save_framework(parse_yaml_framework(GOOD_YAML, filename="tiny.yaml"))
    record = _evidence_record("ana", "t-1-2", "tiny", 3)
    evidence.insert(db, [record], batch=1)
    body = {"leaves": {"t-1-2": [[0, 1, 3, record["_id"]]]},
            "mastery": {"t-1-2": {"points": 3, "level": "Proficient", "mastered": True,
                                  "method": "most_recent", "at": 0}},
            "credits": {}}
    db.progress.insert_one({"_id": "ana|tiny", "learner": "ana", "framework": "tiny",
                            "updated_at": dt.datetime(2026, 9, 1), "s": orjson.dumps(body)})

    revised = parse_yaml_framework(_revised_yaml(), filename="tiny.yaml")
    framework = save_framework(revised)

    assert framework.title == "Tiny course (2025)"
    assert models.Framework.objects.count() == 1
    first = models.Competency.objects.get(identifier="t-1-1")
    assert first.statement == "First skill, reworded" and first.position == 1
    assert first.precedes == ["t-1-3"]
    assert models.Competency.objects.get(identifier="t-1-3").position == 0
    # The dropped competency is kept, and its learners' records are untouched.
    assert models.Competency.objects.get(identifier="t-1-2").statement == "Second skill"
    assert evidence.get(db, record["_id"]) == record
    assert db.progress.count_documents({}) == 1
    kept = records.mastery_one(db, "ana", "t-1-2")
    assert kept["points"] == 3 and kept["evidence"] == [record["_id"]]
    assert any("'t-1-2'" in w and "kept" in w for w in revised.warnings)
    credit = models.CreditRule.objects.get(identifier="tiny-credit")
    assert credit.competencies == ["t-1-3", "t-1-1"]  # "all" = the current leaves
    assert models.CreditRule.objects.count() == 1
    # An update in place: a field the import does not own survives a further re-import.
    db.competencies.update_one({"_id": "t-1-1"}, {"$set": {"note": "keep me"}})
    save_framework(parse_yaml_framework(_revised_yaml(), filename="tiny.yaml"))
    assert db.competencies.find_one({"_id": "t-1-1"})["note"] == "keep me"


def test_reimport_of_case_package_moves_items(app, db) -> None:
    save_framework(parse_case_package(case_v1p0()))
    record = _evidence_record("ana", A1, DOC, 2)
    evidence.insert(db, [record], batch=1)
    pkg = case_v1p0()
    pkg["CFItems"][2]["fullStatement"] = "Ask questions; define problems."
    pkg["CFAssociations"][2] = assoc(3, "isChildOf", A1, B, 1)  # SP.1.1 moves under SP.2
    save_framework(parse_case_package(pkg))
    moved = models.Competency.objects.get(identifier=A1)
    assert moved.parent == B and moved.statement == "Ask questions; define problems."
    assert moved.raw["fullStatement"] == "Ask questions; define problems."
    assert stored_tree(DOC) == [("SP.1", "Domain", [("SP.1.2", "Standard", [])]),
                                ("SP.2", "Domain", [("SP.1.1", "Standard", [])])]
    assert list(evidence.all_records(db)) == [record]


def test_identifier_of_another_framework_is_refused(app) -> None:
    save_framework(parse_yaml_framework(GOOD_YAML, filename="tiny.yaml"))
    other = GOOD_YAML.replace("id: tiny\n", "id: other\n").replace(
        "id: tiny-credit", "id: other-credit")
    with pytest.raises(FrameworkError, match="competency 't-1': duplicate identifier: already "
                                             "belongs to framework 'tiny'"):
        save_framework(parse_yaml_framework(other, filename="other.yaml"))
    assert models.Framework.objects(identifier="other").count() == 0
    assert set(models.Competency.objects.distinct("framework")) == {"tiny"}


# --------------------------------------------------------------------------- export


def _check_case_1_1(package: dict[str, Any]) -> None:
    """The CASE 1.1 CFPackage rules an export must meet (required properties, UUID
    identifiers, the properties the 1.1 binding allows)."""
    assert set(package) <= {"CFDocument", "CFItems", "CFAssociations", "CFDefinitions",
                            "CFRubrics", "extensions"}
    doc = package["CFDocument"]
    for key in ("identifier", "uri", "creator", "title", "lastChangeDateTime"):
        assert doc.get(key), key
    assert doc["caseVersion"] == "1.1" and UUID.match(doc["identifier"])
    assert "CFPackageURI" not in doc
    dt.datetime.fromisoformat(doc["lastChangeDateTime"])
    for entry in package["CFItems"]:
        for key in ("identifier", "fullStatement", "uri", "lastChangeDateTime"):
            assert entry.get(key), (entry, key)
        assert UUID.match(entry["identifier"]) and "CFDocumentURI" not in entry
    for link in package["CFAssociations"]:
        for key in ("identifier", "associationType", "uri", "originNodeURI",
                    "destinationNodeURI", "lastChangeDateTime"):
            assert link.get(key), (link, key)
        assert UUID.match(link["identifier"])
        for end in ("originNodeURI", "destinationNodeURI"):
            assert set(link[end]) == {"title", "identifier", "uri"}
    ids = [x["identifier"] for x in package["CFItems"] + package["CFAssociations"]]
    assert len(ids) == len(set(ids))


def test_export_round_trip_of_a_case_framework(app) -> None:
    original = parse_case_package(case_v1p1())
    save_framework(original)
    package = export_case(DOC)
    _check_case_1_1(package)
    # Identifiers and URIs of a CASE framework are kept.
    assert {i["identifier"] for i in package["CFItems"]} == {A, A1, A2, B}
    assert package["CFDocument"]["uri"] == f"{SRV}/CFDocuments/{DOC}"
    assert package["CFDocument"]["extensions"]["vendor"] == {"color": "blue"}
    # CASE 1.0 forms become 1.1 forms.
    assert package["CFDocument"]["subject"] == ["Science"]
    assert package["CFDocument"]["statusStartDate"] == "2017-08-01"
    assert "licenseURI" not in package["CFDocument"]
    assert next(i for i in package["CFItems"] if i["identifier"] == A1)["educationLevel"] == [
        "09"]
    again = parse_case_package(copy.deepcopy(package), source="export.json")
    assert imported_tree(again, "identifier") == imported_tree(original, "identifier")
    assert imported_tree(again) == imported_tree(original)
    assert imported_precedes(again) == imported_precedes(original)
    assert again.get(A2).raw["extensions"]["vendor"] == {"note": "kept in raw"}
    save_framework(again)  # importing the export changes nothing
    assert stored_tree(DOC) == imported_tree(original)


def test_export_round_trip_of_the_yaml_sample(app) -> None:
    save_framework(sample_framework())
    package = export_case("algebra-1-cbe", base_url="https://hub.example.edu/")
    _check_case_1_1(package)
    assert package["CFItems"][0]["uri"].startswith(
        "https://hub.example.edu/ims/case/v1p1/CFItems/")
    codes_in_order = [i["humanCodingScheme"] for i in package["CFItems"]]
    assert codes_in_order[:3] == ["ALG.1", "ALG.1.1", "ALG.1.2"]
    again = parse_case_package(package, source="export.json")
    assert imported_tree(again) == SAMPLE_TREE
    assert imported_precedes(again) == SAMPLE_PRECEDES
    assert again.scale.mastery_points == 7 and again.calculation == "decaying_average(0.65)"
    save_framework(again)  # a new framework under its CASE identifier, beside the YAML one
    assert stored_tree(again.identifier) == SAMPLE_TREE
    assert stored_precedes(again.identifier) == SAMPLE_PRECEDES
    strands = {c.code: c.rollup for c in models.Competency.objects(framework=again.identifier,
                                                                   type="Strand")}
    assert strands["ALG.1"].method == "points" and strands["ALG.1"].points == 28
    credit = models.CreditRule.objects.get(framework=again.identifier)
    assert credit.name == "Algebra I credit" and len(credit.competencies) == 13
    # Exporting twice gives the same identifiers.
    assert [i["identifier"] for i in export_case("algebra-1-cbe")["CFItems"]] == [
        i["identifier"] for i in package["CFItems"]]
    assert package["extensions"][EXTENSION_KEY]["creditRules"][0]["minPercent"] == 70


def test_export_unknown_framework(app) -> None:
    with pytest.raises(FrameworkError, match="framework 'nope': not found"):
        export_case("nope")


# --------------------------------------------------------------------------- fetching


class _CaseHandler(http.server.BaseHTTPRequestHandler):
    package: dict[str, Any] = {}
    seen_auth: list[str | None] = []

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        if self.path == f"/ims/case/v1p1/CFPackages/{DOC}":
            self._send(200, json.dumps(self.package).encode(), "application/json")
        elif self.path == "/ims/case/v1p1/CFPackages/private":
            if self.headers.get("Authorization") != "Bearer s3cret":
                self._send(401, b'{"imsx_codeMajor": "failure", "imsx_severity": "error", '
                                b'"imsx_description": "token required"}', "application/json")
            else:
                self._send(200, json.dumps(self.package).encode(), "application/json")
        elif self.path == "/ims/case/v1p1/CFPackages/html":
            self._send(200, b"<html><body>Login</body></html>", "text/html")
        elif self.path == "/ims/case/v1p1/CFPackages/list":
            self._send(200, b"[1, 2]", "application/json")
        else:
            self._send(404, b'{"imsx_codeMajor": "failure", "imsx_severity": "error", '
                            b'"imsx_description": "Unknown sourcedId"}', "application/json")


@pytest.fixture
def case_server() -> Iterator[str]:
    _CaseHandler.package = case_v1p1()
    _CaseHandler.seen_auth = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CaseHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ims/case/v1p1/CFPackages"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fetch_case_package(case_server: str) -> None:
    url = f"{case_server}/{DOC}"
    data = fetch_case_package(url, timeout=5)
    assert _CaseHandler.seen_auth == [None]
    imported = parse_case_package(data, source=url)
    assert imported.case_version == "1.1" and imported.identifier == DOC
    assert fetch_case_package(f"{case_server}/private", token="s3cret") == data
    assert _CaseHandler.seen_auth[-1] == "Bearer s3cret"


@pytest.mark.parametrize("path, token, fragments", [
    ("missing", None, ["HTTP 404", "Unknown sourcedId"]),
    ("private", None, ["HTTP 401", "token required"]),
    ("private", "wrong", ["HTTP 401"]),
    ("html", None, ["HTTP 200 but the body is not JSON", "text/html"]),
    ("list", None, ["not a CFPackage"]),
])
def test_fetch_case_package_errors(case_server: str, path: str, token: str | None,
                                   fragments: list[str]) -> None:
    url = f"{case_server}/{path}"
    with pytest.raises(FrameworkError) as err:
        fetch_case_package(url, token=token, timeout=5)
    message = str(err.value)
    assert message.startswith(f"{url}: ")
    for fragment in fragments:
        assert fragment in message, message


def test_fetch_case_package_unreachable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ims/case/v1p0/CFPackages/{DOC}"
    with pytest.raises(FrameworkError, match=re.escape(url) + ": request failed"):
        fetch_case_package(url, timeout=2)
