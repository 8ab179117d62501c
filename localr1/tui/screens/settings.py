"""F4: this conversation's settings (saved with it) and the reasoning display preference.

The reasoning effort (none/low/medium/high) is a name for a reasoning budget: choosing one
fills in the budget, and a budget typed by hand shows as "custom".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, TextArea

from localr1.config import KV_TYPES, Settings, parse_gpu_layers
from localr1.engine.events import REASONING_EFFORT_BUDGETS
from localr1.errors import LocalR1Error
from localr1.models.decode_options import NO_DRAFT, is_no_draft, resolve_draft
from localr1.tui.conversation_settings import ConversationSettings, reasoning_effort

EFFORTS = (*REASONING_EFFORT_BUDGETS, "custom")
_CHOICES = {"reasoning_effort": EFFORTS, "kv_type": KV_TYPES, "flash_attn": ("auto", "on", "off")}


@dataclass(frozen=True)
class SettingsResult:
    settings: ConversationSettings
    keep_reasoning_open: bool


class SettingsError(ValueError):
    pass


def _number(text: str, name: str, kind: type, low: float, high: float | None = None):
    try:
        value = kind(text.strip())
    except ValueError:
        raise SettingsError(f"{name}: not a number") from None
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{name}: must be {limit}")
    return value


class SettingsScreen(ModalScreen[SettingsResult | None]):
    DEFAULT_CSS = """
    SettingsScreen { align: center middle; background: $background 60%; }
    SettingsScreen > VerticalScroll {
        width: 76; max-width: 100%; height: auto; max-height: 100%; border: thick $primary;
        background: $surface; padding: 0 1; scrollbar-size-vertical: 1;
    }
    SettingsScreen .title { text-style: bold; margin-bottom: 1; }
    SettingsScreen .row { height: 1; margin-bottom: 1; }
    SettingsScreen .row > Label { width: 34; }
    SettingsScreen .row > Input, SettingsScreen .row > Select { width: 1fr; }
    SettingsScreen .row.-noted { margin-bottom: 0; }
    SettingsScreen #context_in_use { color: $text-muted; margin-bottom: 1; }
    SettingsScreen #system_prompt { height: 5; margin-bottom: 1; }
    SettingsScreen #keep_open { margin-bottom: 1; }
    SettingsScreen #error { color: $text-error; height: auto; }
    SettingsScreen .buttons { height: 3; align-horizontal: right; }
    SettingsScreen .buttons Button { margin-left: 2; }
    /* A short terminal: no blank lines between the rows, so it all fits or scrolls. */
    SettingsScreen.-short .title, SettingsScreen.-short .row { margin-bottom: 0; }
    SettingsScreen.-short #context_in_use { margin: 0; }
    SettingsScreen.-short #system_prompt { height: 3; margin-bottom: 0; }
    SettingsScreen.-short #keep_open { margin-bottom: 0; }
    """
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, settings: ConversationSettings, keep_reasoning_open: bool, *,
                 context_in_use: int | None = None, context_trained: int | None = None,
                 config: Settings | None = None) -> None:
        """`context_in_use`: the loaded model's context (None: none loaded); it can be
        below the setting (the model's maximum is `context_trained`). `config`: the app's
        settings, whose KV cache and draft apply until the conversation chooses its own."""
        super().__init__()
        self.settings = settings
        self.config = config or Settings()
        self.decode_options = settings.decode_options(self.config)
        self.keep_reasoning_open = keep_reasoning_open
        self.context_in_use = context_in_use
        self.context_trained = context_trained
        # The effort last shown: the Select reports its first value too, and one set to
        # follow a typed budget; only the user's pick of "custom" moves the focus.
        self._effort_shown = settings.reasoning_effort

    def context_note(self) -> str:
        """What the model really runs with, when that is not the setting."""
        in_use, wanted = self.context_in_use, self.settings.context_size
        if in_use is None or in_use == wanted:
            return ""
        if self.context_trained is not None and in_use >= self.context_trained < wanted:
            return f"In use: {in_use:,} tokens, the model's maximum"
        return f"In use: {in_use:,} tokens"

    def compose(self) -> ComposeResult:
        s = self.settings
        kv_type, flash_attn, draft = self.decode_options
        with VerticalScroll(can_focus=False):  # the first field takes the focus
            yield Static(Content("Conversation settings"), classes="title")
            for field, label, value in (
                    ("temperature", "Temperature (0–5)", s.temperature),
                    ("top_p", "Top p (0–1]", s.top_p),
                    ("max_tokens", "Max tokens (0 = no limit)", s.max_tokens),
                    ("reasoning_effort", "Reasoning effort", s.reasoning_effort),
                    ("reasoning_budget", "Reasoning budget (-1 = unlimited)",
                     s.reasoning_budget),
                    ("context_size", "Context size (reloads the model)", s.context_size),
                    ("gpu_layers", "GPU layers: auto/all/N (reloads)", s.gpu_layers),
                    ("kv_type", "KV cache type (reloads)", kv_type),
                    ("flash_attn", "Flash attention (reloads)", flash_attn),
                    ("draft_model", "Draft: model/path/lookup/none", draft)):
                noted = field == "context_size" and self.context_note()
                with Horizontal(classes="row -noted" if noted else "row"):
                    yield Label(label)
                    if field in _CHOICES:
                        yield Select([(name, name) for name in _CHOICES[field]], value=value,
                                     allow_blank=False, compact=True, id=field)
                    else:
                        yield Input(str(value), id=field, compact=True)
                if noted:
                    yield Static(Content(self.context_note()), id="context_in_use")
            yield Label("System prompt (R1: folded into the first message)")
            yield TextArea(s.system_prompt or "", id="system_prompt", soft_wrap=True,
                           compact=True)
            yield Checkbox("Keep the reasoning open when answering (all chats)",
                           self.keep_reasoning_open, id="keep_open", compact=True)
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    @on(Select.Changed, "#reasoning_effort")
    def _effort_chosen(self, event: Select.Changed) -> None:
        if event.value == self._effort_shown:
            return
        self._effort_shown = str(event.value)
        budget = REASONING_EFFORT_BUDGETS.get(str(event.value))
        box = self.query_one("#reasoning_budget", Input)
        if budget is None:  # "custom": the budget is typed
            box.focus()
        elif box.value.strip() != str(budget):
            box.value = str(budget)

    @on(Input.Changed, "#reasoning_budget")
    def _budget_typed(self, event: Input.Changed) -> None:
        try:
            effort = reasoning_effort(int(event.value.strip()))
        except ValueError:
            effort = "custom"
        select = self.query_one("#reasoning_effort", Select)
        if select.value != effort:
            self._effort_shown = effort
            select.value = effort

    def read(self) -> SettingsResult:
        gpu_text = self._value("gpu_layers")
        try:
            gpu_layers = parse_gpu_layers(gpu_text)
        except ValueError:
            raise SettingsError("GPU layers: use auto, all, 0 (CPU) or a layer count") from None
        system = self.query_one("#system_prompt", TextArea).text.strip() or None
        kv_type = str(self.query_one("#kv_type", Select).value)
        flash_attn = str(self.query_one("#flash_attn", Select).value)
        if kv_type != "f16" and flash_attn == "off":  # llama.cpp's rule for a quantized V
            raise SettingsError(f"KV cache type {kv_type} needs flash attention auto or on")
        settings = replace(
            self.settings,
            temperature=_number(self._value("temperature"), "Temperature", float, 0.0, 5.0),
            top_p=_number(self._value("top_p"), "Top p", float, 0.0001, 1.0),
            max_tokens=_number(self._value("max_tokens"), "Max tokens", int, 0),
            reasoning_budget=_number(self._value("reasoning_budget"), "Reasoning budget",
                                     int, -1),
            context_size=_number(self._value("context_size"), "Context size", int, 64),
            gpu_layers=gpu_layers, kv_type=self._chosen(0, self.settings.kv_type, kv_type),
            flash_attn=self._chosen(1, self.settings.flash_attn, flash_attn),
            draft_model=self._chosen(2, self.settings.draft_model, self._draft()),
            system_prompt=system)
        return SettingsResult(settings, self.query_one("#keep_open", Checkbox).value)

    def _chosen(self, index: int, own: str | None, shown: str) -> str | None:
        """The conversation's own choice: kept once made, made by showing another value than
        the config's (None: it still follows the config)."""
        return shown if own is not None or shown != self.decode_options[index] else None

    def _draft(self) -> str:
        """The typed draft: "none" for blank, else one that can be found (as --model)."""
        text = self._value("draft_model").strip()
        if is_no_draft(text):
            return NO_DRAFT
        try:
            resolve_draft(text, self.app.paths.models_dir)  # type: ignore[attr-defined]
        except LocalR1Error as exc:
            raise SettingsError(str(exc)) from None
        return text

    def action_save(self) -> None:
        try:
            result = self.read()
        except SettingsError as exc:
            self.query_one("#error", Static).update(Content(str(exc)))
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()
