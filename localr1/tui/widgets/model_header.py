"""The top line: which model (by the name the user knows it by), its quant, where it runs, a
note when its prompt format was guessed, and the open conversation's title.

The line is fitted to the width at every render, by terminal cells (CJK and emoji take two):
the title gives way first, down to `MIN_TITLE_CELLS`, then the model's facts; whatever is
cut ends in "…". A one-line Static would wrap instead, and the wrapped part (a whole title
without spaces, a URL) would vanish below the line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.cells import get_character_cell_size
from textual.content import Content
from textual.widget import Widget

from localr1.models.decode_options import kv_cache_facts
from localr1.terminal_text import visible_controls
from localr1.tui.formatting import count, one_line

if TYPE_CHECKING:
    from localr1.engine.events import ModelInfo

BRAND = Content.styled("localr1", "bold")
SEPARATOR = "  │  "
MIN_TITLE_CELLS = 12  # below this a title says nothing: the model's facts are cut first


def fit(content: Content, width: int) -> Content:
    """`content` cut to `width` cells, ending in "…" when cut (never half a wide character:
    the line is then a cell short rather than padded before the "…")."""
    if content.cell_length <= width:
        return content
    if width <= 0:
        return Content("")
    end = cells = 0
    for character in content.plain:
        cells += get_character_cell_size(character)
        if cells > width - 1:
            break
        end += 1
    return content[:end].rstrip() + "…"


class ModelHeader(Widget):
    DEFAULT_CSS = """
    ModelHeader { height: 1; padding: 0 1; background: $primary-background; color: $text; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._model: Content = Content("no model")
        self._title: Content = Content("")

    def show_model(self, info: ModelInfo | None, *, name: str | None = None,
                   loading: str | None = None, problem: str | None = None,
                   draft: str | None = None) -> None:
        """The loaded model under `name` (the library's name the user gave it; the GGUF's
        own general.name only when there is none), or what is happening instead."""
        if loading:
            self._model = Content.assemble(("⟳ loading ", "italic"),
                                           visible_controls(loading), "…")
        elif info is not None:
            facts = [info.quantization or "?", info.placement, f"ctx {count(info.n_ctx)}"] \
                if info.n_ctx else [info.placement]  # --endpoint: the server knows the rest
            facts += kv_cache_facts(info.flash_attn, info.kv_type)  # when not the defaults
            if info.draft:  # by the name the user gave it (`draft`), as the model's
                facts.append(f"draft {visible_controls(one_line(draft or info.draft))}")
            parts: list[str | tuple[str, str]] = [
                (visible_controls(one_line(name or info.name)), "bold"), "  ",
                ("  ·  ".join(facts), "dim")]
            if info.format_note:
                # The full note (naming --chat-format) is in `localr1 show` and run's stderr.
                parts += ["  ·  ", (f"⚠ prompt format guessed ({info.chat_format})",
                                    "$text-warning")]
            self._model = Content.assemble(*parts)
        else:
            self._model = Content.styled(visible_controls(problem or
                                                          "no model loaded — Ctrl+L: models"),
                                         "italic")
        self.refresh()

    def show_title(self, title: str | None) -> None:
        self._title = Content.styled(one_line(visible_controls(title or "")), "italic")
        self.refresh()

    @property
    def plain(self) -> str:
        """The line as shown now (for tests and screen readers)."""
        return self.line(self.content_size.width).plain

    def render(self) -> Content:
        return self.line(self.content_size.width)

    def line(self, width: int) -> Content:
        """The header's text fitted to `width` cells."""
        head = Content.assemble(BRAND, SEPARATOR, self._model)
        if not self._title.plain:
            return fit(head, width)
        separator = Content(SEPARATOR)
        room = width - head.cell_length - separator.cell_length
        title_cells = min(self._title.cell_length, MIN_TITLE_CELLS)
        if room >= title_cells:
            return Content.assemble(head, separator, fit(self._title, room))
        # Too narrow for both: the model's facts give way to a short title.
        head_room = width - separator.cell_length - title_cells
        if head_room < BRAND.cell_length + len(SEPARATOR) + 4:
            return fit(Content.assemble(head, separator, self._title), width)
        return Content.assemble(fit(head, head_room), separator, fit(self._title, title_cells))
