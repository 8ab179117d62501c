"""`localr1 serve` against the local commands on the same model and prompts.

1. One client: a streamed request to `serve` vs `localr1 run --json` (tokens/s of the decode,
   and time to first token). `run`'s figures come from its own --json timings (in-process,
   from the call to the first token); the server's are measured by the client, from sending
   the request to the first streamed token and between the first and last tokens, so HTTP,
   JSON and the event hand-off count against the server.
   `run`'s first token comes from a fresh process (its first llama_decode is cold), the
   server's from a warm one; so the bench also prints the server's own share of its time to
   first token: the client's figure less the decoder's (the slot's start to its first token).
2. Four clients at once vs `localr1 batch --parallel 4` on the same four prompts: generated
   tokens / wall time (the server's from the first request sent to the last token received;
   batch's from its summary line, model loading excluded on both sides).

The server runs for the whole bench with --parallel 4; the local commands run in fresh
processes, interleaved with the server's rounds; figures are medians over --runs.

    python bench/serve_throughput.py [--runs 5] [--max-tokens 128] [--model GGUF]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_overhead import smollm2_path  # noqa: E402

PROMPTS = ["Write a short essay about the ocean.", "Write a short essay about bees.",
           "Write a short essay about volcanoes.", "Write a short essay about tea."]
SEED = 1


def localr1(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localr1", *args], capture_output=True,
                          text=True, env=env, check=True)


def run_once(model: Path, prompt: str, max_tokens: int, threads: int, env: dict) -> dict:
    result = localr1("run", "--no-log", "--json", "-m", str(model), "--seed", str(SEED),
                     "--max-tokens", str(max_tokens), "--threads", str(threads), prompt, env=env)
    data = json.loads(result.stdout)
    return {"tokens_per_second": data["timings"]["tokens_per_second"],
            "ttft_ms": data["timings"]["ttft_ms"]}


def batch_once(model: Path, max_tokens: int, threads: int, env: dict, folder: Path) -> float:
    source = folder / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n"
                              for i, p in enumerate(PROMPTS)))
    result = localr1("batch", str(source), "-m", str(model), "--parallel", "4", "--seed",
                     str(SEED), "--max-tokens", str(max_tokens), "--threads", str(threads),
                     env=env)
    return float(re.search(r"\(([\d.]+) tokens/s\)", result.stderr).group(1))


def stream_once(client: openai.OpenAI, prompt: str, max_tokens: int) -> dict:
    model = loaded_model(client)
    sent = time.perf_counter()
    first = last = None
    tokens, decoder_ttft_ms = 0, None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True,
        max_tokens=max_tokens, seed=SEED, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
            decoder_ttft_ms = (chunk.model_extra or {}).get("timings", {}).get("ttft_ms")
        if chunk.choices and (chunk.choices[0].delta.content or
                              (chunk.choices[0].delta.model_extra or {}).get("reasoning")):
            last = time.perf_counter()
            first = first or last
    return {"tokens": tokens, "sent": sent, "first": first, "last": last,
            "tokens_per_second": (tokens - 1) / (last - first) if last > first else 0.0,
            "ttft_ms": (first - sent) * 1000, "decoder_ttft_ms": decoder_ttft_ms}


_LOADED: list[str] = []


def loaded_model(client: openai.OpenAI) -> str:
    if not _LOADED:  # asked once, before the timed requests
        _LOADED.append(client.models.list().data[0].id)  # the loaded model comes first
    return _LOADED[0]


def concurrent_once(client: openai.OpenAI, max_tokens: int) -> float:
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        results = list(pool.map(lambda p: stream_once(client, p, max_tokens), PROMPTS))
    wall = max(r["last"] for r in results) - min(r["sent"] for r in results)
    return sum(r["tokens"] for r in results) / wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    """Until /health answers 200; a server that exits first (a busy port, a bad model) ends
    the wait at once with its exit status."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        threading.Event().wait(0.1)
    raise SystemExit("the server never became healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    model = args.model or smollm2_path()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "LOCALR1_HOME": home}
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "localr1", "serve", "-m", str(model), "--port", str(port),
             "--parallel", "4", "--ctx", "2048", "--threads", str(args.threads)],
            env=env, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server)
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
            stream_once(client, "hi", 4)  # warm up
            runs, serves, batches, fours = [], [], [], []
            for i in range(args.runs):
                prompt = PROMPTS[i % len(PROMPTS)]
                runs.append(run_once(model, prompt, args.max_tokens, args.threads, env))
                serves.append(stream_once(client, prompt, args.max_tokens))
                batches.append(batch_once(model, args.max_tokens, args.threads, env,
                                          Path(home)))
                fours.append(concurrent_once(client, args.max_tokens))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
    med = statistics.median
    run_tps, serve_tps = med(r["tokens_per_second"] for r in runs), \
        med(s["tokens_per_second"] for s in serves)
    run_ttft, serve_ttft = med(r["ttft_ms"] for r in runs), med(s["ttft_ms"] for s in serves)
    print(f"model {model.name}, {args.runs} runs, up to {args.max_tokens} tokens, "
          f"{args.threads} threads (medians)")
    print(f"one client   run {run_tps:7.1f} tok/s  serve {serve_tps:7.1f} tok/s  "
          f"ratio {serve_tps / run_tps:.2f}")
    print(f"first token  run {run_ttft:7.1f} ms     serve {serve_ttft:7.1f} ms     "
          f"overhead {serve_ttft - run_ttft:+.1f} ms")
    serving = med(s["ttft_ms"] - s["decoder_ttft_ms"] for s in serves)
    print(f"             serve's own share of its first token (HTTP, checks, prompt, queue): "
          f"{serving:.1f} ms")
    print(f"4 clients    batch --parallel 4 {med(batches):7.1f} tok/s  "
          f"serve {med(fours):7.1f} tok/s  ratio {med(fours) / med(batches):.2f}")


if __name__ == "__main__":
    main()
