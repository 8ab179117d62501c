"""F1: every key binding on one page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# localr1 chat — keys

- **Enter** send · **Shift+Enter** or **Ctrl+J** new line in the prompt
- **Esc** close the search results; stop generating (the partial answer stays, marked
  stopped); cancel an edit
- **F5** while the model thinks: answer now (ends the reasoning, the model answers)
- **Ctrl+N** new chat · **Ctrl+F** search the history · **Ctrl+\\\\** show/hide the sidebar
- **Ctrl+R** regenerate the last answer (the old one stays as a version)
- **Alt+← / Alt+→** previous / next version of the last answer
- **↑** in an empty prompt, or **Ctrl+G**: edit your last message and resend it
- **Alt+↑ / Alt+↓** previous / next version of your last message
- **Ctrl+T** open / close the last answer's reasoning (or click "Thought for …")
- **Ctrl+B** copy the last answer · **Ctrl+O** copy its code blocks, last first
- **F2** rename · **F3** pin / unpin · **F8** delete the conversation
- **Ctrl+S** export the conversation to Markdown
- **F4** settings of this conversation (reasoning effort, context…) · **Ctrl+L** models
- **Ctrl+P** command palette: every action by name · **Ctrl+Q** quit
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll {
        width: 84; max-width: 95%; height: auto; max-height: 90%; border: thick $primary;
        background: $surface;
    }
    """
    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
