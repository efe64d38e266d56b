"""Which competencies and credits a course (LTI context) uses.

An instructor links the course to frameworks (and may narrow it to some competencies and
credit rules); a platform can preset that through custom parameters on the link:
``masteryhub_frameworks``, ``masteryhub_competencies`` and ``masteryhub_credits``
(comma-separated ids or competency codes). A course linked to nothing uses the only
framework there is, if exactly one exists, so a fresh install works without setup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from lti_tool.models import Course
from mappings.models import Competency, CreditRule, Framework, utcnow

log = logging.getLogger(__name__)

CUSTOM = {"masteryhub_frameworks": "frameworks", "masteryhub_competencies": "competencies",
          "masteryhub_credits": "credit_rules"}


class CourseSetupError(ValueError):
    """A link to something that does not exist; the message names it."""


@dataclass
class Scope:
    frameworks: list[str]
    competencies: list[str]  # every competency shown, parents before children
    leaves: list[str]  # competencies with evidence of their own (no children)
    credit_rules: list[str]


def _split(value) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [i.strip() for i in items if str(i).strip()]


def resolve_competencies(frameworks: list[str], refs: list[str]) -> list[str]:
    """Competency ids for ids or codes, within the frameworks."""
    out = []
    for ref in refs:
        found = Competency.objects(framework__in=frameworks, identifier=ref).first() or \
            Competency.objects(framework__in=frameworks, code=ref).first()
        if found is None:
            raise CourseSetupError(f"competency {ref!r} is not in {', '.join(frameworks)}")
        out.append(found.identifier)
    return out


def link(course: Course, *, frameworks: list[str], competencies: list[str] | None = None,
         credit_rules: list[str] | None = None) -> Course:
    """Set what the course uses; validates every reference before changing anything."""
    frameworks = list(dict.fromkeys(frameworks))
    for f in frameworks:
        if Framework.objects(identifier=f).first() is None:
            raise CourseSetupError(f"framework {f!r} does not exist")
    chosen = resolve_competencies(frameworks, competencies or [])
    rules = list(dict.fromkeys(credit_rules or []))
    for r in rules:
        rule = CreditRule.objects(identifier=r).first()
        if rule is None or rule.framework not in frameworks:
            raise CourseSetupError(f"credit rule {r!r} is not a credit of "
                                   f"{', '.join(frameworks) or 'the linked frameworks'}")
    course.update(set__frameworks=frameworks, set__competencies=chosen,
                  set__credit_rules=rules, set__updated_at=utcnow())
    course.reload()
    return course


def apply_custom_parameters(course_id: str, custom: Mapping | None) -> None:
    """Preset from the link's custom parameters, if the course is not set up yet.
    Unknown references are ignored here (a launch must not fail on them) and logged."""
    if not custom or not any(k in custom for k in CUSTOM):
        return
    course = Course.objects(identifier=course_id).first()
    if course is None or course.frameworks:
        return
    try:
        link(course, frameworks=_split(custom.get("masteryhub_frameworks")),
             competencies=_split(custom.get("masteryhub_competencies")),
             credit_rules=_split(custom.get("masteryhub_credits")))
    except CourseSetupError as exc:
        log.warning("course %s: custom parameters ignored: %s",
                                            course_id, exc)


def scope_of(course: Course | None) -> Scope:
    frameworks = list(course.frameworks) if course and course.frameworks else []
    if not frameworks:
        only = list(Framework.objects.only("identifier").limit(2))
        frameworks = [only[0].identifier] if len(only) == 1 else []
    if not frameworks:
        return Scope([], [], [], [])
    all_items = tree_order(list(Competency.objects(framework__in=frameworks)
                                .order_by("framework", "position")))
    parents = {c.parent for c in all_items if c.parent}
    if course and course.competencies:
        wanted = set(course.competencies)
        items = [c for c in all_items if c.identifier in wanted]
    else:
        items = all_items
    ids = [c.identifier for c in items]
    leaves = [c.identifier for c in items if c.identifier not in parents]
    if course and course.credit_rules:
        rules = list(course.credit_rules)
    else:
        rules = [r.identifier for r in CreditRule.objects(framework__in=frameworks)
                 .order_by("identifier")]
    return Scope(frameworks, ids, leaves, rules)


def tree_order(items: list[Competency]) -> list[Competency]:
    """Parents before their children, siblings by position (depth-first), the way a
    framework reads."""
    ids = {c.identifier for c in items}
    children: dict[str | None, list[Competency]] = {}
    for c in items:
        children.setdefault(c.parent if c.parent in ids else None, []).append(c)
    out: list[Competency] = []
    seen: set[str] = set()

    def visit(parent: str | None) -> None:
        for c in sorted(children.get(parent, ()), key=lambda c: (c.framework, c.position)):
            if c.identifier not in seen:
                seen.add(c.identifier)
                out.append(c)
                visit(c.identifier)
    visit(None)
    return out + [c for c in items if c.identifier not in seen]  # cycles: keep, at the end
