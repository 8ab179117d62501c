"""Tests for the streaming <think> splitter and its non-streaming reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localr1.engine.reasoning import SplitDelta, ThinkSplitter, split_reasoning


def run(chunks: list[str], start_in_reasoning: bool = False) -> tuple[str, str, ThinkSplitter]:
    """Feed chunks then finish; return (reasoning, answer, splitter) after checking delta rules."""
    splitter = ThinkSplitter(start_in_reasoning=start_in_reasoning)
    deltas: list[SplitDelta] = []
    for chunk in chunks:
        batch = splitter.feed(chunk)
        check_batch(batch)
        deltas += batch
    batch = splitter.finish()
    check_batch(batch)
    deltas += batch
    reasoning = "".join(d.text for d in deltas if d.kind == "reasoning")
    answer = "".join(d.text for d in deltas if d.kind == "answer")
    return reasoning, answer, splitter


def check_batch(batch: list[SplitDelta]) -> None:
    assert all(d.text for d in batch), "no empty deltas"
    assert all(a.kind != b.kind for a, b in zip(batch, batch[1:], strict=False)), "merged"


def per_char(text: str) -> list[str]:
    return list(text)


# --- examples -----------------------------------------------------------------------------


def test_prefill_mode_only_closing_tag() -> None:
    reasoning, answer, sp = run(["Let me think.\n", "</think>\n\n", "The answer is 4."], True)
    assert (reasoning, answer) == ("Let me think.", "The answer is 4.")
    assert sp.saw_reasoning and not sp.reasoning_truncated


def test_model_emitted_think() -> None:
    reasoning, answer, sp = run(["<think>\n", "hmm, 2+2", "\n</think>", "\n\n4"])
    assert (reasoning, answer) == ("hmm, 2+2", "4")
    assert sp.saw_reasoning and not sp.reasoning_truncated


def test_prefill_mode_swallows_duplicate_open_tag() -> None:
    reasoning, answer, _ = run(["\n", "<think>", "\nplan\n</think>\nok"], True)
    assert (reasoning, answer) == ("plan", "ok")


def test_prefill_mode_keeps_later_open_tag_as_reasoning() -> None:
    reasoning, answer, _ = run(["plan <think> more</think>ok"], True)
    assert (reasoning, answer) == ("plan <think> more", "ok")


def test_empty_think_block_gives_no_reasoning_deltas() -> None:
    sp = ThinkSplitter()
    deltas = sp.feed("<think>\n\n</think>\n\nHello") + sp.finish()
    assert deltas == [SplitDelta("answer", "Hello")]
    assert sp.saw_reasoning and not sp.reasoning_truncated


def test_text_before_think_is_answer() -> None:
    reasoning, answer, _ = run(["Sure. ", "<think>why</think>", " Done."])
    assert (reasoning, answer) == ("why", "Sure.  Done.")


def test_no_think_at_all_is_all_answer() -> None:
    reasoning, answer, sp = run(["  just ", "an answer\n"])
    assert (reasoning, answer) == ("", "just an answer")
    assert not sp.saw_reasoning and not sp.reasoning_truncated and not sp.in_reasoning


def test_stray_close_tag_before_open_is_answer() -> None:
    reasoning, answer, _ = run(["a</think>b<think>r</think>c"])
    assert (reasoning, answer) == ("r", "a</think>bc")


def test_unclosed_think_is_truncated() -> None:
    reasoning, answer, sp = run(["<think>\nstill going", "...\n"])
    assert (reasoning, answer) == ("still going...", "")
    assert sp.in_reasoning and sp.reasoning_truncated


def test_prefill_mode_without_close_is_truncated() -> None:
    reasoning, answer, sp = run(["thinking", " forever"], True)
    assert (reasoning, answer) == ("thinking forever", "")
    assert sp.reasoning_truncated


def test_truncated_only_known_after_finish() -> None:
    sp = ThinkSplitter()
    sp.feed("<think>abc")
    assert sp.in_reasoning and sp.saw_reasoning and not sp.reasoning_truncated
    sp.finish()
    assert sp.reasoning_truncated


def test_tags_split_one_character_per_chunk() -> None:
    text = "pre <think>\nstep 1\n</think>\n\npost"
    reasoning, answer, _ = run(per_char(text))
    assert (reasoning, answer) == ("step 1", "pre \n\npost")


def test_in_reasoning_tracks_tags_as_they_complete() -> None:
    sp = ThinkSplitter()
    states = []
    for ch in "<think>x</think>y":
        sp.feed(ch)
        states.append(sp.in_reasoning)
    assert states == [False] * 6 + [True] * 9 + [False] * 2


def test_literal_tags_after_block_closed() -> None:
    reasoning, answer, _ = run(["<think>r</think>", "use <think> and </think> tags"])
    assert (reasoning, answer) == ("r", "use <think> and </think> tags")


@pytest.mark.parametrize(
    ("chunks", "start", "expected"),
    [
        (["answer <thi"], False, ("", "answer <thi")),
        (["<think>deep </thin"], False, ("deep </thin", "")),
        (["<thin"], True, ("<thin", "")),
        (["<"], False, ("", "<")),
    ],
)
def test_partial_tag_at_finish_is_literal(
    chunks: list[str], start: bool, expected: tuple[str, str]
) -> None:
    reasoning, answer, _ = run(chunks, start)
    assert (reasoning, answer) == expected


def test_feed_after_finish_raises() -> None:
    sp = ThinkSplitter()
    sp.feed("x")
    sp.finish()
    with pytest.raises(RuntimeError):
        sp.feed("y")


def test_plain_text_streams_immediately() -> None:
    sp = ThinkSplitter()
    assert sp.feed("Hello") == [SplitDelta("answer", "Hello")]
    assert sp.feed(",") == [SplitDelta("answer", ",")]
    # Trailing whitespace waits for the next word; a possible tag prefix waits for the tag.
    assert sp.feed(" ") == []
    assert sp.feed("world<") == [SplitDelta("answer", " world")]
    assert sp.feed("3") == [SplitDelta("answer", "<3")]


def test_holdback_is_bounded_on_long_streams() -> None:
    sp = ThinkSplitter(start_in_reasoning=True)
    emitted = 0
    for i in range(20_000):
        emitted += sum(len(d.text) for d in sp.feed(f"tok{i}<"))
    # Only the final "<" (a possible "</think>" prefix) is still held back.
    assert emitted == sum(len(f"tok{i}<") for i in range(20_000)) - 1


# --- properties ---------------------------------------------------------------------------

FRAGMENTS = ["<think>", "</think>", "<", "<th", "ink>", "</", "think", ">", "\n", " ", "\n\n",
             "a", "b c", "é", "答"]  # fmt: skip

texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=30).map("".join)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 2)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@pytest.mark.parametrize("start_in_reasoning", [False, True])
@settings(max_examples=500, deadline=None)
@given(case=chunked())
def test_streaming_matches_reference(start_in_reasoning: bool, case: tuple[str, list[str]]) -> None:
    text, chunks = case
    reasoning, answer, sp = run(chunks, start_in_reasoning)
    ref_reasoning, ref_answer, ref_truncated = split_reasoning(text, start_in_reasoning)
    assert (reasoning, answer) == (ref_reasoning, ref_answer)
    assert sp.reasoning_truncated == ref_truncated

    whole_reasoning, whole_answer, whole = run([text], start_in_reasoning)
    assert (reasoning, answer) == (whole_reasoning, whole_answer)
    assert sp.reasoning_truncated == whole.reasoning_truncated
    assert sp.saw_reasoning == whole.saw_reasoning == (start_in_reasoning or "<think>" in text)


@pytest.mark.parametrize("start_in_reasoning", [False, True])
@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_one_char_per_chunk_matches_reference(start_in_reasoning: bool, text: str) -> None:
    reasoning, answer, sp = run(per_char(text), start_in_reasoning)
    assert (reasoning, answer, sp.reasoning_truncated) == split_reasoning(text, start_in_reasoning)
