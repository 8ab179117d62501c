"""sqlite-utils imported without pandas.

sqlite-utils imports pandas when it is installed (for pandas column types, which localr1
never passes it), and pandas brings pyarrow: ~0.5 s more at every start, and on a CUDA
machine whose environment held PyTorch, pandas and pyarrow, llama.cpp then crashed while
loading a model (a segfault in llama_model_load_from_file, in `run` only: the command that
opens the history before the model). Import this module before sqlite_utils.
"""

from __future__ import annotations

import sys

if "sqlite_utils" not in sys.modules and "pandas" not in sys.modules:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # its import raises ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]  # pandas stays importable for everyone else
