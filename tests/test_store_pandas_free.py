"""The history opens without importing pandas even where pandas is installed (sqlite-utils
would import it, and pyarrow with it), and pandas stays importable afterwards."""

from __future__ import annotations

import os
import subprocess
import sys


def test_opening_the_store_leaves_pandas_alone(tmp_path):
    fake = tmp_path / "site" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("IMPORTED_FOR_REAL = True\n")
    script = (
        "import sys\n"
        "from localr1.store import Store\n"
        f"Store.open({str(tmp_path / 'h.db')!r}).close()\n"
        "assert 'pandas' not in sys.modules, 'sqlite-utils imported pandas'\n"
        "import pandas\n"
        "assert pandas.IMPORTED_FOR_REAL\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "site"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
