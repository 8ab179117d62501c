"""PyInstaller hook for Textual: its widgets are imported lazily by name
(`from textual.widgets import Markdown` goes through a module __getattr__), so the import
analysis misses them; the same holds for the code-highlighting lexers Pygments finds by name."""

from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("textual.widgets") + collect_submodules("pygments.lexers") \
    + collect_submodules("pygments.styles") + collect_submodules("pygments.formatters")
datas = collect_data_files("textual")
