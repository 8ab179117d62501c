"""The conversation list: pinned first, then Today / Yesterday / Older, a page at a time, and
a filter box that searches every message with the store's full-text index.

Only `PAGE_SIZE` conversations are read at start (the app must paint in well under a second
with 10,000 in the database); "More…" at the end reads the next page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option

from localr1.errors import LocalR1Error
from localr1.store import Conversation, SearchHit, Store
from localr1.terminal_text import visible_controls
from localr1.tui.formatting import day_group, literal, one_line
from localr1.tui.messages import SearchResults

PAGE_SIZE = 50  # a screenful and more; "More…" reads the next page
SEARCH_LIMIT = 50
SEARCH_DELAY = 0.15  # seconds of no typing before the filter searches
# Marks around matched words in snippets; private-use characters nobody types.
_MARK_START, _MARK_END = "\ue000", "\ue001"


def conversation_prompt(conversation: Conversation) -> Content:
    title = one_line(conversation.title or "") or "Untitled"
    return literal(title)


def snippet_prompt(hit: SearchHit) -> Content:
    """A search hit as two lines: the title, and the snippet with matched words in bold."""
    title = literal(one_line(hit.title or "") or "Untitled")
    parts: list[str | tuple[str, str]] = []
    text = visible_controls(one_line(hit.snippet))
    while text:
        start = text.find(_MARK_START)
        if start == -1:
            parts.append((text, "dim"))
            break
        end = text.find(_MARK_END, start)
        end = len(text) if end == -1 else end
        if start:
            parts.append((text[:start], "dim"))
        parts.append((text[start + 1:end], "bold"))
        text = text[end + 1:]
    if hit.message_id is None:
        return title
    return Content.assemble(title, "\n", *parts)


class SearchBox(Input):
    """The filter box. Its editing keys (ctrl+u, ctrl+w, ctrl+k…) run as they arrive: as
    bindings they would run only after bubbling through the parents' queues, after the keys
    typed right behind them (typing after ctrl+u was lost)."""

    _EDITING_KEYS = frozenset({"ctrl+u", "ctrl+w", "ctrl+k", "ctrl+a", "ctrl+e",
                               "ctrl+d", "backspace", "delete", "home", "end", "left",
                               "right"})

    async def _on_key(self, event: events.Key) -> None:
        if event.key in self._EDITING_KEYS:
            bindings = self._bindings.key_to_bindings.get(event.key, [])
            if bindings:
                event.stop()
                event.prevent_default()
                await self.run_action(bindings[0].action)
                return
        await super()._on_key(event)


class ConversationSidebar(Vertical):
    DEFAULT_CSS = """
    ConversationSidebar { width: 34; height: 1fr; border-right: vkey $border-blurred; }
    ConversationSidebar > Input { margin: 0; }
    ConversationSidebar > OptionList {
        height: 1fr; border: none; padding: 0; text-wrap: nowrap; text-overflow: ellipsis;
    }
    """

    @dataclass
    class Selected(Message):
        conversation_id: int

    def __init__(self, store: Store, **kwargs) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.current_id: int | None = None
        self._loaded = 0
        self._last_group: str | None = None
        self._has_more = False
        self._search_timer: Timer | None = None
        self.query_text = ""

    def compose(self) -> ComposeResult:
        yield SearchBox(placeholder="Search history  ctrl+f", id="filter")
        yield OptionList(id="conversations")

    @property
    def options(self) -> OptionList:
        return self.query_one("#conversations", OptionList)

    # ---- listing ---------------------------------------------------------------------------

    def reload(self, current_id: int | None = None) -> None:
        """Re-read the first page(s) (after a turn, a rename, a pin…); keeps the search."""
        self.current_id = current_id
        if self.query_text:
            self._search(self.query_text)
            return
        pages = max(1, -(-self._loaded // PAGE_SIZE))
        options = self.options
        options.clear_options()
        self._loaded = 0
        self._last_group = None
        self._append_page(limit=pages * PAGE_SIZE)
        self._highlight_current()

    def load_more(self) -> None:
        self._append_page(limit=PAGE_SIZE)

    def _append_page(self, limit: int) -> None:
        conversations = self.store.list_conversations(limit=limit + 1, offset=self._loaded)
        self._has_more = len(conversations) > limit
        conversations = conversations[:limit]
        options = self.options
        if options.option_count and options.get_option_at_index(
                options.option_count - 1).id == "more":
            options.remove_option("more")
        new: list[Option] = []
        today = date.today()
        for conversation in conversations:
            group = "Pinned" if conversation.pinned else day_group(conversation.updated_at,
                                                                   today)
            if group != self._last_group:
                new.append(Option(Content.styled(group, "bold $text-muted"), disabled=True))
                self._last_group = group
            new.append(Option(conversation_prompt(conversation), id=f"c{conversation.id}"))
        if self._has_more:
            new.append(Option(Content.styled("More…", "italic"), id="more"))
        if not self._loaded and not conversations:
            new.append(Option(Content.styled("No conversations yet", "dim italic"),
                              disabled=True))
        self._loaded += len(conversations)
        options.add_options(new)

    def _highlight_current(self) -> None:
        if self.current_id is None:
            self.options.highlighted = None
            return
        try:
            index = self.options.get_option_index(f"c{self.current_id}")
        except Exception:  # not on the loaded pages (or filtered out)
            return
        self.options.highlighted = index

    @on(OptionList.OptionSelected, "#conversations")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        option_id = event.option.id or ""
        if option_id == "more":
            index = event.option_index
            self.load_more()
            self.options.highlighted = min(index, self.options.option_count - 1)
        elif option_id.startswith("c"):
            self.post_message(self.Selected(int(option_id[1:])))

    # ---- search ----------------------------------------------------------------------------

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        text = event.value.strip()
        if not text:
            self.query_text = ""
            self.reload(self.current_id)
            return
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self._search(text))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.options.focus()
        if self.options.highlighted is None and self.options.option_count:
            self.options.action_first()

    def clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""

    @property
    def searching(self) -> bool:
        """Search results (or a search being typed) are shown instead of the list."""
        return bool(self.query_one("#filter", Input).value.strip() or self.query_text)

    def _search(self, text: str) -> None:
        self.query_text = text
        self._run_search(text)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _run_search(self, text: str) -> None:
        # A filter box matches as you type: "gree" finds "greeted".
        try:
            hits = self.store.search(text, limit=SEARCH_LIMIT, include_reasoning=True,
                                     highlight=(_MARK_START, _MARK_END), prefix=True)
        except LocalR1Error as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            hits = []
        self.post_message(SearchResults(text, hits))

    def on_search_results(self, message: SearchResults) -> None:
        message.stop()
        if message.query != self.query_text:
            return  # the user typed on
        seen: set[int] = set()
        options: list[Option] = [Option(Content.styled(
            f"{len({h.conversation_id for h in message.hits})} found", "bold $text-muted"),
            disabled=True)]
        for hit in message.hits:
            if hit.conversation_id in seen:
                continue
            seen.add(hit.conversation_id)
            options.append(Option(snippet_prompt(hit), id=f"c{hit.conversation_id}"))
        self.options.clear_options()
        self.options.add_options(options)
        self._loaded = 0
        self._highlight_current()
