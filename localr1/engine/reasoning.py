"""Split DeepSeek-R1 output into reasoning (the ``<think>`` block) and answer, while streaming.

R1 models write their chain of thought between ``<think>`` and ``</think>`` and the answer
after it. Tokens arrive a few characters at a time, so a tag can be split across chunks at
any character; :class:`ThinkSplitter` holds back only what could still turn into a tag (or
trailing whitespace that may yet be trimmed) and emits everything else at once, so the UI can
stream it.

:func:`split_reasoning` is the non-streaming reference: for any chunking of a text, the
splitter's deltas concatenate to exactly what it returns for the whole text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

Kind = Literal["reasoning", "answer"]


@dataclass(frozen=True)
class SplitDelta:
    """A piece of newly available text and which part of the output it belongs to."""

    kind: Kind
    text: str


def split_reasoning(text: str, start_in_reasoning: bool = False) -> tuple[str, str, bool]:
    """Split a complete output into ``(reasoning, answer, truncated)``.

    ``truncated`` is True when a think block was opened (or started open) and never closed.
    Only the first think block is special; later tags are literal answer text.
    """
    if start_in_reasoning:
        body = text.lstrip()
        # The prompt already opened the block; a duplicate <think> from the model is noise.
        body = body[len(OPEN_TAG) :] if body.startswith(OPEN_TAG) else text
        before = ""
    else:
        start = text.find(OPEN_TAG)
        if start == -1:
            return "", text.strip(), False
        before, body = text[:start], text[start + len(OPEN_TAG) :]
    end = body.find(CLOSE_TAG)
    if end == -1:
        return body.strip(), before.strip(), True
    reasoning, after = body[:end], body[end + len(CLOSE_TAG) :]
    return reasoning.strip(), (before + after).strip(), False


def _partial_tag_len(buf: str, tag: str) -> int:
    """Length of the longest suffix of ``buf`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:size]):
            return size
    return 0


@dataclass
class StreamTrimmer:
    """Streaming strip(): drops leading whitespace, holds trailing whitespace.

    Held whitespace is released only in front of later non-whitespace of the same kind, so
    whitespace at the very end is never emitted.
    """

    started: bool = False
    held: str = ""

    def push(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        body = text.rstrip()
        if not body:
            self.held += text
            return ""
        out = self.held + body
        self.held = text[len(body) :]
        return out


class ThinkSplitter:
    """Streaming state machine that splits R1 output into reasoning and answer deltas.

    Phases: ``before`` (answer, watching for ``<think>``), ``reasoning`` (watching for
    ``</think>``), ``after`` (answer, tags are literal). Each ``feed`` only looks at the new
    chunk plus at most a tag's worth of held-back text, so work per call is O(chunk).
    """

    def __init__(self, start_in_reasoning: bool = False) -> None:
        self._phase: Literal["before", "reasoning", "after"] = (
            "reasoning" if start_in_reasoning else "before"
        )
        # Prefilled prompts end with "<think>\n", yet some models still emit their own.
        self._may_swallow_open = start_in_reasoning
        self._saw_reasoning = start_in_reasoning
        self._buf = ""  # undecided tail: a possible partial tag (or leading whitespace)
        self._trim: dict[Kind, StreamTrimmer] = {"reasoning": StreamTrimmer(),
                                                 "answer": StreamTrimmer()}
        self._finished = False
        self._truncated = False

    @property
    def in_reasoning(self) -> bool:
        """True while inside the think block."""
        return self._phase == "reasoning"

    @property
    def reasoning_truncated(self) -> bool:
        """After :meth:`finish`: a think block was opened (or started open) and never closed."""
        return self._truncated

    @property
    def saw_reasoning(self) -> bool:
        """A think block was opened (or started open)."""
        return self._saw_reasoning

    def feed(self, text: str) -> list[SplitDelta]:
        """Consume a chunk of output; return the deltas ready now, in order."""
        if self._finished:
            raise RuntimeError("ThinkSplitter.feed() called after finish()")
        out: list[SplitDelta] = []
        buf = self._buf + text
        while buf:
            if self._phase == "after":
                self._emit(out, "answer", buf)
                buf = ""
            elif self._may_swallow_open:
                # Leading reasoning whitespace is trimmed anyway, so it can go right away.
                buf = buf.lstrip()
                if buf.startswith(OPEN_TAG):
                    buf = buf[len(OPEN_TAG) :]
                    self._may_swallow_open = False
                elif OPEN_TAG.startswith(buf):
                    break  # empty or a partial "<think>": wait for more
                else:
                    self._may_swallow_open = False
            else:
                tag = CLOSE_TAG if self._phase == "reasoning" else OPEN_TAG
                kind: Kind = "reasoning" if self._phase == "reasoning" else "answer"
                at = buf.find(tag)
                if at == -1:
                    keep = _partial_tag_len(buf, tag)
                    self._emit(out, kind, buf[: len(buf) - keep])
                    buf = buf[len(buf) - keep :]
                    break
                self._emit(out, kind, buf[:at])
                buf = buf[at + len(tag) :]
                if self._phase == "reasoning":
                    self._phase = "after"
                else:
                    self._phase = "reasoning"
                    self._saw_reasoning = True
        self._buf = buf
        return out

    def finish(self) -> list[SplitDelta]:
        """Flush at end of generation: a held partial tag is literal text of the current kind."""
        if self._finished:
            return []
        out: list[SplitDelta] = []
        kind: Kind = "reasoning" if self._phase == "reasoning" else "answer"
        self._emit(out, kind, self._buf)
        self._buf = ""
        self._may_swallow_open = False
        self._truncated = self._phase == "reasoning"
        self._finished = True
        return out

    def _emit(self, out: list[SplitDelta], kind: Kind, text: str) -> None:
        """Append trimmed text to ``out``, merging with a trailing delta of the same kind."""
        text = self._trim[kind].push(text) if text else ""
        if not text:
            return
        if out and out[-1].kind == kind:
            out[-1] = SplitDelta(kind, out[-1].text + text)
        else:
            out.append(SplitDelta(kind, text))
