"""Markdown that grows while a reply streams, at a cost per token that stays flat.

One `Markdown` widget fed through `Markdown.get_stream()` gets slower as it grows (measured
here: 4.7 ms per token at the start of a 4,000-token reply, 27 ms at the end). So this widget is
a column of Markdown pieces: when the streaming tail has grown past `SEGMENT_CHARS` and a safe
cut appears (see `markdown_split`), the tail is frozen and a new, empty tail starts. Only the
tail is ever re-parsed. Frozen pieces that have scrolled out of sight above a chat log
that follows the stream are swapped for blank spacers of the same height (`tuck`): Textual
lays out every displayed widget on each update, so hundreds of finished blocks would make
every update slower. They come back when the log stops following (the user scrolls up) or
the width changes. When the reply is complete, `finish` makes the result exactly what a
one-shot render of the whole text gives (see there).
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownStream

from localr1.terminal_text import visible_controls
from localr1.tui.markdown_split import cuts_are_block_boundaries, find_split_point


class MessageMarkdown(Markdown):
    """Model text as Markdown. Links are not opened on a click (model output chooses them)."""

    def __init__(self, markdown: str | None = None, **kwargs) -> None:
        super().__init__(markdown, open_links=False, **kwargs)


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; }
    StreamingMarkdown > MessageMarkdown { padding: 0; }
    StreamingMarkdown > MessageMarkdown.-frozen { margin-bottom: 1; }
    StreamingMarkdown > .spacer { margin-bottom: 1; }
    """

    SEGMENT_CHARS = 1200  # a frozen piece holds at least this much (about 300 tokens)

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._text = visible_controls(text)
        self._tail_start = 0  # where the streaming tail starts in _text
        self._tail: MessageMarkdown | None = None
        self._stream: MarkdownStream | None = None
        self._finished = bool(text)
        self._frozen: list[MessageMarkdown] = []
        self._spacers: dict[MessageMarkdown, Widget] = {}
        self._width = 0
        self._cuts: list[int] = []  # where each piece after the first starts in _text

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
        self._cuts.append(self._tail_start)
        await self._new_tail()
        await self._stream.write(tail[cut:])

    async def finish(self, full_text: str | None = None) -> None:
        """The reply is complete (`full_text`: the stored answer, when given).

        The result must be what one render of the whole text gives. The tail is rendered
        again in full; the frozen pieces already are complete renders of their text, and
        when the whole text, parsed once, has a top-level block boundary at every cut, they
        are exactly what a whole render would show, so they stay (re-rendering them would
        stall the UI for seconds on long replies). Otherwise the whole text is rendered
        once into one widget, swapped in when ready."""
        streamed = self._text
        if full_text is not None:
            self._text = visible_controls(full_text)
        self._finished = True
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.untuck()
        pieces = list(self.query_children(MessageMarkdown))
        if not self._text:
            await self.remove_children(pieces)
            return
        if len(pieces) == 1:
            await pieces[0].update(self._text)
            pieces[0].remove_class("-frozen")
            return
        if self._text == streamed and cuts_are_block_boundaries(self._text, self._cuts):
            await pieces[-1].update(self._text[self._tail_start:])
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

    async def prepare(self) -> None:
        """Mount the (empty) streaming tail now, before the first text arrives."""
        if self._stream is None and not self._finished:
            await self._new_tail()

    async def _new_tail(self) -> None:
        self._tail = MessageMarkdown()
        await self.mount(self._tail)
        self._stream = Markdown.get_stream(self._tail)

    async def _freeze_tail(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
        if self._tail is not None:
            self._tail.add_class("-frozen")
            self._frozen.append(self._tail)
        self._stream = None
        self._tail = None

    # ---- keeping the layout small while streaming ----------------------------------------

    def tuck(self, viewport_top: int, following: bool) -> None:
        """Swap frozen pieces wholly above `viewport_top` (screen row) for spacers while the
        log follows the stream; bring them all back when it does not."""
        if not following:
            self.untuck()
            return
        for piece in self._frozen:
            if piece in self._spacers or not piece.display:
                continue
            region = piece.region
            if not region or region.bottom > viewport_top:
                break  # pieces are in order: the rest are lower still
            spacer = Widget(classes="spacer")
            spacer.styles.height = piece.outer_size.height
            self._spacers[piece] = spacer
            self.mount(spacer, before=piece)
            piece.display = False

    def untuck(self) -> None:
        for piece, spacer in self._spacers.items():
            piece.display = True
            spacer.remove()
        self._spacers.clear()

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:  # spacer heights were measured at the old width
            self._width = event.size.width
            self.untuck()
