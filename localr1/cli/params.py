"""Command-line option checks shared by `run` and `batch`.

Option values are checked by config.checked_setting, the same check config.toml and batch
params get, so NaN, inf and out-of-range numbers are refused alike everywhere.
"""

from __future__ import annotations

from typing import Any

import click


def setting_check(key: str):
    """A click option callback checking the value as the setting `key` (None passes)."""

    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        from localr1.config import checked_setting

        try:
            return checked_setting(key, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return check
