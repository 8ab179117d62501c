"""The store's one error type (kept free of sqlite so the CLI can import it cheaply)."""

from __future__ import annotations

from localr1.errors import LocalR1Error


class StoreError(LocalR1Error):
    """The history database cannot be opened, read or written, or an id/import is invalid."""
