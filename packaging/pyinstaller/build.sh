#!/usr/bin/env bash
# Build the one-folder PyInstaller bundle of localr1 and smoke-test it.
#
#     packaging/pyinstaller/build.sh            # -> dist/localr1/localr1
#
# Run it in the environment where localr1 and its llama-cpp-python build are installed (the
# bundle carries that build: CPU, CUDA or Metal, whichever it is). The smoke test needs the test
# extra (`pip install -e ".[test]"`) to make a fixture model, and tmux for the TUI check.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python -m pip install -q "pyinstaller>=6.10"
started=$(date +%s)
python -m PyInstaller --noconfirm --clean --log-level WARN \
  --workpath build/pyinstaller --distpath dist packaging/pyinstaller/localr1.spec
built=$(date +%s)
echo "built dist/localr1 in $((built - started)) s ($(du -sh dist/localr1 | cut -f1))"
python packaging/pyinstaller/smoke_test.py dist/localr1/localr1
echo "build and smoke test: $(($(date +%s) - started)) s"
