"""Prompt-lookup drafting: what NgramLookup proposes from the context so far, and `--draft
lookup` in the engine (the same text at temperature 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.lookup_drafter import NgramLookup


def _lookup(tokens: list[int], **kwargs) -> NgramLookup:
    lookup = NgramLookup(**kwargs)
    lookup.extend(tokens)
    return lookup


def _reference_propose(tokens: list[int], n_max: int, max_ngram: int = 4,
                       min_ngram: int = 2) -> list[int]:
    """The rule spelled out as a rescan: longest suffix first, its latest earlier occurrence,
    as many tokens after it as agree before it (up to n_max), continued periodically past the
    end."""
    end = len(tokens)
    for n in range(min(max_ngram, end), min_ngram - 1, -1):
        suffix = tokens[end - n:]
        for start in range(end - 1, n - 1, -1):  # start: the index after an occurrence
            if tokens[start - n:start] == suffix:
                agreed = max(k for k in range(n, min(n_max, start) + 1)
                             if tokens[start - k:start] == tokens[end - k:end]) if n < n_max else n
                seq = list(tokens)
                while len(seq) < end + n_max:
                    seq.append(seq[start + len(seq) - end])
                return seq[end:end + min(n_max, agreed)]
    return []


# A "rewrite this code" prompt: the answer copies the code with one edit.
CODE = [101, 7, 8, 9, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49]  # def f(x): return ...
PROMPT = [1, 500, 501, 502, *CODE, 503, 504]  # "<bos> Rewrite this: <code> Answer:"


def test_rewrite_prompt_drafts_the_rest_of_the_code() -> None:
    lookup = _lookup(PROMPT)
    lookup.extend([101, 7])  # the answer starts copying the code: a 2-token match ...
    assert lookup.propose(16) == [8, 9]  # ... drafts 2 tokens
    lookup.extend([8, 9])
    assert lookup.propose(16) == [40, 41, 42, 43]  # 4 tokens agree: 4 drafted
    assert lookup.propose(3) == [40, 41, 42]
    lookup.extend([40, 41, 99])  # the edit: 99 where the code had 42
    assert lookup.propose(16) == []  # (41, 99) and (99,) never occurred: nothing to copy
    lookup.extend([43])  # back on the original text; (99, 43) is new but ...
    assert lookup.propose(16) == []  # ... (43,) alone is below min_ngram
    lookup.extend([44])
    assert lookup.propose(16) == [45, 46]  # (43, 44) matches the code again
    lookup.extend([45, 46, 47])
    assert lookup.propose(16) == [48, 49, 503, 504, 101]  # 5 tokens agree since the edit


def test_no_match_proposes_nothing() -> None:
    assert _lookup([1, 2, 3, 4, 5, 6]).propose(8) == []
    assert NgramLookup().propose(8) == []
    assert _lookup([7]).propose(8) == []
    assert _lookup([7, 7]).propose(8) == []  # the only (7, 7) is the suffix itself


def test_longest_suffix_wins_over_a_more_recent_shorter_match() -> None:
    tokens = [5, 1, 2, 3, 60, 9, 2, 3, 70, 1, 2, 3]
    # (2, 3) last occurred at 6..7 (then 70), but (1, 2, 3) only at 1..3 (then 60).
    assert _lookup(tokens).propose(3) == [60, 9, 2]
    assert _lookup(tokens).propose(8) == [60, 9, 2]  # 3 tokens agree: 3 drafted


def test_the_most_recent_occurrence_wins() -> None:
    tokens = [1, 2, 10, 11, 3, 1, 2, 20, 21, 4, 1, 2]  # (1, 2) twice before the suffix
    assert _lookup(tokens).propose(8) == [20, 21]
    assert _lookup(tokens + [30, 31, 5, 1, 2]).propose(8) == [30, 31]


def test_n_max_is_respected() -> None:
    text = list(range(100, 140))
    tokens = [*text, 0, *text[:30]]  # the last 30 tokens agree with the start
    lookup = _lookup(tokens)
    for n_max in (1, 3, 16, 30):
        assert lookup.propose(n_max) == tokens[30:30 + n_max]
    assert lookup.propose(40) == tokens[30:60]  # no more than the 30 that agree
    assert lookup.propose(0) == [] and lookup.propose(-1) == []


def test_the_draft_is_as_long_as_the_agreement() -> None:
    lookup = _lookup([7, 1, 2, 3, 4, 5, 6, 8, 9, 8, 2, 3])  # (2, 3) agrees, the 8 before not
    assert lookup.propose(16) == [4, 5]
    lookup.extend([4, 5, 6])
    assert lookup.propose(16) == [8, 9, 8, 2, 3]  # 5 tokens agree now


def test_a_loop_is_drafted_past_the_end_of_the_context() -> None:
    cycle = [11, 12, 13, 14, 15]
    lookup = _lookup([1, *cycle * 3, 11, 12])  # 12 tokens agree with the text 5 back
    assert lookup.propose(12) == ([13, 14, 15] + cycle * 2)[:12]
    assert _lookup([4] * 6).propose(5) == [4] * 5


def test_truncate_forgets_the_removed_tokens() -> None:
    lookup = _lookup([1, 2, 3, 4, 9, 1, 2])
    assert lookup.propose(8) == [3, 4]
    lookup.extend([3, 50, 60, 1, 2])  # now (1, 2) was last followed by 3, 50
    assert lookup.propose(8) == [3, 50]
    lookup.truncate(7)  # a rejected draft: back to [1, 2, 3, 4, 9, 1, 2]
    assert len(lookup) == 7
    assert lookup.propose(8) == [3, 4]
    lookup.truncate(5)  # [1, 2, 3, 4, 9]
    assert lookup.propose(8) == []
    lookup.extend([1, 2])
    assert lookup.propose(8) == [3, 4]
    lookup.truncate(0)
    assert len(lookup) == 0 and lookup.propose(4) == []
    lookup.extend([8, 9, 8, 9])
    assert lookup.propose(8) == [8, 9]
    lookup.truncate(100)  # cutting back to more than there is changes nothing
    assert len(lookup) == 4
    with pytest.raises(ValueError):
        lookup.truncate(-1)


def test_truncate_leaves_the_index_as_if_the_tokens_never_came() -> None:
    # A pseudo-random walk over a small alphabet has many repeats; after each truncate the
    # index must answer exactly like one built from the kept tokens alone.
    tokens = [(i * 7 + (i * i) % 5) % 6 for i in range(300)]
    lookup = _lookup(tokens)
    for n in (290, 250, 249, 120, 37, 3, 1):
        lookup.truncate(n)
        fresh = _lookup(tokens[:n])
        assert lookup._follower == fresh._follower
        for n_max in (1, 4, 9):
            assert lookup.propose(n_max) == fresh.propose(n_max)
        lookup.extend(tokens[n:n + 5])  # grow a little between cuts
        lookup.truncate(n)


@pytest.mark.parametrize(("max_ngram", "min_ngram"), [(4, 2), (3, 1), (5, 5), (2, 2)])
def test_matches_the_rescan_rule(max_ngram: int, min_ngram: int) -> None:
    tokens = [(i * 5 + (i * i * 3) % 7) % 8 for i in range(200)]
    lookup = NgramLookup(max_ngram=max_ngram, min_ngram=min_ngram)
    for i, token in enumerate(tokens):
        lookup.extend([token])
        for n_max in (1, 6):
            expected = _reference_propose(tokens[:i + 1], n_max, max_ngram, min_ngram)
            assert lookup.propose(n_max) == expected, (i, n_max)


def test_the_index_grows_by_a_bounded_amount_per_token() -> None:
    # Cheap per token by construction: each extend adds at most (max - min + 1) index entries
    # and one undo record, whatever the length of the context.
    lookup = NgramLookup()
    for i in range(2000):
        before = len(lookup._follower)
        lookup.extend([i % 97])
        assert len(lookup._follower) - before <= lookup.max_ngram - lookup.min_ngram + 1
    assert len(lookup._replaced) == len(lookup) == 2000


def test_defaults_and_bad_sizes() -> None:
    lookup = NgramLookup()
    assert (lookup.max_ngram, lookup.min_ngram) == (4, 2)
    with pytest.raises(ValueError):
        NgramLookup(max_ngram=2, min_ngram=3)
    with pytest.raises(ValueError):
        NgramLookup(min_ngram=0)


# --- in the engine: `--draft lookup` -------------------------------------------------------


def _greedy_turn(model: Path, draft: str | None, prompt: str, max_tokens: int):
    with Engine.load(EngineConfig(model, context_size=1024, draft=draft)) as engine:
        events = list(engine.stream_chat([ChatMessage("user", prompt)],
                                         GenerationParams(temperature=0.0, max_tokens=max_tokens)))
        info = engine.info
    text = "".join(e.text for e in events if isinstance(e, ReasoningDelta | AnswerDelta))
    done = events[-1]
    assert isinstance(done, TurnDone)
    return text, done.stats, info


def test_lookup_drafts_a_looping_model_without_changing_its_output(r1_loop_model: Path) -> None:
    plain, plain_stats, _ = _greedy_turn(r1_loop_model, None, "hi", 200)
    drafted, stats, info = _greedy_turn(r1_loop_model, "lookup", "hi", 200)
    assert info.draft == "lookup"
    assert drafted == plain and stats.completion_tokens == plain_stats.completion_tokens == 200
    assert plain_stats.draft_tokens == 0 and plain_stats.acceptance_rate is None
    # From its second cycle on, the text so far predicts the loop exactly.
    assert stats.draft_tokens > 100 and stats.draft_accepted == stats.draft_tokens


def test_lookup_on_a_rewrite_prompt_gives_the_same_answer(smollm2_model: Path) -> None:
    prompt = ("Fix the typo in this text and repeat it: The quick brown fox jumpss over the lazy "
              "dog. The dog sleeps in the sun all day long, and the fox runs away into the forest.")
    plain, _, _ = _greedy_turn(smollm2_model, None, prompt, 48)
    drafted, stats, _ = _greedy_turn(smollm2_model, "lookup", prompt, 48)
    assert drafted == plain
    assert "sleeps in the sun all day long" in drafted  # copied from the prompt ...
    assert stats.draft_accepted > 10  # ... largely by accepted drafts
