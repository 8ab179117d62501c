"""The TUI's own preferences (not generation settings): a small JSON file next to the history.

config.toml is strict about its keys and belongs to the core; until it grows a `[tui]`
table these live in `<data dir>/tui.json`. Unreadable files fall back to defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass
class TuiPrefs:
    keep_reasoning_open: bool = False  # do not collapse the reasoning when the answer starts

    @classmethod
    def load(cls, path: Path) -> TuiPrefs:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and isinstance(v, bool)} \
            if isinstance(data, dict) else {}
        return cls(**values)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
