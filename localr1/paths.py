"""Where localr1 keeps its files: platformdirs defaults, relocatable by environment variables.

LOCALR1_HOME moves everything under one folder (handy for tests and portable installs);
LOCALR1_MODELS, LOCALR1_DB and LOCALR1_CONFIG then override single locations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "localr1"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    cache_dir: Path
    models_dir: Path
    db_path: Path
    config_file: Path

    def as_dict(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.__dict__.items()}


def app_paths(env: Mapping[str, str] | None = None) -> AppPaths:
    env = os.environ if env is None else env
    home = env.get("LOCALR1_HOME")
    if home:
        root = Path(home).expanduser()
        config_dir, data_dir, cache_dir = root, root, root / "cache"
    else:
        import platformdirs  # imported here so `localr1 --help` stays cheap

        config_dir = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
        data_dir = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
        cache_dir = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    models_dir = _override(env, "LOCALR1_MODELS", data_dir / "models")
    db_path = _override(env, "LOCALR1_DB", data_dir / "localr1.db")
    config_file = _override(env, "LOCALR1_CONFIG", config_dir / "config.toml")
    return AppPaths(config_dir, data_dir, cache_dir, models_dir, db_path, config_file)


def _override(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = env.get(name)
    return Path(value).expanduser() if value else default
