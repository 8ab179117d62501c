"""Speculative decoding in the one decode loop: with a draft model or prompt lookup, every token
is still the model's own sample, so at temperature 0 the text is the undrafted text, and a seeded
turn at temperature 0.6 makes the same random draws (same text on the scripted models), while
the draft counts say how much was drafted and kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.parallel_decoder import ParallelDecoder, SequenceRequest
from localr1.errors import DraftModelError
from tests.fixtures.scripted_models import VARIANTS

HI = [ChatMessage("user", "hi")]
CODE = [ChatMessage("user", "Repeat this code exactly, renaming x to y:\ndef f(x):\n"
                            "    total = 0\n    for i in range(x):\n        total += i * x\n"
                            "    return total\n")]


def _turn(model: Path, history, params: GenerationParams, **config) -> tuple[str, object]:
    with Engine.load(EngineConfig(model, context_size=1024, threads=1, **config)) as engine:
        events = list(engine.stream_chat(history, params))
    text = "".join(e.text for e in events if isinstance(e, (ReasoningDelta, AnswerDelta)))
    done = events[-1]
    assert isinstance(done, TurnDone)
    return text, done.stats


def test_scripted_model_as_its_own_draft_accepts_everything(r1_original_model):
    params = GenerationParams(temperature=0)
    plain, plain_stats = _turn(r1_original_model, HI, params)
    text, stats = _turn(r1_original_model, HI, params, draft=r1_original_model)
    assert text == plain and plain.endswith(VARIANTS["original"].answer)
    assert stats.completion_tokens == plain_stats.completion_tokens
    assert plain_stats.draft_tokens == 0 and plain_stats.acceptance_rate is None
    assert stats.draft_tokens > 0 and stats.draft_accepted == stats.draft_tokens


def test_a_draft_that_is_partly_wrong_changes_nothing_but_the_counts(r1_original_model,
                                                                     r1_prefill_model):
    # The prefill model's script lacks "<think>\n": it mispredicts the start, then agrees.
    for params in (GenerationParams(temperature=0), GenerationParams(temperature=0.6, seed=7)):
        plain, _ = _turn(r1_original_model, HI, params)
        text, stats = _turn(r1_original_model, HI, params, draft=r1_prefill_model)
        assert text == plain
        assert 0 < stats.draft_accepted < stats.draft_tokens


def test_lookup_drafts_a_looping_text_from_itself(r1_loop_model):
    params = GenerationParams(temperature=0, max_tokens=120)
    plain, _ = _turn(r1_loop_model, HI, params)
    text, stats = _turn(r1_loop_model, HI, params, draft="lookup")
    assert text == plain
    # Every cycle after the first is predicted, up to one cycle per step.
    assert stats.draft_accepted == stats.draft_tokens >= 40
    assert stats.completion_tokens == 120


@pytest.mark.parametrize("draft", ["lookup", "self"])
def test_smollm2_gives_the_same_text_with_a_draft(smollm2_model, draft):
    draft_model = smollm2_model if draft == "self" else "lookup"
    # At temperature 0.6 a real model's text may differ: the batched logits round differently
    # in the last bits, which can move a random draw across a token's boundary (the
    # distribution is the same; the scripted models above show the same draws are made).
    params = GenerationParams(temperature=0, max_tokens=80)
    plain, _ = _turn(smollm2_model, CODE, params)
    text, stats = _turn(smollm2_model, CODE, params, draft=draft_model)
    assert text == plain
    assert stats.draft_tokens > 0


def test_draft_min_turns_short_drafts_off(r1_loop_model):
    # Lookup proposes at most what it matched; a minimum above draft_max drafts nothing.
    _, stats = _turn(r1_loop_model, HI, GenerationParams(temperature=0, max_tokens=60),
                     draft="lookup", draft_max=4, draft_min=5)
    assert stats.draft_tokens == 0


def test_parallel_sequences_draft_like_one(r1_original_model, r1_prefill_model):
    params = GenerationParams(temperature=0)
    plain, _ = _turn(r1_original_model, HI, params)
    config = EngineConfig(r1_original_model, context_size=1024, threads=1,
                          draft=r1_prefill_model)
    done: dict = {}
    texts: dict = {}
    with Engine.load(config) as engine:
        prompt = engine.prepare_prompt(HI, params, n_ctx=512)

        def sink(key, event):
            if isinstance(event, TurnDone):
                done[key] = event.stats
            else:
                texts[key] = texts.get(key, "") + getattr(event, "text", "")

        with ParallelDecoder(engine, 3, 512, threads=1) as decoder:
            decoder.run([SequenceRequest(key=k, prompt=prompt, params=params) for k in range(4)],
                        sink)
    assert all(texts[k] == plain for k in range(4))
    assert all(0 < done[k].draft_accepted < done[k].draft_tokens for k in range(4))


def test_a_draft_with_another_vocabulary_is_one_line(r1_original_model, smollm2_model):
    with pytest.raises(DraftModelError) as info:
        Engine.load(EngineConfig(r1_original_model, context_size=1024, draft=smollm2_model))
    message = str(info.value)
    assert "\n" not in message and "vocab" in message


def test_draft_min_keeps_drafting_after_misses(r1_original_model, r1_prefill_model,
                                              r1_loop_model):
    # The draft length never shrinks below --draft-min, so a miss never ends drafting.
    _, stats = _turn(r1_original_model, HI, GenerationParams(temperature=0),
                     draft=r1_prefill_model, draft_max=12, draft_min=8)
    assert stats.draft_tokens > 16 and stats.draft_accepted > 0
    _, stats = _turn(r1_loop_model, HI, GenerationParams(temperature=0, max_tokens=150),
                     draft="lookup", draft_max=16, draft_min=9)
    assert stats.draft_tokens >= 9


@pytest.mark.parametrize("draft", [None, "lookup"])
def test_nothing_is_shown_after_cancel(r1_loop_model, draft):
    import threading

    cancel = threading.Event()
    seen = ""
    with Engine.load(EngineConfig(r1_loop_model, context_size=1024, threads=1,
                                  draft=draft)) as engine:
        at_cancel = None
        for event in engine.stream_chat(HI, GenerationParams(temperature=0), cancel=cancel):
            if isinstance(event, (ReasoningDelta, AnswerDelta)):
                seen += event.text
                if len(seen) > 80 and at_cancel is None:
                    cancel.set()
                    at_cancel = len(seen)
            elif isinstance(event, TurnDone):
                stats = event.stats
    assert stats.finish_reason == "cancelled"
    # With a draft, the tokens verified in the same step as the cancel were sampled before it.
    assert len(seen) - at_cancel < 60 if draft else len(seen) == at_cancel


def test_a_failed_decode_leaves_no_stale_cache(r1_prefill_model, monkeypatch):
    import llama_cpp

    from localr1.errors import GenerationError

    real_decode = llama_cpp.llama_decode
    fail = {"once": True}

    def decode_failing_once(ctx, batch):
        if fail.pop("once", False):
            return -3
        return real_decode(ctx, batch)

    params = GenerationParams(temperature=0)
    with Engine.load(EngineConfig(r1_prefill_model, context_size=1024, threads=1)) as engine:
        clean = list(engine.stream_chat(HI, params))
        monkeypatch.setattr(llama_cpp, "llama_decode", decode_failing_once)
        with pytest.raises(GenerationError):
            list(engine.stream_chat([ChatMessage("user", "hello there")], params))
        again = list(engine.stream_chat(HI, params))
    text = lambda events: "".join(e.text for e in events if hasattr(e, "text"))  # noqa: E731
    assert text(again) == text(clean)
    assert again[-1].stats.cached_prompt_tokens == 0  # the whole prompt was fed again
