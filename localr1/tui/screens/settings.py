"""F4: this conversation's settings (saved with it) and the reasoning display preference."""

from __future__ import annotations

from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea

from localr1.config import parse_gpu_layers
from localr1.tui.conversation_settings import ConversationSettings


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
    SettingsScreen > Vertical {
        width: 76; max-width: 98%; height: auto; max-height: 98%; border: thick $primary;
        background: $surface; padding: 0 1;
    }
    SettingsScreen .title { text-style: bold; margin-bottom: 1; }
    SettingsScreen .row { height: 1; margin-bottom: 1; }
    SettingsScreen .row > Label { width: 34; }
    SettingsScreen .row > Input { width: 1fr; }
    SettingsScreen #system_prompt { height: 5; margin-bottom: 1; }
    SettingsScreen #keep_open { margin-bottom: 1; }
    SettingsScreen #error { color: $text-error; height: auto; }
    SettingsScreen .buttons { height: 3; align-horizontal: right; }
    SettingsScreen .buttons Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "save", "Save")]

    def __init__(self, settings: ConversationSettings, keep_reasoning_open: bool) -> None:
        super().__init__()
        self.settings = settings
        self.keep_reasoning_open = keep_reasoning_open

    def compose(self) -> ComposeResult:
        s = self.settings
        with Vertical():
            yield Static(Content("Conversation settings"), classes="title")
            for field, label, value in (
                    ("temperature", "Temperature (0–5)", s.temperature),
                    ("top_p", "Top p (0–1]", s.top_p),
                    ("max_tokens", "Max tokens (0 = no limit)", s.max_tokens),
                    ("reasoning_budget", "Reasoning budget (-1 = unlimited)",
                     s.reasoning_budget),
                    ("context_size", "Context size (reloads the model)", s.context_size),
                    ("gpu_layers", "GPU layers: auto/all/N (reloads)", s.gpu_layers)):
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield Input(str(value), id=field, compact=True)
            yield Label("System prompt (R1: folded into the first message)")
            yield TextArea(s.system_prompt or "", id="system_prompt", soft_wrap=True,
                           compact=True)
            yield Checkbox("Keep the reasoning open when the answer starts (all chats)",
                           self.keep_reasoning_open, id="keep_open", compact=True)
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Save (ctrl+s)", id="save", variant="primary")

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value

    def read(self) -> SettingsResult:
        gpu_text = self._value("gpu_layers")
        try:
            gpu_layers = parse_gpu_layers(gpu_text)
        except ValueError:
            raise SettingsError("GPU layers: use auto, all, 0 (CPU) or a layer count") from None
        system = self.query_one("#system_prompt", TextArea).text.strip() or None
        settings = replace(
            self.settings,
            temperature=_number(self._value("temperature"), "Temperature", float, 0.0, 5.0),
            top_p=_number(self._value("top_p"), "Top p", float, 0.0001, 1.0),
            max_tokens=_number(self._value("max_tokens"), "Max tokens", int, 0),
            reasoning_budget=_number(self._value("reasoning_budget"), "Reasoning budget",
                                     int, -1),
            context_size=_number(self._value("context_size"), "Context size", int, 64),
            gpu_layers=gpu_layers,
            system_prompt=system)
        return SettingsResult(settings, self.query_one("#keep_open", Checkbox).value)

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
