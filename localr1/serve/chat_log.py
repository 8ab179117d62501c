"""`--log`: each served chat saved as a conversation, written by the same chat-turn code as
`run` and `batch --save`, and tagged with the client's `user` field when it sends one."""

from __future__ import annotations

from localr1.chat_session import ChatSession
from localr1.engine.chat_engine import ChatEngine
from localr1.engine.events import AnswerDelta, ReasoningDelta, TurnDone, TurnStats
from localr1.serve.request_parsing import ChatRequest
from localr1.store import Store


class ChatLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, engine: ChatEngine, model_label: str, request: ChatRequest, reasoning: str,
             answer: str, stats: TurnStats) -> int:
        """Store one answered request; returns the conversation id."""
        session = ChatSession(self.store, engine, model_label)
        metadata = {"source": "serve", **({"user": request.user} if request.user else {})}
        events = [*([ReasoningDelta(reasoning)] if reasoning else []), AnswerDelta(answer),
                  TurnDone(stats)]
        saved = session.save_answered(request.messages, events, system_prompt=request.system,
                                      metadata=metadata)
        return saved.conversation_id
