"""Regressions for the engine/CLI review: a group without its subcommand shows its help, errors
stay one line, a reasoning budget near the end of the context finishes "length", the chat
template budget holds against every repro, huge numbers in settings are range errors, batch
templates substitute in one pass."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.batch import read_items
from localr1.chat_message import ChatMessage
from localr1.config import checked_setting, load_settings
from localr1.engine.chat_template import ChatTemplate
from localr1.engine.events import GenerationParams, TurnDone
from localr1.engine.ggml_abort import abort_line
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.parallel_decoder import ParallelDecoder, SequenceRequest
from localr1.errors import ChatFormatError, ConfigError, InsufficientMemoryError
from localr1.models import hardware

HI = [ChatMessage("user", "hi")]


def localr1(*args, input: bytes = b""):
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=input,
                          capture_output=True, env=os.environ.copy(), timeout=180)


# ---- 4: a group without its subcommand -----------------------------------------------------


def test_group_without_subcommand_shows_its_help_as_click_does():
    for group in ("history", "config"):
        result = localr1(group)
        stderr = result.stderr.decode()
        # click 8.2+ (NoArgsIsHelpError) writes the help to stderr and exits 2
        assert result.returncode == 2, stderr
        assert stderr.startswith(f"Usage: localr1 {group} [OPTIONS] COMMAND"), stderr
        assert "Commands:" in stderr and "Error:" not in stderr, stderr
        assert len(stderr.splitlines()) > 3


# ---- 6: errors holding a line break -------------------------------------------------------


def test_error_with_newline_in_a_value_stays_one_line():
    result = localr1("run", "--no-log", "-m", "/tmp/x\r\ny.gguf", "hi")
    stderr = result.stderr.decode()
    assert result.returncode in (1, 2), stderr
    assert len(stderr.splitlines()) == 1 and "\r" not in stderr, stderr
    assert "/tmp/x\\r\\ny.gguf" in stderr, stderr


def test_usage_error_with_newline_stays_one_line():
    result = localr1("run", "--no-log", "--temperature", "1\n2", "hi")
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert len(stderr.splitlines()) == 1 and "1\\n2" in stderr, stderr


# ---- 2: a reasoning budget that trips at the end of the context ----------------------------


@pytest.fixture(scope="module")
def loop_engine(r1_loop_model):
    with Engine.load(EngineConfig(r1_loop_model, context_size=512)) as engine:
        yield engine


def _budgets_near_the_end(engine) -> list[int]:
    prompt = engine.prepare_prompt(HI, GenerationParams())
    room = engine.info.n_ctx - len(prompt.tokens)
    close = len(engine.think_close_tokens)
    return sorted({505, *range(room - close - 1, room + 1)})


def test_reasoning_budget_at_the_end_of_the_context_finishes_length(loop_engine):
    for budget in _budgets_near_the_end(loop_engine):
        events = list(loop_engine.stream_chat(HI, GenerationParams(reasoning_budget=budget)))
        done = events[-1]
        assert isinstance(done, TurnDone) and done.stats.finish_reason == "length", budget


def test_no_room_at_all_finishes_length_at_once(loop_engine):
    # A prompt that fills its sequence's context leaves no room: "length" without a decode.
    prompt = loop_engine.prepare_prompt(HI, GenerationParams())
    done: dict = {}
    with ParallelDecoder(loop_engine, 1, len(prompt.tokens), threads=2) as decoder:
        decoder.run([SequenceRequest(key=0, prompt=prompt, params=GenerationParams())],
                    lambda key, event: done.update({key: event}))
    stats = done[0].stats
    assert stats.finish_reason == "length" and stats.completion_tokens == 0


def test_parallel_reasoning_budget_at_the_end_of_the_context_finishes_length(loop_engine):
    budgets = _budgets_near_the_end(loop_engine)
    prompt = loop_engine.prepare_prompt(HI, GenerationParams(), n_ctx=512)
    requests = [SequenceRequest(key=b, prompt=prompt, params=GenerationParams(reasoning_budget=b))
                for b in [*budgets, -1]]
    done: dict = {}

    def sink(key, event):
        if isinstance(event, TurnDone):
            done[key] = event.stats.finish_reason

    with ParallelDecoder(loop_engine, 3, 512, threads=2) as decoder:
        decoder.run(requests, sink)
    assert done == {request.key: "length" for request in requests}


# ---- 1: the chat template budget holds against every way around it -------------------------

_SIZE_BOMBS = [
    '{{ (((9**1000)**1000)**30) is number }}',
    '{{ ("a"|center(1000000000))|length }}',
    '{{ ("a".center(1000000000))|length }}',
    '{{ ("%1000000000s" % "a")|length }}',
    '{{ ("%*s" % (1000000000, "a"))|length }}',
    '{{ "{:>1000000000}".format("a")|length }}',
    '{{ "{:>{w}}".format("a", w="1000000000")|length }}',
    '{% set s = "a"*1000000 %}' + '{% set s = s ~ s %}' * 10 + '{{ s|length }}',
    '{% set ns = namespace(s="ab") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}'
    '{% endfor %}{{ ns.s|length }}',
    '{% set ns = namespace(s="ab") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}'
    '{% endfor %}{{ ns.s|length }}',
    '{% set ns = namespace(s=[1]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}'
    '{% endfor %}{{ ns.s|length }}',
    '{% set ns = namespace(x=2**64) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}'
    '{% endfor %}{{ ns.x > 1 }}',
    '{{ ("a"*1000000)|replace("", "b"*1000)|length }}',
    '{{ (["x"]*1000000)|join("a"*1000)|length }}',
    '{{ ("a"*1000)|indent(1000000000)|length }}',
    '{{ range(100000)|batch(1)|map("list")|map("length")|sum }}' * 20,
]


@pytest.mark.parametrize("source", _SIZE_BOMBS)
def test_template_size_bombs_stop_at_the_budget(source):
    with pytest.raises(ChatFormatError, match="did not finish within its budget") as caught:
        ChatTemplate(source).render()
    assert "\n" not in str(caught.value)


def test_lipsum_and_unused_globals_are_gone():
    for name in ("lipsum(n=2000000)", "cycler(1, 2)", "joiner()"):
        with pytest.raises(ChatFormatError, match="is undefined"):
            ChatTemplate("{{ " + name + " }}").render()


def test_ordinary_operators_filters_and_methods_still_work():
    source = ('{{ "a" ~ 1 ~ none }}|{{ "%s-%d" % ("x", 3) }}|{{ [1] + [2] }}|{{ 2**10 }}|'
              '{{ "a b"|replace(" ", "_") }}|{{ [1, 2]|join(",") }}|{{ "x"|center(5) }}|'
              '{% for x in [1, 2]|map("string") %}{{ x }}{% endfor %}|{{ "ab".upper() }}|'
              '{{ "{}-{:>3}".format("a", "b") }}|{{ range(3)|list }}|{{ dict(a=1).a }}')
    assert ChatTemplate(source).render() == \
        "a1None|x-3|[1, 2]|1024|a_b|1,2|  x  |12|AB|a-  b|[0, 1, 2]|1"


# ---- 3, 8: huge numbers in settings are range errors naming the bounds ----------------------


def test_huge_integer_for_a_float_setting_is_a_range_error():
    with pytest.raises(ValueError, match="must be between 0 and 5"):
        checked_setting("temperature", 10**400)


def test_integer_ranges_name_their_upper_bound():
    for key, low in (("max_tokens", "0 (no limit)"), ("top_k", "0 (off)"),
                     ("reasoning_budget", "-1 (no limit)")):
        with pytest.raises(ValueError, match=re.escape(f"must be {low} to 2147483647")):
            checked_setting(key, 10**30)


def test_huge_temperature_in_config_toml_is_one_line(tmp_path):
    home = Path(os.environ["LOCALR1_HOME"])
    home.mkdir(parents=True)
    (home / "config.toml").write_text(f"[sampling]\ntemperature = {'9' * 401}\n")
    with pytest.raises(ConfigError, match="must be between 0 and 5"):
        load_settings(home / "config.toml")
    result = localr1("config", "show")
    stderr = result.stderr.decode()
    assert result.returncode == 1 and "internal error" not in stderr, stderr
    assert len(stderr.splitlines()) == 1 and "must be between 0 and 5" in stderr, stderr


def test_huge_temperature_in_a_batch_line_fails_that_record_only(tmp_path, r1_prefill_model):
    source = tmp_path / "in.jsonl"
    big = "9" * 401
    source.write_text(f'{{"id": "big", "prompt": "hi", "params": {{"temperature": {big}}}}}\n'
                      '{"id": "ok", "prompt": "hi"}\n')
    result = localr1("batch", source, "-m", r1_prefill_model)
    stderr = result.stderr.decode()
    assert "internal error" not in stderr, stderr
    rows = {row["id"]: row for row in map(json.loads, result.stdout.decode().splitlines())}
    assert "must be between 0 and 5" in rows["big"]["error"]
    assert rows["ok"]["answer"]


# ---- 5: batch templates substitute in one pass ---------------------------------------------


def test_template_leaves_placeholders_inside_the_prompt_alone():
    items = read_items(['{"id": "q7", "prompt": "say {id} and {input}"}'],
                       template="{id}: {input} ({id})")
    assert items[0].messages[0].content == "q7: say {id} and {input} (q7)"


# ---- llama.cpp's abort text --------------------------------------------------------------


def test_abort_line_shows_control_characters_visibly():
    line = abort_line("/b/src/llama-model.cpp:12: GGML_ASSERT(\x1b]52;c;aGk=\x07 \x1bc) failed")
    assert line == ("localr1: llama.cpp aborted: llama-model.cpp:12: "
                    "GGML_ASSERT(\\x1b]52;c;aGk=\\x07 \\x1bc) failed")


# ---- 7: the batch KV cache is checked against free memory ----------------------------------


def test_parallel_kv_cache_beyond_free_memory_is_refused_before_allocating(loop_engine):
    n_parallel, n_ctx = 64, 2**31 // 64 - 1
    needed = hardware.estimate_memory(loop_engine.header, n_parallel * n_ctx).kv_cache_bytes
    assert needed > 2 * hardware.memory_info().available_bytes  # the test's premise
    with pytest.raises(InsufficientMemoryError, match="use a smaller --ctx or --parallel"):
        ParallelDecoder(loop_engine, n_parallel, n_ctx, threads=1)
