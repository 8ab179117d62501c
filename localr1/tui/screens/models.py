"""Ctrl+L: the installed models — size, quant, fit, last used — use one for this chat, or
remove one.

Listing reads GGUF headers (slow for big files) and the fit estimate probes memory, so a worker
does it and posts `ModelDetails`; the screen stays responsive meanwhile. Removal goes through
`library.remove_model`: our own copies are deleted, imported files are only forgotten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from localr1 import library
from localr1.errors import LocalR1Error
from localr1.model_registry import InstalledModel
from localr1.sizes import format_bytes
from localr1.tui.formatting import literal
from localr1.tui.messages import ModelDetails
from localr1.tui.screens.dialogs import ConfirmScreen


@dataclass(frozen=True)
class ModelRow:
    model: InstalledModel
    fit: str


def _fit_label(model: InstalledModel) -> str:
    try:
        from localr1.fit import assess, default_context_size, machine_memory, shape_from_summary

        if library.is_missing(model):
            return "file missing"
        return assess(shape_from_summary(model.summary), default_context_size(),
                      machine_memory()).label
    except Exception:  # an estimate is a nicety; never fail the listing over it
        return "?"


def _ago(when: float | None) -> str:
    if when is None:
        return "never"
    minutes = (time.time() - when) / 60
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{int(minutes)} min ago"
    if minutes < 48 * 60:
        return f"{int(minutes // 60)} h ago"
    return f"{int(minutes // (24 * 60))} days ago"


class ModelsScreen(Screen[Path | None]):
    """Dismisses with the path of the model to use, or None."""

    DEFAULT_CSS = """
    ModelsScreen > .title { padding: 0 1; text-style: bold; background: $primary-background; }
    ModelsScreen > .folder { padding: 0 1; color: $text-muted; }
    ModelsScreen > DataTable { height: 1fr; }
    ModelsScreen > .hint { padding: 0 1; color: $text-muted; height: auto; }
    """
    BINDINGS = [Binding("enter", "use", "Use for this chat", priority=True),
                Binding("delete,d", "delete", "Remove"),
                Binding("r", "refresh", "Refresh"),
                Binding("escape", "back", "Back")]

    def __init__(self, models_dir: Path, loaded: Path | None) -> None:
        super().__init__()
        self.models_dir = models_dir
        self.loaded = loaded
        self.rows: dict[str, ModelRow] = {}

    def compose(self) -> ComposeResult:
        yield Static("Models", classes="title")
        yield Static(Content(f"folder: {self.models_dir}"), classes="folder")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="models")
        # HOOK(catalog): when the catalog/puller is wired into the TUI, list the catalog's
        # models that are not installed here, pull one with a live ProgressBar (cancel,
        # resume) fed by a thread worker, and add "set as default".
        yield Static("Pull more with `localr1 pull NAME` in another terminal, then press r.",
                     classes="hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key, width in (("Name", "name", 36), ("Size", "size", 9),
                                  ("Quant", "quant", 8), ("Fit", "fit", 26),
                                  ("Last used", "used", 12), ("", "state", 8)):
            table.add_column(label, key=key, width=width)
        self.action_refresh()
        table.focus()

    def action_refresh(self) -> None:
        self.query_one(DataTable).loading = True
        self._list_models()

    @work(thread=True, exclusive=True, group="model-list", exit_on_error=False)
    def _list_models(self) -> None:
        try:
            models = library.list_models(self.models_dir)
        except (LocalR1Error, OSError) as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            models = []
        self.post_message(ModelDetails([ModelRow(m, _fit_label(m)) for m in models]))

    def on_model_details(self, message: ModelDetails) -> None:
        table = self.query_one(DataTable)
        table.loading = False
        table.clear()
        self.rows = {str(row.model.path): row for row in message.rows}
        for key, row in self.rows.items():
            model = row.model
            table.add_row(literal(model.name), format_bytes(model.size_bytes),
                          literal(model.summary.quant or "?"), row.fit, _ago(model.last_used),
                          "● in use" if model.path == self.loaded else "", key=key)
        if not self.rows:
            self.notify(f"No models installed in {self.models_dir}", markup=False)

    def _selected(self) -> ModelRow | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(key or "")

    def action_use(self) -> None:
        row = self._selected()
        if row is not None:
            self.dismiss(row.model.path)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_delete(self) -> None:
        row = self._selected()
        if row is None:
            return
        model = row.model
        if model.path == self.loaded:
            self.notify("That model is in use; switch to another one first.", severity="warning")
            return
        what = "Delete the model file" if model.owned else \
            "Forget the imported model (its file stays where it is)"
        question = Content.assemble(f"{what}\n", (str(model.path), "bold"),
                                    "\n? This cannot be undone." if model.owned else "\n?")

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                library.remove_model(model, self.models_dir)
            except (LocalR1Error, OSError) as exc:
                self.notify(f"Could not remove {model.name}: {exc}", severity="error",
                            markup=False)
                return
            self.notify(f"Removed {model.name}", markup=False)
            self.action_refresh()

        self.app.push_screen(ConfirmScreen(question, yes="Remove"), answered)
