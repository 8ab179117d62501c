"""Choosing a prompt format when the GGUF has no template."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localr1.engine.chat_format import KNOWN_FORMATS, resolve_chat_format
from localr1.engine.chat_template import MAX_SECONDS, ChatTemplate
from localr1.errors import ChatFormatError

FIXTURES = Path(__file__).parent / "fixtures"


class VocabularyOnly:
    """Stands in for llama_cpp.Llama's vocabulary lookups (a model with no known markers)."""

    metadata: dict[str, str] = {}

    def __init__(self, single_tokens: set[str]) -> None:
        self.single_tokens = single_tokens

    def token_bos(self) -> int:
        return 1

    def token_eos(self) -> int:
        return 2

    def detokenize(self, tokens, special=False) -> bytes:
        return {1: b"<s>", 2: b"</s>"}[tokens[0]]

    def tokenize(self, text: bytes, add_bos=False, special=False) -> list[int]:
        return [7] if text.decode() in self.single_tokens else [7, 8]


def test_unknown_format_names_the_fix():
    with pytest.raises(ChatFormatError) as info:
        resolve_chat_format(VocabularyOnly(set()), None, "mamba", "odd.gguf")
    message = str(info.value)
    assert "odd.gguf has no chat template" in message and "--chat-format" in message
    assert "chatml" in message and "\n" not in message


@pytest.mark.parametrize(("marker", "name"), [("<|im_start|>", "chatml"),
                                              ("<|start_header_id|>", "llama-3"),
                                              ("<｜Assistant｜>", "deepseek-r1")])
def test_format_inferred_from_the_vocabulary(marker, name):
    chosen = resolve_chat_format(VocabularyOnly({marker}), None, "llama", "m.gguf")
    assert chosen.name == name
    assert chosen.render([{"role": "user", "content": "hi"}]).text


def test_format_from_architecture_and_explicit_name():
    assert resolve_chat_format(VocabularyOnly(set()), None, "gemma2", "g.gguf").name == "gemma"
    for name in KNOWN_FORMATS:
        chosen = resolve_chat_format(VocabularyOnly(set()), name, None, "m.gguf")
        assert chosen.render([{"role": "user", "content": "hi"}]).text


# ---- templates from the GGUF: syntax errors and runaway loops are one line -------------------


class WithTemplate(VocabularyOnly):
    def __init__(self, template: str) -> None:
        super().__init__(set())
        self.metadata = {"tokenizer.chat_template": template}


def one_line_error(template: str) -> str:
    with pytest.raises(ChatFormatError) as info:
        chosen = resolve_chat_format(WithTemplate(template), None, "qwen2", "m.gguf")
        chosen.render([{"role": "user", "content": "hi"}])
    message = str(info.value)
    assert "\n" not in message and "--chat-format" in message, message
    return message


def test_template_syntax_error_is_one_line_at_load():
    with pytest.raises(ChatFormatError) as info:
        resolve_chat_format(WithTemplate("{% for m in messages %}{{ m.content }"), None,
                            "qwen2", "m.gguf")
    assert str(info.value) == ("the chat template has a syntax error: unexpected '}' (line 1); "
                               "try --chat-format NAME")


@pytest.mark.parametrize("template", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(100000)|reverse %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10000000000 }}",
    "{{ 9 ** 99999999 }}",
])
def test_runaway_template_stops_within_its_budget(template):
    started = time.monotonic()
    assert "did not finish within its budget" in one_line_error(template)
    assert time.monotonic() - started < MAX_SECONDS


def test_template_budget_leaves_real_templates_alone():
    template = (FIXTURES / "r1-template-original.jinja").read_text(encoding="utf-8")
    chosen = resolve_chat_format(WithTemplate(template), None, "qwen2", "m.gguf")
    long_chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
                 for i in range(2000)]
    text = chosen.render(long_chat).text
    assert "message 1999" in text and chosen.render(long_chat).stop == ("</s>",)


def test_template_errors_raised_by_the_template_are_one_line():
    message = one_line_error("{{ raise_exception('only user and\nassistant roles') }}")
    assert message == ("the chat template failed: only user and assistant roles; "
                       "try --chat-format NAME")


def test_budgeted_template_renders_like_transformers():
    template = ChatTemplate("{% for m in messages %}{{ m | tojson }}{% if loop.last %}!"
                            "{% endif %}{% generation %}{{ range(3) | list }}{% endgeneration %}"
                            "{% endfor %}")
    assert template.render(messages=[{"content": "é"}]) == '{"content": "é"}![0, 1, 2]'


def test_engine_load_with_a_broken_template_is_one_line(tmp_path):
    from localr1.engine.llama_engine import Engine, EngineConfig
    from tests.fixtures.odd_models import write_tiny_model

    path = write_tiny_model(tmp_path / "broken.gguf", chat_template="{% if %}")
    with pytest.raises(ChatFormatError,
                       match=r"^the chat template has a syntax error: .*\(line 1\)"):
        Engine.load(EngineConfig(path, context_size=64))


def test_every_template_in_the_gguf_is_checked_before_the_load():
    from localr1.engine.chat_template import check_gguf_templates

    good = "{{ messages[0].content }}"
    check_gguf_templates({"tokenizer.chat_template": good, "general.name": "{% if %}"})
    with pytest.raises(ChatFormatError, match=r"^tokenizer\.chat_template\.tool_use: the chat "
                                              r"template has a syntax error"):
        check_gguf_templates({"tokenizer.chat_template": good,
                              "tokenizer.chat_template.tool_use": "{% for %}"})
    deep = "{% if x %}" * 5000 + "{% endif %}" * 5000
    with pytest.raises(ChatFormatError, match="nested too deeply"):
        check_gguf_templates({"tokenizer.chat_template": deep})


@pytest.mark.parametrize("template", [
    # Loops over lists, not ranges, and recursion through macros: every iteration and call counts.
    "{% set l = range(1000)|list %}{% for a in l %}{% for b in l %}{% for c in l %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% for m in messages * 100000 %}{% for c in m.content * 1000 %}{% endfor %}{% endfor %}",
])
def test_runaway_loops_over_lists_and_macros_stop_too(template):
    started = time.monotonic()
    assert "did not finish within its budget" in one_line_error(template)
    # Macro calls are slow enough that the deadline, not the step count, may stop this one.
    assert time.monotonic() - started < MAX_SECONDS + 2


def test_loops_keep_their_loop_variable():
    template = ChatTemplate("{% for m in messages %}{{ loop.index }}/{{ loop.length }}"
                            "{% if not loop.last %},{% endif %}{% endfor %}"
                            "{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}")
    assert template.render(messages=[{}, {}, {}]) == "1/3,2/3,3/3a=1"


@pytest.mark.parametrize("name", ["r1-template-original.jinja", "r1-template-think-prefill.jinja",
                                  "tokenizer"])
def test_budgeted_rendering_matches_llama_cpp_python(name):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from tests.fixtures.scripted_models import BOS_TOKEN, EOS_TOKEN, load_tokenizer

    source = load_tokenizer()["tokenizer.chat_template"] if name == "tokenizer" else \
        (FIXTURES / name).read_text(encoding="utf-8")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "<think>x</think>Hello"},
                {"role": "user", "content": "and now?"}]
    theirs = Jinja2ChatFormatter(template=source, eos_token=EOS_TOKEN, bos_token=BOS_TOKEN)
    ours = ChatTemplate(source).render(messages=messages, bos_token=BOS_TOKEN,
                                       eos_token=EOS_TOKEN, add_generation_prompt=True,
                                       functions=None, function_call=None, tools=None,
                                       tool_choice=None)
    assert ours == theirs(messages=messages).prompt
