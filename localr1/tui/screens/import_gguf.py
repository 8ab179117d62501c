"""Import a GGUF file at any time (the models screen's `i`, the command palette): its path and
the name to know it by. The same flow as the welcome screen's path box (`choice.use_typed_model`:
registered in place, nothing copied), run in a worker because big headers take a moment.
Dismisses with the imported model's name, or None on Esc. While the file is checked the boxes
and the Import button are disabled: one import at a time.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from localr1.errors import LocalR1Error
from localr1.tui.formatting import literal
from localr1.tui.screens.dialogs import DIALOG_CSS


class ImportScreen(ModalScreen[str | None]):
    DEFAULT_CSS = DIALOG_CSS.format(name="ImportScreen") + """
    ImportScreen Input { margin-bottom: 1; }
    ImportScreen #import-error { color: $text-error; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, models_dir: Path) -> None:
        super().__init__()
        self.models_dir = models_dir

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Content.assemble(
                ("Import a GGUF file", "bold"), ": it is added to your models where it is, "
                "not copied."), classes="question")
            yield Input(placeholder="/path/to/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
                        id="import-path")
            yield Input(placeholder="name (optional; default: the file name)",
                        id="import-name")
            yield Static("", id="import-error")
            with Horizontal():
                yield Button("Cancel (esc)", id="import-cancel")
                yield Button("Import", id="import-go", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#import-path", Input).focus()

    @on(Input.Submitted, "#import-path")
    def _next_box(self) -> None:
        self.query_one("#import-name", Input).focus()

    @on(Input.Submitted, "#import-name")
    @on(Button.Pressed, "#import-go")
    def _go(self) -> None:
        if self.busy:
            return
        path = self.query_one("#import-path", Input).value.strip()
        name = self.query_one("#import-name", Input).value.strip() or None
        if not path:
            self._error("type the path of a .gguf file")
            return
        self._set_busy(True)
        self._error("checking the file…")
        self._import(path, name)

    @property
    def busy(self) -> bool:
        """An import is running (its worker checks the file)."""
        return self.query_one("#import-go", Button).disabled

    def _set_busy(self, busy: bool) -> None:
        for widget in (*self.query(Input), self.query_one("#import-go", Button)):
            widget.disabled = busy
        if not busy:
            self.query_one("#import-path", Input).focus()

    @on(Button.Pressed, "#import-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _import(self, path: str, name: str | None) -> None:
        from localr1.models.choice import use_typed_model
        from localr1.models.library import check_model_name

        try:
            if name is not None:
                check_model_name(name)  # the rule `localr1 import --name` follows
            chosen = use_typed_model(path, self.models_dir, name=name)
        except LocalR1Error as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self.dismiss, chosen.name)

    def _failed(self, text: str) -> None:
        self._set_busy(False)
        self._error(text)

    def _error(self, text: str) -> None:
        self.query_one("#import-error", Static).update(literal(text))
