"""History to model messages: reasoning never sent back, system folded for R1, oldest dropped."""

from __future__ import annotations

import pytest

from localr1.chat_message import ChatMessage
from localr1.engine.prompting import fit_to_context, reply_reserve, to_model_messages
from localr1.errors import ContextOverflowError

PER_MESSAGE = 4


def words(messages):
    """A stand-in tokenizer for fitting tests: one token per word plus 4 per message."""
    return sum(len(m["content"].split()) + PER_MESSAGE for m in messages)


class WordCounter:
    """The stand-in tokenizer as fit_to_context's two measures, counting their calls."""

    def __init__(self, message_error: int = 0):
        self.message_error = message_error  # how far off the per-message estimate is
        self.encodes = 0
        self.messages_counted = 0

    def encode(self, messages):
        self.encodes += 1
        return "\n".join(m["content"] for m in messages), list(range(words(messages)))

    def count_message(self, message):
        self.messages_counted += 1
        return words([message]) + self.message_error


def fit(history, system=None, *, n_ctx, reserve, counter=None, fold=True):
    counter = counter or WordCounter()
    return fit_to_context(history, system, fold, counter.encode, counter.count_message,
                          n_ctx=n_ctx, reserve_tokens=reserve)


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
    prompt = fit(HISTORY, n_ctx=1000, reserve=100)
    assert prompt.dropped_messages == 0
    assert len(prompt.messages) == 5
    assert len(prompt.tokens) == words(prompt.messages)


def test_oldest_turns_dropped_first_and_caller_told():
    full = words(to_model_messages(HISTORY, "sys", True))
    prompt = fit(HISTORY, "sys", n_ctx=full - 1 + 10, reserve=10)
    assert prompt.dropped_messages == 2  # the first question and its answer, together
    assert prompt.messages[0]["content"] == "sys\n\nsecond question"  # system re-folded
    assert prompt.messages[-1]["content"] == "third question"


def test_newest_user_message_is_never_dropped():
    prompt = fit(HISTORY, n_ctx=20, reserve=10)
    assert prompt.messages == [{"role": "user", "content": "third question"}]
    assert prompt.dropped_messages == 4
    with pytest.raises(ContextOverflowError, match="raise --ctx"):
        fit(HISTORY, n_ctx=12, reserve=10)


WITH_SYSTEM = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "one two three"),
    ChatMessage("assistant", "four five"),
    ChatMessage("system", "Use metric units."),
    ChatMessage("user", "six seven"),
    ChatMessage("assistant", "eight"),
    ChatMessage("user", "nine"),
]


@pytest.mark.parametrize("keep_from, dropped", [(1, 0), (4, 2), (6, 4)])
def test_system_messages_always_stay_and_never_count_as_dropped(keep_from, dropped):
    kept = [m for m in WITH_SYSTEM[:keep_from] if m.role == "system"] + WITH_SYSTEM[keep_from:]
    needed = words(to_model_messages(kept, None, True))
    prompt = fit(WITH_SYSTEM, n_ctx=needed + 10, reserve=10)
    assert prompt.dropped_messages == dropped
    assert prompt.messages[0]["content"].startswith("Be brief.\n\nUse metric units.\n\n")
    assert len(prompt.tokens) == needed


def test_a_history_opening_with_the_assistant_is_kept_whole_when_it_fits():
    history = [ChatMessage("system", "Be brief."), ChatMessage("assistant", "Hello! Ask away."),
               ChatMessage("user", "hi")]
    prompt = fit(history, n_ctx=1000, reserve=10)
    assert prompt.dropped_messages == 0
    assert [m["role"] for m in prompt.messages] == ["assistant", "user"]


@pytest.mark.parametrize("message_error", [-3, -1, 0, 1, 3])
def test_a_wrong_per_message_estimate_still_gives_the_exact_fit(message_error):
    # The whole-prompt count decides: an estimate off either way changes only the work done.
    history = [ChatMessage("user" if i % 2 == 0 else "assistant", "word " * (3 + i % 5))
               for i in range(41)]
    expected = next(start for start in range(0, 41, 2)
                    if words(to_model_messages(history[start:], None, True)) <= 90)
    prompt = fit(history, n_ctx=100, reserve=10, counter=WordCounter(message_error))
    assert prompt.dropped_messages == expected
    assert len(prompt.tokens) <= 90


def conversation(n_messages: int) -> list[ChatMessage]:
    return [ChatMessage("user" if i % 2 == 0 else "assistant", f"message {i} has five words")
            for i in range(n_messages - 1)] + [ChatMessage("user", "the newest question")]


def test_fitting_work_does_not_grow_with_the_history():
    work = []
    for n_messages in (100, 1_000, 10_000):
        counter = WordCounter()
        prompt = fit(conversation(n_messages), n_ctx=500, reserve=100, counter=counter)
        assert len(prompt.tokens) <= 400 and prompt.dropped_messages > 0
        work.append((counter.encodes, counter.messages_counted, len(prompt.messages)))
    assert work[0] == work[1] == work[2]
    encodes, counted, kept = work[0]
    assert encodes <= 3 and counted <= kept + 1


def test_reply_reserve():
    assert reply_reserve(4096, 512) == 512
    assert reply_reserve(4096, 0) == 1024  # unbounded replies keep a quarter free
    assert reply_reserve(100, 5000) == 99
