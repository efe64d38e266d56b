"""Competency frameworks in and out: CASE 1.0/1.1 packages, a native YAML format, scales.

Why two import formats: states and vendors publish standards as 1EdTech CASE packages
(CFDocument + CFItems + CFAssociations), but most schools that design their own
competency-based courses have no CASE editor; a short YAML file they can keep in version
control is the practical way for them. Both parse into the same plain
:class:`ImportedFramework`, which is validated completely *before* anything is written, so
a bad file never leaves a half-imported framework behind.

Why re-import updates in place and never deletes: evidence, mastery and credit records
point at competency identifiers. A framework revision that drops or renames an item must
not take a learner's history with it, so :func:`save_framework` upserts by identifier and
keeps competencies that disappeared from the package (reported in
``ImportedFramework.warnings``).

Specifications implemented here (cited again at the point of use):

- CASE 1.1 Information Model:
  https://www.imsglobal.org/sites/default/files/spec/case/v1p1/information_model/caseservicev1p1_infomodelv1p0.html
- CASE 1.1 REST/JSON binding (``GET /ims/case/v1p1/CFPackages/{sourcedId}``):
  https://standards.1edtech.org/case/specifications/standards/v1p1/rest
- CASE 1.0: https://www.imsglobal.org/spec/case/v1p0/
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import json
import logging
import math
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mongoengine as me
import requests
import yaml
from pymongo import UpdateOne

from mappings import catalog, models
from mappings.calculation import parse_method
from mappings.models import Level, Rollup, Scale

log = logging.getLogger(__name__)

DEFAULT_SCALE = "four-level"
DEFAULT_CALCULATION = "decaying_average(0.65)"
#: Our namespace inside the CASE 1.1 ``extensions`` objects (CASE 1.1 IM: every class
#: gained an ``extensions`` container for proprietary data). It carries what CASE has no
#: field for -- scale, calculation, roll-ups, credit rules -- so that exporting and
#: re-importing a framework loses nothing.
EXTENSION_KEY = "masteryhub"
ROLLUP_METHODS: tuple[str, ...] = tuple(Rollup._fields["method"].choices)
SAMPLE_FRAMEWORK = "sample_framework.yaml"
SAMPLE_CASE_PACKAGE = "sample_case_package.json"

# CASE identifiers are UUIDs (CASE 1.1 IM, "UUID" primitive; the JSON schema pattern
# requires the RFC 4122 variant nibble 8-b).
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Minted identifiers are name-based (uuid5) so an export is the same every time.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:masteryhub:case")

# The properties the CASE 1.1 JSON binding allows on a CFPackage's CFDocument and CFItem
# (both are "additionalProperties": false there). Properties of an imported CASE 1.0
# record outside these (e.g. 1.0's CFPackageURI, CFDocumentURI) are dropped on export.
_V1P1_DOCUMENT_KEYS = frozenset({
    "identifier", "uri", "frameworkType", "caseVersion", "creator", "title",
    "lastChangeDateTime", "officialSourceURL", "publisher", "description", "subject",
    "subjectURI", "language", "version", "adoptionStatus", "statusStartDate",
    "statusEndDate", "licenseURI", "notes", "extensions",
})
_V1P1_ITEM_KEYS = frozenset({
    "identifier", "fullStatement", "alternativeLabel", "CFItemType", "uri",
    "humanCodingScheme", "listEnumeration", "abbreviatedStatement", "conceptKeywords",
    "conceptKeywordsURI", "notes", "subject", "subjectURI", "language", "educationLevel",
    "CFItemTypeURI", "licenseURI", "statusStartDate", "statusEndDate", "lastChangeDateTime",
    "extensions",
})


class FrameworkError(ValueError):
    """An invalid framework, package or scale. The message names the item and the problem
    (and ``file:line`` for YAML) because an admin fixes the file from the message alone."""


# --------------------------------------------------------------------------- plain values


@dataclass
class ImportedCompetency:
    """One competency as read from a package, before it is stored."""

    identifier: str
    statement: str
    code: str | None = None
    type: str | None = None
    uri: str | None = None
    parent: str | None = None  # None: top level (a child of the CFDocument)
    position: int = 0  # order among its siblings, from 0
    precedes: list[str] = field(default_factory=list)  # successors on the learning path
    scale: Scale | None = None  # overrides the framework's
    calculation: str | None = None  # overrides the framework's
    rollup: Rollup | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the CFItem as imported

    @property
    def label(self) -> str:
        return _label(self.identifier, self.code)


@dataclass
class ImportedCreditRule:
    identifier: str
    name: str
    competencies: list[str]
    required: list[str] = field(default_factory=list)
    min_percent: float = 70.0


@dataclass
class ImportedFramework:
    """A validated framework, ready for :func:`save_framework`."""

    identifier: str
    title: str
    source: str  # "case" or "yaml"
    scale: Scale
    calculation: str = DEFAULT_CALCULATION
    uri: str | None = None
    case_version: str | None = None
    creator: str | None = None
    description: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the CFDocument as imported
    competencies: list[ImportedCompetency] = field(default_factory=list)  # tree preorder
    credit_rules: list[ImportedCreditRule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # accepted, but worth telling the admin

    def children(self, parent: str | None) -> list[ImportedCompetency]:
        """The competencies directly under ``parent`` (None: top level), in order."""
        return sorted((c for c in self.competencies if c.parent == parent),
                      key=lambda c: c.position)

    def get(self, identifier: str) -> ImportedCompetency | None:
        return next((c for c in self.competencies if c.identifier == identifier), None)

    def leaves(self) -> list[ImportedCompetency]:
        parents = {c.parent for c in self.competencies}
        return [c for c in self.competencies if c.identifier not in parents]


def _label(identifier: str, code: str | None) -> str:
    return f"'{identifier}' ({code})" if code else f"'{identifier}'"


def _preorder(competencies: list[ImportedCompetency]) -> list[ImportedCompetency]:
    """Depth-first, siblings by position: the order a reader sees the tree in."""
    kids: dict[str | None, list[ImportedCompetency]] = {}
    for comp in competencies:
        kids.setdefault(comp.parent, []).append(comp)
    for siblings in kids.values():
        siblings.sort(key=lambda c: c.position)
    out: list[ImportedCompetency] = []
    stack = list(reversed(kids.get(None, [])))
    while stack:
        comp = stack.pop()
        out.append(comp)
        stack.extend(reversed(kids.get(comp.identifier, [])))
    return out


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in a directed graph as [a, b, ..., a], or None (iterative DFS: frameworks
    with thousands of items must not hit the recursion limit)."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(graph.get(start, ())))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, successors = stack[-1]
            nxt = next(successors, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in done:
                stack.append((nxt, iter(graph.get(nxt, ()))))
                path.append(nxt)
                on_path.add(nxt)
    return None


# --------------------------------------------------------------------------- calculation


def check_calculation(text: object) -> str:
    """Validate a calculation method and return it normalised, e.g. ``decaying_average(0.65)``.

    Delegates to the calculator's own parser (:func:`mappings.calculation.parse_method`) so
    that a framework can never store a method the calculator would later refuse; checking at
    import time is what lets the error carry the file, line and competency.
    """
    if not isinstance(text, str):
        raise ValueError(f"calculation must be a string, not {type(text).__name__}")
    return str(parse_method(text))


# --------------------------------------------------------------------------- scales


def validate_scale(scale: Scale, where: str) -> Scale:
    """Check the invariants the calculator relies on: levels lowest first with strictly
    increasing points (so ``level_for`` is well defined) and exactly one mastery level
    (so "mastered" has one meaning). ``where`` prefixes the error message."""
    name = scale.name
    if not name:
        raise FrameworkError(f"{where}: the scale has no name")
    if not scale.levels:
        raise FrameworkError(f"{where}: scale {name!r} has no levels")
    seen: set[str] = set()
    for level in scale.levels:
        if not level.name:
            raise FrameworkError(f"{where}: scale {name!r}: a level has no name")
        if level.name in seen:
            raise FrameworkError(f"{where}: scale {name!r}: level {level.name!r} appears twice")
        seen.add(level.name)
        if not isinstance(level.points, (int, float)) or not math.isfinite(level.points):
            raise FrameworkError(
                f"{where}: scale {name!r}: level {level.name!r} has no numeric points")
    for lower, higher in zip(scale.levels, scale.levels[1:], strict=False):
        if higher.points <= lower.points:
            raise FrameworkError(
                f"{where}: scale {name!r}: level {higher.name!r} ({higher.points:g} points) "
                f"does not rise above {lower.name!r} ({lower.points:g}); points must strictly "
                "increase, lowest level first")
    mastery = [level.name for level in scale.levels if level.mastery]
    if len(mastery) != 1:
        raise FrameworkError(
            f"{where}: scale {name!r} has {len(mastery)} mastery levels "
            f"({', '.join(mastery) or 'none'}); exactly one level must be the mastery level")
    return scale


def scale_from_data(data: object, where: str, *, filename: str | None = None) -> Scale:
    """A :class:`Scale` from ``{name, levels: [{name, points, mastery?, description?}]}``
    (the YAML form and our CASE extension form), validated. ``where`` prefixes errors about
    the scale as a whole; with ``filename`` (YAML input) errors about one level name that
    level's ``filename:line`` instead."""
    if not isinstance(data, dict):
        raise FrameworkError(f"{where}: a scale must be a built-in scale name or a mapping "
                             "with name and levels")
    unknown = set(data) - {"name", "levels"}
    if unknown:
        raise FrameworkError(f"{where}: scale: unknown key(s) "
                             f"{', '.join(sorted(map(str, unknown)))} (expected name, levels)")
    levels_data = data.get("levels")
    if not isinstance(levels_data, list):
        raise FrameworkError(f"{where}: scale {data.get('name')!r}: levels must be a list")
    levels = []
    for index, item in enumerate(levels_data):
        here = (f"{filename}:{item.line}" if filename and isinstance(item, _Map) else where)
        what = f"scale {data.get('name')!r} level #{index + 1}"
        if not isinstance(item, dict):
            raise FrameworkError(f"{here}: {what} must be a mapping (name, points, mastery)")
        unknown = set(item) - {"name", "points", "mastery", "description"}
        if unknown:
            raise FrameworkError(f"{here}: {what}: unknown key(s) "
                                 f"{', '.join(sorted(map(str, unknown)))}")
        name = item.get("name")
        if name is not None:
            what = f"scale {data.get('name')!r} level {name!r}"
        points = item.get("points")
        if isinstance(points, bool) or not isinstance(points, (int, float)):
            raise FrameworkError(f"{here}: {what}: points must be a number")
        mastery = item.get("mastery", False)
        if not isinstance(mastery, bool):
            raise FrameworkError(f"{here}: {what}: mastery must be true or false")
        description = item.get("description")
        levels.append(Level(name=str(name) if name is not None else "", points=float(points),
                            mastery=mastery,
                            description=str(description) if description else None))
    name = data.get("name")
    return validate_scale(Scale(name=str(name) if name else "", levels=levels), where)


def scale_to_data(scale: Scale) -> dict[str, Any]:
    levels = []
    for level in scale.levels:
        entry: dict[str, Any] = {"name": level.name, "points": level.points}
        if level.mastery:
            entry["mastery"] = True
        if level.description:
            entry["description"] = level.description
        levels.append(entry)
    return {"name": scale.name, "levels": levels}


def _data_text(name: str) -> str:
    """A file of ``mappings/data`` (read through importlib.resources so it works from an
    installed wheel as well as from the source tree)."""
    return importlib.resources.files("mappings.data").joinpath(name).read_text("utf-8")


@functools.cache
def _builtin_scale_data() -> tuple[tuple[str, Any], ...]:
    data = _load_yaml(_data_text("scales.yaml"), "scales.yaml")
    if not isinstance(data, dict) or not isinstance(data.get("scales"), list):
        raise FrameworkError("scales.yaml: expected a mapping with a 'scales' list")
    out: dict[str, Any] = {}
    for entry in data["scales"]:
        where = _where_line("scales.yaml", entry)
        scale = scale_from_data(entry, where, filename="scales.yaml")
        if scale.name in out:
            raise FrameworkError(f"{where}: scale {scale.name!r} is defined twice")
        out[scale.name] = scale_to_data(scale)
    return tuple(out.items())


def builtin_scales() -> dict[str, Scale]:
    """The built-in scales by name (``four-level``, ``performance-levels``), read from
    ``mappings/data/scales.yaml``. Fresh objects each call: callers may attach them to
    documents, and a shared embedded document would be mutated by one and seen by all."""
    return {name: scale_from_data(data, "scales.yaml") for name, data in _builtin_scale_data()}


def _builtin_scale(name: str, where: str) -> Scale:
    scales = builtin_scales()
    if name not in scales:
        raise FrameworkError(f"{where}: unknown scale {name!r} (built-in scales: "
                             f"{', '.join(sorted(scales))}; or give name and levels inline)")
    return scales[name]


# --------------------------------------------------------------------------- CASE import


def _case_version(data: dict[str, Any], doc: dict[str, Any], source: str) -> str:
    """CASE 1.1 added ``CFDocument.caseVersion`` (which, if present, must be "1.1") and the
    ``extensions``/``frameworkType`` properties; a v1p1 endpoint also says it in its path.
    A package with none of these is CASE 1.0."""
    declared = doc.get("caseVersion")
    if isinstance(declared, str) and declared:
        return declared
    if "/v1p1/" in str(doc.get("uri") or "") or "/v1p1/" in source:
        return "1.1"
    if "extensions" in data or "extensions" in doc or "frameworkType" in doc:
        return "1.1"
    return "1.0"


def _extension(record: dict[str, Any]) -> dict[str, Any]:
    ext = record.get("extensions")
    if isinstance(ext, dict) and isinstance(ext.get(EXTENSION_KEY), dict):
        return ext[EXTENSION_KEY]
    return {}


def _sequence(value: object) -> int | None:
    """``sequenceNumber`` is an int32 (CASE IM, CFAssociation); some servers send it as a
    numeric string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(value)


def parse_case_package(data: object, *, source: str = "<package>",
                       scale: Scale | str | None = None,
                       calculation: str | None = None) -> ImportedFramework:
    """Read a CASE 1.0 or 1.1 CFPackage (the JSON of ``GET .../CFPackages/{id}``).

    CFItems become competencies (identifier; humanCodingScheme -> code; fullStatement ->
    statement; CFItemType -> type; uri). The tree comes from ``isChildOf`` associations --
    originNode is the child, destinationNode the parent, which may be the CFDocument itself
    for top-level items -- ordered among siblings by ``sequenceNumber`` (CASE IM,
    CFAssociation). ``precedes`` associations (origin comes before destination) become
    learning-path successors. Other association types (exactMatchOf, isRelatedTo, CASE 1.1
    ``ext:`` types, ...) are legitimate but carry nothing we use, so they are skipped.

    ``scale``/``calculation`` (a :class:`Scale` or a built-in scale name) win over anything
    in the package; otherwise a package we exported brings its own in
    ``extensions.masteryhub``, and anything else gets the four-level scale.
    """
    if not isinstance(data, dict) or not isinstance(data.get("CFDocument"), dict):
        raise FrameworkError(f"{source}: not a CFPackage (expected a JSON object with a "
                             "CFDocument object)")
    doc: dict[str, Any] = data["CFDocument"]
    doc_id = doc.get("identifier")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise FrameworkError(f"{source}: CFDocument: missing identifier")
    title = doc.get("title")
    if not isinstance(title, str) or not title.strip():
        raise FrameworkError(f"{source}: CFDocument '{doc_id}': missing title")
    items = data.get("CFItems") or []
    associations = data.get("CFAssociations") or []
    if not isinstance(items, list):
        raise FrameworkError(f"{source}: not a CFPackage: CFItems must be a list")
    if not isinstance(associations, list):
        raise FrameworkError(f"{source}: not a CFPackage: CFAssociations must be a list")

    version = _case_version(data, doc, source)
    warnings: list[str] = []
    if version not in ("1.0", "1.1"):
        warnings.append(f"CFDocument caseVersion {version!r} is not 1.0 or 1.1; read with the "
                        "1.1 rules")

    # -- items
    comps: dict[str, ImportedCompetency] = {}
    order: dict[str, int] = {}
    by_uri: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise FrameworkError(f"{source}: CFItems[{index}] is not an object")
        ident = item.get("identifier")
        code = item.get("humanCodingScheme")
        code = code if isinstance(code, str) and code.strip() else None
        if not isinstance(ident, str) or not ident.strip():
            named = f" ({code})" if code else ""
            raise FrameworkError(f"{source}: CFItems[{index}]{named}: missing identifier")
        label = _label(ident, code)
        if ident in comps or ident == doc_id:
            what = "the CFDocument" if ident == doc_id else f"CFItems[{order[ident]}]"
            raise FrameworkError(f"{source}: CFItem {label}: duplicate identifier (also used "
                                 f"by {what})")
        statement = item.get("fullStatement")
        if not isinstance(statement, str) or not statement.strip():
            raise FrameworkError(f"{source}: CFItem {label}: missing fullStatement")
        item_type = item.get("CFItemType")
        if not isinstance(item_type, str) or not item_type:
            type_uri = item.get("CFItemTypeURI")
            item_type = type_uri.get("title") if isinstance(type_uri, dict) else None
        uri = item.get("uri") if isinstance(item.get("uri"), str) else None
        comps[ident] = ImportedCompetency(identifier=ident, statement=statement.strip(),
                                          code=code, type=item_type or None, uri=uri,
                                          raw=dict(item))
        order[ident] = index
        if uri:
            by_uri.setdefault(uri, ident)
    doc_uri = doc.get("uri") if isinstance(doc.get("uri"), str) else None

    def resolve(ref: object) -> str | None:
        # LinkGenURI: {title, identifier, uri}. Identifier first; some publishers only
        # get the uri right.
        if not isinstance(ref, dict):
            return None
        ident = ref.get("identifier")
        if isinstance(ident, str) and (ident == doc_id or ident in comps):
            return ident
        uri = ref.get("uri")
        if doc_uri and uri == doc_uri:
            return doc_id
        return by_uri.get(uri) if isinstance(uri, str) else None

    def describe(ref: object) -> str:
        if isinstance(ref, dict):
            return repr(ref.get("identifier") or ref.get("uri") or ref.get("title"))
        return "(missing)"

    # -- associations
    parents: dict[str, list[tuple[str, int | None, int]]] = {}
    successors: dict[str, list[str]] = {}
    for index, assoc in enumerate(associations):
        if not isinstance(assoc, dict):
            raise FrameworkError(f"{source}: CFAssociations[{index}] is not an object")
        kind = assoc.get("associationType")
        if kind not in ("isChildOf", "precedes"):
            continue
        name = f"CFAssociation '{assoc.get('identifier') or f'#{index}'}' ({kind})"
        origin_ref, dest_ref = assoc.get("originNodeURI"), assoc.get("destinationNodeURI")
        origin, dest = resolve(origin_ref), resolve(dest_ref)
        if origin is None:
            raise FrameworkError(f"{source}: {name}: association to an unknown item: origin "
                                 f"{describe(origin_ref)} is not a CFItem of this package")
        if dest is None:
            of = f" of item {comps[origin].label}" if origin in comps else ""
            raise FrameworkError(
                f"{source}: {name}{of}: association to an unknown item: destination "
                f"{describe(dest_ref)} is neither a CFItem of this package nor its CFDocument")
        if origin == doc_id:
            raise FrameworkError(f"{source}: {name}: the CFDocument cannot be the origin "
                                 f"of {kind}")
        if kind == "precedes" and dest == doc_id:
            raise FrameworkError(f"{source}: {name}: item {comps[origin].label} precedes the "
                                 "CFDocument; precedes must link two items")
        if origin == dest:
            problem = "cycle in isChildOf" if kind == "isChildOf" else "cycle in precedes"
            raise FrameworkError(f"{source}: {name}: {problem}: item {comps[origin].label} "
                                 f"{kind} itself")
        if kind == "isChildOf":
            try:
                seq = _sequence(assoc.get("sequenceNumber"))
            except ValueError:
                raise FrameworkError(
                    f"{source}: {name} of item {comps[origin].label}: sequenceNumber "
                    f"{assoc.get('sequenceNumber')!r} is not an integer") from None
            if all(p != dest for p, _, _ in parents.get(origin, [])):
                parents.setdefault(origin, []).append((dest, seq, index))
        elif dest not in successors.setdefault(origin, []):
            successors[origin].append(dest)

    # -- tree: one parent per item (our model is a tree; CASE allows an item to be reused
    # in several branches, so extra parents are reported, not rejected).
    sort_keys: dict[str, tuple[int, int, int]] = {}
    for ident, comp in comps.items():
        links = parents.get(ident)
        if not links:
            warnings.append(f"CFItem {comp.label} has no isChildOf association; placed at the "
                            "top level")
            sort_keys[ident] = (1, 0, order[ident])
            continue
        parent, seq, assoc_index = links[0]
        if len(links) > 1:
            others = ", ".join(repr(p) for p, _, _ in links[1:])
            warnings.append(f"CFItem {comp.label} is a child of several nodes; kept the first "
                            f"({parent!r}), ignored {others}")
        comp.parent = None if parent == doc_id else parent
        sort_keys[ident] = (0 if seq is not None else 1, seq or 0, assoc_index)
    cycle = _find_cycle({i: [c.parent] if c.parent else [] for i, c in comps.items()})
    if cycle:
        path = " -> ".join(comps[i].label for i in cycle)
        raise FrameworkError(f"{source}: CFItem {comps[cycle[0]].label}: cycle in isChildOf: "
                             f"{path}")
    siblings: dict[str | None, list[ImportedCompetency]] = {}
    for comp in comps.values():
        siblings.setdefault(comp.parent, []).append(comp)
    for group in siblings.values():
        group.sort(key=lambda c: sort_keys[c.identifier])
        for position, comp in enumerate(group):
            comp.position = position
    for ident, succ in successors.items():
        comps[ident].precedes = succ
    cycle = _find_cycle(successors)
    if cycle:
        path = " -> ".join(comps[i].label for i in cycle)
        raise FrameworkError(f"{source}: CFItem {comps[cycle[0]].label}: cycle in precedes: "
                             f"{path}")

    # -- our extensions (present in packages exported by export_case)
    for comp in comps.values():
        _apply_item_extension(comp, _extension(comp.raw), comps, source)
    doc_ext = _extension(doc)
    where = f"{source}: CFDocument '{doc_id}' extensions.{EXTENSION_KEY}"
    if isinstance(scale, str):
        framework_scale = _builtin_scale(scale, source)
    elif scale is not None:
        framework_scale = validate_scale(scale, source)
    elif "scale" in doc_ext:
        framework_scale = scale_from_data(doc_ext["scale"], where)
    else:
        framework_scale = _builtin_scale(DEFAULT_SCALE, source)
    if calculation is not None:
        method, method_from = calculation, source  # the caller's choice wins
    else:
        method, method_from = doc_ext.get("calculation") or DEFAULT_CALCULATION, where
    try:
        method = check_calculation(method)
    except ValueError as exc:
        raise FrameworkError(f"{method_from}: {exc}") from None

    imported = ImportedFramework(
        identifier=doc_id, title=title.strip(), source="case", scale=framework_scale,
        calculation=method, uri=doc_uri, case_version=version,
        creator=doc.get("creator") if isinstance(doc.get("creator"), str) else None,
        description=doc.get("description") if isinstance(doc.get("description"), str)
        else None,
        raw=dict(doc), competencies=_preorder(list(comps.values())), warnings=warnings)
    package_ext = _extension(data)
    for index, rule in enumerate(package_ext.get("creditRules") or []):
        imported.credit_rules.append(_credit_rule_from_extension(rule, index, comps, source))
    return imported


def _apply_item_extension(comp: ImportedCompetency, ext: dict[str, Any],
                          comps: dict[str, ImportedCompetency], source: str) -> None:
    if not ext:
        return
    where = f"{source}: CFItem {comp.label} extensions.{EXTENSION_KEY}"
    if "scale" in ext:
        comp.scale = scale_from_data(ext["scale"], where)
    if "calculation" in ext:
        try:
            comp.calculation = check_calculation(ext["calculation"])
        except ValueError as exc:
            raise FrameworkError(f"{where}: {exc}") from None
    if "rollup" in ext:
        data = ext["rollup"]
        if not isinstance(data, dict) or data.get("method") not in ROLLUP_METHODS:
            raise FrameworkError(f"{where}: rollup method must be one of "
                                 f"{', '.join(ROLLUP_METHODS)}")
        required = data.get("required") or []
        children = {c.identifier for c in comps.values() if c.parent == comp.identifier}
        for child in required:
            if child not in children:
                raise FrameworkError(f"{where}: rollup requires {child!r}, which is not a "
                                     "child of this item")
        points = data.get("points")
        if points is not None and (isinstance(points, bool)
                                   or not isinstance(points, int | float)
                                   or not math.isfinite(points) or points <= 0):
            raise FrameworkError(f"{where}: rollup points must be a positive number")
        if data["method"] == "points" and points is None:
            raise FrameworkError(f"{where}: a 'points' rollup needs its points total")
        comp.rollup = Rollup(method=data["method"], required=list(required),
                             points=float(points) if points is not None else None)


def _credit_rule_from_extension(rule: object, index: int,
                                comps: dict[str, ImportedCompetency],
                                source: str) -> ImportedCreditRule:
    where = f"{source}: extensions.{EXTENSION_KEY}.creditRules[{index}]"
    if not isinstance(rule, dict) or not rule.get("identifier") or not rule.get("name"):
        raise FrameworkError(f"{where}: a credit rule needs identifier and name")
    where = f"{source}: credit rule '{rule['identifier']}'"
    for key in ("competencies", "required"):
        for ident in rule.get(key) or []:
            if ident not in comps:
                raise FrameworkError(f"{where}: {key} names an unknown item {ident!r}")
    if not rule.get("competencies"):
        raise FrameworkError(f"{where}: no competencies")
    percent = rule.get("minPercent", 70.0)
    if isinstance(percent, bool) or not isinstance(percent, int | float) \
            or not math.isfinite(percent) or not 0 <= percent <= 100:
        raise FrameworkError(f"{where}: minPercent must be a number from 0 to 100")
    return ImportedCreditRule(identifier=str(rule["identifier"]), name=str(rule["name"]),
                              competencies=list(rule["competencies"]),
                              required=list(rule.get("required") or []),
                              min_percent=float(rule.get("minPercent", 70.0)))


def fetch_case_package(url: str, *, token: str | None = None,
                       timeout: float = 30) -> dict[str, Any]:
    """GET a CFPackage from a CASE provider, e.g.
    ``https://case.example.org/ims/case/v1p1/CFPackages/{sourcedId}`` (CASE REST binding,
    getCFPackage; v1p0 paths work the same). Public frameworks need no token; protected
    ones take an OAuth 2 bearer token. Every failure is a :class:`FrameworkError` naming the
    URL and what went wrong, since an admin pastes the URL into a form and needs to know
    whether it was the address, the permission or the server."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = requests.get(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise FrameworkError(f"{url}: request failed: {exc}") from exc
    if response.status_code != 200:
        detail = ""
        try:  # CASE errors are an imsx_StatusInfo object with a description
            body = response.json()
            if isinstance(body, dict) and body.get("imsx_description"):
                detail = f": {body['imsx_description']}"
        except ValueError:
            pass
        raise FrameworkError(f"{url}: HTTP {response.status_code} "
                             f"{response.reason or ''}".rstrip() + detail)
    try:
        data = response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no Content-Type")
        raise FrameworkError(f"{url}: HTTP 200 but the body is not JSON ({kind})") from None
    if not isinstance(data, dict):
        raise FrameworkError(f"{url}: not a CFPackage (the JSON body is not an object)")
    return data


# --------------------------------------------------------------------------- YAML format


class _Map(dict):
    """A YAML mapping that remembers the line it starts on and the line of each key."""

    line: int = 0
    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_Map` (line numbers from the composed nodes'
    marks) and which rejects duplicate keys, which PyYAML otherwise silently overwrites."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {result.lines[key]})",
                key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1  # "scale:" rather than its body
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def _load_yaml(text: str, filename: str) -> Any:
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()  # compose: nodes carry start marks
        return loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        context = ""
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            context = f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise FrameworkError(f"{filename}:{line}: invalid YAML: {exc.problem or exc}{context}"
                             ) from None
    except yaml.YAMLError as exc:
        raise FrameworkError(f"{filename}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _where_line(filename: str, value: object, key: object = None) -> str:
    """``file:line`` of a mapping (or of one of its values)."""
    if isinstance(value, _Map):
        line = value.lines.get(key, value.line) if key is not None else value.line
        return f"{filename}:{line}"
    return filename


_FRAMEWORK_KEYS = ("id", "title", "creator", "description", "uri", "scale", "calculation",
                   "competencies", "credit_rules")
_COMPETENCY_KEYS = ("id", "code", "statement", "type", "uri", "children", "precedes",
                    "rollup", "scale", "calculation")
_ROLLUP_KEYS = ("method", "required", "points")
_CREDIT_KEYS = ("id", "name", "competencies", "required", "min_percent")


class _YamlReader:
    """Turns the loaded YAML into an :class:`ImportedFramework`, naming ``file:line`` and
    the item in every error."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.comps: dict[str, ImportedCompetency] = {}
        self.maps: dict[str, _Map] = {}  # competency id -> its YAML mapping
        self.codes: dict[str, str] = {}  # code -> id

    def fail(self, node: object, key: object, message: str) -> FrameworkError:
        return FrameworkError(f"{_where_line(self.filename, node, key)}: {message}")

    def check_keys(self, node: _Map, allowed: tuple[str, ...], what: str) -> None:
        for key in node:
            if key not in allowed:
                raise self.fail(node, key, f"{what}: unknown key {key!r} (expected one of "
                                           f"{', '.join(allowed)})")

    def text(self, node: _Map, key: str, what: str, *, required: bool) -> str | None:
        value = node.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.fail(node, key if key in node else None, f"{what}: missing {key}")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(node, key, f"{what}: {key} must be text")
        if not isinstance(value, str):
            # YAML reads 1.10 as the number 1.1: refuse rather than store a changed code.
            raise self.fail(node, key, f"{what}: {key} {value!r} was read as a number; quote "
                                       f"it (e.g. {key}: \"{value}\")")
        return value.strip()

    def scale(self, value: object, node: _Map, key: str, what: str) -> Scale:
        if isinstance(value, str):
            return _builtin_scale(value, f"{_where_line(self.filename, node, key)}: {what}")
        return scale_from_data(value, f"{_where_line(self.filename, node, key)}: {what}",
                               filename=self.filename)

    def calculation(self, node: _Map, what: str) -> str:
        try:
            return check_calculation(node["calculation"])
        except ValueError as exc:
            raise self.fail(node, "calculation", f"{what}: {exc}") from None

    def refs(self, node: _Map, key: str, what: str) -> list[str]:
        """A list of competency references (id or code) -> identifiers."""
        value = node.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(node, key, f"{what}: {key} must be a list of competency ids "
                                       "or codes")
        out = []
        for ref in value:
            if not isinstance(ref, str):
                raise self.fail(node, key, f"{what}: {key}: {ref!r} is not a competency id or "
                                           "code (quote codes that look like numbers)")
            ident = ref if ref in self.comps else self.codes.get(ref)
            if ident is None:
                raise self.fail(node, key, f"{what}: {key} names an unknown competency "
                                           f"{ref!r}")
            if ident not in out:
                out.append(ident)
        return out

    # -- structure

    def read(self, data: object) -> ImportedFramework:
        if not isinstance(data, _Map):
            raise FrameworkError(f"{self.filename}:1: a framework file is a mapping with id, "
                                 "title and competencies")
        self.check_keys(data, _FRAMEWORK_KEYS, "framework")
        ident = self.text(data, "id", "framework", required=True)
        title = self.text(data, "title", f"framework '{ident}'", required=True)
        assert ident is not None and title is not None
        what = f"framework '{ident}'"
        scale = (self.scale(data["scale"], data, "scale", what) if data.get("scale") is not None
                 else _builtin_scale(DEFAULT_SCALE, self.filename))
        calculation = (self.calculation(data, what) if "calculation" in data
                       else DEFAULT_CALCULATION)
        top = data.get("competencies")
        if not isinstance(top, list) or not top:
            raise self.fail(data, "competencies" if "competencies" in data else None,
                            f"{what}: competencies must be a non-empty list")
        self.collect(top, None, data, "competencies")
        for comp_id, node in self.maps.items():
            self.finish(self.comps[comp_id], node)
        for comp_id, node in self.maps.items():
            comp = self.comps[comp_id]
            if comp.rollup and comp.rollup.method == "points":
                # A threshold above what the children can reach can never be met.
                reachable = sum((c.scale or scale).top_points for c in self.comps.values()
                                if c.parent == comp_id)
                if comp.rollup.points > reachable:
                    raise self.fail(node["rollup"], "points",
                                    f"competency {comp.label}: rollup points "
                                    f"{comp.rollup.points:g} exceed the {reachable:g} its "
                                    "children can reach")
        graph = {i: c.precedes for i, c in self.comps.items()}
        cycle = _find_cycle(graph)
        if cycle:
            path = " -> ".join(self.comps[i].label for i in cycle)
            first = self.maps[cycle[0]]
            raise self.fail(first, "precedes", f"competency {self.comps[cycle[0]].label}: "
                                               f"cycle in precedes: {path}")
        imported = ImportedFramework(
            identifier=ident, title=title, source="yaml", scale=scale, calculation=calculation,
            uri=self.text(data, "uri", what, required=False),
            creator=self.text(data, "creator", what, required=False),
            description=self.text(data, "description", what, required=False),
            competencies=_preorder(list(self.comps.values())))
        rules = data.get("credit_rules") or []
        if not isinstance(rules, list):
            raise self.fail(data, "credit_rules", f"{what}: credit_rules must be a list")
        seen: dict[str, int] = {}
        for rule in rules:
            credit = self.credit_rule(rule, imported)
            if credit.identifier in seen:
                raise self.fail(rule, "id", f"credit rule '{credit.identifier}': duplicate id "
                                            f"(first on line {seen[credit.identifier]})")
            seen[credit.identifier] = rule.line
            imported.credit_rules.append(credit)
        return imported

    def collect(self, items: object, parent: str | None, owner: _Map, key: str) -> None:
        """First pass: every competency, so references can point forwards."""
        if not isinstance(items, list):
            raise self.fail(owner, key, f"{key} must be a list of competencies")
        for position, node in enumerate(items):
            if not isinstance(node, _Map):
                raise self.fail(owner, key, f"{key}: item #{position + 1} is not a mapping "
                                            "(id, code, statement, ...)")
            ident = self.text(node, "id", "competency", required=True)
            assert ident is not None
            code = node.get("code") if isinstance(node.get("code"), str) else None
            what = f"competency {_label(ident, code)}"
            self.check_keys(node, _COMPETENCY_KEYS, what)
            code = self.text(node, "code", what, required=False)
            if ident in self.comps:
                raise self.fail(node, "id", f"{what}: duplicate id (first on line "
                                            f"{self.maps[ident].line})")
            if code is not None and code in self.codes:
                other = self.codes[code]
                raise self.fail(node, "code", f"{what}: duplicate code {code!r} (also "
                                              f"competency '{other}' on line "
                                              f"{self.maps[other].line})")
            statement = self.text(node, "statement", what, required=True)
            assert statement is not None
            comp = ImportedCompetency(
                identifier=ident, statement=statement, code=code,
                type=self.text(node, "type", what, required=False),
                uri=self.text(node, "uri", what, required=False),
                parent=parent, position=position)
            self.comps[ident] = comp
            self.maps[ident] = node
            if code is not None:
                self.codes[code] = ident
            if "children" in node and node["children"] is not None:
                self.collect(node["children"], ident, node, "children")

    def finish(self, comp: ImportedCompetency, node: _Map) -> None:
        """Second pass: references, overrides and the roll-up."""
        what = f"competency {comp.label}"
        comp.precedes = self.refs(node, "precedes", what)
        if comp.identifier in comp.precedes:
            raise self.fail(node, "precedes", f"{what}: cycle in precedes: it precedes itself")
        if node.get("scale") is not None:
            comp.scale = self.scale(node["scale"], node, "scale", what)
        if "calculation" in node:
            comp.calculation = self.calculation(node, what)
        if "rollup" in node:
            comp.rollup = self.rollup(comp, node)

    def rollup(self, comp: ImportedCompetency, node: _Map) -> Rollup:
        what = f"competency {comp.label}"
        data = node["rollup"]
        if isinstance(data, str):
            data = _Map(method=data)
            data.line, data.lines = node.lines["rollup"], {"method": node.lines["rollup"]}
        if not isinstance(data, _Map):
            raise self.fail(node, "rollup", f"{what}: rollup must be a method name or a "
                                            "mapping with method, required, points")
        self.check_keys(data, _ROLLUP_KEYS, f"{what}: rollup")
        method = data.get("method")
        if method not in ROLLUP_METHODS:
            raise self.fail(data, "method", f"{what}: rollup method {method!r} is not one of "
                                            f"{', '.join(ROLLUP_METHODS)}")
        children = [c for c in self.comps.values() if c.parent == comp.identifier]
        if method != "none" and not children:
            raise self.fail(node, "rollup", f"{what}: rollup {method!r} on a competency "
                                            "without children")
        required = self.refs(data, "required", f"{what}: rollup")
        child_ids = {c.identifier for c in children}
        for ident in required:
            if ident not in child_ids:
                raise self.fail(data, "required", f"{what}: rollup requires "
                                                  f"{self.comps[ident].label}, which is not "
                                                  "one of its children")
        points = data.get("points")
        if method == "points":
            if isinstance(points, bool) or not isinstance(points, (int, float)) or points <= 0:
                raise self.fail(data, "points" if "points" in data else None,
                                f"{what}: rollup 'points' needs points: the total of the "
                                "children's points required (a positive number)")
        elif required or points is not None:
            raise self.fail(data, "required" if required else "points",
                            f"{what}: rollup 'required' and 'points' apply to method "
                            "'points' only")
        return Rollup(method=method, required=required,
                      points=float(points) if points is not None else None)

    def credit_rule(self, node: object, imported: ImportedFramework) -> ImportedCreditRule:
        if not isinstance(node, _Map):
            raise FrameworkError(f"{self.filename}: credit_rules: each credit rule is a "
                                 "mapping with id, name, competencies, min_percent")
        ident = self.text(node, "id", "credit rule", required=True)
        what = f"credit rule '{ident}'"
        self.check_keys(node, _CREDIT_KEYS, what)
        name = self.text(node, "name", what, required=True)
        assert ident is not None and name is not None
        chosen = node.get("competencies")
        if chosen == "all":
            # Roll-up parents are derived from their leaves: counting them as well would
            # count the same evidence twice.
            competencies = [c.identifier for c in imported.leaves()]
        else:
            competencies = self.refs(node, "competencies", what)
        if not competencies:
            raise self.fail(node, "competencies" if "competencies" in node else None,
                            f"{what}: competencies must be \"all\" or a non-empty list")
        percent = node.get("min_percent", 70)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) \
                or not 0 <= percent <= 100:
            raise self.fail(node, "min_percent", f"{what}: min_percent must be a number "
                                                 "from 0 to 100")
        return ImportedCreditRule(identifier=ident, name=name, competencies=competencies,
                                  required=self.refs(node, "required", what),
                                  min_percent=float(percent))


def parse_yaml_framework(text: str, *, filename: str) -> ImportedFramework:
    """Read a framework in the native YAML format (see ``mappings/data/sample_framework.yaml``
    for a complete example)::

        id: algebra-1-cbe                 # framework id (also its URL slug)
        title: Algebra I (competency-based)
        scale: performance-levels         # built-in scale name, or {name, levels: [...]}
        calculation: decaying_average(0.65)
        competencies:
          - id: alg1-1                    # unique across all frameworks
            code: ALG.1
            statement: Expressions, equations and inequalities
            rollup: {method: points, required: [ALG.1.2], points: 28}
            children:
              - {id: alg1-1-1, code: ALG.1.1, statement: ..., precedes: [ALG.1.2]}
        credit_rules:
          - {id: alg1-credit, name: Algebra I credit, competencies: all, min_percent: 70}

    References (``precedes``, ``rollup.required``, credit ``competencies``/``required``)
    accept a competency's id or code. ``competencies: all`` means every leaf competency.
    Errors read ``filename:line: competency 'id' (CODE): problem``.
    """
    return _YamlReader(filename).read(_load_yaml(text, filename))


def sample_framework() -> ImportedFramework:
    """The shipped sample course (Algebra I), for demos and tests."""
    return parse_yaml_framework(_data_text(SAMPLE_FRAMEWORK), filename=SAMPLE_FRAMEWORK)


def sample_case_package() -> dict[str, Any]:
    """The same sample framework as a CASE 1.1 CFPackage."""
    return json.loads(_data_text(SAMPLE_CASE_PACKAGE))


# --------------------------------------------------------------------------- storing


def to_documents(imported: ImportedFramework) -> tuple[
        models.Framework, list[models.Competency], list[models.CreditRule]]:
    """The model documents an import stands for (unsaved, validated)."""
    framework = models.Framework(
        identifier=imported.identifier, title=imported.title, source=imported.source,
        uri=imported.uri, case_version=imported.case_version, creator=imported.creator,
        description=imported.description, scale=imported.scale,
        calculation=imported.calculation, raw=imported.raw, updated_at=models.utcnow())
    competencies = [
        models.Competency(
            identifier=c.identifier, framework=imported.identifier, code=c.code,
            statement=c.statement, type=c.type, uri=c.uri, parent=c.parent,
            position=c.position, precedes=list(c.precedes), scale=c.scale,
            calculation=c.calculation, rollup=c.rollup or Rollup(), raw=c.raw)
        for c in imported.competencies]
    rules = [
        models.CreditRule(identifier=r.identifier, name=r.name, framework=imported.identifier,
                          competencies=list(r.competencies), required=list(r.required),
                          min_percent=r.min_percent)
        for r in imported.credit_rules]
    for doc, what in ([(framework, f"framework '{imported.identifier}'")]
                      + [(c, f"competency {_label(c.identifier, c.code)}")
                         for c in competencies]
                      + [(r, f"credit rule '{r.identifier}'") for r in rules]):
        try:
            doc.validate()
        except me.ValidationError as exc:
            raise FrameworkError(f"{what}: {exc}") from None
    return framework, competencies, rules


# The fields an import owns. Anything else on a stored record (a field a later version of
# the model adds, e.g. a retirement flag set by an admin) is left as it is on re-import.
_OWNED_FIELDS: dict[type[me.Document], tuple[str, ...]] = {
    models.Framework: ("title", "source", "uri", "case_version", "creator", "description",
                       "scale", "calculation", "raw", "updated_at"),
    models.Competency: ("framework", "code", "statement", "type", "uri", "parent", "position",
                        "precedes", "scale", "calculation", "rollup", "raw"),
    models.CreditRule: ("name", "framework", "competencies", "required", "min_percent"),
}


def _upserts(documents: Iterable[me.Document]) -> list[UpdateOne]:
    """Update in place rather than replace: ``$set`` the fields an import owns, ``$unset``
    the owned ones that are now empty, and write the other fields' defaults only when the
    record is new (``$setOnInsert``)."""
    ops = []
    for doc in documents:
        data = doc.to_mongo().to_dict()
        key = data.pop("_id")
        owned = {doc._fields[name].db_field for name in _OWNED_FIELDS[type(doc)]}
        update: dict[str, Any] = {"$set": {k: v for k, v in data.items() if k in owned}}
        unset = {name: "" for name in owned if name not in data}
        if unset:
            update["$unset"] = unset
        on_insert = {k: v for k, v in data.items() if k not in owned}
        if on_insert:
            update["$setOnInsert"] = on_insert
        ops.append(UpdateOne({"_id": key}, update, upsert=True))
    return ops


def _owned_elsewhere(model: type[me.Document], identifiers: list[str],
                     framework: str) -> dict[str, str]:
    """Identifiers among ``identifiers`` that belong to another framework: a primary-key
    lookup in chunks of 100 (SecantusDB 0.7 slows down sharply with long ``$in`` lists:
    3,000 ids took 0.9 s in chunks of 500 and 0.26 s in chunks of 100)."""
    clashes: dict[str, str] = {}
    collection = model._get_collection()
    for start in range(0, len(identifiers), 100):
        chunk = identifiers[start:start + 100]
        for row in collection.find({"_id": {"$in": chunk}}, {"framework": 1}):
            if row.get("framework") != framework:
                clashes[row["_id"]] = row.get("framework")
    return clashes


def save_framework(imported: ImportedFramework) -> models.Framework:
    """Store an import: upsert the framework, its competencies and credit rules by
    identifier.

    Re-importing updates titles, statements, the tree and the order in place. Nothing is
    ever deleted -- not evidence, mastery or credit (other collections are not touched at
    all) and not competencies or credit rules that are no longer in the package: learners'
    records point at them. Those are listed in ``imported.warnings``; the model has no flag
    to retire them yet. Identifiers are global, so an id already used by *another*
    framework is refused before anything is written. Ends with ``catalog.bump()`` so
    running mapping workers pick the change up.
    """
    framework, competencies, rules = to_documents(imported)
    comp_ids = [c.identifier for c in competencies]
    for model, ids, what in ((models.Competency, comp_ids, "competency"),
                             (models.CreditRule, [r.identifier for r in rules], "credit rule")):
        clashes = _owned_elsewhere(model, ids, imported.identifier)
        if clashes:
            ident, other = next(iter(clashes.items()))
            raise FrameworkError(f"{what} '{ident}': duplicate identifier: already belongs "
                                 f"to framework '{other}' ({len(clashes)} clash(es) in all)")
    # Competencies first, the framework record last: a framework that is visible has its
    # competencies (an interrupted import is completed by running it again).
    if competencies:
        models.Competency._get_collection().bulk_write(_upserts(competencies), ordered=False)
    if rules:
        models.CreditRule._get_collection().bulk_write(_upserts(rules), ordered=False)
    models.Framework._get_collection().bulk_write(_upserts([framework]))

    # All ids of the framework, compared here: a "$nin" of every id took 4.7 s for 3,000
    # competencies on SecantusDB 0.7, this 0.05 s (it is bounded by the framework index).
    current = set(comp_ids)
    stale = [row["_id"] for row in models.Competency._get_collection().find(
        {"framework": imported.identifier}, {"_id": 1}) if row["_id"] not in current]
    if stale:
        message = (f"{len(stale)} competenc{'y' if len(stale) == 1 else 'ies'} no longer in "
                   f"the package kept (evidence may refer to them): "
                   f"{', '.join(map(repr, stale[:10]))}{' ...' if len(stale) > 10 else ''}")
        imported.warnings.append(message)
        log.warning("framework %s: %s", imported.identifier, message)
    # Running mapping workers hold a snapshot of the frameworks; tell them to reload.
    catalog.bump()
    return models.Framework.objects.get(identifier=imported.identifier)


# --------------------------------------------------------------------------- CASE export


def _iso(moment: dt.datetime | None) -> str:
    moment = moment or models.utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def _to_v1p1(record: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """A stored CASE 1.0 or 1.1 record reduced to what the 1.1 binding accepts: 1.0 allowed
    ``subject``/``educationLevel`` as a single string and nulls or date-times in the status
    dates, where 1.1 wants arrays and dates."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key not in allowed or value is None:
            continue
        if key in ("subject", "educationLevel", "conceptKeywords") and isinstance(value, str):
            value = [value]
        elif key in ("statusStartDate", "statusEndDate") and isinstance(value, str):
            value = value[:10]
        out[key] = value
    return out


def export_case(framework_id: str, *, base_url: str | None = None) -> dict[str, Any]:
    """The stored framework as a CASE 1.1 CFPackage.

    Identifiers of a CASE-imported framework are kept as they were; a YAML framework's ids
    (``alg1-1-1``) are not UUIDs as CASE requires, so they are replaced by name-based UUIDs
    (the same on every export). URIs are kept; missing ones are minted under ``base_url``
    (``{base_url}/ims/case/v1p1/CFItems/{id}``) or as ``urn:uuid:``. Scale, calculation,
    roll-ups and credit rules travel in ``extensions.masteryhub`` so importing the export
    gives the same framework back.
    """
    framework = models.Framework.objects(identifier=framework_id).first()
    if framework is None:
        raise FrameworkError(f"framework '{framework_id}': not found")
    competencies = list(models.Competency.objects(framework=framework_id))
    rules = list(models.CreditRule.objects(framework=framework_id))
    return build_case_package(framework, competencies, rules, base_url=base_url)


def build_case_package(framework: models.Framework, competencies: list[models.Competency],
                       rules: list[models.CreditRule], *, base_url: str | None = None,
                       last_change: dt.datetime | None = None) -> dict[str, Any]:
    """:func:`export_case` on documents already at hand (no database access)."""
    keep_ids = framework.source == "case"

    def case_id(kind: str, ident: str) -> str:
        if keep_ids or _UUID_RE.fullmatch(ident):
            return ident
        return str(uuid.uuid5(_NAMESPACE, f"{framework.identifier}\x00{kind}\x00{ident}"))

    def mint_uri(kind: str, ident: str) -> str:
        if base_url:
            return f"{base_url.rstrip('/')}/ims/case/v1p1/{kind}/{ident}"
        return f"urn:uuid:{ident}" if _UUID_RE.fullmatch(ident) else f"urn:masteryhub:{ident}"

    changed = _iso(last_change or framework.updated_at)
    doc_id = case_id("framework", framework.identifier)
    raw_doc = framework.raw or {}
    doc = _to_v1p1(raw_doc, _V1P1_DOCUMENT_KEYS)
    doc.update({
        "identifier": doc_id,
        "uri": framework.uri or raw_doc.get("uri") or mint_uri("CFDocuments", doc_id),
        "creator": framework.creator or raw_doc.get("creator") or "Mastery Hub",
        "title": framework.title,
        "lastChangeDateTime": raw_doc.get("lastChangeDateTime") if keep_ids and
        raw_doc.get("lastChangeDateTime") else changed,
        "caseVersion": "1.1",
    })
    if framework.description:
        doc["description"] = framework.description
    extensions = dict(doc.get("extensions") or {})
    extensions[EXTENSION_KEY] = {"scale": scale_to_data(framework.scale),
                                 "calculation": framework.calculation}
    doc["extensions"] = extensions
    doc_link = {"title": framework.title, "identifier": doc_id, "uri": doc["uri"]}

    comps = {c.identifier: c for c in competencies}
    ids = {ident: case_id("item", ident) for ident in comps}
    ordered = _preorder([ImportedCompetency(identifier=c.identifier, statement=c.statement,
                                            parent=c.parent if c.parent in comps else None,
                                            position=c.position or 0)
                         for c in competencies])
    items: list[dict[str, Any]] = []
    links: dict[str, dict[str, str]] = {}
    for entry in ordered:
        comp = comps[entry.identifier]
        raw = comp.raw or {}
        item = _to_v1p1(raw, _V1P1_ITEM_KEYS)
        item.update({
            "identifier": ids[comp.identifier],
            "uri": comp.uri or raw.get("uri") or mint_uri("CFItems", ids[comp.identifier]),
            "fullStatement": comp.statement,
            "lastChangeDateTime": raw.get("lastChangeDateTime") if keep_ids and
            raw.get("lastChangeDateTime") else changed,
        })
        for key, value in (("humanCodingScheme", comp.code), ("CFItemType", comp.type)):
            if value:
                item[key] = value
            else:
                item.pop(key, None)
        ext: dict[str, Any] = {}
        if comp.rollup and comp.rollup.method != "none":
            ext["rollup"] = {"method": comp.rollup.method,
                             "required": [ids[i] for i in comp.rollup.required if i in ids]}
            if comp.rollup.points is not None:
                ext["rollup"]["points"] = comp.rollup.points
        if comp.scale:
            ext["scale"] = scale_to_data(comp.scale)
        if comp.calculation:
            ext["calculation"] = comp.calculation
        item_ext = {k: v for k, v in (item.get("extensions") or {}).items()
                    if k != EXTENSION_KEY}
        if ext:
            item_ext[EXTENSION_KEY] = ext
        if item_ext:
            item["extensions"] = item_ext
        else:
            item.pop("extensions", None)
        items.append(item)
        links[comp.identifier] = {"title": comp.code or comp.statement[:60],
                                  "identifier": item["identifier"], "uri": item["uri"]}

    associations: list[dict[str, Any]] = []

    def associate(kind: str, origin: dict[str, str], dest: dict[str, str],
                  sequence: int | None = None) -> None:
        ident = str(uuid.uuid5(_NAMESPACE, f"{doc_id}\x00{kind}\x00{origin['identifier']}"
                                           f"\x00{dest['identifier']}"))
        assoc: dict[str, Any] = {"identifier": ident, "associationType": kind,
                                 "uri": mint_uri("CFAssociations", ident),
                                 "originNodeURI": origin, "destinationNodeURI": dest,
                                 "lastChangeDateTime": changed}
        if sequence is not None:
            assoc["sequenceNumber"] = sequence
        associations.append(assoc)

    # CASE IM, CFAssociation: isChildOf runs from child (origin) to parent (destination),
    # the CFDocument for top-level items; sequenceNumber orders the siblings (from 1).
    for entry in ordered:
        parent = links[entry.parent] if entry.parent else doc_link
        associate("isChildOf", links[entry.identifier], parent, entry.position + 1)
    for entry in ordered:
        for successor in comps[entry.identifier].precedes:
            if successor in links:
                associate("precedes", links[entry.identifier], links[successor])

    package: dict[str, Any] = {"CFDocument": doc, "CFItems": items,
                               "CFAssociations": associations}
    if rules:
        package["extensions"] = {EXTENSION_KEY: {"creditRules": [
            {"identifier": case_id("credit", rule.identifier), "name": rule.name,
             "competencies": [ids[i] for i in rule.competencies if i in ids],
             "required": [ids[i] for i in rule.required if i in ids],
             "minPercent": rule.min_percent}
            for rule in sorted(rules, key=lambda r: r.identifier)]}}
    return package
