"""Markdown that grows while a reply streams, at a cost per token that stays flat.

One `Markdown` widget fed through `Markdown.get_stream()` gets slower as it grows (measured
here: 4.7 ms per token at the start of a 4,000-token reply, 27 ms at the end). So this widget is
a column of Markdown pieces: when the streaming tail has grown past `SEGMENT_CHARS` and a safe
cut appears (see `markdown_split`), the tail is frozen and a new, empty tail starts. Only the
tail is ever re-parsed. When the reply is complete, `finish` renders the whole text once into a
single widget, so the end result is exactly what a one-shot render gives.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownStream

from localr1.terminal_text import visible_controls
from localr1.tui.markdown_split import find_split_point


class MessageMarkdown(Markdown):
    """Model text as Markdown. Links are not opened on a click (model output chooses them)."""

    def __init__(self, markdown: str | None = None, **kwargs) -> None:
        super().__init__(markdown, open_links=False, **kwargs)


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; }
    StreamingMarkdown > MessageMarkdown { padding: 0; }
    StreamingMarkdown > MessageMarkdown.-frozen { margin-bottom: 1; }
    """

    SEGMENT_CHARS = 1200  # a frozen piece holds at least this much (about 300 tokens)

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._text = visible_controls(text)
        self._tail_start = 0  # where the streaming tail starts in _text
        self._tail: MessageMarkdown | None = None
        self._stream: MarkdownStream | None = None
        self._finished = bool(text)

    @property
    def text(self) -> str:
        """Everything written so far (control characters already made visible)."""
        return self._text

    @property
    def segments(self) -> int:
        return len(self.query_children(MessageMarkdown))

    def compose(self) -> ComposeResult:
        if self._text:
            yield MessageMarkdown(self._text)

    async def write(self, fragment: str) -> None:
        """Append model text (called by the screen's flush timer, a few times a second)."""
        if not fragment or self._finished:
            return
        fragment = visible_controls(fragment)
        if self._stream is None:
            await self._new_tail()
        assert self._stream is not None
        shown = len(self._text) - self._tail_start  # tail text already handed to the stream
        self._text += fragment
        tail = self._text[self._tail_start:]
        cut = find_split_point(tail, self.SEGMENT_CHARS, not_before=shown)
        if cut is None:
            await self._stream.write(fragment)
            return
        if cut > shown:
            await self._stream.write(tail[shown:cut])
        await self._freeze_tail()
        self._tail_start += cut
        await self._new_tail()
        await self._stream.write(tail[cut:])

    async def finish(self, full_text: str | None = None) -> None:
        """The reply is complete: one full render of the whole text (or of `full_text`,
        the stored answer, when given)."""
        if full_text is not None:
            self._text = visible_controls(full_text)
        self._finished = True
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        pieces = list(self.query_children(MessageMarkdown))
        if not self._text:
            await self.remove_children(pieces)
            return
        if len(pieces) == 1:
            await pieces[0].update(self._text)
            pieces[0].remove_class("-frozen")
            return
        whole = MessageMarkdown()
        whole.display = False
        await self.mount(whole)
        await whole.update(self._text)
        # Swap in one synchronous step (no await inside a batch: Textual skips paints while
        # one is open), then drop the hidden pieces.
        with self.app.batch_update():
            for piece in pieces:
                piece.display = False
            whole.display = True
        await self.remove_children(pieces)

    async def _new_tail(self) -> None:
        self._tail = MessageMarkdown()
        await self.mount(self._tail)
        self._stream = Markdown.get_stream(self._tail)

    async def _freeze_tail(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
        if self._tail is not None:
            self._tail.add_class("-frozen")
        self._stream = None
        self._tail = None
