"""A model in a child process (engine/model_process): what the TUI and `serve` use with RPC
workers. The same turns, prompts, errors and parallel decoding as a model in this process;
a child that dies fails what is in flight with one line and the next turn starts a new one.

Real parts: the scripted GGUFs in a real spawned child with real llama.cpp; the child is
killed with SIGKILL to stand for a lost worker (the RPC tests kill real workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.model_process import (
    ProcessEngine,
    check_answer_grammar,
    load_engine,
    open_decoder,
)
from localr1.engine.parallel_decoder import GrammarError, RequestFeed, SequenceRequest
from localr1.errors import ContextOverflowError, GenerationError, ModelFileError
from tests.fixtures import scripted_models as sm

HI = [ChatMessage("user", "hi")]


@pytest.fixture(scope="module")
def prefill_child(r1_prefill_model: Path) -> Iterator[ProcessEngine]:
    with ProcessEngine.start(EngineConfig(r1_prefill_model, context_size=1024)) as engine:
        yield engine


@pytest.fixture()
def loop_child(r1_loop_model: Path) -> Iterator[ProcessEngine]:
    with ProcessEngine.start(EngineConfig(r1_loop_model)) as engine:
        yield engine


def texts(events) -> tuple[str, str, TurnDone]:
    reasoning = answer = ""
    done = None
    for event in events:
        if isinstance(event, ReasoningDelta):
            reasoning += event.text
        elif isinstance(event, AnswerDelta):
            answer += event.text
        elif isinstance(event, TurnDone):
            done = event
    return reasoning, answer, done


def kill_child(engine: ProcessEngine) -> None:
    os.kill(engine.child().process.pid, signal.SIGKILL)


def test_a_turn_in_the_child_is_the_turn_in_this_process(prefill_child, r1_prefill_model):
    params = GenerationParams(seed=3, max_tokens=200)
    with Engine.load(EngineConfig(r1_prefill_model, context_size=1024)) as local:
        expected = texts(local.stream_chat(HI, params))
        assert prefill_child.info == local.info
    reasoning, answer, done = texts(prefill_child.stream_chat(HI, params))
    assert (reasoning, answer) == expected[:2] == (sm.REASONING_TEXT, sm.ANSWER_TEXT)
    assert done.stats.finish_reason == "stop"
    assert done.stats.completion_tokens == expected[2].stats.completion_tokens


def test_without_workers_the_model_stays_in_this_process(r1_prefill_model):
    with load_engine(EngineConfig(r1_prefill_model, context_size=1024)) as engine:
        assert isinstance(engine, Engine)


def test_stop_and_answer_now_reach_the_child(loop_child):
    cancel = threading.Event()
    events = []
    for event in loop_child.stream_chat(HI, GenerationParams(), cancel=cancel):
        events.append(event)
        if len(events) == 20:
            cancel.set()
    # Without the stop the loop model would think until its context is full ("length").
    assert events[-1].stats.finish_reason == "cancelled"

    answer_now = threading.Event()
    seen = []
    for event in loop_child.stream_chat(HI, GenerationParams(max_tokens=300),
                                        answer_now=answer_now):
        seen.append(event)
        if isinstance(event, ReasoningDelta):
            answer_now.set()
    assert seen[-1].stats.answered_early


def test_prompts_grammars_and_their_errors_cross_the_process(prefill_child):
    prompt = prefill_child.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    assert prompt.tokens and prompt.start_in_reasoning
    with pytest.raises(ContextOverflowError) as overflow:
        prefill_child.prepare_prompt([ChatMessage("user", "word " * 3000)], GenerationParams())
    # The figures come along: each front end words its own advice from them.
    assert overflow.value.n_ctx == 1024 and overflow.value.prompt_tokens > 1024
    check_answer_grammar(prefill_child, 'root ::= "yes" | "no"')
    with pytest.raises(GrammarError):
        check_answer_grammar(prefill_child, "root ::= (")


def test_serves_parallel_decoder_runs_in_the_child(prefill_child, r1_prefill_model):
    prompt = prefill_child.prepare_prompt(HI, GenerationParams(), n_ctx=512)

    def decode(engine) -> dict[str, tuple[str, str, str]]:
        feed, results = RequestFeed(), {}
        for index in range(3):
            feed.put(SequenceRequest(key=f"r{index}", prompt=prompt, seed=index,
                                     params=GenerationParams(max_tokens=12 + index)))
        feed.close()
        events: dict[str, list] = {}
        with open_decoder(engine, 2, 512, 1) as decoder:
            decoder.run(feed, lambda key, event: events.setdefault(key, []).append(event))
        for key, stream in events.items():
            reasoning, answer, done = texts(stream)
            results[key] = (reasoning, answer, done.stats.finish_reason)
        return results

    with Engine.load(EngineConfig(r1_prefill_model, context_size=1024)) as local:
        assert decode(prefill_child) == decode(local)


def test_a_request_cancelled_by_its_client_frees_its_slot_in_the_child(loop_child):
    prompt = loop_child.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    feed, cancel, ends = RequestFeed(), threading.Event(), {}
    feed.put(SequenceRequest(key="gone", prompt=prompt, params=GenerationParams(),
                             cancel=cancel))
    feed.put(SequenceRequest(key="short", prompt=prompt, params=GenerationParams(max_tokens=5)))

    def sink(key, event) -> None:
        if isinstance(event, TurnDone):
            ends[key] = event.stats.finish_reason
            if key == "short":
                cancel.set()  # the client of "gone" leaves once "short" is done
                feed.close()

    with open_decoder(loop_child, 2, 512, 1) as decoder:
        decoder.run(feed, sink)
    assert ends == {"short": "length", "gone": "cancelled"}


def test_a_child_that_dies_mid_turn_fails_it_in_one_line_and_the_next_turn_starts_anew(
        loop_child):
    streamed = 0
    with pytest.raises(GenerationError, match=r"^the model process ended unexpectedly "
                                              r"\(exit code -9\)$"):
        for event in loop_child.stream_chat(HI, GenerationParams()):
            streamed += isinstance(event, ReasoningDelta)
            if streamed == 5:
                kill_child(loop_child)
    assert streamed >= 5  # what came before the death was delivered (the caller keeps it)
    reasoning, _, done = texts(loop_child.stream_chat(HI, GenerationParams(max_tokens=8)))
    assert done.stats.finish_reason == "length" and reasoning


def test_a_child_that_dies_mid_decode_fails_the_run(loop_child):
    prompt = loop_child.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    feed, seen = RequestFeed(), []
    feed.put(SequenceRequest(key="a", prompt=prompt, params=GenerationParams()))

    def sink(key, event) -> None:
        seen.append(event)
        if len(seen) == 5:
            kill_child(loop_child)

    decoder = open_decoder(loop_child, 1, 512, 1)
    with pytest.raises(GenerationError, match="ended unexpectedly"):
        decoder.run(feed, sink)
    decoder.close()  # nothing to free in a dead child: no error
    assert len(seen) >= 5


def test_the_childs_own_last_line_is_the_reason(loop_child):
    """ggml_abort and the RPC watchdog write "localr1: ..." to the child's fd 2 (its log)."""
    child = loop_child.child()
    with open(child.log_path, "a") as log:
        log.write("llama.cpp noise\nlocalr1: RPC worker 10.0.0.7:50052 stopped answering "
                  "(connection refused)\nmore noise\n")
    with pytest.raises(GenerationError, match=r"^RPC worker 10\.0\.0\.7:50052 stopped "
                                              r"answering \(connection refused\)$"):
        for _ in loop_child.stream_chat(HI, GenerationParams()):
            kill_child(loop_child)


def test_a_model_that_cannot_load_is_the_same_one_line_error(tmp_path, r1_prefill_model):
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(r1_prefill_model.read_bytes()[:4096])
    with pytest.raises(ModelFileError) as in_process:
        Engine.load(EngineConfig(truncated))
    with pytest.raises(ModelFileError) as in_child:
        ProcessEngine.start(EngineConfig(truncated))
    assert str(in_child.value) == str(in_process.value)


def test_closing_ends_the_child(r1_prefill_model):
    engine = ProcessEngine.start(EngineConfig(r1_prefill_model, context_size=1024))
    child = engine.child()
    engine.close()
    assert not child.process.is_alive() and child.process.exitcode == 0
    assert not Path(child.log_path).exists()
    with pytest.raises(GenerationError, match="closed"):
        list(engine.stream_chat(HI, GenerationParams()))


def test_a_call_on_a_child_that_died_fails_and_loads_nothing(loop_child):
    """serve's request threads call prepare_prompt: after a death they hear it at once, and the
    scheduler (not they) loads the model again."""
    dead = loop_child.child()
    kill_child(loop_child)
    assert dead.ended.wait(30)
    with pytest.raises(GenerationError, match="ended unexpectedly"):
        loop_child.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    assert loop_child._child is dead  # no new process


def test_stop_pressed_before_the_reload_ends_the_turn_without_loading(loop_child):
    dead = loop_child.child()
    kill_child(loop_child)
    assert dead.ended.wait(30)
    stopped = threading.Event()
    stopped.set()
    [done] = list(loop_child.stream_chat(HI, GenerationParams(), cancel=stopped))
    assert done.stats.finish_reason == "cancelled" and done.stats.completion_tokens == 0
    assert loop_child._child is dead  # nothing was loaded
    reasoning, _, done = texts(loop_child.stream_chat(HI, GenerationParams(max_tokens=8)))
    assert done.stats.finish_reason == "length" and reasoning  # the next turn reloads


@pytest.mark.parametrize("how", ["stop", "close"])
def test_stop_or_close_during_the_reload_gives_it_up(loop_child, how):
    dead = loop_child.child()
    kill_child(loop_child)
    assert dead.ended.wait(30)
    stop, ends = threading.Event(), []

    def turn() -> None:
        ends.extend(loop_child.stream_chat(HI, GenerationParams(), cancel=stop))

    thread = threading.Thread(target=turn)
    thread.start()
    deadline = time.monotonic() + 60
    while loop_child._loading is None:  # the reload's process has been started
        assert time.monotonic() < deadline and thread.is_alive(), "no reload started"
        thread.join(0.01)
    loading = loop_child._loading
    stop.set() if how == "stop" else loop_child.close()
    thread.join(60)
    assert not thread.is_alive()
    assert [event.stats.finish_reason for event in ends] == ["cancelled"]
    assert not loading.process.is_alive()
    assert not Path(loading.log_path).exists()


def test_no_log_is_left_when_the_app_ends_without_closing(tmp_path, r1_prefill_model):
    """A Ctrl+C or a quit during a load never closes the engine: the log goes at exit."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from localr1.engine.llama_engine import EngineConfig\n"
        "from localr1.engine.model_process import ProcessEngine\n"
        "if __name__ == '__main__':\n"
        "    engine = ProcessEngine.start(EngineConfig(Path(sys.argv[1]), context_size=512))\n"
        "    print(engine.child().log_path)\n")
    done = subprocess.run([sys.executable, str(script), str(r1_prefill_model)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    log_path = Path(done.stdout.strip())
    assert log_path.name.startswith("localr1-model-") and not log_path.exists()
