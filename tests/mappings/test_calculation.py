"""Mastery calculation, roll-ups and credit rules (mappings/calculation.py).

Worked examples are computed by hand in the comments; the Canvas ones reuse the sequence of
Canvas's own roll-up spec (scores 1..5, mastery 3, calculation_int 65: weighted 4.125 shown
as 4.13, decaying 4.47). Properties (hypothesis) pin what must hold for any scores.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappings.calculation import (
    METHODS,
    NOT_MASTERED_MARGIN,
    ChildState,
    Method,
    calculate,
    evaluate_credit,
    is_mastered,
    parse_method,
    rollup,
)
from mappings.models import Level, Scale

CANVAS = [1.0, 2.0, 3.0, 4.0, 5.0]  # oldest -> newest


def four_point_scale() -> Scale:
    """0..4 with mastery at 3, the usual Canvas-like proficiency scale."""
    return Scale(
        name="4-point",
        levels=[
            Level(name="Beginning", points=0),
            Level(name="Developing", points=1),
            Level(name="Approaching", points=2),
            Level(name="Mastery", points=3, mastery=True),
            Level(name="Exceeds", points=4),
        ],
    )


# --- parse_method ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("highest", Method("highest")),
        ("latest", Method("latest", None)),
        ("average", Method("average")),
        ("n_mastery(3)", Method("n_mastery", 3)),
        ("weighted_average(0.65)", Method("weighted_average", 0.65)),
        ("decaying_average(0.65)", Method("decaying_average", 0.65)),
        ("  Decaying_Average ( 0.5 ) ", Method("decaying_average", 0.5)),
        ("n_mastery(+1)", Method("n_mastery", 1)),
    ],
)
def test_parse_method(spec: str, expected: Method) -> None:
    assert parse_method(spec) == expected


def test_method_round_trips_through_str() -> None:
    for spec in ("highest", "n_mastery(3)", "weighted_average(0.65)", "decaying_average(0.7)"):
        assert str(parse_method(spec)) == spec
        assert parse_method(str(parse_method(spec))) == parse_method(spec)
    assert isinstance(parse_method("n_mastery(3)").param, int)
    assert Method("n_mastery", 3.0).param == 3  # normalised to an int


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("median", "unknown calculation method 'median'"),
        ("standard_decaying_average(0.65)", "unknown calculation method"),
        ("highest(2)", "highest takes no parameter"),
        ("latest()", "latest takes no parameter"),
        ("n_mastery", "n_mastery needs a parameter"),
        ("n_mastery()", "n_mastery needs a parameter"),
        ("n_mastery(0)", "n must be a positive integer"),
        ("n_mastery(-2)", "n must be a positive integer"),
        ("n_mastery(2.5)", "n must be a positive integer"),
        ("n_mastery(3.0)", "n must be a positive integer"),
        ("n_mastery(three)", "n must be a positive integer"),
        ("weighted_average", "needs a parameter, e.g. weighted_average(0.65)"),
        ("weighted_average(0)", "w must be between 0 and 1, exclusive"),
        ("weighted_average(1)", "w must be between 0 and 1, exclusive"),
        ("weighted_average(65)", "e.g. 0.65 for 65%"),
        ("weighted_average(abc)", "w must be a number"),
        ("decaying_average(1.0)", "d must be between 0 and 1, exclusive"),
        ("decaying_average(-0.5)", "d must be between 0 and 1"),
        ("decaying_average(nan)", "d must be between 0 and 1"),
        ("decaying_average(inf)", "d must be between 0 and 1"),
        ("decaying_average((0.5))", "cannot parse"),
        ("decaying average(0.5)", "cannot parse"),
    ],
)
def test_parse_method_errors_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_method(spec)


def test_method_validates_when_built_directly() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        Method("n_mastery", 0)
    with pytest.raises(ValueError, match="positive integer"):
        Method("n_mastery", 1.5)
    with pytest.raises(ValueError, match="must be a number"):
        Method("n_mastery", True)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Method("decaying_average", 1)
    with pytest.raises(ValueError, match="takes no parameter"):
        Method("highest", 0.5)
    with pytest.raises(ValueError, match="unknown calculation method"):
        Method("mode")


# --- calculate: worked examples --------------------------------------------------------------


def test_highest_latest_average() -> None:
    assert calculate("highest", [1, 3, 2], 3) == 3
    assert calculate("latest", [3, 1, 2], 3) == 2  # newest is last
    assert calculate("average", [1, 2, 4], 3) == pytest.approx(7 / 3)
    assert calculate("average", CANVAS, 3) == 3.0  # Canvas spec: 15 / 5


def test_weighted_average_canvas_example() -> None:
    # latest 5 * 0.65 + mean(1, 2, 3, 4) = 2.5 * 0.35  ->  3.25 + 0.875 = 4.125 (Canvas: 4.13)
    assert calculate("weighted_average(0.65)", CANVAS, 3) == pytest.approx(4.125)


def test_decaying_average_canvas_example() -> None:
    # D1 = 1
    # D2 = 0.35 * 1      + 0.65 * 2 = 1.65
    # D3 = 0.35 * 1.65   + 0.65 * 3 = 2.5275
    # D4 = 0.35 * 2.5275 + 0.65 * 4 = 3.484625
    # D5 = 0.35 * 3.484625 + 0.65 * 5 = 4.46961875 (Canvas: 4.47)
    assert calculate("decaying_average(0.65)", [1, 2], 3) == pytest.approx(1.65)
    assert calculate("decaying_average(0.65)", CANVAS, 3) == pytest.approx(4.46961875)


def test_decaying_and_weighted_average_differ_on_the_same_sequence() -> None:
    scores = [1, 5, 2]
    # weighted: 2 * 0.65 + mean(1, 5) = 3 * 0.35  ->  1.3 + 1.05 = 2.35
    # decaying: 1 -> 0.35 * 1 + 0.65 * 5 = 3.6 -> 0.35 * 3.6 + 0.65 * 2 = 1.26 + 1.3 = 2.56
    weighted = calculate("weighted_average(0.65)", scores, 3)
    decaying = calculate("decaying_average(0.65)", scores, 3)
    assert weighted == pytest.approx(2.35)
    assert decaying == pytest.approx(2.56)
    assert weighted != pytest.approx(decaying)
    # d is the weight of the NEWEST score: a larger d follows the newest score (2) more.
    assert calculate("decaying_average(0.9)", scores, 3) == pytest.approx(
        0.1 * (0.1 * 1 + 0.9 * 5) + 0.9 * 2
    )


def test_n_mastery_with_enough_mastery_scores() -> None:
    # mastery scores (>= 3) are 3, 4, 5: mean 4; 1 and 2 are ignored
    assert calculate("n_mastery(3)", CANVAS, 3) == 4.0
    assert is_mastered(calculate("n_mastery(3)", CANVAS, 3), 3)
    assert calculate("n_mastery(1)", [0, 3.5], 3) == 3.5


def test_n_mastery_with_too_few_mastery_scores() -> None:
    # Canvas returns nothing; we return the mean of all scores, capped just below mastery.
    # n = 4 but only 3, 4, 5 reach 3: mean of all is 3.0 -> capped to 2.99
    result = calculate("n_mastery(4)", CANVAS, 3)
    assert result == pytest.approx(3 - NOT_MASTERED_MARGIN)
    assert not is_mastered(result, 3)
    # every score so far reaches mastery, but only twice of three: 4.0 -> 2.99
    assert calculate("n_mastery(3)", [4, 4], 3) == pytest.approx(2.99)
    # below mastery anyway: the plain mean shows the progress
    assert calculate("n_mastery(2)", [1, 2], 3) == 1.5
    assert calculate("n_mastery(2)", [1, 4], 3) == 2.5


def test_mastery_tolerance_in_n_mastery() -> None:
    almost = 3 - 1e-12  # float noise, counts as mastery
    assert calculate("n_mastery(2)", [almost, 3], 3) == pytest.approx(3)
    assert is_mastered(calculate("n_mastery(2)", [almost, 3], 3), 3)


@pytest.mark.parametrize(
    "spec",
    [
        "highest",
        "latest",
        "average",
        "n_mastery(1)",
        "weighted_average(0.65)",
        "decaying_average(0.65)",
    ],
)
def test_single_score_and_empty(spec: str) -> None:
    assert calculate(spec, [3.5], 3) == 3.5
    assert calculate(spec, [], 3) is None


def test_single_score_n_mastery_needing_more() -> None:
    assert calculate("n_mastery(2)", [3.5], 3) == pytest.approx(2.99)
    assert calculate("n_mastery(2)", [1.0], 3) == 1.0


def test_calculate_accepts_a_method_and_rejects_bad_input() -> None:
    assert calculate(Method("highest"), [1, 2], 3) == 2
    assert calculate(parse_method("n_mastery(2)"), (3, 4), 3) == 3.5
    with pytest.raises(ValueError, match="finite"):
        calculate("average", [1, math.nan], 3)
    with pytest.raises(ValueError, match="finite"):
        calculate("average", [1, 2], math.inf)
    with pytest.raises(ValueError, match="unknown calculation method"):
        calculate("mode", [1], 3)


def test_is_mastered() -> None:
    assert is_mastered(3, 3)
    assert is_mastered(3 - 5e-10, 3)
    assert not is_mastered(3 - 1e-6, 3)
    assert not is_mastered(None, 3)
    assert is_mastered(0, 0)


# --- calculate: properties -------------------------------------------------------------------

SCORE = st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False)
SCORES = st.lists(SCORE, min_size=1, max_size=30)
MASTERY = st.floats(min_value=0.5, max_value=10, allow_nan=False)
FRACTION = st.floats(min_value=0.01, max_value=0.99)
N = st.integers(min_value=1, max_value=6)


def every_method(n: int, w: float, d: float) -> list[Method]:
    return [
        Method("highest"),
        Method("latest"),
        Method("average"),
        Method("n_mastery", n),
        Method("weighted_average", w),
        Method("decaying_average", d),
    ]


@given(SCORES, MASTERY, N, FRACTION, FRACTION)
def test_property_highest_is_max_and_bounds_every_method(
    scores: list[float], mastery: float, n: int, w: float, d: float
) -> None:
    top = calculate("highest", scores, mastery)
    assert top == max(scores)
    methods = every_method(n, w, d)
    assert {m.name for m in methods} == set(METHODS)
    for method in methods:
        result = calculate(method, scores, mastery)
        assert result is not None
        assert result <= top, method


@given(SCORES, SCORE, MASTERY)
def test_property_latest_follows_the_newest_score(
    scores: list[float], newest: float, mastery: float
) -> None:
    assert calculate("latest", scores, mastery) == scores[-1]
    assert calculate("latest", [*scores, newest], mastery) == newest


@given(SCORES, SCORE, st.integers(min_value=1, max_value=30), MASTERY)
def test_property_average_within_range_and_exact_for_constants(
    scores: list[float], constant: float, count: int, mastery: float
) -> None:
    result = calculate("average", scores, mastery)
    assert min(scores) <= result <= max(scores)
    assert result == pytest.approx(math.fsum(scores) / len(scores))
    assert calculate("average", [constant] * count, mastery) == constant


@given(SCORES, MASTERY, N)
def test_property_n_mastery_mastered_iff_n_mastery_scores(
    scores: list[float], mastery: float, n: int
) -> None:
    result = calculate(Method("n_mastery", n), scores, mastery)
    reached = [s for s in scores if is_mastered(s, mastery)]
    assert is_mastered(result, mastery) == (len(reached) >= n)
    if len(reached) >= n:
        assert min(reached) <= result <= max(reached)
    else:  # progress: the mean of all scores, never at or above mastery
        assert result == pytest.approx(
            min(math.fsum(scores) / len(scores), mastery - NOT_MASTERED_MARGIN)
        )


@given(SCORES, MASTERY, FRACTION)
def test_property_weighted_average_formula_and_range(
    scores: list[float], mastery: float, w: float
) -> None:
    result = calculate(Method("weighted_average", w), scores, mastery)
    assert min(scores) <= result <= max(scores)
    if len(scores) == 1:
        assert result == scores[0]
    else:
        earlier = math.fsum(scores[:-1]) / (len(scores) - 1)
        assert result == pytest.approx(scores[-1] * w + earlier * (1 - w))


@given(SCORES, MASTERY, FRACTION, SCORE, st.integers(min_value=1, max_value=30))
def test_property_decaying_average_range_and_recurrence(
    scores: list[float], mastery: float, d: float, constant: float, count: int
) -> None:
    method = Method("decaying_average", d)
    result = calculate(method, scores, mastery)
    assert min(scores) <= result <= max(scores)
    # one more score s moves the average by d of the way towards s
    prefix = calculate(method, scores[:-1], mastery)
    if prefix is not None:
        assert result == pytest.approx((1 - d) * prefix + d * scores[-1])
    # with two scores it is exactly Canvas's weighted average with w = d
    pair = scores[:2]
    assert calculate(method, pair, mastery) == pytest.approx(
        calculate(Method("weighted_average", d), pair, mastery)
    )
    assert calculate(method, [constant] * count, mastery) == constant


# --- roll-ups --------------------------------------------------------------------------------


def child(points: float | None, mastered: bool, top: float = 4.0) -> ChildState:
    return ChildState(points=points, mastered=mastered, top_points=top)


def test_rollup_none() -> None:
    kids = {"a": child(4, True)}
    assert rollup("none", kids, scale=four_point_scale()) == (None, False)


def test_rollup_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown roll-up method 'sum'"):
        rollup("sum", {}, scale=four_point_scale())


def test_rollup_all_children() -> None:
    scale = four_point_scale()
    both = {"a": child(3, True), "b": child(4, True)}
    assert rollup("all_children", both, scale=scale) == (3.0, True)  # the parent's mastery
    # (4 + 2) / 2 = 3 would reach mastery, but b is not mastered: capped to 2.99
    points, mastered = rollup("all_children", {"a": child(4, True), "b": child(2, False)},
                              scale=scale)
    assert (points, mastered) == (pytest.approx(2.99), False)
    # a child without evidence counts as 0: (4 + 0) / 2 = 2
    assert rollup("all_children", {"a": child(4, True), "b": child(None, False)},
                  scale=scale) == (2.0, False)
    # children on another scale are put onto the parent's: 50 of 100 -> 2 of 4
    assert rollup("all_children", {"a": child(50, False, top=100)}, scale=scale) == (2.0, False)
    assert rollup("all_children", {"a": child(None, False), "b": child(None, False)},
                  scale=scale) == (None, False)
    assert rollup("all_children", {}, scale=scale) == (None, False)


def test_rollup_average() -> None:
    scale = four_point_scale()
    # (4 + 2) / 2 = 3: reaches the parent's mastery even though b is not mastered
    assert rollup("average", {"a": child(4, True), "b": child(2, False)}, scale=scale) == (
        3.0,
        True,
    )
    # missing evidence counts as 0: (4 + 0) / 2 = 2, so one strong child does not master it
    assert rollup("average", {"a": child(4, True), "b": child(None, False)}, scale=scale) == (
        2.0,
        False,
    )
    # 80 of 100 -> 3.2 of 4; with 2 of 4: (3.2 + 2) / 2 = 2.6
    points, mastered = rollup(
        "average", {"a": child(80, True, top=100), "b": child(2, False)}, scale=scale
    )
    assert points == pytest.approx(2.6)
    assert not mastered
    assert rollup("average", {"a": child(None, False)}, scale=scale) == (None, False)
    assert rollup("average", {}, scale=scale) == (None, False)


def test_rollup_points() -> None:
    scale = four_point_scale()
    kids = {"a": child(3, True), "b": child(4, True), "c": child(2, False)}
    # mastered children earn 3 + 4 = 7 >= 6; a is required and mastered; 7 / 6 * 3 = 3.5
    points, mastered = rollup("points", kids, required=["a"], points_needed=6, scale=scale)
    assert points == pytest.approx(3.5)
    assert mastered
    # c is required and not mastered: not mastered, points capped below mastery
    points, mastered = rollup("points", kids, required=["c"], points_needed=6, scale=scale)
    assert (points, mastered) == (pytest.approx(2.99), False)
    # 7 < 8 points needed: 7 / 8 * 3 = 2.625
    points, mastered = rollup("points", kids, points_needed=8, scale=scale)
    assert (points, mastered) == (pytest.approx(2.625), False)
    # far more than needed: 7 / 2 * 3 = 10.5, capped at the parent's top (4)
    assert rollup("points", kids, points_needed=2, scale=scale) == (4.0, True)
    # a required child that is not among the children at all is not mastered
    assert rollup("points", kids, required=["zz"], points_needed=6, scale=scale)[1] is False


def test_rollup_points_counts_only_mastered_children() -> None:
    scale = four_point_scale()
    # Moodle: a child contributes only once proficient. 2.9 + 2.9 = 5.8 >= 5, but neither
    # child is mastered, so nothing is earned.
    kids = {"a": child(2.9, False), "b": child(2.9, False)}
    assert rollup("points", kids, points_needed=5, scale=scale) == (0.0, False)
    assert rollup("points", {"a": child(None, False)}, points_needed=5, scale=scale) == (
        None,
        False,
    )


def test_rollup_points_needs_points_needed() -> None:
    kids = {"a": child(3, True)}
    for bad in (None, 0, -1, math.nan):
        with pytest.raises(ValueError, match="positive points_needed"):
            rollup("points", kids, points_needed=bad, scale=four_point_scale())


def test_rollup_rejects_a_child_scale_without_top() -> None:
    with pytest.raises(ValueError, match="top_points must be positive"):
        rollup("average", {"a": child(1, False, top=0)}, scale=four_point_scale())


CHILD = st.builds(
    ChildState,
    points=st.none() | st.floats(min_value=0, max_value=4),
    mastered=st.booleans(),
    top_points=st.just(4.0),
)


@given(
    st.sampled_from(["all_children", "points", "average"]),
    st.dictionaries(st.sampled_from("abcdef"), CHILD, max_size=6),
    st.lists(st.sampled_from("abcdef"), max_size=2),
    st.floats(min_value=0.5, max_value=24),
)
def test_property_rollup_mastered_agrees_with_points(
    method: str, kids: dict[str, ChildState], required: list[str], needed: float
) -> None:
    scale = four_point_scale()
    points, mastered = rollup(method, kids, required=required, points_needed=needed,
                              scale=scale)
    if points is None:
        assert not mastered
    else:
        assert mastered == is_mastered(points, scale.mastery_points)
        assert 0 <= points <= scale.top_points
    if method == "points" and mastered:
        assert all(r in kids and kids[r].mastered for r in required)
    if method == "all_children":
        assert mastered == (bool(kids) and all(c.mastered for c in kids.values()))


# --- credit ----------------------------------------------------------------------------------

TEN = [f"c{i}" for i in range(10)]


def test_credit_exactly_seventy_percent() -> None:
    progress = evaluate_credit(TEN, set(TEN[:7]))
    assert progress.awarded
    assert progress.percent == pytest.approx(70.0)
    assert progress.mastered == tuple(TEN[:7])
    assert progress.missing == tuple(TEN[7:])
    assert progress.missing_required == ()
    assert not evaluate_credit(TEN, set(TEN[:6])).awarded


def test_credit_just_below_threshold() -> None:
    thousand = [f"c{i}" for i in range(1000)]
    progress = evaluate_credit(thousand, set(thousand[:699]))
    assert progress.percent == pytest.approx(69.9)
    assert not progress.awarded
    assert evaluate_credit(thousand, set(thousand[:700])).awarded
    # 7 of 10 is 70 % but not 70.1 %
    assert not evaluate_credit(TEN, set(TEN[:7]), min_percent=70.1).awarded
    assert evaluate_credit(TEN, set(TEN[:7]), min_percent=69.9).awarded


def test_credit_guards_float_rounding() -> None:
    hundred = [f"c{i}" for i in range(100)]
    noisy = 0.07 * 100  # 7.000000000000001
    assert noisy > 7
    assert evaluate_credit(hundred, set(hundred[:7]), min_percent=noisy).awarded
    three = ["a", "b", "c"]
    assert evaluate_credit(three, {"a", "b"}, min_percent=200 / 3).awarded


def test_credit_required_missing() -> None:
    progress = evaluate_credit(TEN, set(TEN[1:]), required=["c0", "c1"])
    assert progress.percent == pytest.approx(90.0)
    assert progress.missing_required == ("c0",)
    assert not progress.awarded
    # a required competency outside the list must be mastered, but does not count toward %
    progress = evaluate_credit(TEN, set(TEN[:7]), required=["extra"])
    assert progress.missing_required == ("extra",)
    assert progress.percent == pytest.approx(70.0)
    assert not progress.awarded
    assert evaluate_credit(TEN, {*TEN[:7], "extra"}, required=["extra"]).awarded


def test_credit_empty_sets() -> None:
    nothing = evaluate_credit([], set())
    assert (nothing.percent, nothing.awarded) == (0.0, False)
    assert nothing.mastered == nothing.missing == nothing.missing_required == ()
    assert not evaluate_credit([], {"a"}, min_percent=0).awarded
    none_mastered = evaluate_credit(TEN, set())
    assert none_mastered.percent == 0.0
    assert none_mastered.missing == tuple(TEN)
    assert not none_mastered.awarded
    assert evaluate_credit(TEN, set(), min_percent=0).awarded


def test_credit_duplicates_and_bad_threshold() -> None:
    progress = evaluate_credit(["a", "b", "a"], {"a"}, required=["a", "a"])
    assert progress.mastered == ("a",)
    assert progress.missing == ("b",)
    assert progress.percent == pytest.approx(50.0)
    for bad in (-1, 100.5, math.nan):
        with pytest.raises(ValueError, match="min_percent"):
            evaluate_credit(TEN, set(), min_percent=bad)


@given(
    st.lists(st.sampled_from("abcdefghijkl"), min_size=1, max_size=12, unique=True),
    st.sets(st.sampled_from("abcdefghijkl")),
    st.lists(st.sampled_from("abcdefghijkl"), max_size=3),
    st.integers(min_value=0, max_value=100),
)
def test_property_credit(
    comps: list[str], mastered: set[str], required: list[str], min_percent: int
) -> None:
    progress = evaluate_credit(comps, mastered, required=required, min_percent=min_percent)
    assert set(progress.mastered) | set(progress.missing) == set(comps)
    assert not set(progress.mastered) & set(progress.missing)
    count = len(progress.mastered)
    assert progress.awarded == (
        set(required) <= mastered and count * 100 >= min_percent * len(comps)
    )
    # mastering one more competency never takes a credit away
    extra = next((c for c in comps if c not in mastered), None)
    if progress.awarded and extra is not None:
        assert evaluate_credit(comps, mastered | {extra}, required=required,
                               min_percent=min_percent).awarded
