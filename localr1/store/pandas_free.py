"""sqlite-utils imported without pandas.

sqlite-utils imports pandas when it is installed (for pandas column types, which localr1
never passes it), and pandas brings pyarrow: 0.2-0.3 s more at every start (measured), and
native libraries in a process that then loads llama.cpp. On a CUDA machine whose environment
held PyTorch, pandas and pyarrow, `run` (which opens the history before the model) crashed
inside llama_model_load_from_file while `doctor --model` (which loads the model first) did
not; keeping pandas out is the fix we could make, not yet confirmed on that machine.
Import this module before sqlite_utils.
"""

from __future__ import annotations

import sys

if "sqlite_utils" not in sys.modules and "pandas" not in sys.modules:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # its import raises ImportError
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]  # pandas stays importable for everyone else
