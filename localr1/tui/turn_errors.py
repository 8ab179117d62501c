"""What a failed turn says in the app, and where the app keeps it.

The core's messages name CLI flags (--ctx, --max-tokens); in the app the same advice is F4's
settings, a shorter paste or another model (ctrl+l). The text is kept with the conversation
so the answer that failed still says why after the conversation is reopened: the messages
table has no column for it (content is what the model said, sent back to it in later turns,
exported and searched), so it goes in the conversation's params, which hold "whatever else
was saved with it", keyed by the failed answer's id.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING

from localr1.errors import ChatFormatError, ContextOverflowError, LocalR1Error
from localr1.store.transfer import TURN_ERRORS  # {"<assistant message id>": "text"}
from localr1.tui.formatting import count, one_line

if TYPE_CHECKING:
    from localr1.engine.events import ModelInfo
    from localr1.store import Conversation, Store

KEPT_ERRORS = 20  # per conversation, the newest; older failed answers fall back to the bare note
# The app has no --chat-format option: the same choice is the config file's chat_format.
CHAT_FORMAT_FIX = "set chat_format in config.toml (see `localr1 show`)"
_CHAT_FORMAT_FLAG = re.compile(r"\b(?:try|pass) --chat-format NAME")


def turn_error_text(exc: BaseException, info: ModelInfo | None, max_tokens: int) -> str:
    """The message under a failed turn: the reason, and what to do in the app's terms."""
    if isinstance(exc, ContextOverflowError) and exc.prompt_tokens is not None \
            and exc.n_ctx is not None:
        return context_overflow_text(exc.prompt_tokens, exc.n_ctx, exc.reserved_tokens or 0,
                                     info.n_ctx_train if info is not None else None,
                                     max_tokens)
    if isinstance(exc, ChatFormatError) or \
            (isinstance(exc, LocalR1Error) and "--chat-format" in str(exc)):
        return chat_format_text(one_line(str(exc)))
    if isinstance(exc, LocalR1Error):
        return one_line(str(exc))
    return f"unexpected error: {type(exc).__name__}: {one_line(str(exc))}"


def chat_format_text(text: str) -> str:
    """A prompt-format error with the CLI's advice put in the app's terms."""
    fixed, found = _CHAT_FORMAT_FLAG.subn(CHAT_FORMAT_FIX, text)
    return fixed if found else f"{text.rstrip(' ;.')}; {CHAT_FORMAT_FIX}"


def context_overflow_text(prompt_tokens: int, n_ctx: int, reserved: int,
                          n_ctx_train: int | None, max_tokens: int) -> str:
    """A message longer than the context: its size, the context's, and the ways out that can
    work here (a bigger context only when the model takes one; a smaller reply reserve only
    when the message alone would fit)."""
    at_maximum = n_ctx_train is not None and n_ctx >= n_ctx_train
    limit = " (this model's maximum)" if at_maximum else ""
    text = (f"The message is too long for the context: it needs {count(prompt_tokens)} "
            f"tokens, and the context holds {count(n_ctx)}{limit} with {count(reserved)} "
            "kept for the reply.")
    fixes = ["paste a shorter text"]
    if not at_maximum:
        upto = f" (up to {count(n_ctx_train)})" if n_ctx_train else ""
        fixes.append(f"raise Context size in F4{upto}")
    if prompt_tokens < n_ctx:
        fixes.append("set a smaller Max tokens in F4" if max_tokens > 0 else
                     "set Max tokens in F4 (with no limit a quarter of the context is kept "
                     "for the reply)")
    fixes.append("pick a model with a longer context (ctrl+l)")
    return f"{text} To send it, {', '.join(fixes[:-1])} or {fixes[-1]}."


def remember_turn_error(store: Store, conversation_id: int, since: str, text: str) -> None:
    """Keep `text` with the failed answer this turn stored (the branch's last message, an
    'error' answer created at or after `since`); nothing when the turn stored none. A store
    that cannot be written only loses the note."""
    with contextlib.suppress(LocalR1Error):
        branch = store.branch(conversation_id)
        last = branch[-1] if branch else None
        if last is None or last.role != "assistant" or last.finish_reason != "error" \
                or last.created_at < since:
            return
        kept = store.conversation(conversation_id).params.get(TURN_ERRORS)
        errors = dict(kept) if isinstance(kept, dict) else {}
        errors[str(last.id)] = text
        newest = sorted(errors, key=lambda key: int(key) if key.isdigit() else 0)[-KEPT_ERRORS:]
        store.update_settings(conversation_id, {TURN_ERRORS: {k: errors[k] for k in newest}})


def turn_error(conversation: Conversation | None, message_id: int | None) -> str | None:
    """The reason kept for the failed answer `message_id`, if any."""
    if conversation is None or message_id is None:
        return None
    kept = conversation.params.get(TURN_ERRORS)
    text = kept.get(str(message_id)) if isinstance(kept, dict) else None
    return text if isinstance(text, str) else None
