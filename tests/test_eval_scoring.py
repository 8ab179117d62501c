"""R1's two rules: last_boxed and format_ok, and AnswerChecker (math-verify in a child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from localr1.evaluation import answer_worker
from localr1.evaluation.scoring import (
    DEFAULT_DEADLINE_S,
    AnswerChecker,
    AnswerCheckerError,
    Verdict,
    format_ok,
    last_boxed,
)


@pytest.mark.parametrize("answer, expected", [
    ("So the answer is \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("first \\boxed{1}, then corrected: \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("\\boxed{3} or \\fbox{4}", "3, 4"),  # several answers: open-r1 reads them as a set
    ("The roots are $\\boxed{-2}$ and $\\boxed{3}$.", "-2, 3"),
    ("$\\boxed{1}$, $\\boxed{2}$, and $\\boxed{3}$", "1, 2, 3"),
    ("\\boxed{1}\\boxed{2}", "1, 2"),
    ("\\boxed{1} so \\boxed{2}", "2"),  # any other word between them: a correction
    ("\\boxed{1} band \\boxed{2}", "2"),
    ("\\boxed{1} and \\boxed{ }", "1"),  # a blank box adds nothing
    ("\\boxed {5}", "5"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are not grouping
    ("\\boxed{\\boxed{9}}", "\\boxed{9}"),  # a box in a box belongs to the outer one
    ("\\boxed{ 8 }", "8"),
    ("no box here: 42", None),
    ("", None),
    ("\\boxed{\\frac{1}{2}", None),  # unbalanced
    ("\\boxed{1} and then \\boxed{2", None),  # the last box never closes
    ("\\boxed{}", None),
    ("\\boxed{  }", None),
    ("\\boxedx{3}", None),
    ("\\boxed 5", None),
])
def test_last_boxed(answer, expected):
    assert last_boxed(answer) == expected


def test_a_box_only_in_the_reasoning_does_not_count():
    # The runner passes the answer (after </think>) alone; the reasoning's box is never seen.
    reasoning, answer = "try \\boxed{41}... no", "The answer is 42."
    assert last_boxed(reasoning) == "41"
    assert last_boxed(answer) is None


@pytest.mark.parametrize("reasoning, answer, expected", [
    ("Let me think.", "\\boxed{42}", True),
    ("Let me think.", "no box, still formatted", True),
    ("", "\\boxed{42}", False),  # no think block
    ("  \n", "\\boxed{42}", False),  # an empty think block
    ("thinking forever, never closed", "", False),  # the engine kept it all as reasoning
    ("closed", "  \n ", False),  # nothing after </think>
])
def test_format_ok(reasoning, answer, expected):
    assert format_ok(reasoning, answer) is expected


@pytest.fixture(scope="module")
def checker():
    with AnswerChecker(deadline_s=5) as answer_checker:
        yield answer_checker


@pytest.mark.parametrize("extracted, reference", [
    ("42.0", "42"),
    ("42", "42.0"),
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac12", "0.5"),
    ("-0.75", "-\\frac{3}{4}"),
    ("\\{2,1\\}", "\\{1,2\\}"),
    ("(1, 2]", "(1,2]"),
    ("[0, \\infty)", "[0,\\infty)"),
    ("\\sqrt{18}", "3\\sqrt{2}"),
    ("3\\sqrt2", "3\\sqrt{2}"),
    ("x = 5", "5"),
    ("1{,}000", "1000"),
])
def test_equivalent_answers_are_correct(checker, extracted, reference):
    verdict = checker.check(extracted, reference)
    assert verdict.correct, verdict
    assert verdict.note is None


@pytest.mark.parametrize("extracted, reference", [
    ("41", "42"),
    ("\\frac{1}{3}", "\\frac{1}{2}"),
    ("[1, 2]", "(1,2]"),
    ("\\{1,3\\}", "\\{1,2\\}"),
    ("2\\sqrt{3}", "3\\sqrt{2}"),
    ("x", "42"),
    ("12.5", "12"),
])
def test_wrong_answers_are_wrong(checker, extracted, reference):
    assert not checker.check(extracted, reference).correct


@pytest.mark.parametrize("answers, key", [
    (["42", "42.0", " 42 "], "42"),
    (["\\frac{1}{2}", "0.5", "1/2", "\\dfrac12"], "1/2"),
    (["\\{1,2\\}", "\\{2, 1\\}"], "{1, 2}"),
    (["5", "x = 5"], "5"),
])
def test_equivalent_answers_share_a_key(checker, answers, key):
    assert {checker.check(answer, "7").key for answer in answers} == {key}


def test_different_answers_have_different_keys(checker):
    keys = {checker.check(answer, "7").key for answer in ["42", "41", "\\frac{1}{2}", "0.3"]}
    assert len(keys) == 4


def test_an_answer_math_verify_cannot_read_keys_as_its_text(checker):
    verdict = checker.check("\\begin{  weird   stuff", "42")
    assert verdict == Verdict(False, "\\begin{ weird stuff", verdict.note)


@pytest.mark.parametrize("reference", ["-2, 3", "\\{-2, 3\\}", "3, -2"])
def test_several_boxes_are_judged_as_one_set(checker, reference):
    extracted = last_boxed("The roots are $\\boxed{-2}$ and $\\boxed{3}$.")
    assert checker.check(extracted, reference) == Verdict(True, "{-2, 3}", None)
    assert not checker.check(extracted, "3").correct


@pytest.mark.parametrize("answers, key", [
    (["Evelyn", "\\text{Evelyn}", "evelyn", "\\text{ Evelyn }"], "evelyn"),
    (["Tuesday", "\\text{Tuesday}", "TUESDAY"], "tuesday"),
    (["10\\%", "10", "10 \\%", "10%"], "10"),
    (["12.5\\%", "12.5", "\\frac{25}{2}"], "25/2"),
    (["x^2", "x^{2}"], "x**2"),  # letters without a word in them keep sympy's key
    (["\\text{(C)}", "C", "(C)"], "c"),
])
def test_words_and_percentages_share_a_key(checker, answers, key):
    assert {checker.check(answer, "7").key for answer in answers} == {key}


def test_words_with_the_same_letters_have_different_keys(checker):
    assert checker.check("Evelyn", "7").key != checker.check("Evenly", "7").key
    assert checker.check("Evelyn", "\\text{Evelyn}").correct


def test_a_word_reference_is_not_matched_by_its_anagrams(checker):
    # math-verify reads both as the same product of letters
    assert not checker.check("Evenly", "Evelyn").correct
    assert not checker.check("teas", "east").correct
    assert checker.check("evelyn", "Evelyn").correct
    assert not checker.check("Evenly", "\\text{Evelyn}").correct


def test_words_are_checked_too(checker):
    assert checker.check("no  solution", "no solution").correct
    assert not checker.check("one solution", "no solution").correct


def test_a_reference_math_verify_cannot_parse_is_compared_as_text(checker):
    assert checker.check(" \\\\ ", "\\\\") == \
        Verdict(True, "\\\\", "reference compared as text")
    assert not checker.check("1", "\\\\").correct


def test_nothing_extracted_is_wrong_without_a_check():
    with AnswerChecker() as unstarted:
        assert unstarted.check(None, "42") == Verdict(False, None)
        assert unstarted.startup_seconds is None  # no child was started for it


def test_a_hostile_answer_is_wrong_within_the_deadline_and_the_checker_recovers():
    with AnswerChecker(deadline_s=2) as short:
        assert short.check("42", "42").correct
        first_child = short._process.pid
        verdict = short.check("9^{9^{9^{9}}}", "42")
        # The note says the deadline ended the check (the child was killed, not awaited).
        assert verdict == Verdict(False, "9^{9^{9^{9}}}", "could not be checked in 2 s")
        assert short.check("\\frac{1}{2}", "0.5") == Verdict(True, "1/2", None)
        assert short._process.pid != first_child


def test_the_child_answers_before_the_deadline_even_when_every_step_times_out():
    # math-verify's own timeouts end each step; all of them together must leave the child time
    # to reply before the parent kills it.
    assert answer_worker.STEP_TIMEOUT_S * answer_worker.JUDGE_STEPS < DEFAULT_DEADLINE_S


def test_the_reference_is_parsed_once_per_child():
    # judge runs here in the main thread, as in the child (math-verify's alarms need it).
    answer_worker.parsed_gold.cache_clear()
    assert answer_worker.judge("\\frac{1}{2}", "0.5")["correct"]
    assert answer_worker.judge("\\frac{1}{2}", "1/2")["correct"]
    info = answer_worker.parsed_gold.cache_info()
    assert (info.misses, info.hits) == (1, 1)


def test_ctrl_c_while_the_child_starts_is_the_parents_alone(capfd):
    # Ctrl+C reaches the whole foreground process group: here only the child gets it, while
    # Python in it is still starting (before serve()); it must neither die nor print.
    with AnswerChecker() as answer_checker:
        verdicts: list[Verdict] = []
        thread = threading.Thread(target=lambda: verdicts.append(answer_checker.check("1", "1")))
        thread.start()
        while answer_checker._process is None:
            time.sleep(0.001)
        os.kill(answer_checker._process.pid, signal.SIGINT)
        thread.join()
        assert verdicts == [Verdict(True, "1", None)]
    assert "KeyboardInterrupt" not in capfd.readouterr().err


# Ctrl+C as a terminal sends it: to the whole process group, while the child starts.
CTRL_C_WHILE_STARTING_SCRIPT = """
import os, signal, threading
from localr1.evaluation.scoring import AnswerChecker

checker = AnswerChecker()
def press_ctrl_c():
    while checker._process is None:
        pass
    os.killpg(0, signal.SIGINT)
threading.Thread(target=press_ctrl_c, daemon=True).start()
try:
    checker.check("1", "1")
except KeyboardInterrupt:
    print("interrupted; child stopped:", checker._process is None)
"""


def test_ctrl_c_while_the_child_starts_interrupts_the_parent_quietly():
    result = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_STARTING_SCRIPT],
                            capture_output=True, text=True, timeout=120,
                            start_new_session=True)
    assert (result.stdout, result.stderr) == ("interrupted; child stopped: True\n", "")


def test_checks_from_many_threads_each_get_their_own_verdict(checker):
    verdicts: dict[int, Verdict] = {}

    def check(number: int) -> None:
        verdicts[number] = checker.check(f"{number}.0", str(number if number % 2 else -1))

    threads = [threading.Thread(target=check, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: (v.correct, v.key) for n, v in verdicts.items()} == \
        {n: (n % 2 == 1, str(n)) for n in range(12)}


def test_a_child_killed_between_checks_is_replaced():
    with AnswerChecker() as answer_checker:
        assert answer_checker.check("1", "1").correct
        killed = answer_checker._process
        os.kill(killed.pid, signal.SIGKILL)
        killed.join()
        assert answer_checker.check("\\frac{1}{2}", "0.5") == Verdict(True, "1/2", None)
        assert answer_checker._process.pid != killed.pid


def test_close_ends_the_child_and_a_later_check_starts_a_new_one():
    answer_checker = AnswerChecker()
    assert answer_checker.check("1", "1").correct
    process = answer_checker._process
    answer_checker.close()
    assert not process.is_alive()
    assert process.exitcode == 0  # it left on its own when the pipe closed
    assert answer_checker.check("2", "2").correct
    answer_checker.close()


def test_math_verify_that_cannot_be_imported_is_one_line_error(tmp_path, monkeypatch):
    # The child imports from the parent's sys.path: a broken math_verify first on it.
    (tmp_path / "math_verify").mkdir()
    (tmp_path / "math_verify" / "__init__.py").write_text("raise ImportError('no sympy')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with AnswerChecker() as broken, \
            pytest.raises(AnswerCheckerError,
                          match=r"^cannot start math-verify: ImportError: no sympy$"):
        broken.check("42", "42")
