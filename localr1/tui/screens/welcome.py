"""First run without a model: download the default one in place, or type the path of a GGUF.

The download button names the catalog's default model with its size, fit label and estimated
speed (worked out in a worker: the fit probes memory, bandwidth and llama.cpp's backend); the
pull runs in a `PullPanel`. Dismisses with the model's path (the app then loads it), or None to
browse the history without a model.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from localr1.errors import LocalR1Error
from localr1.models.library import installed_models
from localr1.sizes import format_bytes
from localr1.tui.formatting import literal
from localr1.tui.widgets.pull_panel import PullPanel

DEFAULT_PULL = "r1"  # the catalog's default: the smallest distill, fine on any laptop


class WelcomeScreen(Screen[Path | None]):
    DEFAULT_CSS = """
    WelcomeScreen { align: center middle; }
    WelcomeScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; padding: 1 2; }
    WelcomeScreen .title { text-style: bold; color: $text-primary; margin-bottom: 1; }
    WelcomeScreen .hint { margin-bottom: 1; }
    WelcomeScreen .path { color: $text-accent; margin-bottom: 1; }
    WelcomeScreen #error { color: $text-error; height: auto; }
    WelcomeScreen Horizontal { height: auto; }
    WelcomeScreen #model_path { width: 1fr; }
    WelcomeScreen #pull { width: auto; min-width: 30; }
    WelcomeScreen #pull-facts { color: $text-muted; margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "browse", "Browse history without a model"),
                Binding("ctrl+r", "rescan", "Look in the models folder again")]

    def __init__(self, models_dir: Path, problem: str | None = None) -> None:
        super().__init__()
        self.models_dir = models_dir
        self.problem = problem

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("Welcome to localr1", classes="title")
            yield Static("localr1 chats with DeepSeek-R1 distilled models running on this "
                         "computer, offline. There is no model here yet.", classes="hint")
            yield Static(Content.assemble(
                ("Download the default model", "bold"), " from the Hugging Face Hub (it "
                "resumes if interrupted, and is checked against its sha256):"), classes="hint")
            yield Button(f"Download {DEFAULT_PULL}", id="pull", variant="success")
            yield Static("", id="pull-facts")
            yield PullPanel(self.models_dir, id="pull-panel")
            yield Static(Content.assemble(
                "Or in another terminal: ", ("localr1 pull r1:7b", "bold $text-accent"),
                " (see ", ("localr1 list --available", "bold"), "), then ctrl+r here."),
                classes="hint")
            yield Static(Content.assemble(
                ("Or use a GGUF you already have", "bold"),
                ": type its path below (it is added to your models, not copied), or copy it "
                "into the models folder."), classes="hint")
            yield Static(Content(str(self.models_dir)), classes="path")
            with Horizontal():
                yield Input(placeholder="/path/to/DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf",
                            id="model_path")
                yield Button("Use this file", id="use", variant="primary")
            yield Static(literal(self.problem or ""), id="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#model_path", Input).focus()
        self._describe_default()

    @work(thread=True, exclusive=True, group="describe", exit_on_error=False)
    def _describe_default(self) -> None:
        """Name, size and fit of the default model on its button (`list --available`'s row)."""
        from localr1.models.catalog import load_catalog
        from localr1.models.fit import label_and_speed
        from localr1.models.listing import catalog_rows

        try:
            catalog = load_catalog()
            name = catalog.get(DEFAULT_PULL).name
            row = next(r for r in catalog_rows(catalog, self.models_dir) if r.name == name)
        except (LocalR1Error, OSError) as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        self.app.call_from_thread(self._describe_pull,
                                  f"Download {row.name} ({format_bytes(row.entry.size_bytes)})",
                                  f"{row.title}, {row.entry.quant.quant}: "
                                  f"{label_and_speed(row.fit)}")

    def _describe_pull(self, label: str, facts: str) -> None:
        button = self.query_one("#pull", Button)
        button.label = Content(label)
        button.refresh(layout=True)
        self.query_one("#pull-facts", Static).update(Content(facts))

    @on(Input.Submitted, "#model_path")
    @on(Button.Pressed, "#use")
    def _use(self) -> None:
        text = self.query_one("#model_path", Input).value.strip()
        if not text:
            self._error("type the path of a .gguf file")
            return
        self._error("checking the file…")
        self._import(text)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _import(self, text: str) -> None:
        """Validate the GGUF and register it in the library (no copy), so it is listed and
        found next time; headers of big files take a moment to read, hence a worker."""
        from localr1.models.choice import use_typed_model

        try:
            chosen = use_typed_model(text, self.models_dir)
        except LocalR1Error as exc:
            self.app.call_from_thread(self._error, str(exc))
            return
        self.app.call_from_thread(self.dismiss, chosen.path)

    @on(Button.Pressed, "#pull")
    def action_pull(self) -> None:
        self._error("")
        self.query_one(PullPanel).start(DEFAULT_PULL)

    @on(PullPanel.Finished)
    def _pulled(self, event: PullPanel.Finished) -> None:
        self.dismiss(event.path)

    def action_browse(self) -> None:
        panel = self.query_one(PullPanel)
        if panel.running:  # esc first stops the download (resumable); again leaves
            panel.cancel()
            return
        self.dismiss(None)

    def action_rescan(self) -> None:
        models = installed_models(self.models_dir)
        if not models:
            self._error(f"still no .gguf file in {self.models_dir}")
            return
        self.dismiss(next(iter(models.values())))

    def _error(self, text: str) -> None:
        self.query_one("#error", Static).update(literal(text))
