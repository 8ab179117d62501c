"""How a loaded model turns chat messages into prompt text.

Order of preference: a format the user names (`--chat-format`), the Jinja template the GGUF
carries, then a format inferred from the vocabulary (DeepSeek-R1's `<｜Assistant｜>`, ChatML's
`<|im_start|>`, Llama 3's headers) or the architecture. Otherwise we stop with a message that
names the fix instead of silently falling back to a wrong format (llama-cpp-python's default
would be llama-2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING

from localr1.engine.chat_template import ChatTemplate
from localr1.errors import ChatFormatError

if TYPE_CHECKING:
    import llama_cpp

ModelMessage = dict[str, str]

# Formats whose formatter functions llama-cpp-python ships (its registry keeps only wrapped
# completion handlers, so we name the formatter functions directly).
LLAMA_CPP_FORMATTERS = {
    "chatml": "format_chatml",
    "llama-2": "format_llama2",
    "llama-3": "format_llama3",
    "mistral-instruct": "format_mistral_instruct",
    "gemma": "format_gemma",
    "qwen": "format_qwen",
    "zephyr": "format_zephyr",
    "alpaca": "format_alpaca",
    "vicuna": "format",
    "openchat": "format_openchat",
    "phind": "format_phind",
    "chatglm3": "format_chatglm3",
}
BUILTIN_TEMPLATES = {"deepseek-r1": "deepseek-r1.jinja"}
KNOWN_FORMATS = sorted([*BUILTIN_TEMPLATES, *LLAMA_CPP_FORMATTERS])

# Special tokens that identify a prompt format when the GGUF carries no template.
_VOCAB_MARKERS = (
    ("<｜Assistant｜>", "deepseek-r1"),
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama-3"),
)
_ARCH_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: tuple[str, ...]


@dataclass(frozen=True)
class ChatFormat:
    name: str  # "gguf" for the model's own template, else a format name
    source: str  # human readable: where the format came from
    render: Callable[[list[ModelMessage]], RenderedPrompt]
    is_r1: bool  # DeepSeek-R1 family: fold system prompts into the first user turn
    note: str | None = None  # set when the format was guessed: users should know, and can fix


def resolve_chat_format(llm: llama_cpp.Llama, requested: str | None,
                        architecture: str | None, model_label: str) -> ChatFormat:
    bos, eos = _special_text(llm, llm.token_bos()), _special_text(llm, llm.token_eos())
    is_r1 = _has_single_token(llm, "<｜Assistant｜>")
    if requested:
        return _named_format(requested, bos, eos, is_r1, source="--chat-format")
    template = llm.metadata.get("tokenizer.chat_template")
    if template:
        return ChatFormat("gguf", "the GGUF's chat template", _jinja_renderer(template, bos, eos),
                          is_r1)
    for marker, name in _VOCAB_MARKERS:
        if _has_single_token(llm, marker):
            chosen = _named_format(name, bos, eos, is_r1,
                                   source=f"no template in the GGUF; {marker} in its vocabulary")
            return replace(chosen, note=_guessed_note(name, "its vocabulary"))
    if architecture in _ARCH_FORMATS:
        name = _ARCH_FORMATS[architecture]
        chosen = _named_format(name, bos, eos, is_r1,
                               source=f"no template in the GGUF; architecture {architecture}")
        return replace(chosen, note=_guessed_note(name, f"its architecture ({architecture})"))
    raise ChatFormatError(
        f"{model_label} has no chat template and its prompt format cannot be inferred "
        f"(architecture {architecture or 'unknown'}); pass --chat-format NAME, "
        f"one of: {', '.join(KNOWN_FORMATS)}"
    )


def _guessed_note(name: str, evidence: str) -> str:
    return (f"no chat template in the GGUF; the prompt format '{name}' was guessed from "
            f"{evidence}: pick one with --chat-format")


def _named_format(name: str, bos: str, eos: str, is_r1: bool, source: str) -> ChatFormat:
    if name in BUILTIN_TEMPLATES:
        template = resources.files("localr1.templates").joinpath(BUILTIN_TEMPLATES[name])
        renderer = _jinja_renderer(template.read_text(encoding="utf-8"), bos, eos)
        return ChatFormat(name, f"{source} ({name})", renderer, is_r1 or name == "deepseek-r1")
    if name in LLAMA_CPP_FORMATTERS:
        from llama_cpp import llama_chat_format

        formatter = getattr(llama_chat_format, LLAMA_CPP_FORMATTERS[name])

        def render(messages: list[ModelMessage]) -> RenderedPrompt:
            response = formatter(messages=messages)
            return RenderedPrompt(response.prompt, _stops(response.stop))

        return ChatFormat(name, f"{source} ({name})", render, is_r1)
    raise ChatFormatError(f"unknown chat format '{name}'; known: {', '.join(KNOWN_FORMATS)}")


def _jinja_renderer(template: str, bos: str, eos: str) -> Callable[[list[ModelMessage]],
                                                                    RenderedPrompt]:
    compiled = ChatTemplate(template)  # a syntax error is a ChatFormatError here, at load

    def render(messages: list[ModelMessage]) -> RenderedPrompt:
        # The variables llama-cpp-python's Jinja2ChatFormatter passes.
        text = compiled.render(messages=messages, bos_token=bos, eos_token=eos,
                               add_generation_prompt=True, functions=None, function_call=None,
                               tools=None, tool_choice=None)
        return RenderedPrompt(text, (eos,) if eos else ())

    return render


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _special_text(llm: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", "replace")


def _has_single_token(llm: llama_cpp.Llama, text: str) -> bool:
    return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) == 1
