"""PyInstaller hook for localr1 itself: the files it reads at run time (models.toml, the TUI's
.tcss, the chat templates) and the modules the CLI and TUI import lazily to start fast."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("localr1")
datas = collect_data_files("localr1")
