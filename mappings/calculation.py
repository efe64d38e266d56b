"""Mastery calculation, parent roll-ups and course-credit rules, as pure functions.

Why pure: every derived record (``Mastery``, roll-up, ``Credit``) must be a function of the
accepted evidence alone (see ``mappings/models.py``), so that recomputing after a crash, a
teacher's override or a voided statement always gives the same answer. Nothing here touches
the database or Flask; the engine loads evidence, orders it and calls these functions.

References (read, not copied):

* DESIGN.md, "Competency semantics".
* Canvas LMS: ``app/models/rollup_score.rb`` (``calculate_results``, ``n_mastery_set``,
  ``decaying_average_set``, ``standard_decaying_average``) and
  ``app/models/outcome_calculation_method.rb`` (``VALID_CALCULATION_INTS``), plus the
  Outcomes API documentation (https://developerdocs.instructure.com/services/canvas/
  file.all_resources/outcomes: ``calculation_method`` / ``calculation_int``).
* Moodle: ``core_competency\\competency_rule_points::matches`` (required children + point
  total, only proficient children contribute) and ``competency_rule_all`` (every child
  proficient).

Conventions shared by every function:

* Scores are ordered oldest -> newest (by statement timestamp) and are on the competency's
  own points scale; results are on that same scale. Nothing is rounded here (Canvas rounds
  to 2 decimals when it stores a roll-up; display code may do the same).
* "Mastered" means ``points >= mastery_points`` with an absolute tolerance of ``1e-9``
  (:data:`TOLERANCE`), so 2.9999999999 from float arithmetic still counts as 3.
* Whenever a result is *not* mastered although its raw number would reach mastery (n_mastery
  with too few mastery scores, a roll-up whose rule is not met), the points are capped just
  below mastery (:data:`NOT_MASTERED_MARGIN`). So the invariant
  ``mastered == is_mastered(points, mastery_points)`` holds for every result and the level
  shown (``Scale.level_for``) never contradicts the mastered flag.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from mappings.models import Scale

__all__ = [
    "METHODS",
    "NOT_MASTERED_MARGIN",
    "ROLLUP_METHODS",
    "TOLERANCE",
    "ChildState",
    "CreditProgress",
    "Method",
    "calculate",
    "evaluate_credit",
    "is_mastered",
    "parse_method",
    "rollup",
]

#: Absolute float tolerance for "reaches mastery" and "reaches the points / percent needed".
TOLERANCE = 1e-9

#: How far below mastery a not-mastered result is capped. 0.01 because Canvas (and our
#: display) round points to 2 decimals: a capped 2.99 never *displays* as the mastery 3.00.
NOT_MASTERED_MARGIN = 0.01

#: Calculation methods, in the order Canvas lists them (our names: see :func:`parse_method`).
METHODS = ("highest", "latest", "average", "n_mastery", "weighted_average", "decaying_average")
_PARAMETRISED = {"n_mastery": "n", "weighted_average": "w", "decaying_average": "d"}
_EXAMPLES = {
    "n_mastery": "n_mastery(3)",
    "weighted_average": "weighted_average(0.65)",
    "decaying_average": "decaying_average(0.65)",
}

#: Roll-up methods, as in ``mappings.models.Rollup.method``.
ROLLUP_METHODS = ("none", "all_children", "points", "average")

_SPEC = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\(\s*([^()]*?)\s*\))?\s*$")
_INTEGER = re.compile(r"^\+?\d+$")


# --------------------------------------------------------------------------------------------
# Calculation methods
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A parsed calculation method.

    ``param`` is ``n`` (an ``int`` >= 1) for ``n_mastery``, ``w`` for ``weighted_average``,
    ``d`` for ``decaying_average`` (both fractions strictly between 0 and 1) and ``None`` for
    the others. Validated on construction, so a ``Method`` built by hand is as safe as one
    from :func:`parse_method`. ``str(method)`` gives the canonical spec back.
    """

    name: str
    param: float | None = None

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(
                f"unknown calculation method {self.name!r}; expected one of {', '.join(METHODS)}"
            )
        letter = _PARAMETRISED.get(self.name)
        if letter is None:
            if self.param is not None:
                raise ValueError(f"{self.name} takes no parameter")
            return
        if self.param is None:
            raise ValueError(f"{self.name} needs a parameter, e.g. {_EXAMPLES[self.name]}")
        if isinstance(self.param, bool) or not isinstance(self.param, int | float):
            raise ValueError(f"{self.name}: {letter} must be a number, got {self.param!r}")
        if self.name == "n_mastery":
            if not (
                math.isfinite(self.param) and float(self.param).is_integer() and self.param >= 1
            ):
                raise ValueError(f"n_mastery: n must be a positive integer, got {self.param!r}")
            object.__setattr__(self, "param", int(self.param))
        elif not (math.isfinite(self.param) and 0 < self.param < 1):
            raise ValueError(
                f"{self.name}: {letter} must be between 0 and 1, exclusive "
                f"(e.g. 0.65 for 65%), got {self.param!r}"
            )

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}({self.param!r})"


def parse_method(spec: str) -> Method:
    """Parse ``"highest"``, ``"latest"``, ``"average"``, ``"n_mastery(3)"``,
    ``"weighted_average(0.65)"`` or ``"decaying_average(0.65)"``.

    Names are case-insensitive and surrounding blanks are ignored. Parameters are required and
    validated (``ValueError`` naming the problem):

    * ``n`` must be a positive integer written as one (``3``, not ``3.0`` or ``2.5``). Canvas
      caps it at 10 (``OutcomeCalculationMethod::VALID_CALCULATION_INTS``); we do not,
      since nothing in the calculation depends on it.
    * ``w`` and ``d`` must lie strictly between 0 and 1. 0 and 1 are rejected because they
      degenerate (``w = 1`` / ``d = 1`` is ``latest``; ``w = 0`` ignores the newest score,
      ``d = 0`` keeps only the first), matching Canvas's accepted range 1..99 (percent).
      Canvas's percent form (``65``) is rejected with a hint rather than guessed at. Canvas
      further restricts its decaying average to 50..99; we accept any ``0 < d < 1``.
    * No defaults: Canvas silently falls back to 65 when the integer is missing, but a rule
      file that forgot its parameter is more likely a mistake than a wish for 0.65.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty calculation method; expected one of " + ", ".join(METHODS))
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"cannot parse calculation method {spec!r}; expected e.g. 'highest' or "
            "'decaying_average(0.65)'"
        )
    name, raw = match.group(1).lower(), match.group(2)
    if name not in METHODS:
        raise ValueError(
            f"unknown calculation method {name!r}; expected one of {', '.join(METHODS)}"
        )
    letter = _PARAMETRISED.get(name)
    if letter is None:
        if raw is not None:
            raise ValueError(f"{name} takes no parameter, got {spec.strip()!r}")
        return Method(name)
    if raw is None or raw == "":
        raise ValueError(f"{name} needs a parameter, e.g. {_EXAMPLES[name]}")
    if name == "n_mastery":
        if not _INTEGER.match(raw) or int(raw) < 1:
            raise ValueError(f"n_mastery: n must be a positive integer, got {raw!r}")
        return Method(name, int(raw))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: {letter} must be a number, got {raw!r}") from None
    return Method(name, value)


def is_mastered(points: float | None, mastery_points: float) -> bool:
    """``points >= mastery_points`` (DESIGN.md: "Mastery = score >= mastery points").

    An absolute tolerance of :data:`TOLERANCE` absorbs float noise from averaging, e.g. the
    decaying average of 3s computing to 2.9999999999999996. No score is never mastered.
    """
    return points is not None and points >= mastery_points - TOLERANCE


def calculate(
    method: Method | str, scores: Sequence[float], mastery_points: float
) -> float | None:
    """One competency's points from its scores, ordered oldest -> newest.

    Returns ``None`` when there is no score (Canvas: no roll-up without results). The result
    is on the scores' own scale and is not rounded. Each method (Canvas
    ``RollupScore#calculate_results``; DESIGN.md "Competency semantics"):

    * ``highest`` -- the best score ever: evidence once shown is not lost.
    * ``latest`` -- the newest score ("Most Recent Score" in Canvas).
    * ``average`` -- the arithmetic mean of all scores.
    * ``n_mastery(n)`` -- "n Number of Times": the mean of the scores that reach mastery, once
      at least ``n`` of them exist; see :func:`_n_mastery` for fewer.
    * ``weighted_average(w)`` -- ``latest * w + mean(earlier) * (1 - w)``; Canvas's original
      (pre-2024) "decaying average", renamed "weighted average"; see :func:`_weighted_average`.
    * ``decaying_average(d)`` -- ``D1 = s1, Dk = (1 - d) * D(k-1) + d * sk``; Canvas's
      ``standard_decaying_average``, now shown as "Decaying Average"; ``d`` is the weight of
      the newest score, see :func:`_decaying_average`.

    Every result except ``n_mastery`` lies within ``[min(scores), max(scores)]``; results of
    averaging are clamped into the mathematically guaranteed range so float rounding can never
    push them outside it (the mean of constant scores is exactly that constant).
    """
    m = parse_method(method) if isinstance(method, str) else method
    if not isinstance(m, Method):
        raise TypeError(f"method must be a Method or a spec string, got {type(m).__name__}")
    values = [float(s) for s in scores]
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"scores must be finite numbers, got {list(scores)!r}")
    if not math.isfinite(mastery_points):
        raise ValueError(f"mastery_points must be a finite number, got {mastery_points!r}")
    if not values:
        return None
    if m.name == "highest":
        return max(values)
    if m.name == "latest":
        return values[-1]
    if m.name == "average":
        return _mean(values)
    assert m.param is not None  # Method.__post_init__ guarantees it for these three
    if m.name == "n_mastery":
        return _n_mastery(values, int(m.param), mastery_points)
    if m.name == "weighted_average":
        return _weighted_average(values, m.param)
    return _decaying_average(values, m.param)


def _mean(values: Sequence[float]) -> float:
    """Arithmetic mean, exactly summed (``math.fsum``) and clamped into [min, max]."""
    return _clamp(math.fsum(values) / len(values), min(values), max(values))


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _below_mastery(points: float, mastery_points: float) -> float:
    """``points``, capped so that :func:`is_mastered` is False for it.

    Used where a rule is not met although the raw number reaches mastery. The cap is
    ``mastery_points - NOT_MASTERED_MARGIN`` (2.99 for mastery 3); for absurdly large scales
    where that subtraction vanishes in float, it steps down to the next float that is below.
    """
    cap = mastery_points - NOT_MASTERED_MARGIN
    while is_mastered(cap, mastery_points):
        cap = math.nextafter(cap, -math.inf)
    return min(points, cap)


def _n_mastery(values: Sequence[float], n: int, mastery_points: float) -> float:
    """Canvas "n Number of Times": mastery must be shown ``n`` times, then the mean of those.

    With at least ``n`` scores reaching mastery: the mean of exactly the scores that reach it
    (Canvas ``n_mastery_set``: ``delete_if score < mastery_points`` then average), so the
    result is mastered. Lower scores are ignored -- the method asks "has it been shown n
    times?", not "how good is the average attempt?".

    With fewer: Canvas returns no score at all (``nil``; the learner sees nothing). We instead
    return the mean of *all* scores, capped just below mastery (:func:`_below_mastery`), so
    that the competency is not mastered yet still shows progress: [1, 2] -> 1.5, and [4, 4]
    with n = 3 and mastery 3 -> 2.99 ("almost: one more mastery score needed"). The mean of
    all scores (rather than the highest non-mastery score) is used because it exists even
    when every score so far reaches mastery, and it moves with every new score.
    """
    reached = [v for v in values if is_mastered(v, mastery_points)]
    if len(reached) >= n:
        return _mean(reached)
    return _below_mastery(_mean(values), mastery_points)


def _weighted_average(values: Sequence[float], w: float) -> float:
    """``latest * w + mean(all earlier) * (1 - w)`` -- Canvas ``decaying_average_set``.

    ``w`` is the weight of the newest score; every earlier score shares ``1 - w`` equally, so
    old scores never fade further however many arrive. One score: that score. Canvas stores
    ``w`` as a percent (``calculation_int`` 65); we take the fraction (0.65).
    """
    if len(values) == 1:
        return values[0]
    latest = values[-1]
    earlier = _mean(values[:-1])
    return _clamp(latest * w + earlier * (1 - w), min(latest, earlier), max(latest, earlier))


def _decaying_average(values: Sequence[float], d: float) -> float:
    """``D1 = s1; Dk = (1 - d) * D(k-1) + d * sk`` (DESIGN.md) -- an exponential moving average.

    ``d`` is the weight of the NEWEST score; the running average keeps ``1 - d``. So a score
    ``j`` places back weighs ``d * (1 - d)**j`` and older evidence fades geometrically. This is
    Canvas ``standard_decaying_average``: it calls its ``calculation_int`` the "decay rate",
    yet multiplies the new score by it (65 -> newest 65 %, running average 35 %: [1, 2] ->
    1.65), which is what ``d`` means here. With two scores it equals
    ``weighted_average(d)``; from three on they differ because here the older scores decay.
    """
    acc = values[0]
    for v in values[1:]:
        acc = _clamp((1 - d) * acc + d * v, min(acc, v), max(acc, v))
    return acc


# --------------------------------------------------------------------------------------------
# Roll-ups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildState:
    """What a parent's roll-up needs to know about one child competency.

    ``points`` is on the child's own scale (``None``: no evidence yet), ``mastered`` is the
    child's own verdict and ``top_points`` is the top of the child's scale, used to put
    children with different scales onto the parent's.
    """

    points: float | None
    mastered: bool
    top_points: float


def _on_parent_scale(child: ChildState, scale: Scale) -> float:
    """A child's points proportionally onto the parent's scale (0 -> 0, top -> top).

    Proportional, like Canvas rescaling a result onto a mastery scale
    (score / points_possible * scale maximum: 2 of 5 on a 4-point scale is 1.6).
    """
    if child.points is None:
        return 0.0
    if not (math.isfinite(child.top_points) and child.top_points > 0):
        raise ValueError(f"a child's top_points must be positive, got {child.top_points!r}")
    return child.points / child.top_points * scale.top_points


def rollup(
    method: str,
    children: Mapping[str, ChildState],
    *,
    required: Sequence[str] = (),
    points_needed: float | None = None,
    scale: Scale,
) -> tuple[float | None, bool]:
    """A parent competency's ``(points, mastered)`` from its children, on the parent's scale.

    ``method`` is ``mappings.models.Rollup.method``. Common decisions:

    * **No evidence under any child -> ``(None, False)``**, as :func:`calculate` gives
      ``None`` without scores: the parent has not been assessed.
    * **A child without evidence counts as 0** wherever children's points are combined
      (``all_children`` progress, ``average``), never as "ignored": the parent stands for all
      of its children, so one strong child must not master (or look like mastering) a parent
      whose other children were never assessed. Moodle's roll-up rules likewise never treat
      an unassessed child as done.
    * ``mastered == is_mastered(points, scale.mastery_points)`` always holds (points capped
      just below mastery when the rule is not met; see the module docstring).
    * ``required`` and ``points_needed`` are only used by ``points``.

    Methods:

    * ``"none"`` -- no roll-up: ``(None, False)``.
    * ``"all_children"`` -- Moodle ``competency_rule_all``: mastered when there is at least
      one child and every child is mastered. Points then are the parent's mastery points
      (Moodle completes the parent with its scale's default proficient value: the rule proves
      mastery, not how far beyond). Otherwise the mean of all children on the parent's
      scale (missing evidence as 0), capped below mastery.
    * ``"points"`` -- Moodle ``competency_rule_points``: mastered when every ``required``
      child is mastered (a required id absent from ``children`` is not mastered) and the
      points of the *mastered* children, summed on their own scales, reach
      ``points_needed``. Only mastered children count, as in Moodle, where a child
      contributes its points only once proficient -- partial progress on many children does
      not add up to a parent. Returned points: that sum scaled so that ``points_needed``
      lands on the parent's mastery points (``sum / points_needed * mastery``), capped at the
      parent's top, or just below mastery while a required child is missing.
      ``points_needed`` must be given and positive (Moodle requires at least 1).
    * ``"average"`` -- mean of all children's points on the parent's scale (missing evidence
      as 0); mastered when that mean reaches the parent's mastery points.
    """
    if method not in ROLLUP_METHODS:
        raise ValueError(
            f"unknown roll-up method {method!r}; expected one of {', '.join(ROLLUP_METHODS)}"
        )
    if method == "none":
        return None, False
    if method == "points" and (
        points_needed is None or not math.isfinite(points_needed) or points_needed <= 0
    ):
        raise ValueError(
            f"the points roll-up needs a positive points_needed, got {points_needed!r}"
        )
    mastery = scale.mastery_points
    has_evidence = any(c.points is not None for c in children.values())

    if method == "all_children":
        if children and all(c.mastered for c in children.values()):
            return mastery, True
        if not has_evidence:
            return None, False
        mean = math.fsum(_on_parent_scale(c, scale) for c in children.values()) / len(children)
        return _below_mastery(mean, mastery), False

    if not has_evidence:
        return None, False

    if method == "average":
        mean = math.fsum(_on_parent_scale(c, scale) for c in children.values()) / len(children)
        return mean, is_mastered(mean, mastery)

    # "points"
    assert points_needed is not None
    earned = math.fsum(
        c.points for c in children.values() if c.mastered and c.points is not None
    )
    required_met = all(r in children and children[r].mastered for r in required)
    mastered = required_met and earned >= points_needed - TOLERANCE
    points = min(earned / points_needed * mastery, scale.top_points)
    if mastered:
        return max(points, mastery), True
    return _below_mastery(points, mastery), False


# --------------------------------------------------------------------------------------------
# Course credit
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditProgress:
    """Where a learner stands against one ``CreditRule``.

    ``mastered`` / ``missing`` partition the rule's competencies (rule order, duplicates
    dropped); ``missing_required`` lists required competencies not mastered; ``percent`` is
    the share of the rule's competencies mastered, 0..100, unrounded.
    """

    mastered: tuple[str, ...]
    missing: tuple[str, ...]
    missing_required: tuple[str, ...]
    percent: float
    awarded: bool


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def evaluate_credit(
    competencies: Sequence[str],
    mastered: Collection[str],
    *,
    required: Sequence[str] = (),
    min_percent: float = 70.0,
) -> CreditProgress:
    """Course credit (DESIGN.md: "credit once >= 70% of the course's competencies are
    proficient"): awarded when every required competency is mastered and the percentage of
    ``competencies`` mastered reaches ``min_percent``.

    Decisions:

    * The threshold is compared on counts, ``mastered * 100 >= min_percent * total`` with a
      tolerance, so 7 of 10 meets 70 % and a ``min_percent`` computed as ``0.07 * 100``
      (7.000000000000001) is met by 7 of 100; 699 of 1000 (69.9 %) does not meet 70.
    * Duplicated ids count once. A required id that is not among ``competencies`` must still
      be mastered but does not count toward the percentage.
    * No competencies: percent 0 and never awarded -- a credit is never granted for nothing
      (such a rule is a configuration mistake; ``CreditRule.competencies`` is required).
    * ``min_percent`` must be within [0, 100].
    """
    if not (math.isfinite(min_percent) and 0 <= min_percent <= 100):
        raise ValueError(f"min_percent must be between 0 and 100, got {min_percent!r}")
    comps = _unique(competencies)
    done = tuple(c for c in comps if c in mastered)
    missing = tuple(c for c in comps if c not in mastered)
    missing_required = tuple(r for r in _unique(required) if r not in mastered)
    total = len(comps)
    percent = 100.0 * len(done) / total if total else 0.0
    enough = total > 0 and len(done) * 100.0 >= min_percent * total - TOLERANCE * total
    return CreditProgress(
        mastered=done,
        missing=missing,
        missing_required=missing_required,
        percent=percent,
        awarded=enough and not missing_required,
    )
