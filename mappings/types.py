"""Plain values passed between the rule matcher, the calculator and the engine.

Kept free of the database so matching and calculation can be tested (and dry-run with
`masteryhub rules test`) without storing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mappings.models import Scale

SOURCE_TYPES = (
    "online_course", "internship", "project", "dual_enrollment", "community_service",
    "assessment", "teacher_observation", "credit_recovery", "self_reported", "other",
)


@dataclass(frozen=True)
class CompetencyInfo:
    """What the matcher needs to know about a competency."""

    identifier: str
    framework: str
    code: str | None
    uri: str | None
    scale: Scale  # the effective scale (competency override, else the framework's)


@dataclass(frozen=True)
class Draft:
    """Evidence a statement would produce for one competency under one rule."""

    competency: str
    rule: str  # "ruleset:rule-id", or "case-uri" for statements carrying a CASE URI
    points: float  # on the competency's scale
    source_type: str
    review: bool  # True: a teacher must approve it before it counts
    notes: list[str] = field(default_factory=list)  # why it matched, for `rules test`
