"""A server's reply split into reasoning and answer, whatever way the server sent them.

Three shapes arrive from OpenAI-compatible servers:
- a reasoning field (`reasoning_content` or `reasoning`) beside `content`;
- inline tags in `content`: `<think>…</think>answer`;
- inline, with the first `<think>` in the prompt (the R1 think-prefill templates, served with no
  reasoning parser): `…reasoning</think>answer`, and only the closing tag ever appears.

A reasoning field is reasoning and `content` is the answer, as the server split them: no tags
are looked for (a trace may mention "</think>"). Inline text goes through the local
`ThinkSplitter`, so tag handling is the same as for a local model; both are trimmed alike.
The third shape cannot be told from a plain answer until `</think>` comes, so for a model that
reasons (`expect_reasoning`) untagged text is held back until a tag shows which it was, or the
reply ends (then it was the answer).
"""

from __future__ import annotations

from typing import Literal

from localr1.engine.reasoning import (
    CLOSE_TAG,
    OPEN_TAG,
    Kind,
    SplitDelta,
    StreamTrimmer,
    ThinkSplitter,
)


class RemoteReasoningSplitter:
    """Streaming: `feed(reasoning, content)` per chunk, then `finish()`; both return deltas."""

    def __init__(self, expect_reasoning: bool) -> None:
        self._expect_reasoning = expect_reasoning
        self._splitter: ThinkSplitter | None = None  # "inline" mode only
        self._mode: Literal["undecided", "field", "inline"] = "undecided"
        self._held = ""  # content not yet known to be reasoning or answer
        # Field text (and, in "inline" mode, a late reasoning field) is trimmed here.
        self._trim: dict[Kind, StreamTrimmer] = {"reasoning": StreamTrimmer(),
                                                 "answer": StreamTrimmer()}
        self._field_reasoning = False  # a reasoning field came
        self._field_answer = False  # "field" mode: the answer began (text, not whitespace)
        self._finished = False

    @property
    def undecided(self) -> bool:
        """Untagged content is held back: reasoning or answer is not known yet."""
        return self._mode == "undecided"

    @property
    def in_reasoning(self) -> bool:
        if self._mode == "field":
            return not self._field_answer and not self._finished
        return self._splitter is not None and self._splitter.in_reasoning

    @property
    def saw_reasoning(self) -> bool:
        return self._field_reasoning or (self._splitter is not None and
                                         self._splitter.saw_reasoning)

    @property
    def reasoning_truncated(self) -> bool:
        if self._mode == "field":
            return self._finished and not self._field_answer
        return self._splitter is not None and self._splitter.reasoning_truncated

    def feed(self, reasoning: str, content: str) -> list[SplitDelta]:
        out: list[SplitDelta] = []
        if reasoning:
            out += self._feed_reasoning_field(reasoning)
        if content:
            out += self._feed_content(content)
        return _merged(out)

    def finish(self, cut_short: bool = False) -> list[SplitDelta]:
        """The held text at the end. Untagged text of a model that reasons was its answer if
        the reply ended by itself; `cut_short` (cancelled, out of tokens) it was still
        thinking."""
        out: list[SplitDelta] = []
        if self._mode == "undecided":
            reasoning = cut_short and self._expect_reasoning and bool(self._held.strip())
            out = self._decide(start_in_reasoning=reasoning)
        if self._splitter is not None:
            out += self._splitter.finish()
        self._finished = True  # field text held by the trimmers is trailing whitespace: dropped
        return _merged(out)

    def _feed_reasoning_field(self, text: str) -> list[SplitDelta]:
        self._field_reasoning = True
        if self._mode == "undecided":
            self._mode = "field"
            # Content before any reasoning (rare: a blank line) stays in front of it.
            held, self._held = self._held, ""
            return self._emit("answer", held) + self._emit("reasoning", text)
        # Also after the answer began, or beside inline tags: still reasoning, never dropped.
        return self._emit("reasoning", text)

    def _feed_content(self, text: str) -> list[SplitDelta]:
        if self._mode == "field":
            if text.strip():
                self._field_answer = True
            return self._emit("answer", text)
        if self._mode == "inline":
            assert self._splitter is not None
            return self._splitter.feed(text)
        self._held += text
        opens, closes = self._held.find(OPEN_TAG), self._held.find(CLOSE_TAG)
        if opens != -1 or closes != -1:
            # A </think> before any <think>: the prompt opened the block.
            return self._decide(start_in_reasoning=opens == -1 or -1 < closes < opens)
        if not self._expect_reasoning and not OPEN_TAG.startswith(self._held.lstrip()):
            return self._decide(start_in_reasoning=False)  # a plain answer: stream it
        return []

    def _decide(self, start_in_reasoning: bool) -> list[SplitDelta]:
        self._mode = "inline"
        held, self._held = self._held, ""
        self._splitter = ThinkSplitter(start_in_reasoning=start_in_reasoning)
        return self._splitter.feed(held)

    def _emit(self, kind: Kind, text: str) -> list[SplitDelta]:
        text = self._trim[kind].push(text) if text else ""
        return [SplitDelta(kind, text)] if text else []


def _merged(deltas: list[SplitDelta]) -> list[SplitDelta]:
    """Neighbouring deltas of one kind as one."""
    out: list[SplitDelta] = []
    for delta in deltas:
        if out and out[-1].kind == delta.kind:
            out[-1] = SplitDelta(delta.kind, out[-1].text + delta.text)
        else:
            out.append(delta)
    return out
