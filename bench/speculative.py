"""Speculative decoding's speed-up in localr1 against llama.cpp's llama-speculative-simple.

1. The synthetic pair of bench/synthetic_pair.py: a memory-bound ~1 GB target that thinks one
   fixed text without end and two 45 MB drafts with the same tokenizer, one right everywhere
   (100 % acceptance) and one wrong on every 11th token (62.5 % at 16 drafted tokens).
   Speed-up = tokens/s with the draft / tokens/s of the target alone:
   * localr1: `localr1 run --json --draft DRAFT.gguf --draft-max 16 --draft-min 0` over
     `localr1 run --json` without one (timings.tokens_per_second: the tokens after the first
     over the time from the first token to the last; acceptance from its "speculative" object);
   * llama.cpp: llama-speculative-simple --spec-type draft-simple --spec-draft-n-max 16
     --spec-draft-n-min 0 (its printed "decoded ... speed" and accept) over llama-completion
     on the target alone (eval runs / (eval + sampling time), as in bench/native_decode.py).
   Both with the same prompt text, R1 sampling (temperature 0.6, top-p 0.95, top-k and min-p
   off: the scripted models follow their text at any sampling), seed, threads and context.
   The figure is localr1's speed-up / llama.cpp's (target >= 0.9x). The two draft alike but
   not the same: llama-speculative-simple drafts 16 tokens every round, localr1 adapts the
   length (from 8, +2 after a round it fully accepts, -1 after a miss, at most --draft-max),
   so on the partial draft its acceptance is its own, not the designed 62.5 %.
2. `lookup` (prompt-lookup drafting, no second model) on SmolLM2 with a repeat-with-an-edit
   prompt at temperature 0 (so with and without the draft give the same tokens):
   `localr1 run --draft lookup` over `localr1 run`, beside llama-speculative-simple
   --spec-type ngram-simple (3-token keys, up to 16 drafted) over llama-completion at
   temperature 0.

Each round runs every configuration once, fresh processes, interleaved; medians over rounds.

    python bench/speculative.py [--rounds 3] [--tokens 128] [--threads N] [--llama-only]

--llama-only runs the llama.cpp side alone (to check the pair before localr1 drafts).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import synthetic_pair  # noqa: E402
from llama_cpp_tools import tool  # noqa: E402
from native_decode import CTX, completion_run, localr1_run, rendered_prompt  # noqa: E402
from run_overhead import smollm2_path  # noqa: E402

DRAFT_MAX = 16
PAIR_PROMPT = "hi"
LOOKUP_PROMPT = """Repeat this code with the variable result renamed to total:

def add(a, b):
    \"\"\"Return the sum of a and b.\"\"\"
    result = a + b
    print("The sum is", result)
    return result


def multiply(a, b):
    \"\"\"Return the product of a and b.\"\"\"
    result = a * b
    print("The product is", result)
    return result
"""
GREEDY = {"cli": ["--temperature", "0"], "llama": ["--temp", "0"]}
R1_SAMPLING = ["--temp", "0.6", "--top-p", "0.95", "--top-k", "0", "--min-p", "0",
               "--repeat-penalty", "1"]


def speculative_simple(target: Path, prompt: str, *, draft: Path | None, tokens: int,
                       threads: int, seed: int, sampling: list[str]) -> dict:
    """llama-speculative-simple with a draft model, or n-gram lookup when draft is None."""
    spec = ["-md", str(draft), "--spec-type", "draft-simple"] if draft else \
        ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
         "--spec-ngram-simple-size-m", str(DRAFT_MAX)]  # its default key of 12 never matches
    result = subprocess.run(
        [str(tool("llama-speculative-simple")), "-m", str(target), *spec, "-p", prompt,
         "-n", str(tokens), "--spec-draft-n-max", str(DRAFT_MAX), "--spec-draft-n-min", "0",
         "-t", str(threads), "-c", str(CTX), "-s", str(seed), *sampling],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log = result.stderr
    if result.returncode != 0:
        sys.exit(f"llama-speculative-simple failed:\n{log[-2000:]}")
    decoded = re.search(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.]+)", log)
    drafted = int(re.search(r"n_drafted = (\d+)", log)[1])
    accepted = int(re.search(r"n_accept\s+= (\d+)", log)[1])
    return {"tokens": int(decoded[1]), "tokens_per_second": float(decoded[3]),
            "acceptance": accepted / drafted if drafted else None}


def ours(model: Path, prompt: str, *, draft: str | None, tokens: int, threads: int, seed: int,
         extra: tuple[str, ...] = ()) -> dict:
    flags = (*extra, "--draft", draft, "--draft-max", str(DRAFT_MAX), "--draft-min", "0") \
        if draft else (*extra, "--draft", "none")
    data = localr1_run(model, prompt, max_tokens=tokens, threads=threads, seed=seed,
                       extra=flags)
    spec = data.get("speculative") or {}
    return {"tokens": data["usage"]["completion_tokens"],
            "tokens_per_second": data["timings"]["tokens_per_second"],
            "acceptance": spec.get("acceptance_rate")}


def show(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def run_rounds(configs: dict, rounds: int) -> dict[str, dict[str, float | None]]:
    """Run every (name -> callable(seed)) once per round, interleaved; medians per name."""
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for round_ in range(rounds):
        line = []
        for name, run in configs.items():
            result = run(1000 + round_)
            runs[name].append(result)
            line.append(f"{name} {result['tokens_per_second']:.2f} tok/s "
                        f"({result['tokens']} tok, accept {show(result.get('acceptance'))})")
        print(f"round {round_ + 1}: " + "; ".join(line), flush=True)
    medians = {}
    for name, results in runs.items():
        acceptance = [r["acceptance"] for r in results if r.get("acceptance") is not None]
        medians[name] = {
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in results),
            "acceptance": statistics.median(acceptance) if acceptance else None}
    return medians


def pair_bench(args: argparse.Namespace) -> None:
    target, full, partial = synthetic_pair.build_all()
    prompt = rendered_prompt(target, PAIR_PROMPT)
    common = {"tokens": args.tokens, "threads": args.threads}
    configs = {
        "llama-completion": lambda seed: completion_run(target, prompt, seed=seed, **common),
        "spec-simple 100%": lambda seed: speculative_simple(
            target, prompt, draft=full, seed=seed, sampling=R1_SAMPLING, **common),
        "spec-simple 62%": lambda seed: speculative_simple(
            target, prompt, draft=partial, seed=seed, sampling=R1_SAMPLING, **common)}
    if not args.llama_only:
        configs |= {
            "localr1": lambda seed: ours(target, PAIR_PROMPT, draft=None, seed=seed, **common),
            "localr1 100%": lambda seed: ours(target, PAIR_PROMPT, draft=str(full), seed=seed,
                                              **common),
            "localr1 62%": lambda seed: ours(target, PAIR_PROMPT, draft=str(partial),
                                             seed=seed, **common)}
    print(f"synthetic pair: {target.name} ({target.stat().st_size / 1e9:.2f} GB), drafts "
          f"{full.name}, {partial.name} ({full.stat().st_size / 1e6:.0f} MB)")
    m = run_rounds(configs, args.rounds)
    print(f"\nsynthetic pair, {args.tokens} tokens, draft max {DRAFT_MAX}, threads "
          f"{args.threads}, median of {args.rounds} rounds")
    print(f"  target alone: llama-completion {m['llama-completion']['tokens_per_second']:.2f} "
          "tok/s" + ("" if args.llama_only else
                     f", localr1 {m['localr1']['tokens_per_second']:.2f} tok/s"))
    for share, kind in (("100%", "full"), ("62%", "partial")):
        expected = synthetic_pair.expected_acceptance(kind, DRAFT_MAX)
        theirs = m[f"spec-simple {share}"]
        theirs_up = theirs["tokens_per_second"] / m["llama-completion"]["tokens_per_second"]
        line = (f"  draft {kind} (designed {expected:.1%}): llama-speculative-simple "
                f"{theirs['tokens_per_second']:.2f} tok/s, accept {show(theirs['acceptance'])}, "
                f"speed-up {theirs_up:.2f}x")
        if not args.llama_only:
            mine = m[f"localr1 {share}"]
            mine_up = mine["tokens_per_second"] / m["localr1"]["tokens_per_second"]
            line += (f" | localr1 {mine['tokens_per_second']:.2f} tok/s, accept "
                     f"{show(mine['acceptance'])}, speed-up {mine_up:.2f}x -> "
                     f"{mine_up / theirs_up:.3f}x llama.cpp's speed-up (target >= 0.9)")
        print(line)


def lookup_bench(args: argparse.Namespace) -> None:
    model = smollm2_path()
    prompt = rendered_prompt(model, LOOKUP_PROMPT)
    common = {"tokens": args.tokens, "threads": args.threads}
    configs = {
        "llama-completion": lambda seed: completion_greedy(model, prompt, seed=seed, **common),
        "spec-simple ngram": lambda seed: speculative_simple(
            model, prompt, draft=None, seed=seed, sampling=GREEDY["llama"], **common)}
    if not args.llama_only:
        configs |= {
            "localr1": lambda seed: ours(model, LOOKUP_PROMPT, draft=None, seed=seed,
                                         extra=tuple(GREEDY["cli"]), **common),
            "localr1 lookup": lambda seed: ours(model, LOOKUP_PROMPT, draft="lookup", seed=seed,
                                                extra=tuple(GREEDY["cli"]), **common)}
    print(f"\nlookup on {model.name}, temperature 0")
    m = run_rounds(configs, args.rounds)
    theirs_up = m["spec-simple ngram"]["tokens_per_second"] / \
        m["llama-completion"]["tokens_per_second"]
    line = (f"  llama-speculative-simple ngram-simple: accept "
            f"{show(m['spec-simple ngram']['acceptance'])}, speed-up {theirs_up:.2f}x")
    if not args.llama_only:
        mine_up = m["localr1 lookup"]["tokens_per_second"] / m["localr1"]["tokens_per_second"]
        line += (f" | localr1 --draft lookup: accept {show(m['localr1 lookup']['acceptance'])}, "
                 f"speed-up {mine_up:.2f}x")
    print(line)


def completion_greedy(model: Path, prompt: str, *, tokens: int, threads: int,
                      seed: int) -> dict:
    """llama-completion at temperature 0 (its rate as in native_decode)."""
    return completion_run(model, prompt, tokens=tokens, threads=threads, seed=seed,
                          sampling=GREEDY["llama"])


def main() -> None:
    from localr1.models.hardware import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--llama-only", action="store_true",
                        help="only llama.cpp's side (check the pair before localr1 drafts)")
    parser.add_argument("--skip-lookup", action="store_true")
    args = parser.parse_args()
    pair_bench(args)
    if not args.skip_lookup:
        lookup_bench(args)


if __name__ == "__main__":
    main()
