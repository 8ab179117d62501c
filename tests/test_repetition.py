"""The repetition detector: loops stop with finish reason "repetition", real text never does.

Unit tests feed token ids (synthetic loops, and real text through the DeepSeek-R1 tokenizer);
end-to-end tests run the scripted loop models through the Engine, `localr1 run` and `batch`,
and SmolLM2 on ordinary prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.repetition import MAX_SPAN, MIN_REPEATS, MIN_TOKENS, RepetitionDetector
from localr1.engine.turn_notes import turn_notes
from localr1.paths import app_paths
from localr1.store import Store
from tests.fixtures import scripted_models as sm
from tests.fixtures.scripted_models import build_scripted_model

PROJECT = Path(__file__).resolve().parent.parent


def localr1(*args, input=""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


def tokens_until_trip(tokens) -> int | None:
    """How many tokens the detector took to trip (None: it never did)."""
    detector = RepetitionDetector()
    for n, token in enumerate(tokens, 1):
        if detector.feed(token):
            return n
    return None


# ---- the detector on token ids ---------------------------------------------------------------


@pytest.mark.parametrize("span", [1, 2, 5, 13, 25, 26, 40, MAX_SPAN])
def test_a_repeated_span_trips_after_the_thresholds(span):
    cycle = list(range(100, 100 + span))
    preamble = list(range(1000, 1050))  # some normal text first
    repeated = max(MIN_REPEATS * span, MIN_TOKENS)  # the copies needed, in tokens
    tripped = tokens_until_trip(preamble + cycle * (repeated // span + 20))
    assert tripped == len(preamble) + repeated


def test_a_short_loop_stops_within_a_few_hundred_tokens():
    # "2+2? 2+2? ..." as Gemma-3 base did it: a handful of tokens a copy.
    assert tokens_until_trip([17, 10, 17, 30, 220] * 1000) <= 700


def test_spans_longer_than_max_span_and_broken_runs_never_trip():
    assert tokens_until_trip(list(range(MAX_SPAN + 1)) * 100) is None
    # A loop with one token changed in every copy (a counter) is not a loop.
    rows = [token for i in range(2000) for token in (5, 6, 7, 1000 + i % 997)]
    assert tokens_until_trip(rows) is None


def test_the_detector_reports_the_span():
    detector = RepetitionDetector()
    for token in [1, 2, 3] * 300:
        detector.feed(token)
    assert detector.span == 3


# ---- real text through the DeepSeek-R1 tokenizer ---------------------------------------------

R1_TRACE = """Okay, so I need to figure out how many r's are in the word "strawberry". Let me start
by writing it out: s, t, r, a, w, b, e, r, r, y. Now let me count. The first r comes after the t,
that's one. Then after the b and the e there are two more r's in a row, that's two and three.
Wait, let me double-check that. S-T-R-A-W-B-E-R-R-Y. Yes, position three is an r, and positions
eight and nine are r's too. So that's three r's in total.

Hmm, but sometimes people say strawberry has two r's because they only think of the "berry"
part. Let me make sure I'm not confusing myself. Berry: b, e, r, r, y. That has two r's. And
"straw" has one r. So two plus one is three. Wait, is that right? Straw: s, t, r, a, w. Yes, one
r. Berry: two r's. Three in total.

Let me also think about whether the user might mean something else, like the sound of the letter.
No, the question is plainly about letters. I should answer clearly: there are three r's.
"""


@pytest.fixture(scope="module")
def r1_tokenizer(r1_prefill_model):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(r1_prefill_model), vocab_only=True, verbose=False)
    yield lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    llm.close()


def _table(rows: int) -> str:
    header = "| # | item | price | in stock |\n|---|------|-------|----------|\n"
    return header + "".join(f"| {i} | item {i} | {i * 3 % 7}.00 | yes |\n"
                            for i in range(1, rows + 1))


def _zero_grid(size: int) -> str:
    rows = ",\n".join("    [" + ", ".join(["0"] * size) + "]" for _ in range(size))
    return f"```python\ngrid = [\n{rows},\n]\n```\n"


# Code blocks whose lines do repeat exactly (a dozen to 32 copies of up to 48 tokens).
NUMPY_ZERO_ROWS = "```\n" + "\n".join(["[0. 0. 0. 0. 0. 0. 0. 0.]"] * 12) + "\n```\n"
HEX_DUMP_OF_ZEROS = "```\n" + "\n".join([" ".join(["00"] * 16)] * 32) + "\n```\n"

LEGITIMATE = {
    "zero-grid-10x10": _zero_grid(10),
    "zero-grid-16x16": _zero_grid(16),
    "numpy-zero-rows": NUMPY_ZERO_ROWS,
    "hex-dump-of-zeros": HEX_DUMP_OF_ZEROS,
    "r1-trace": R1_TRACE * 1,
    "table-200-rows": _table(200),
    "counting-1-to-200": "\n".join(f"{i}. Check item {i}." for i in range(1, 201)),
    "numbers-1-to-200": ", ".join(str(i) for i in range(1, 201)),
    "architecture-doc": (PROJECT / "docs/ARCHITECTURE.md").read_text(encoding="utf-8"),
    "code-engine": (PROJECT / "localr1/engine/llama_engine.py").read_text(encoding="utf-8"),
    "code-fixture": (PROJECT / "tests/fixtures/make_store_fixture.py").read_text(encoding="utf-8"),
    "r1-template": sm.ORIGINAL_TEMPLATE,
    "readme": (PROJECT / "README.md").read_text(encoding="utf-8"),
}


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_real_text_never_trips(r1_tokenizer, name):
    tokens = r1_tokenizer(LEGITIMATE[name])
    assert len(tokens) > 150
    assert tokens_until_trip(tokens) is None


def test_a_looping_r1_sentence_trips(r1_tokenizer):
    sentence = r1_tokenizer(" Wait, let me double-check that count once more.")
    tripped = tokens_until_trip(r1_tokenizer(R1_TRACE) + sentence * 100)
    assert tripped is not None
    assert tripped <= len(r1_tokenizer(R1_TRACE)) + max(MIN_TOKENS, MIN_REPEATS * len(sentence))


def test_the_endless_scripted_model_is_no_loop_to_the_detector():
    # The "loop" model stands for a model that thinks on without end (cancel, kill, length
    # tests): its cycle is longer than any span the detector looks for.
    assert sm.LOOP_CYCLE_TOKENS > MAX_SPAN
    assert tokens_until_trip(list(sm.VARIANTS["loop"].script) * 50) is None


# ---- end to end on scripted loop models -----------------------------------------------------


@pytest.fixture(scope="module")
def repeat_model(tmp_path_factory):
    """Thinks " Wait, is it four?" over and over."""
    return build_scripted_model(tmp_path_factory.mktemp("repeat") / "repeat.gguf", "repeat")


@pytest.fixture(scope="module")
def answer_repeat_model(tmp_path_factory):
    """Thinks briefly, then answers " Two plus two?" over and over."""
    return build_scripted_model(tmp_path_factory.mktemp("answer-repeat") / "answer-repeat.gguf",
                                "answer_repeat")


def _turn(model: Path, **params):
    with Engine.load(EngineConfig(model, context_size=4096)) as engine:
        events = list(engine.stream_chat([ChatMessage("user", "What is 2+2?")],
                                         GenerationParams(**params)))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert isinstance(events[-1], TurnDone)
    return reasoning, answer, events[-1].stats


def test_engine_stops_a_loop_in_the_reasoning(repeat_model):
    reasoning, answer, stats = _turn(repeat_model)
    assert stats.finish_reason == "repetition"
    assert MIN_TOKENS <= stats.completion_tokens <= MIN_TOKENS + 10  # not the 4k context
    assert reasoning.startswith(sm.REPEAT_CYCLE_TEXT.strip() + sm.REPEAT_CYCLE_TEXT)
    assert reasoning.count("four?") >= MIN_TOKENS // len(sm.REPEAT_TOKENS)  # all kept
    assert answer == "" and stats.reasoning_truncated
    notes = turn_notes(stats)
    assert any("kept repeating itself" in note for note in notes)


def test_engine_stops_a_loop_in_the_answer(answer_repeat_model):
    reasoning, answer, stats = _turn(answer_repeat_model, temperature=0.6, seed=1)
    assert stats.finish_reason == "repetition"
    assert reasoning == sm.REASONING_TEXT
    assert answer.startswith("Two plus two? Two plus two?")
    assert answer.count("Two plus two?") >= MIN_TOKENS // len(sm.ANSWER_REPEAT_TOKENS)
    assert stats.completion_tokens < MIN_TOKENS + 50 and not stats.reasoning_truncated


def test_run_json_reports_the_repetition_and_the_store_keeps_the_text(answer_repeat_model):
    result = localr1("run", "-m", answer_repeat_model, "--json", "What is 2+2?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["finish_reason"] == "repetition"
    assert data["answer"].startswith("Two plus two?")
    assert [n for n in data["notes"] if "kept repeating itself" in n]
    with Store.open(app_paths().db_path) as store:
        messages = store.branch(data["conversation_id"])
    assert messages[-1].finish_reason == "repetition"
    assert messages[-1].content == data["answer"]
    assert messages[-1].reasoning == sm.REASONING_TEXT


def test_run_says_so_on_stderr(repeat_model):
    result = localr1("run", "-m", repeat_model, "What is 2+2?")
    lines = result.stderr.splitlines()
    note = [line for line in lines if line.startswith("localr1: stopped after")]
    assert note and "the model kept repeating itself" in note[0], result.stderr
    assert result.returncode == 1  # nothing but thinking: no answer, as for any such turn
    assert "gave no answer" in lines[-1]


def test_batch_records_carry_the_repetition(tmp_path, answer_repeat_model):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "What is 2+2?"}\n{"id": 2, "prompt": "hi"}\n')
    result = localr1("batch", source, "-m", answer_repeat_model, "--parallel", 2)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["finish_reason"] == "repetition" and record["error"] is None
        assert record["answer"].startswith("Two plus two?")
        assert [n for n in record["notes"] if "kept repeating itself" in n]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_history_database_takes_the_new_finish_reason(tmp_path, version):
    path = tmp_path / "history.db"
    shutil.copy(PROJECT / f"tests/fixtures/store_v{version}.db", path)
    with Store.open(path) as store:  # migrates (m004 loosens the finish_reason CHECK)
        conversation = store.create_conversation(model="m")
        user = store.add_message(conversation.id, "user", "What is 2+2?")
        looped = store.add_message(conversation.id, "assistant", " Two plus two?" * 80,
                                   parent_id=user.id, finish_reason="repetition")
        assert store.branch(conversation.id)[-1].finish_reason == "repetition"
        assert len(store.branch(conversation.id)) == 2
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        with pytest.raises(sqlite3.IntegrityError):  # the CHECK is still there
            db.execute("UPDATE messages SET finish_reason = 'bogus' WHERE id = ?",
                       (looped.id,))
        # The fixture's own conversations came through whole (active leaves included).
        assert db.execute("SELECT count(*) FROM conversations WHERE active_leaf_id IS NOT NULL"
                          ).fetchone()[0] >= 1


# ---- a real model on ordinary prompts -----------------------------------------------------

ORDINARY_PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a Python function that returns the square of a number.",
    "List three fruits.",
    "Write a markdown table of three planets and their order from the sun.",
]


def test_smollm2_ordinary_prompts_are_not_stopped(smollm2_model):
    with Engine.load(EngineConfig(smollm2_model, context_size=1024)) as engine:
        for prompt in ORDINARY_PROMPTS:
            events = list(engine.stream_chat([ChatMessage("user", prompt)],
                                             GenerationParams(seed=1, max_tokens=300)))
            stats = events[-1].stats
            assert stats.finish_reason in ("stop", "length"), (prompt, stats)
