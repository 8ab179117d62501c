"""Download throughput: localr1's resumable, hashing downloader vs plain `hf_hub_download`.

Both fetch the same 1 GB file from the loopback Hub of the tests (tests/hub_server.py, run in
its own process so its GIL never competes with the client), into fresh folders, interleaved,
three runs each after an untimed warm-up round; the median of each is compared. localr1 also
computes the sha256 (on a second thread), verifies it against the Hub's and fsyncs before moving
the file into place, as `pull` does; `hf_hub_download` only checks the size and leaves its
writes in the page cache (the benchmark syncs between runs, untimed, so neither run pays for
the other's writeback).

    python bench/pull_throughput.py [--size-mb 1024] [--runs 3]

The file is sparse (zeros served from the page cache), so the disk is not what is measured.
Target: localr1 >= 0.9 x hf_hub_download.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "bench/throughput-GGUF"
FILENAME = "big-Q8_0.gguf"

SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.hub_server import HubServer
server = HubServer()
server.add_file(sys.argv[2], sys.argv[3], Path(sys.argv[4]), sha256=sys.argv[5])
server.start()
print(server.url, flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
"""


def zeros_sha256(size: int) -> str:
    digest, block = hashlib.sha256(), bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(block)
    digest.update(bytes(size & ((1 << 20) - 1)))
    return digest.hexdigest()


def run_localr1(workdir: Path) -> float:
    from localr1.models.catalog import load_catalog
    from localr1.models.hub_download import download
    from localr1.models.hub_resolve import resolve_pull

    started = time.perf_counter()
    plan = resolve_pull(f"{REPO}/{FILENAME}", load_catalog(user_file=Path("/nonexistent")))
    (downloaded,) = download(plan, workdir)  # what `localr1 pull` runs, verification included
    elapsed = time.perf_counter() - started
    assert downloaded.sha256 == plan.files[0].sha256
    return elapsed


def run_hf_hub_download(workdir: Path, endpoint: str) -> float:
    from huggingface_hub import hf_hub_download

    started = time.perf_counter()
    hf_hub_download(REPO, FILENAME, cache_dir=workdir, endpoint=endpoint)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mb << 20

    scratch = Path(tempfile.mkdtemp(prefix="localr1-bench-"))
    source = scratch / "source.gguf"
    with open(source, "wb") as f:
        f.truncate(size)  # sparse: served from the page cache
    sha = zeros_sha256(size)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), REPO, FILENAME,
                               str(source), sha], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    os.environ.update(HF_ENDPOINT=url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1",
                      HF_HUB_DISABLE_TELEMETRY="1", LOCALR1_HOME=str(scratch / "home"),
                      HF_HOME=str(scratch / "hf-home"))
    os.environ.pop("HF_TOKEN", None)
    sys.path.insert(0, str(ROOT))
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False  # in case HF_HUB_OFFLINE=1 was set when it was imported

    times: dict[str, list[float]] = {"localr1": [], "hf_hub_download": []}
    try:
        for run in range(-1, args.runs):  # run -1 warms up imports, connections, page cache
            order = ["localr1", "hf_hub_download"]
            if run % 2:
                order.reverse()  # interleave, alternating who goes first
            for name in order:
                workdir = scratch / f"{name}-{run}"
                workdir.mkdir()
                os.sync()  # start from a clean page cache: no writeback left by the last run
                elapsed = run_localr1(workdir) if name == "localr1" else \
                    run_hf_hub_download(workdir, url)
                shutil.rmtree(workdir)
                if run < 0:
                    continue
                times[name].append(elapsed)
                print(f"run {run + 1} {name:16s} {size / elapsed / 1e6:8.1f} MB/s "
                      f"({elapsed:.2f} s)", flush=True)
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)

    medians = {name: size / statistics.median(t) / 1e6 for name, t in times.items()}
    ratio = medians["localr1"] / medians["hf_hub_download"]
    print(f"\n{args.size_mb} MiB file, median of {args.runs} runs, {os.cpu_count()} CPUs:")
    for name, rate in medians.items():
        print(f"  {name:16s} {rate:8.1f} MB/s")
    print(f"  ratio localr1 / hf_hub_download = {ratio:.2f} (target >= 0.90; localr1 also "
          "hashes and verifies sha256)")


if __name__ == "__main__":
    main()
