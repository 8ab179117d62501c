"""The top line: which model, its quant, where it runs, and the open conversation's title."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.widgets import Static

from localr1.terminal_text import visible_controls
from localr1.tui.formatting import count, one_line

if TYPE_CHECKING:
    from localr1.engine.llama_engine import ModelInfo


class ModelHeader(Static):
    DEFAULT_CSS = """
    ModelHeader { height: 1; padding: 0 1; background: $primary-background; color: $text; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._model: Content = Content("no model")
        self._title = ""

    def show_model(self, info: ModelInfo | None, *, loading: str | None = None,
                   problem: str | None = None) -> None:
        if loading:
            self._model = Content.assemble(("⟳ loading ", "italic"),
                                           visible_controls(loading), "…")
        elif info is not None:
            facts = [info.quantization or "?", info.placement, f"ctx {count(info.n_ctx)}"]
            self._model = Content.assemble((visible_controls(info.name), "bold"), "  ",
                                           ("  ·  ".join(facts), "dim"))
        else:
            self._model = Content.styled(problem or "no model loaded — Ctrl+L: models",
                                         "italic")
        self._refresh()

    def show_title(self, title: str | None) -> None:
        self._title = one_line(visible_controls(title or ""))
        self._refresh()

    def _refresh(self) -> None:
        parts: list[Content | str | tuple[str, str]] = [("localr1", "bold"), "  │  ",
                                                         self._model]
        if self._title:
            parts += ["  │  ", (self._title, "italic")]
        self.update(Content.assemble(*parts))
