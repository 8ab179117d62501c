"""History to model messages: reasoning never sent back, system folded for R1, oldest dropped."""

from __future__ import annotations

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.prompting import fit_to_context, reply_reserve, to_model_messages
from localr1.errors import ContextOverflowError


def words(messages):
    """A stand-in tokenizer for fitting tests: one token per word plus 4 per message."""
    return sum(len(m["content"].split()) + 4 for m in messages)


HISTORY = [
    ChatMessage("user", "first question here"),
    ChatMessage("assistant", "first answer", reasoning="long private thoughts " * 5),
    ChatMessage("user", "second question"),
    ChatMessage("assistant", "<think>inline thoughts</think>\n\nsecond answer"),
    ChatMessage("user", "third question"),
]


def test_reasoning_is_never_sent_back():
    messages = to_model_messages(HISTORY, None, fold_system=True)
    text = " ".join(m["content"] for m in messages)
    assert "thoughts" not in text
    assert messages[3] == {"role": "assistant", "content": "second answer"}


def test_no_system_prompt_unless_asked():
    assert all(m["role"] != "system" for m in to_model_messages(HISTORY, None, True))


def test_system_prompt_folded_into_first_user_turn_for_r1():
    messages = to_model_messages(HISTORY, "Be brief.", fold_system=True)
    assert messages[0] == {"role": "user", "content": "Be brief.\n\nfirst question here"}
    assert all(m["role"] != "system" for m in messages)


def test_system_prompt_kept_as_system_for_other_models():
    messages = to_model_messages(HISTORY, "Be brief.", fold_system=False)
    assert messages[0] == {"role": "system", "content": "Be brief."}


def test_everything_fits():
    fitted = fit_to_context(HISTORY, None, True, words, n_ctx=1000, reserve_tokens=100)
    assert fitted.dropped_messages == 0
    assert len(fitted.messages) == 5


def test_oldest_turns_dropped_first_and_caller_told():
    full = words(to_model_messages(HISTORY, "sys", True))
    fitted = fit_to_context(HISTORY, "sys", True, words, n_ctx=full - 1 + 10, reserve_tokens=10)
    assert fitted.dropped_messages == 2  # the first question and its answer, together
    assert fitted.messages[0]["content"] == "sys\n\nsecond question"  # system re-folded
    assert fitted.messages[-1]["content"] == "third question"


def test_newest_user_message_is_never_dropped():
    fitted = fit_to_context(HISTORY, None, True, words, n_ctx=20, reserve_tokens=10)
    assert fitted.messages == [{"role": "user", "content": "third question"}]
    assert fitted.dropped_messages == 4
    with pytest.raises(ContextOverflowError, match="raise --ctx"):
        fit_to_context(HISTORY, None, True, words, n_ctx=12, reserve_tokens=10)


def test_reply_reserve():
    assert reply_reserve(4096, 512) == 512
    assert reply_reserve(4096, 0) == 1024  # unbounded replies keep a quarter free
    assert reply_reserve(100, 5000) == 99
