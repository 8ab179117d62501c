"""Time from starting `localr1 chat` to its first painted screen, with 10,000 conversations.

The history is filled with bulk SQL through the store's own schema (the store creates and
migrates the file; FTS triggers index every row as usual). Then `run_chat` starts in a child
process on a real pseudo-terminal (120x40), exactly as `localr1 chat` would, and we read what
it writes until the screen shows the newest conversation in the sidebar and the key bar: that
is the first painted screen. The model (a tiny scripted R1 GGUF) loads in a worker, so the
time until its name is in the header is reported too, separately. One warm-up start is not
counted: it fills the bytecode cache, as `pip install` does for an installed app.

    python bench/tui_startup.py [--conversations 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pty
import select
import signal
import sqlite3
import statistics
import struct
import sys
import tempfile
import termios
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from localr1.store import Store  # noqa: E402

NEWEST_TITLE = "Newest conversation in the bench"
CHILD = ("import sys; from localr1.tui.app import run_chat; run_chat(sys.argv[1], None)")


def fill(db_path: Path, count: int) -> None:
    Store.open(db_path).close()  # schema, migrations, FTS triggers
    start = datetime.now(UTC) - timedelta(days=400)
    with sqlite3.connect(db_path) as db:
        for i in range(count):
            when = (start + timedelta(minutes=57 * i)).isoformat(timespec="microseconds")
            title = NEWEST_TITLE if i == count - 1 else f"Conversation {i}: about topic {i % 97}"
            cid = db.execute(
                "INSERT INTO conversations (title, model, params, created_at, updated_at) "
                "VALUES (?, 'r1', '{}', ?, ?)", (title, when, when)).lastrowid
            user = db.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, created_at) "
                "VALUES (?, NULL, 'user', ?, ?)", (cid, f"question {i} about topic {i % 97}",
                                                   when)).lastrowid
            answer = db.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, reasoning, "
                "finish_reason, created_at) VALUES (?, ?, 'assistant', ?, ?, 'stop', ?)",
                (cid, user, f"An answer about topic {i % 97}, number {i}.",
                 "Some reasoning first.", when)).lastrowid
            db.execute("UPDATE conversations SET active_leaf_id = ? WHERE id = ?", (answer, cid))


def first_paint(home: Path, model: Path, size: tuple[int, int]) -> tuple[float, float | None]:
    """Seconds from spawning the app to (its first full screen, the model's name shown)."""
    env = {**os.environ, "LOCALR1_HOME": str(home), "TERM": "xterm-256color",
           "COLUMNS": str(size[0]), "LINES": str(size[1])}
    # As an installed app runs: pip compiles the package to bytecode at install time, so do not
    # forbid the .pyc cache here (some shells set this), and the warm-up run below fills it.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app on a terminal
        os.execve(sys.executable, [sys.executable, "-c", CHILD, str(model)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    seen = b""
    painted = model_shown = None
    try:
        while time.perf_counter() - started < 30:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            seen += chunk
            now = time.perf_counter() - started
            if painted is None and NEWEST_TITLE[:20].encode() in seen and b"palette" in seen:
                painted = now
            if model_shown is None and b"scripted R1" in seen:
                model_shown = now
            if painted is not None and model_shown is not None:
                break
        os.write(fd, b"\x11")  # ctrl+q
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if select.select([fd], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    os.read(fd, 65536)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if painted is None:
        raise SystemExit("the app never painted its first screen:\n"
                         + seen[-2000:].decode("utf-8", "replace"))
    return painted, model_shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from tests.fixtures.scripted_models import build_scripted_model

    home = Path(tempfile.mkdtemp(prefix="tui-startup-"))
    started = time.perf_counter()
    fill(home / "localr1.db", args.conversations)
    print(f"filled {args.conversations:,} conversations (2 messages each) in "
          f"{time.perf_counter() - started:.1f} s")
    model = build_scripted_model(home / "scripted-r1.gguf", "prefill")
    first_paint(home, model, (120, 40))  # warm-up: bytecode cache and OS file cache
    paints, models = [], []
    for run in range(args.runs):
        painted, model_shown = first_paint(home, model, (120, 40))
        paints.append(painted)
        if model_shown is not None:
            models.append(model_shown)
        print(f"run {run + 1}: first painted screen {painted * 1000:.0f} ms, model loaded and "
              f"named in the header {model_shown * 1000 if model_shown else float('nan'):.0f} ms",
              flush=True)
    paint = statistics.median(paints)
    print(f"\n{args.conversations:,} conversations, median of {args.runs}: first painted screen "
          f"{paint * 1000:.0f} ms (must be < 1000 ms): {'OK' if paint < 1 else 'TOO SLOW'}; "
          f"model ready {statistics.median(models) * 1000:.0f} ms")
    if paint >= 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
