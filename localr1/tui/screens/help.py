"""F1: every key binding on one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# localr1 chat — keys

| Key | Action |
| --- | --- |
| Enter | send the prompt |
| Shift+Enter, Ctrl+J | new line in the prompt |
| ↑ (empty prompt), Ctrl+G | edit your last message and resend it |
| Esc | stop generating (the partial answer stays, marked stopped) |
| Ctrl+N | new chat |
| Ctrl+R | regenerate the last answer (the old one stays as a version) |
| Alt+← / Alt+→ | previous / next version of the last answer |
| Alt+↑ / Alt+↓ | previous / next version of your last message (edits) |
| Ctrl+T | open / close the last answer's reasoning |
| Ctrl+B | copy the last answer |
| Ctrl+O | copy a code block of the last answer (again: the one before) |
| Ctrl+F | search the history |
| Ctrl+\\\\ | show / hide the sidebar |
| F2 / F3 / F8 | rename / pin / delete the conversation |
| Ctrl+S | export the conversation to Markdown |
| F4 | settings of this conversation |
| Ctrl+L | models |
| Ctrl+P | command palette (every action) |
| Ctrl+Q | quit |

Click "Thought for …" to read the model's reasoning.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll {
        width: 84; max-width: 95%; height: 90%; border: thick $primary; background: $surface;
    }
    """
    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
