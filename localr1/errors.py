"""Errors a user can cause: each carries a one-line message that front ends print as is."""


class LocalR1Error(Exception):
    """Base for errors the CLI prints as one line (exit 1) and the TUI shows as a notification."""


class ConfigError(LocalR1Error):
    """A config or catalog file that cannot be read: the message names file, line and column."""


class ModelFileError(LocalR1Error):
    """A model file that is missing, not a GGUF, truncated, or otherwise unusable."""


class ModelLoadError(LocalR1Error):
    """llama.cpp refused to load a model that looked valid to us."""


class InsufficientMemoryError(LocalR1Error):
    """The model (weights plus KV cache) does not fit in this machine's free memory."""


class ChatFormatError(LocalR1Error):
    """No way to turn messages into a prompt for this model."""


class ContextOverflowError(LocalR1Error):
    """Even the newest user message alone does not fit in the context window. The figures,
    when known, let each front end word its own advice (CLI flags, or the app's settings)."""

    def __init__(self, message: str, *, prompt_tokens: int | None = None,
                 n_ctx: int | None = None, reserved_tokens: int | None = None) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        self.reserved_tokens = reserved_tokens


class GenerationError(LocalR1Error):
    """llama.cpp failed in the middle of a turn (e.g. a decode error)."""


class DraftModelError(LocalR1Error):
    """The draft model cannot draft for this model: the message names what differs."""
