"""Scores from crafted sample records: every figure worked out by hand."""

from __future__ import annotations

import json
import math

import pytest

from localr1.evaluation.metrics import (
    compare,
    majority_key,
    pass_at_1_interval,
    score_model,
    score_models,
)
from localr1.evaluation.problems import Problem, make_problem_set

PROBLEMS = make_problem_set(
    "crafted", [Problem(f"p{n}", f"problem {n}", "1") for n in range(1, 6)], source="test")


def record(model, problem, sample, correct, key, *, format_ok=True, tokens=10, seconds=1.0,
           error=None):
    return {"model": model, "problem": problem, "sample": sample, "correct": correct,
            "answer_key": key, "extracted": key, "format_ok": format_ok,
            "reasoning_tokens": tokens, "seconds": seconds, "error": error}


def model_a_records():
    return [
        # p1: a 2-2 tie between 42 (correct) and 41; 42 came first in sample order, so it wins.
        # Listed out of order on purpose: sample order decides, not file order.
        record("a", "p1", 2, False, "41", tokens=30),
        record("a", "p1", 0, True, "42", tokens=10),
        record("a", "p1", 1, True, "42", tokens=10),
        record("a", "p1", 3, False, "41", format_ok=False, tokens=30),
        # p2: 8 wins 2-1 and was correct; the keyless sample does not vote.
        record("a", "p2", 0, False, "7"),
        record("a", "p2", 1, True, "8"),
        record("a", "p2", 2, True, "8"),
        record("a", "p2", 3, False, None, format_ok=False),
        # p3 (three samples so far): no votes at all, so the vote is wrong. The failed sample
        # says correct and formatted, but a decode error counts as neither.
        record("a", "p3", 0, False, None, seconds=2.0),
        record("a", "p3", 1, False, None, seconds=2.0),
        record("a", "p3", 2, True, "1", tokens=None, seconds=None, error="decode failed"),
        # p4: the wrong "x" outvotes the one correct sample.
        record("a", "p4", 0, False, "x"),
        record("a", "p4", 1, True, "1"),
        record("a", "p4", 2, False, "x"),
        record("a", "p4", 3, False, "x"),
    ]


def test_model_score_exact():
    score = score_model("a", model_a_records(), PROBLEMS)
    assert score.model == "a"
    assert score.problems == 4  # p5 has no samples yet
    assert score.samples == 15
    assert score.samples_per_problem == 4
    # per-problem rates 2/4, 2/4, 0/3, 1/4
    assert score.pass_at_1 == pytest.approx((0.5 + 0.5 + 0 + 0.25) / 4)  # 0.3125
    # stdev of the rates: sqrt((.1875² + .1875² + .3125² + .0625²) / 3) = sqrt(.171875 / 3)
    half_width = 1.96 * math.sqrt(0.171875 / 3) / math.sqrt(4)
    low, high = score.pass_at_1_interval
    assert low == pytest.approx(0.3125 - half_width) and low == pytest.approx(0.077931, abs=1e-6)
    assert high == pytest.approx(0.3125 + half_width)
    assert score.cons_at_k == 0.5
    assert score.solved == ("p1", "p2")
    assert score.attempted == ("p1", "p2", "p3", "p4")
    # formatted: 3 of p1, 3 of p2, 2 of p3 (not the failed one), 4 of p4
    assert score.format_rate == pytest.approx(12 / 15)
    # the failed sample has no tokens and no time: the means are over the 14 others
    assert score.mean_reasoning_tokens == pytest.approx((10 + 10 + 30 + 30 + 10 * 10) / 14)
    assert score.mean_seconds == pytest.approx((12 * 1.0 + 2 * 2.0) / 14)
    assert score.seconds_per_problem == pytest.approx((12 * 1.0 + 2 * 2.0) / 4)


def test_to_json_is_plain_data():
    data = score_model("a", model_a_records(), PROBLEMS).to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["solved"] == ["p1", "p2"]
    assert data["pass_at_1"] == 0.3125
    assert len(data["pass_at_1_interval"]) == 2


@pytest.mark.parametrize("keys, winner", [
    (["1", "2", "2", "1"], "1"),  # tie: the first seen
    (["2", "1", "1", "2"], "2"),
    ([None, "3", None], "3"),
    ([None, None], None),
    (["5"], "5"),
])
def test_majority_key(keys, winner):
    samples = [record("m", "p1", n, False, key) for n, key in enumerate(keys)]
    assert majority_key(samples) == winner


def test_vote_winner_is_correct_only_when_a_sample_with_its_key_was_correct():
    # The checker judged the same key correct once: the vote is correct.
    records = [record("m", "p1", 0, False, "42"), record("m", "p1", 1, True, "42"),
               record("m", "p1", 2, True, "7")]
    score = score_model("m", records, PROBLEMS)
    assert score.solved == ("p1",)
    assert score.cons_at_k == 1.0
    assert score.pass_at_1 == pytest.approx(2 / 3)
    assert score.pass_at_1_interval is None  # one problem


@pytest.mark.parametrize("rates, expected", [
    ([0.5], None),
    ([], None),
    # no spread: Wilson's interval of the rate over the problems, not a certainty
    ([1.0, 1.0, 1.0], (0.438494, 1.0)),
    ([0.0] * 40, (0.0, 0.087625)),
    ([0.0, 1.0], (0.0, 1.0)),  # .5 -+ .98, clamped
    ([0.25, 0.75], (0.5 - 0.49, 0.5 + 0.49)),  # stdev .3536 / sqrt 2 = .25; 1.96 * .25
])
def test_pass_at_1_interval(rates, expected):
    interval = pass_at_1_interval(rates)
    if expected is None:
        assert interval is None
    else:
        assert interval == pytest.approx(expected, abs=1e-6)


def test_other_models_unknown_problems_and_repeated_samples_are_ignored():
    records = [
        record("m", "p1", 0, True, "1"),
        record("m", "p1", 0, False, "2"),  # the same sample again (a stale line): first wins
        record("m", "p9", 0, True, "1"),  # not in the set
        record("other", "p2", 0, True, "1"),
    ]
    score = score_model("m", records, PROBLEMS)
    assert (score.problems, score.samples, score.pass_at_1, score.solved) == \
        (1, 1, 1.0, ("p1",))


def test_no_samples_at_all():
    score = score_model("m", [], PROBLEMS)
    assert (score.problems, score.samples, score.samples_per_problem) == (0, 0, 0)
    assert (score.pass_at_1, score.cons_at_k, score.format_rate) == (0.0, 0.0, 0.0)
    assert score.pass_at_1_interval is None
    assert score.mean_reasoning_tokens is None and score.mean_seconds is None


def test_score_models_and_compare():
    b_records = [
        record("b", "p1", 0, False, "41"),
        record("b", "p2", 0, True, "8"),
        record("b", "p3", 0, True, "1"),
        record("b", "p4", 0, False, "x"),
        record("b", "p5", 0, True, "1"),  # solved, but model a has not tried p5 yet
    ]
    both = score_models([*b_records[:1], *model_a_records(), *b_records[1:]], PROBLEMS)
    assert [score.model for score in both] == ["b", "a"]  # the order models first appear
    scores = {score.model: score for score in both}
    assert scores["a"] == score_model("a", model_a_records(), PROBLEMS)
    assert scores["b"].solved == ("p2", "p3", "p5")
    comparison = compare(scores["a"], scores["b"])
    assert (comparison.only_a, comparison.only_b) == (("p1",), ("p3",))
    assert comparison.to_json() == {"model_a": "a", "model_b": "b",
                                    "only_a": ["p1"], "only_b": ["p3"]}
    reverse = compare(scores["b"], scores["a"])
    assert (reverse.only_a, reverse.only_b) == (("p3",), ("p1",))
