"""Choosing a prompt format when the GGUF has no template."""

from __future__ import annotations

import pytest

from localr1.engine.chat_format import KNOWN_FORMATS, resolve_chat_format
from localr1.errors import ChatFormatError


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
