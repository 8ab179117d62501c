"""`localr1 run --cid` on a 10,000-message conversation: time to the first token.

Builds the scripted R1 test model (4,096-token context) and a real store file holding one
conversation of 10,000 messages (about 30-90 words each), then runs `localr1 run --cid ID
QUESTION` in fresh processes and reports the median time from the process start to the first
reasoning token on stderr (target < 1 s), next to the turn's own ttft from `--json` (fitting the
history to the context plus prompt processing). In-process, it also times the store's branch
read, Engine.prepare_prompt and tokenizing every message once, to show where the time goes.

    python bench/continue_long.py [--messages 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 1.0
QUESTION = "and what about the last point?"
VOCABULARY = "the a of to and in is it that for you with on as are this be can by or not model \
context prompt reasoning token memory thread sqlite python answer question step river mountain \
bread garden music budget travel robot paint light vector"


def text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choices(VOCABULARY.split(), k=n_words)).capitalize() + "."


def fill(db_path: Path, n_messages: int) -> int:
    from localr1.store import Store

    rng = random.Random(1)
    with Store.open(db_path) as store:
        conversation = store.create_conversation(model="tiny-r1")
        for n in range(n_messages):
            if n % 2 == 0:
                store.add_message(conversation.id, "user", text(rng, rng.randint(20, 40)))
            else:
                store.add_message(conversation.id, "assistant", text(rng, rng.randint(40, 90)),
                                  reasoning=text(rng, 60), model="tiny-r1")
    return conversation.id


def first_token_seconds(cmd: list[str], env: dict[str, str]) -> float:
    """Process start to the first model text on stderr (notes are lines starting 'localr1:')."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    buffer = b""
    try:
        while chunk := os.read(process.stderr.fileno(), 4096):
            buffer += chunk
            lines = buffer.split(b"\n")
            model_text = [line for line in lines if line and not line.startswith(b"localr1:")]
            # A note may still be arriving: only a line that cannot become one counts.
            if any(not b"localr1:".startswith(line[:8]) for line in model_text):
                return time.perf_counter() - started
        raise RuntimeError(f"no model text on stderr: {buffer.decode(errors='replace')}")
    finally:
        process.wait()


def in_process_figures(model: Path, db_path: Path, cid: int) -> None:
    from localr1.engine.events import GenerationParams
    from localr1.engine.llama_engine import Engine, EngineConfig
    from localr1.store import Store

    with Store.open(db_path) as store:
        started = time.perf_counter()
        history = [m.to_chat_message() for m in store.branch(cid)]
        branch_s = time.perf_counter() - started
    with Engine.load(EngineConfig(model, context_size=4096)) as engine:
        engine.prepare_prompt(history[:2] + history[-1:], GenerationParams())  # warm up
        started = time.perf_counter()
        prompt = engine.prepare_prompt(history, GenerationParams())
        prepare_s = time.perf_counter() - started
        started = time.perf_counter()
        for message in history:
            engine.count_message_tokens({"role": message.role, "content": message.content})
        tokenize_all_s = time.perf_counter() - started
    print(f"in-process, {len(history):,} messages: store.branch {branch_s * 1000:.0f} ms, "
          f"Engine.prepare_prompt {prepare_s * 1000:.0f} ms (kept {len(prompt.messages)}, "
          f"{len(prompt.tokens)} tokens), tokenizing every message once "
          f"{tokenize_all_s * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from tests.fixtures.scripted_models import build_scripted_model

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = build_scripted_model(home / "tiny-r1.gguf", "prefill")
        env = {**os.environ, "LOCALR1_HOME": str(home)}
        from localr1.paths import app_paths

        db_path = app_paths(env).db_path
        db_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        cid = fill(db_path, args.messages - 1)  # the question makes it args.messages
        print(f"stored {args.messages - 1:,} messages in {time.perf_counter() - started:.1f} s")
        in_process_figures(model, db_path, cid)
        run = [sys.executable, "-m", "localr1", "run", "-m", str(model), "--cid", str(cid)]
        first_token, ttft, dropped = [], [], None
        for _ in range(args.runs):
            first_token.append(first_token_seconds([*run, QUESTION], env))
            out = subprocess.run([*run, "--json", QUESTION], env=env, capture_output=True,
                                 text=True, check=True).stdout
            data = json.loads(out)
            ttft.append(data["timings"]["ttft_ms"] / 1000)
            dropped = data["dropped_messages"]
    start_s, ttft_s = statistics.median(first_token), statistics.median(ttft)
    print(f"localr1 run --cid, {args.messages:,}+ messages ({dropped:,} left out), median of "
          f"{args.runs}:")
    print(f"  process start to first token: {start_s:.2f} s  (target < {TARGET_S:.0f} s: "
          f"{'PASS' if start_s < TARGET_S else 'FAIL'})")
    print(f"  turn ttft (fit + prompt processing): {ttft_s:.3f} s")
    return 0 if start_s < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
