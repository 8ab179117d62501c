"""The engine on real llama.cpp with the scripted R1 models (and SmolLM2 for real text)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

import localr1
from localr1.chat_message import ChatMessage
from localr1.engine.events import (
    AnswerDelta,
    ContextTrimmed,
    GenerationParams,
    ReasoningDelta,
    TurnDone,
)
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.prompting import to_model_messages
from localr1.errors import (
    ChatFormatError,
    ContextOverflowError,
    InsufficientMemoryError,
    ModelFileError,
    ModelLoadError,
)
from tests.fixtures import scripted_models as sm
from tests.fixtures.odd_models import write_huge_sparse_model, write_unknown_architecture_model

HI = [ChatMessage("user", "hi")]


def run_turn(engine, history=HI, **params):
    events = list(engine.stream_chat(history, GenerationParams(**params)))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert sum(isinstance(e, TurnDone) for e in events) == 1
    return reasoning, answer, done.stats, events


@pytest.fixture(scope="module")
def engines(r1_original_model, r1_prefill_model, r1_loop_model, r1_no_template_model):
    loaded = {
        "original": Engine.load(EngineConfig(r1_original_model, context_size=1024)),
        "prefill": Engine.load(EngineConfig(r1_prefill_model, context_size=1024)),
        "loop": Engine.load(EngineConfig(r1_loop_model)),
        "no_template": Engine.load(EngineConfig(r1_no_template_model, context_size=1024)),
    }
    yield loaded
    for engine in loaded.values():
        engine.close()


@pytest.mark.parametrize("variant", ["original", "prefill", "no_template"])
@pytest.mark.parametrize("temperature", [0.0, 0.6, 1.5])
def test_reasoning_and_answer_come_apart(engines, variant, temperature):
    reasoning, answer, stats, events = run_turn(engines[variant], temperature=temperature,
                                                seed=3)
    assert reasoning == sm.REASONING_TEXT
    assert answer == sm.ANSWER_TEXT
    assert stats.finish_reason == "stop"
    assert not stats.reasoning_truncated
    assert 0 < stats.reasoning_tokens < stats.completion_tokens
    assert stats.thinking_seconds is not None and stats.thinking_seconds >= 0
    assert stats.ttft_seconds > 0 and stats.prompt_tokens > 0
    kinds = [type(e) for e in events if isinstance(e, ReasoningDelta | AnswerDelta)]
    first_answer = kinds.index(AnswerDelta)
    assert ReasoningDelta not in kinds[first_answer:]  # streamed: reasoning, then answer
    assert len(kinds) > 4  # many small deltas, not one lump at the end


def test_template_variants_detected(engines):
    assert engines["original"].chat_format.name == "gguf"
    assert engines["no_template"].chat_format.name == "deepseek-r1"
    assert all(engines[v].chat_format.is_r1 for v in ("original", "prefill", "no_template"))
    prompt = engines["prefill"].render_prompt([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<｜Assistant｜><think>\n")


def test_model_stays_loaded_and_reuses_the_prompt_prefix(engines):
    engine = engines["prefill"]
    _, answer, first, _ = run_turn(engine)
    history = [*HI, ChatMessage("assistant", answer, reasoning=sm.REASONING_TEXT),
               ChatMessage("user", "and again")]
    _, answer2, second, _ = run_turn(engine, history)
    assert answer2 == sm.ANSWER_TEXT
    # The first user turn is already in the KV cache: llama.cpp does not process it again.
    assert second.cached_prompt_tokens >= first.prompt_tokens - 2


def test_system_prompt_is_folded_into_the_first_user_turn_for_r1(engines):
    engine = engines["prefill"]
    events = list(engine.stream_chat(HI, GenerationParams(), system_prompt="Be terse."))
    assert isinstance(events[-1], TurnDone)
    prompt = engine.render_prompt([{"role": "user", "content": "Be terse.\n\nhi"}])
    assert "<｜User｜>Be terse.\n\nhi" in prompt


def test_max_tokens_stops_with_length(engines):
    reasoning, answer, stats, _ = run_turn(engines["loop"], max_tokens=20)
    assert stats.finish_reason == "length"
    assert stats.completion_tokens == 20
    assert stats.reasoning_truncated and answer == ""
    assert reasoning.startswith(sm.LOOP_CYCLE_TEXT.strip()[:10])


def test_generation_stops_when_the_context_is_full(engines):
    engine = engines["loop"]
    _, _, stats, _ = run_turn(engine)
    assert stats.finish_reason == "length"
    assert stats.prompt_tokens + stats.completion_tokens == engine.info.n_ctx


def test_cancel_from_another_thread_within_one_token(engines):
    engine = engines["loop"]
    cancel = threading.Event()
    seen = {"tokens": 0, "at_cancel": None}

    def canceller():
        while seen["tokens"] < 10:
            threading.Event().wait(0.001)
        seen["at_cancel"] = seen["tokens"]
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    done = None
    for event in engine.stream_chat(HI, GenerationParams(), cancel=cancel):
        if isinstance(event, ReasoningDelta | AnswerDelta):
            seen["tokens"] += 1
        if isinstance(event, TurnDone):
            done = event.stats
    thread.join()
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens <= seen["at_cancel"] + 2


def test_already_cancelled_turn_generates_nothing(engines):
    cancel = threading.Event()
    cancel.set()
    events = list(engines["loop"].stream_chat(HI, GenerationParams(), cancel=cancel))
    assert len(events) == 1 and events[0].stats.finish_reason == "cancelled"
    assert events[0].stats.completion_tokens == 0


def test_reasoning_budget_closes_the_think_block(engines):
    reasoning, answer, stats, _ = run_turn(engines["prefill"], reasoning_budget=3)
    assert stats.reasoning_budget_hit
    assert stats.reasoning_tokens == 3
    assert reasoning and sm.REASONING_TEXT.startswith(reasoning)
    assert reasoning != sm.REASONING_TEXT
    assert answer == sm.ANSWER_TEXT  # after "\n</think>\n\n" the script goes on to the answer
    assert stats.finish_reason == "stop" and not stats.reasoning_truncated


def test_reasoning_budget_on_a_model_that_never_stops_thinking(engines):
    reasoning, answer, stats, _ = run_turn(engines["loop"], reasoning_budget=8, max_tokens=40)
    assert stats.reasoning_budget_hit and stats.reasoning_tokens == 8
    assert reasoning and answer  # the model was made to answer
    assert not stats.reasoning_truncated


def test_reasoning_budget_zero_skips_thinking(engines):
    reasoning, answer, stats, _ = run_turn(engines["prefill"], reasoning_budget=0)
    assert reasoning == "" and answer == sm.ANSWER_TEXT


def fewest_dropped(engine, history, budget, system_prompt=None):
    """The reference answer, by brute force: leave out the oldest whole turns, one at a time,
    until the rendered prompt fits; system messages stay and are not counted."""
    for start in (i for i, m in enumerate(history) if m.role == "user"):
        kept = [m for m in history[:start] if m.role == "system"] + history[start:]
        messages = to_model_messages(kept, system_prompt, fold_system=True)
        if engine.count_prompt_tokens(messages) <= budget:
            return sum(m.role != "system" for m in history[:start])
    raise AssertionError("the newest message alone does not fit")


LONG = "word " * 100  # about 100 tokens: four of them fill the loop model's 512-token context


@pytest.mark.parametrize("history, dropped", [
    ([ChatMessage("user", LONG), ChatMessage("assistant", LONG), ChatMessage("user", LONG),
      ChatMessage("assistant", LONG), ChatMessage("user", LONG), ChatMessage("assistant", LONG),
      ChatMessage("user", "short question")], 2),
    ([ChatMessage("system", "Be terse."), ChatMessage("user", LONG),
      ChatMessage("assistant", LONG), ChatMessage("system", "Answer in English."),
      ChatMessage("user", LONG), ChatMessage("assistant", LONG), ChatMessage("user", LONG),
      ChatMessage("assistant", LONG), ChatMessage("user", "short question")], 2),
    ([ChatMessage("user", LONG), ChatMessage("assistant", LONG), ChatMessage("system", "Hm."),
      ChatMessage("user", LONG), ChatMessage("assistant", LONG), ChatMessage("system", "Ok."),
      ChatMessage("user", LONG * 3), ChatMessage("assistant", "fine"),
      ChatMessage("user", "short question")], 4),
], ids=["plain", "system-messages", "system-messages-in-dropped-turns"])
def test_old_turns_dropped_to_fit_and_caller_told(engines, history, dropped):
    engine = engines["loop"]  # 512-token context
    params = GenerationParams(max_tokens=50)
    assert fewest_dropped(engine, history, engine.info.n_ctx - 50) == dropped
    events = list(engine.stream_chat(history, params))
    trimmed = [e for e in events if isinstance(e, ContextTrimmed)]
    assert len(trimmed) == 1 and trimmed[0].dropped_messages == dropped
    stats = events[-1].stats
    assert stats.dropped_messages == dropped
    assert trimmed[0].prompt_tokens == stats.prompt_tokens <= engine.info.n_ctx - 50
    prompt = engine.prepare_prompt(history, params)
    assert prompt.dropped_messages == dropped
    assert prompt.messages[-1] == {"role": "user", "content": "short question"}
    assert prompt.tokens == engine.tokenize_prompt(engine.render_prompt(prompt.messages))
    assert len(prompt.tokens) == stats.prompt_tokens


def test_a_prompt_too_long_for_the_context_is_an_error(engines):
    with pytest.raises(ContextOverflowError, match="raise --ctx"):
        list(engines["loop"].stream_chat([ChatMessage("user", "word " * 600)],
                                         GenerationParams()))


def test_prepared_prompt_for_a_smaller_context(engines):
    engine = engines["prefill"]
    history = [ChatMessage("user", LONG), ChatMessage("assistant", LONG),
               ChatMessage("user", "short question")]
    whole = engine.prepare_prompt(history, GenerationParams(max_tokens=50))
    assert whole.dropped_messages == 0 and whole.start_in_reasoning
    assert whole.text == engine.render_prompt(whole.messages)
    small = engine.prepare_prompt(history, GenerationParams(max_tokens=50), n_ctx=150)
    assert small.dropped_messages == 2 and len(small.tokens) <= 100


def test_unknown_chat_format_is_a_clear_error(r1_prefill_model):
    with pytest.raises(ChatFormatError, match="unknown chat format 'nope'"):
        Engine.load(EngineConfig(r1_prefill_model, chat_format="nope"))


def test_smollm2_real_text_and_seed_reproducibility(smollm2_model):
    question = [ChatMessage("user", "What is the capital of France?")]
    answers = []
    for _ in range(2):  # a fresh load each time: same seed, same prompt -> same text
        with Engine.load(EngineConfig(smollm2_model, context_size=1024)) as engine:
            assert not engine.chat_format.is_r1
            _, answer, stats, _ = run_turn(engine, question, seed=7, max_tokens=40)
            answers.append(answer)
    assert answers[0].strip() and answers[0] == answers[1]
    assert stats.tokens_per_second > 0


def test_missing_not_gguf_truncated(tmp_path, r1_prefill_model):
    with pytest.raises(ModelFileError, match="no such file"):
        Engine.load(EngineConfig(tmp_path / "absent.gguf"))
    text = tmp_path / "notes.gguf"
    text.write_text("hello, I am not a model\n")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        Engine.load(EngineConfig(text))
    cut = tmp_path / "cut.gguf"
    data = r1_prefill_model.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match="truncated"):
        Engine.load(EngineConfig(cut))


def test_unsupported_architecture(tmp_path):
    path = write_unknown_architecture_model(tmp_path / "odd.gguf")
    with pytest.raises(ModelLoadError, match="frobnicator"):
        Engine.load(EngineConfig(path))


def test_model_larger_than_free_memory(tmp_path):
    path = write_huge_sparse_model(tmp_path / "huge.gguf", tensor_bytes=2**40)  # 1 TiB
    with pytest.raises(InsufficientMemoryError, match="only .* is free"):
        Engine.load(EngineConfig(path, gpu_layers=0))


def test_only_the_engine_module_touches_llama_cpp_python_objects():
    # Other modules get the model, tokenizer and prompts through Engine's public methods.
    private = re.compile(r"\b(engine|llm|_llm)\._\w|\._model\.|\bllm\.ctx\b")
    package = Path(localr1.__file__).parent
    offenders = [f"{path.relative_to(package)}:{n}"
                 for path in package.rglob("*.py") if path.name != "llama_engine.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if private.search(line)]
    assert offenders == []
