"""What the front ends need from an engine: the local `Engine` (a GGUF in this process) and
the `RemoteEngine` (an OpenAI-compatible server, `--endpoint`) both provide it."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from localr1.chat_message import ChatMessage
from localr1.engine.events import Event, GenerationParams, ModelInfo


class ChatEngine(Protocol):
    """A model that answers chat turns as a stream of events, ending in exactly one TurnDone."""

    @property
    def info(self) -> ModelInfo:
        """The model, for headers and the history."""
        ...

    def stream_chat(self, history: Sequence[ChatMessage], params: GenerationParams, *,
                    system_prompt: str | None = None, cancel: threading.Event | None = None,
                    answer_now: threading.Event | None = None) -> Iterator[Event]:
        """One assistant turn for `history` (ending with the user's message)."""
        ...

    def close(self) -> None:
        ...
