"""Ctrl+L: the model manager. Installed models (size, quant, fit, estimated speed, last used):
use one for this chat, set the default, remove one, import a GGUF file (`i`). The catalog's
models not installed here, with their fit, speed and the quant recommended for this machine:
pull one with a live progress bar (cancel, resume).

The rows are `localr1.models.listing`'s, the ones `localr1 list` prints. Listing reads GGUF
headers (slow for big files) and the fit estimate probes memory, so a worker does it and posts
`ModelDetails`; the screen stays responsive meanwhile. The same worker reads each installed
model's last `localr1 eval` score from the history ("quick 83% ×4": set, pass@1, samples per
problem); "—" when it has none or the history cannot be read. Fits count config.toml's kv_type,
its draft model ("(with draft)") and its RPC workers' free memory ("fits (with 2 workers)",
asked by the same worker within fit.WORKER_TIMEOUT); under the installed list, a tip names the
draft model that would speed up the highlighted one (r1:1.5b for a Qwen R1 distill). The app
installs this screen once, so a download goes on while you chat and the screen shows it when
you come back. Removal goes through `library.remove_model`: our own copies are deleted,
imported files are only forgotten.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from localr1.errors import LocalR1Error
from localr1.models import library
from localr1.models.fit import MachineMemory
from localr1.models.listing import CatalogRow, InstalledRow
from localr1.models.registry import InstalledModel
from localr1.sizes import format_bytes
from localr1.store import EvalRunRecord, Store
from localr1.terminal_text import visible_controls
from localr1.tui.formatting import literal
from localr1.tui.messages import ModelDetails
from localr1.tui.screens.dialogs import ConfirmScreen
from localr1.tui.widgets.pull_panel import PullPanel

FIT_WIDTH = 26  # "too large for this machine"
# "quick 100% ×16"; a longer set name is shortened. Name and Size gave up the room it takes.
SCORE_WIDTH = 14
NO_SCORE = "—"


class ModelsScreen(Screen[Path | None]):
    """Dismisses with the path of the model to use, or None."""

    DEFAULT_CSS = """
    ModelsScreen > .title { padding: 0 1; text-style: bold; background: $primary-background; }
    ModelsScreen > .folder { padding: 0 1; color: $text-muted; }
    ModelsScreen > .section { padding: 0 1; margin-top: 1; text-style: bold; }
    ModelsScreen > #installed { height: auto; max-height: 1fr; }
    ModelsScreen > #available { height: 1fr; }
    ModelsScreen > .hint { padding: 0 1; color: $text-muted; height: auto; }
    ModelsScreen > #draft-tip { padding: 0 1; color: $accent; height: auto; }
    """
    BINDINGS = [Binding("enter", "select", "Use / pull", show=True),
                Binding("p", "pull", "Pull"),
                Binding("i", "import_file", "Import a GGUF file"),
                Binding("s", "set_default", "Set default"),
                Binding("delete,d", "delete", "Remove"),
                Binding("c", "cancel_pull", "Cancel pull"),
                Binding("r", "refresh", "Refresh"),
                Binding("escape", "back", "Back")]

    def __init__(self, models_dir: Path, loaded: Path | None,
                 default_model: str | None = None) -> None:
        super().__init__()
        self.models_dir = models_dir
        self.loaded = loaded
        self.default_model = default_model
        self.rows: dict[str, InstalledRow] = {}
        self.catalog_rows: dict[str, CatalogRow] = {}
        self._select_after_listing: str | None = None  # a model's name, just imported

    def compose(self) -> ComposeResult:
        yield Static("Models", classes="title")
        yield Static(Content(f"folder: {self.models_dir}"), classes="folder")
        yield Static("enter uses an installed model or pulls an available one · i imports a "
                     "GGUF file · tab switches lists · downloads go on while you chat",
                     classes="hint")
        yield Static("Installed", classes="section", id="installed-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="installed")
        yield Static("", id="draft-tip")
        yield Static("Available from the Hugging Face Hub  (★ recommended for this machine)",
                     classes="section")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="available")
        yield PullPanel(self.models_dir)
        yield Footer()

    @property
    def installed_table(self) -> DataTable:
        return self.query_one("#installed", DataTable)

    @property
    def available_table(self) -> DataTable:
        return self.query_one("#available", DataTable)

    def on_mount(self) -> None:
        self._add_columns(FIT_WIDTH)
        self.query_one("#draft-tip", Static).display = False
        self.installed_table.focus()

    def _add_columns(self, fit_width: int) -> None:
        """The tables' columns; the Fit column as wide as its longest label ("(with draft)")."""
        for label, key, width in (("Name", "name", 18), ("Size", "size", 8),
                                  ("Quant", "quant", 8), ("Fit", "fit", fit_width),
                                  ("Score", "score", SCORE_WIDTH), ("Speed", "speed", 11),
                                  ("Last used", "used", 12), ("", "state", 17)):
            self.installed_table.add_column(label, key=key, width=width)
        for label, key, width in (("", "star", 1), ("Name", "name", 20), ("Model", "title", 30),
                                  ("Size", "size", 9), ("Fit", "fit", fit_width),
                                  ("Speed", "speed", 11)):
            self.available_table.add_column(label, key=key, width=width)

    def on_screen_resume(self) -> None:
        """Every time the screen is shown: the current model and a fresh listing."""
        self.loaded = getattr(self.app, "model_path", self.loaded)
        self.action_refresh()

    def action_refresh(self) -> None:
        self.installed_table.loading = True
        self._list_models()

    @work(thread=True, exclusive=True, group="model-list", exit_on_error=False)
    def _list_models(self) -> None:
        from localr1.models import fit
        from localr1.models.listing import installed_rows

        try:
            # Probed once for every fit label; the workers the app uses (`chat --rpc` or config).
            machine = fit.machine_memory(rpc=self.app.settings.rpc)
            installed = installed_rows(self.models_dir, machine)
        except Exception as exc:  # a broken registry or memory probe; the screen stays usable
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            self.post_message(ModelDetails([], []))
            return
        catalog = _not_installed(self.models_dir, machine, [row.model for row in installed])
        scores = _score_cells(self.app.store, installed) if installed else {}
        self.post_message(ModelDetails(installed, catalog, scores))

    def on_model_details(self, message: ModelDetails) -> None:
        table = self.installed_table
        table.loading = False
        keep, keep_available = table.cursor_row, self.available_table.cursor_row
        table.clear(columns=True)
        self.available_table.clear(columns=True)
        labels = [row.fit_label for row in message.rows] + \
            [row.fit_label for row in message.catalog if not isinstance(row, str)]
        self._add_columns(max([FIT_WIDTH, *map(len, labels)]))
        self.rows = {str(row.model.path): row for row in message.rows}
        for key, row in self.rows.items():
            score = Content((message.scores or {}).get(key, NO_SCORE))
            table.add_row(literal(row.name), format_bytes(row.model.size_bytes),
                          literal(row.quant), row.fit_label, score, row.speed, row.last_used,
                          self._state(row.model), key=key)
        imported = self._select_after_listing
        self._select_after_listing = None
        keys = [str(row.model.path) for row in message.rows if row.name == imported]
        if keys:
            keep = table.get_row_index(keys[0])
            table.focus()
        table.move_cursor(row=min(keep, max(0, table.row_count - 1)))
        self.query_one("#installed-title", Static).update(
            "Installed" if self.rows else
            "Installed: none yet — pull one below, or i imports a GGUF file")
        available = self.available_table
        self.catalog_rows = {row.name: row for row in message.catalog
                             if not isinstance(row, str)}
        for row in message.catalog:
            if isinstance(row, str):  # the catalog could not be read: why, in the list
                available.add_row("", "?", literal(row), "", "", "", key="?")
                continue
            available.add_row("★" if row.recommended else "", row.name, row.title,
                              format_bytes(row.entry.size_bytes), row.fit_label,
                              row.fit.speed_text, key=row.name)
        available.move_cursor(row=min(keep_available, max(0, available.row_count - 1)))
        if not self.rows:
            available.focus()
        self._show_draft_tip()

    @on(DataTable.RowHighlighted, "#installed")
    def _show_draft_tip(self) -> None:
        """The draft model that would speed up the highlighted installed model, if any."""
        row = self._selected()
        tip = self.query_one("#draft-tip", Static)
        tip.display = bool(row and row.draft_tip)
        if row and row.draft_tip:
            tip.update(Content(row.draft_tip.tui_text))

    def _state(self, model: InstalledModel) -> str:
        marks = []
        if model.path == self.loaded:
            marks.append("● in use")
        if self.default_model and self.default_model in (model.name, str(model.path)):
            marks.append("default")
        return ", ".join(marks)

    def _selected(self) -> InstalledRow | None:
        return self.rows.get(_highlighted_key(self.installed_table))

    def _selected_catalog(self) -> CatalogRow | None:
        return self.catalog_rows.get(_highlighted_key(self.available_table))

    def action_select(self) -> None:
        if self.focused is self.available_table:
            self.action_pull()
        else:
            self.action_use()

    @on(DataTable.RowSelected, "#installed")
    def _installed_selected(self) -> None:  # enter or a click on an installed model
        self.action_use()

    @on(DataTable.RowSelected, "#available")
    def _available_selected(self) -> None:
        self.action_pull()

    def action_use(self) -> None:
        row = self._selected()
        if row is not None:
            self.dismiss(row.model.path)

    def action_pull(self) -> None:
        row = self._selected_catalog()
        if row is None:
            self.notify("Choose a model in the Available list first.", severity="warning")
            return
        self.query_one(PullPanel).start(row.name)

    def action_import_file(self) -> None:
        from localr1.tui.screens.import_gguf import ImportScreen

        def imported(name: str | None) -> None:
            if name is None:
                return
            self.notify(f"{name} is in your models: enter uses it.", markup=False)
            self._select_after_listing = name
            self.action_refresh()

        self.app.push_screen(ImportScreen(self.models_dir), imported)

    def action_cancel_pull(self) -> None:
        self.query_one(PullPanel).cancel()

    @on(PullPanel.Finished)
    def _pulled(self, event: PullPanel.Finished) -> None:
        self.app.notify(f"Pulled {event.name}: enter in the models screen (ctrl+l) uses it.",
                        markup=False, timeout=10)
        self.action_refresh()

    @on(PullPanel.Stopped)
    def _pull_stopped(self, event: PullPanel.Stopped) -> None:
        self.app.notify(f"{event.name}: {event.reason}", severity="warning", markup=False,
                        timeout=10)

    def action_set_default(self) -> None:
        row = self._selected()
        if row is None:
            return
        from localr1.config import set_default_model

        config_file = self.app.paths.config_file
        try:
            set_default_model(config_file, row.model.name)
        except LocalR1Error as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.default_model = row.model.name
        self.notify(f"{row.model.name} is the default model (in {config_file}).",
                    markup=False)
        self.action_refresh()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_delete(self) -> None:
        row = self._selected()
        if row is None or self.focused is not self.installed_table:
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


def _highlighted_key(table: DataTable) -> str:
    if not table.row_count:
        return ""
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or ""


def _score_cells(store: Store, rows: list[InstalledRow]) -> dict[str, str]:
    """Each installed model's last eval score as its cell, by row key; none at all when the
    history cannot be read (a broken file must not break the screen)."""
    try:
        runs = {name.lower(): run for name, run in store.last_eval_scores().items()}
    except (LocalR1Error, sqlite3.Error):
        return {}
    cells = {}
    for row in rows:
        # The runner records the library's name; a catalog model also goes by its entry's.
        names = {name.lower() for name in (row.model.name, row.model.catalog_name) if name}
        found = [runs[name] for name in names if name in runs]
        if found:
            cells[str(row.model.path)] = score_text(max(found, key=_finished))
    return cells


def _finished(run: EvalRunRecord) -> tuple[str, int]:
    return run.finished_at, run.id


def score_text(run: EvalRunRecord, width: int = SCORE_WIDTH) -> str:
    """"quick 83% ×4": the set, pass@1 and K; the set's name shortened to fit `width`."""
    numbers = f"{run.pass_at_1:.0%} ×{run.samples}"
    name = visible_controls(" ".join(run.set_name.split()))
    name = name.removesuffix(".jsonl")  # a user's file: its name says enough
    room = max(1, width - len(numbers) - 1)
    if len(name) > room:
        name = name[:room - 1] + "…"
    return f"{name} {numbers}"


def _not_installed(models_dir: Path, machine: MachineMemory,
                   installed: list[InstalledModel]) -> list[CatalogRow | str]:
    """The catalog's entries not installed here; or why the catalog could not be read."""
    from localr1.models.catalog import load_catalog
    from localr1.models.listing import catalog_rows

    try:
        rows = catalog_rows(load_catalog(), models_dir, machine, installed)
        return [row for row in rows if not row.installed]
    except (LocalR1Error, OSError) as exc:
        return [f"catalog unreadable: {exc}"]
