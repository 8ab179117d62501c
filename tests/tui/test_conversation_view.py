"""ConversationView: the chat screen's store operations, on a real SQLite store, without a UI
(the module must not need textual)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localr1.errors import LocalR1Error
from localr1.tui.conversation_view import ConversationView, context_used


def _regenerated(store):
    """One prompt with two answers (the second active) and one follow-up prompt version."""
    conversation = store.create_conversation(model="r1")
    user = store.add_message(conversation.id, "user", "hi")
    first = store.add_message(conversation.id, "assistant", "one", prompt_tokens=10,
                              completion_tokens=5)
    second = store.add_message(conversation.id, "assistant", "two", parent_id=user.id,
                               prompt_tokens=10, completion_tokens=7)
    return conversation, user, first, second


def test_open_reads_the_active_branch_and_keeps_the_current_one_on_errors(store):
    conversation, user, _, second = _regenerated(store)
    view = ConversationView(store)
    assert view.open(None) == [] and view.current is None
    messages = view.open(conversation.id)
    assert [m.id for m in messages] == [user.id, second.id]
    assert view.current is not None and view.current.id == conversation.id
    assert context_used(messages) == 17
    with pytest.raises(LocalR1Error):
        view.open(conversation.id + 100)
    assert view.current.id == conversation.id


def test_versions_step_through_siblings_and_stop_at_the_ends(store):
    conversation, user, first, second = _regenerated(store)
    view = ConversationView(store)
    view.open(conversation.id)
    assert view.version_of(second) == (2, 2) and view.version_of(user) == (1, 1)
    assert view.step_version("assistant", 1) == "at an end"
    assert view.step_version("assistant", -1) == "switched"
    assert [m.id for m in view.open(conversation.id)] == [user.id, first.id]
    assert view.step_version("assistant", -1) == "at an end"
    assert view.step_version("user", 1) == "at an end"
    branch, last_user = view.last_user_message()
    assert last_user is not None and last_user.id == user.id and branch[-1].id == first.id

    empty = ConversationView(store)
    empty.create(model="r1", system_prompt=None, params={})
    assert empty.step_version("assistant", 1) == "nothing to switch"
    assert empty.last_user_message() == ([], None)


def test_after_a_failed_first_turn_the_empty_conversation_goes_and_the_text_is_unsaved(store):
    view = ConversationView(store)
    made = view.create(model="r1", system_prompt=None, params={"temperature": 0.2})
    assert view.after_failed_turn(made.id, "lost?") == (None, False)
    with pytest.raises(LocalR1Error):
        store.conversation(made.id)

    conversation, *_ = _regenerated(store)
    assert view.after_failed_turn(conversation.id, "hi") == (conversation.id, True)
    assert view.after_failed_turn(conversation.id, "not sent") == (conversation.id, False)


def test_rename_pin_refresh_and_markdown(store):
    conversation, *_ = _regenerated(store)
    view = ConversationView(store)
    view.open(conversation.id)
    view.rename(conversation.id, "Greetings")
    view.set_pinned(conversation.id, True)
    refreshed = view.refresh()
    assert refreshed is not None and refreshed.title == "Greetings" and refreshed.pinned
    assert "two" in view.markdown(conversation.id)
    view.delete(conversation.id)
    assert view.refresh() is None and view.current.title == "Greetings"  # the last one read


def test_the_module_does_not_load_textual():
    code = ("import sys, localr1.tui.conversation_view\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'textual']\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_chat_screen_calls_the_store_only_through_conversation_view():
    import re
    from pathlib import Path

    import localr1.tui.screens.chat as chat

    source = Path(chat.__file__).read_text(encoding="utf-8")
    assert re.findall(r"\bstore\.\w+\(", source) == []
