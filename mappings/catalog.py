"""The engine's read-only view of frameworks, competencies, rules and credit rules.

Why a snapshot: the worker evaluates every statement against all of it; loading it once
per change (not per statement) keeps matching in memory. Commands that change it call
:func:`bump` so running workers reload on their next poll.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from mappings.models import (
    RECORDS_FORMAT,
    Competency,
    CreditRule,
    Framework,
    RuleSet,
    Scale,
    WorkerState,
)
from mappings.types import CompetencyInfo

VERSION_ID = "catalog-version"


def bump() -> int:
    """Record that frameworks, rules or credit rules changed; returns the new version."""
    WorkerState.objects(identifier=VERSION_ID).update_one(inc__position=1, upsert=True)
    return current_version()


def current_version() -> int:
    state = WorkerState.objects(identifier=VERSION_ID).only("position").first()
    return state.position if state else 0


@dataclass
class Catalog:
    version: int
    frameworks: dict[str, Framework]
    competencies: dict[str, Competency]
    infos: dict[str, CompetencyInfo]
    rulesets: list = field(default_factory=list)  # mappings.rules.RuleSet
    credit_rules: list[CreditRule] = field(default_factory=list)
    children: dict[str, list[str]] = field(default_factory=dict)
    credits_by_competency: dict[str, list[CreditRule]] = field(default_factory=dict)
    ruleset_sources: list[list[str]] = field(default_factory=list)  # [name, text]

    def scale_of(self, competency_id: str) -> Scale:
        competency = self.competencies[competency_id]
        return competency.scale or self.frameworks[competency.framework].scale

    def method_of(self, competency_id: str) -> str:
        competency = self.competencies[competency_id]
        return competency.calculation or self.frameworks[competency.framework].calculation

    def ancestors(self, competency_id: str) -> list[str]:
        """Parents up to the root, nearest first (cycles are refused at import)."""
        out = []
        parent = self.competencies[competency_id].parent
        while parent and parent in self.competencies and parent not in out:
            out.append(parent)
            parent = self.competencies[parent].parent
        return out

    def fingerprint(self) -> dict[str, str]:
        """What derived records depend on, hashed in two parts (a catalog version is bumped
        for other reasons too, e.g. a learner merge, that change neither):

        - ``match``: what turns a statement into evidence -- the rule sets and each
          competency's identity, framework, code, URI and scale (a draft's points are on
          the scale). A change means stored evidence may no longer be what the rules
          produce: the statements are mapped again.
        - ``derive``: what turns evidence into mastery and credit -- scales, calculation
          methods, the tree and its roll-ups, credit rules. A change means every learner's
          records are rebuilt from their evidence.
        """
        def scale(s) -> list:
            return [s.name, sorted([lv.name, lv.points, bool(lv.mastery)] for lv in s.levels)]

        match = [
            self.ruleset_sources,
            sorted([i.identifier, i.framework, i.code, i.uri, scale(i.scale)]
                   for i in self.infos.values()),
        ]
        derive = [
            sorted([f.identifier, scale(f.scale), f.calculation]
                   for f in self.frameworks.values()),
            sorted([c.identifier, c.framework, c.parent, self.method_of(c.identifier),
                    scale(self.scale_of(c.identifier)),
                    [c.rollup.method, sorted(c.rollup.required or ()), c.rollup.points]
                    if c.rollup else None]
                   for c in self.competencies.values()),
            [[r.identifier, r.framework, sorted(r.competencies), sorted(r.required or ()),
              r.min_percent] for r in self.credit_rules],
            RECORDS_FORMAT,
        ]
        return {name: hashlib.blake2b(orjson.dumps(part), digest_size=12).hexdigest()
                for name, part in (("match", match), ("derive", derive))}

    def rolls_up(self, competency_id: str) -> bool:
        competency = self.competencies[competency_id]
        method = competency.rollup.method if competency.rollup else "none"
        return method != "none" and bool(self.children.get(competency_id))


def load() -> Catalog:
    """Read everything the engine needs. Stored rule sets were validated against the
    competencies when loaded; here they are parsed without that check, so a competency
    removed since only skips its evidence instead of stopping the worker."""
    from mappings.rules import load_ruleset

    version = current_version()
    frameworks = {f.identifier: f for f in Framework.objects}
    competencies = {c.identifier: c for c in Competency.objects.order_by("framework", "position")
                    if c.framework in frameworks}
    infos = {}
    children: dict[str, list[str]] = defaultdict(list)
    for c in competencies.values():
        scale = c.scale or frameworks[c.framework].scale
        infos[c.identifier] = CompetencyInfo(identifier=c.identifier, framework=c.framework,
                                             code=c.code, uri=c.uri, scale=scale)
        if c.parent:
            children[c.parent].append(c.identifier)
    stored = list(RuleSet.objects.order_by("name"))
    rulesets = [load_ruleset(r.text, filename=r.name) for r in stored]
    credit_rules = list(CreditRule.objects.order_by("identifier"))
    by_competency: dict[str, list[CreditRule]] = defaultdict(list)
    for rule in credit_rules:
        for competency_id in rule.competencies:
            by_competency[competency_id].append(rule)
    return Catalog(version=version, frameworks=frameworks, competencies=competencies,
                   infos=infos, rulesets=rulesets, credit_rules=credit_rules,
                   children=dict(children), credits_by_competency=dict(by_competency),
                   ruleset_sources=[[r.name, r.text] for r in stored])
