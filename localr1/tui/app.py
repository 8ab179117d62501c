"""The Textual app: owns the services (store, engine, settings), loads models in a worker,
and hosts the chat screen. `run_chat` is the entry point of `localr1 chat`.

Tests build `LocalR1App(store=..., model_path=..., settings=...)` (or pass a loaded `engine`)
and drive it with `App.run_test()`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from localr1.config import Settings, load_settings
from localr1.errors import LocalR1Error
from localr1.models.decode_options import NO_DRAFT
from localr1.paths import AppPaths, app_paths
from localr1.store import Conversation, Store
from localr1.tui.conversation_settings import ConversationSettings
from localr1.tui.messages import ModelLoaded, ModelLoadFailed
from localr1.tui.prefs import TuiPrefs
from localr1.tui.screens.chat import ChatScreen
from localr1.tui.terminal_driver import terminal_driver_class

if TYPE_CHECKING:  # llama.cpp's bindings, the model library: loaded after the first paint
    from localr1.engine.chat_engine import ChatEngine
    from localr1.engine.llama_engine import EngineConfig

ModelState = Literal["none", "loading", "ready", "failed"]
SHUTDOWN_WAIT_SECONDS = 10.0  # for a stopped turn to save its partial answer


class LocalR1App(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "localr1"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("ctrl+l", "models", "Models"),
        Binding("f1", "help", "Keys"),
    ]

    def __init__(self, *, store: Store | Path | None = None, engine: ChatEngine | None = None,
                 model_path: Path | None = None, model_label: str | None = None,
                 settings: Settings | None = None, conversation_id: int | None = None,
                 paths: AppPaths | None = None, prefs: TuiPrefs | None = None,
                 show_timings: bool = True) -> None:
        super().__init__(driver_class=terminal_driver_class())
        self.paths = paths or app_paths()
        self.settings = settings or Settings()
        self._owns_store = not isinstance(store, Store)
        self.store = store if isinstance(store, Store) else Store.open(store or
                                                                       self.paths.db_path)
        self.prefs = prefs if prefs is not None else TuiPrefs.load(self._prefs_path)
        self.show_timings = show_timings
        self.engine = engine
        self._owns_engine = engine is None
        self.model_path = model_path or (engine.info.path if engine is not None else None)
        if model_label is None and self.model_path is not None:
            from localr1.models.choice import name_model

            model_label = name_model(self.model_path, self.paths.models_dir).name
        self.model_label = model_label or "unknown model"
        self.draft_label: str | None = None  # the loaded draft's name; None: the engine's
        self.engine_config: EngineConfig | None = None  # None: injected, do not reload it
        self._last_good_config: EngineConfig | None = None
        self.failed_configs: set[EngineConfig] = set()
        self.model_state: ModelState = "ready" if engine is not None else "none"
        self.model_problem: str | None = None
        self.loading_label: str | None = None
        self.conversation_id = conversation_id
        self.new_chat_settings: ConversationSettings | None = None
        # F4 settings whose save failed, by (id, created_at): ids of deleted conversations
        # are reused, and must not pass these on.
        self._unsaved_settings: dict[tuple[int, str], ConversationSettings] = {}
        self.chat: ChatScreen | None = None
        self._missing_drafts: set[str] = set()  # draft models already said missing

    @property
    def _prefs_path(self) -> Path:
        return self.paths.data_dir / "tui.json"

    # ---- start-up --------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.chat = ChatScreen(self.conversation_id)
        self.push_screen(self.chat)
        if self.engine is None and self.model_path is not None:
            conversation = self._initial_conversation()
            self.load_model(self.engine_config_for(self.settings_for(conversation),
                                                   self.model_path))
        elif self.engine is None:
            self._welcome()

    def _initial_conversation(self) -> Conversation | None:
        if self.conversation_id is None:
            return None
        try:
            return self.store.conversation(self.conversation_id)
        except LocalR1Error:
            return None

    def _welcome(self, problem: str | None = None) -> None:
        from localr1.tui.screens.welcome import WelcomeScreen

        self.push_screen(WelcomeScreen(self.paths.models_dir, problem), self._welcome_done)

    def _welcome_done(self, path: Path | None) -> None:
        if path is None:
            self.model_problem = "no model — ctrl+l: models"
            self._tell_chat()
            return
        self.use_model(path)

    # ---- models ----------------------------------------------------------------------------

    def use_model(self, path: Path) -> None:
        """Switch to the model at `path` (for this conversation and the next ones)."""
        if self.chat is not None and self.chat.turn is not None:
            self.notify("A reply is still streaming: esc stops it first.", severity="warning")
            return
        settings = self.chat.conv_settings if self.chat and self.chat.conv_settings else \
            ConversationSettings.defaults(self.settings)
        self.load_model(self.engine_config_for(settings, path))

    def engine_config_for(self, settings: ConversationSettings, path: Path) -> EngineConfig:
        """How to load the model at `path` for a conversation's `settings`. A draft model that
        cannot be found is said once, then left out: the model answers without it."""
        try:
            return settings.engine_config(path, self.settings, self.paths.models_dir)
        except LocalR1Error as exc:
            draft = settings.decode_options(self.settings)[2]
            if draft not in self._missing_drafts:
                self._missing_drafts.add(draft)
                self.notify(str(exc), title="No draft model", severity="warning",
                            markup=False, timeout=15)
            return replace(settings, draft_model=NO_DRAFT).engine_config(
                path, self.settings, self.paths.models_dir)

    def load_model(self, config: EngineConfig) -> None:
        self.model_state = "loading"
        self.loading_label = config.model_path.name
        self._tell_chat()
        # Start after the next paint: the worker's first act is importing llama.cpp's
        # bindings (numpy, ctypes), which holds the GIL that drawing the first screen needs.
        self.call_after_refresh(self._load, config, self.engine if self._owns_engine else None)

    @work(thread=True, exclusive=True, group="model", exit_on_error=False)
    def _load(self, config: EngineConfig, previous: ChatEngine | None) -> None:
        from localr1.engine.model_process import load_engine
        from localr1.models.choice import name_model, record_use

        # Free the old model first: two big models at once may not fit in memory.
        if previous is not None:
            self.engine = None
            previous.close()
        try:
            # With RPC workers the model is in a child process: a lost worker ends that
            # process, not the app (the turn fails with the reason, the next one reloads).
            engine = load_engine(config)
        except LocalR1Error as exc:
            self.post_message(ModelLoadFailed(config, str(exc)))
        except Exception as exc:  # llama.cpp can raise anything; report it, keep running
            self.post_message(ModelLoadFailed(config, f"{type(exc).__name__}: {exc}"))
        else:
            models_dir = self.paths.models_dir
            chosen = name_model(config.model_path, models_dir)
            # A GGUF opened by its path is remembered under the name the history records, so
            # reopening the conversation finds it; that and "last used" are niceties.
            with contextlib.suppress(Exception):
                chosen = record_use(chosen, models_dir, remember=True)
            from localr1.models.decode_options import draft_name

            self.post_message(ModelLoaded(engine, config, chosen.name,
                                          draft_name(config.draft, models_dir)))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.failed_configs.discard(message.config)
        self.engine = message.engine
        self._owns_engine = True
        self.engine_config = self._last_good_config = message.config
        self.model_path = message.config.model_path
        self.model_label = message.label
        self.draft_label = message.draft_label
        self.model_state = "ready"
        self.model_problem = None
        self._tell_chat()

    def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        self.failed_configs.add(message.config)
        self.model_state = "failed"
        self.model_problem = f"could not load {message.config.model_path.name} — ctrl+l: models"
        self.notify(message.error, title="Model not loaded", severity="error", markup=False,
                    timeout=15)
        fallback = self._last_good_config
        if self.engine is None and fallback is not None and fallback != message.config:
            # The old model was closed to make room; bring it back rather than leave none.
            self.notify(f"Back to {fallback.model_path.name}.", markup=False)
            self.load_model(fallback)
            return
        from localr1.models.library import installed_models
        from localr1.tui.screens.welcome import WelcomeScreen

        if self.engine is None and not installed_models(self.paths.models_dir) \
                and not isinstance(self.screen, WelcomeScreen):
            self._welcome(message.error)
        self._tell_chat()

    def _tell_chat(self) -> None:
        if self.chat is not None and self.chat.is_mounted:
            self.chat.model_changed()

    def action_models(self) -> None:
        from localr1.tui.screens.models import ModelsScreen

        if isinstance(self.screen, ModelsScreen):
            return

        def chosen(path: Path | None) -> None:
            if self.chat is not None and self.screen is self.chat:
                self.chat.prompt.focus()  # not back on a search result: typing goes on
            if path is not None and path != self.model_path or \
                    (path is not None and self.engine is None):
                self.use_model(path)

        # One instance for the app's life: a pull started there goes on while you chat.
        if not self.is_screen_installed("models"):
            self.install_screen(ModelsScreen(self.paths.models_dir, self.model_path,
                                             self.settings.default_model), "models")
        self.push_screen("models", chosen)

    def action_import_model(self) -> None:
        """The models screen with its import dialog open (from the command palette)."""
        self.action_models()
        self.get_screen("models").action_import_file()

    def action_help(self) -> None:
        from localr1.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # ---- settings --------------------------------------------------------------------------

    def settings_for(self, conversation: Conversation | None) -> ConversationSettings:
        if conversation is None:
            return self.new_chat_settings or ConversationSettings.defaults(self.settings)
        unsaved = self._unsaved_settings.get((conversation.id, conversation.created_at))
        return unsaved or ConversationSettings.of(conversation, self.settings)

    def save_conversation_settings(self, conversation: Conversation,
                                   settings: ConversationSettings) -> bool:
        """Save what F4 edits with the conversation (its other params stay); False after
        telling the user the write failed: the settings then hold in memory until a save
        works or the conversation is deleted."""
        system_prompt = settings.system_prompt \
            if settings.system_prompt != conversation.system_prompt else ...
        try:
            self.store.update_settings(conversation.id, settings.edited_params(),
                                       system_prompt=system_prompt)
        except LocalR1Error as exc:
            self.notify(f"Settings not saved: {exc}", severity="error", markup=False)
            self._unsaved_settings[conversation.id, conversation.created_at] = settings
            return False
        self._unsaved_settings.pop((conversation.id, conversation.created_at), None)
        return True

    def forget_conversation_settings(self, conversation_id: int) -> None:
        """After a delete."""
        for key in [key for key in self._unsaved_settings if key[0] == conversation_id]:
            del self._unsaved_settings[key]

    def set_keep_reasoning_open(self, value: bool) -> None:
        self.prefs.keep_reasoning_open = value
        try:
            self.prefs.save(self._prefs_path)
        except OSError as exc:
            self.notify(f"Could not save the preference: {exc}", severity="warning",
                        markup=False)

    # ---- command palette -------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's own "Keys" (its key panel) would be listed beside ours (F1's page).
        yield from (command for command in super().get_system_commands(screen)
                    if command.title != "Keys")
        chat = self.chat
        if chat is None or screen is not chat:
            return
        commands = [
            ("New chat", "Start a new conversation (ctrl+n)", chat.action_new_chat),
            ("Stop generating", "Keep the partial answer, marked stopped (esc)",
             chat.action_stop),
            ("Answer now", "End the thinking: the model answers at once (f5)",
             chat.action_answer_now),
            ("Regenerate", "A new answer to the last message; the old one stays (ctrl+r)",
             chat.action_regenerate),
            ("Edit last message", "Change your last message and resend it (ctrl+g)",
             chat.action_edit_last),
            ("Previous answer version", "alt+left",
             lambda: chat.action_answer_version(-1)),
            ("Next answer version", "alt+right", lambda: chat.action_answer_version(1)),
            ("Previous version of my message", "alt+up",
             lambda: chat.action_prompt_version(-1)),
            ("Next version of my message", "alt+down",
             lambda: chat.action_prompt_version(1)),
            ("Copy answer", "Copy the last answer to the clipboard (ctrl+b)",
             chat.action_copy_answer),
            ("Toggle reasoning", "Open or close the last answer's reasoning (ctrl+t)",
             chat.action_toggle_reasoning),
            ("Search history", "Focus the search box (ctrl+f)", chat.action_focus_search),
            ("Toggle sidebar", "Show or hide the conversation list (ctrl+\\)",
             chat.action_toggle_sidebar),
            ("Rename conversation", "f2", chat.action_rename),
            ("Pin or unpin conversation", "f3", chat.action_pin),
            ("Delete conversation", "With confirmation (f8)", chat.action_delete),
            ("Export to Markdown", "Write the conversation to a .md file (ctrl+s)",
             chat.action_export),
            ("Conversation settings", "Temperature, top p, context, system prompt… (f4)",
             chat.action_settings),
            ("Models", "Installed models: use one, delete one (ctrl+l)", self.action_models),
            ("Import a GGUF file", "Add a model file from disk under a name (i in the models "
             "screen)", self.action_import_model),
            ("Keys", "Every key binding (f1)", self.action_help),
        ]
        for title, help_text, callback in commands:
            yield SystemCommand(title, help_text, callback)
        for index in range(chat.code_block_count()):
            yield SystemCommand(f"Copy code block {index + 1}",
                                "From the last answer (ctrl+o cycles through them)",
                                lambda i=index: chat.action_copy_code(i))

    # ---- shutdown --------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop a running turn (its partial answer is saved as stopped), then close what this
        app opened. Safe to call twice."""
        turn = self.chat.turn if self.chat is not None else None
        if turn is not None:
            turn.cancel.set()
            if turn.running:
                turn.done.wait(SHUTDOWN_WAIT_SECONDS)
            sys.setswitchinterval(turn.switch_interval)
        if self._owns_engine and self.engine is not None and \
                (turn is None or not turn.running or turn.done.is_set()):
            with contextlib.suppress(Exception):
                self.engine.close()
            self.engine = None
        if self._owns_store and (turn is None or not turn.running or turn.done.is_set()):
            self.store.close()


def run_chat(model: str | None = None, conversation_id: int | None = None, *,
             remote: ChatEngine | None = None,
             typed_settings: dict[str, Any] | None = None) -> int:
    """`localr1 chat [--model NAME|PATH] [CONVERSATION_ID]`: resolve the model, open the
    history and run the TUI; returns the app's exit status (1 after a crash). Raises
    LocalR1Error (one line) for a bad model or id. `remote`: a model behind --endpoint
    answers instead of a local one. `typed_settings`: command-line values (--draft,
    --kv-type...) over config.toml's, the defaults of conversations that set none."""
    from localr1.models.choice import choose_model

    paths = app_paths()
    settings = replace(load_settings(paths.config_file), **(typed_settings or {}))
    store = Store.open(paths.db_path)
    try:
        conversation = store.conversation(conversation_id) if conversation_id is not None \
            else None
        chosen = None if remote is not None else choose_model(
            model, settings, paths, lenient=True,
            conversation_model=conversation.model if conversation else None)
        app = LocalR1App(store=store, engine=remote,
                         model_path=chosen.path if chosen else None,
                         model_label=chosen.name if chosen else
                         (remote.info.name if remote else None), settings=settings,
                         conversation_id=conversation_id, paths=paths)
        app.run()
        app.shutdown()
        return app.return_code or 0
    finally:
        store.close()
