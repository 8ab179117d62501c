"""llama.cpp's own tools (llama-completion, llama-bench, llama-batched-bench,
llama-speculative-simple), built from the llama.cpp source inside the llama-cpp-python sdist of
the installed version, with the same CMake flags, and cached outside the repository.

The benchmarks compare localr1 with these: the same ggml code and compiler flags, so the ratio
is the cost of our decode loop, not of a different build.

    python bench/llama_cpp_tools.py            # build (once) and print the tools' folder
    python bench/llama_cpp_tools.py --rpc      # the RPC variant: llama-bench, ggml-rpc-server

The cache is ~/.cache/localr1-bench/llama.cpp-<version>-<flags hash>/ (LOCALR1_BENCH_CACHE
moves it; LOCALR1_BENCH_TOOLS uses tools built elsewhere). CMAKE_ARGS is read like pip reads
it for llama-cpp-python; unset, the portable AVX2 flags of .ci/run are used.

The RPC variant (bench/rpc_overhead.py) is the same build with -DGGML_RPC=ON added, in its own
folder (llama.cpp-<version>-rpc-<flags hash>/, or LOCALR1_BENCH_RPC_TOOLS), and only the two
targets it needs, since a second full build takes long on 2 cores.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

TOOLS = ("llama-completion", "llama-bench", "llama-batched-bench", "llama-speculative-simple")
RPC_TOOLS = ("llama-bench", "ggml-rpc-server")
CI_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                 "-DGGML_BMI2=ON -DLLAVA_BUILD=OFF")


def cache_root() -> Path:
    default = Path.home() / ".cache" / "localr1-bench"
    return Path(os.environ.get("LOCALR1_BENCH_CACHE") or default)


def cmake_args() -> list[str]:
    return shlex.split(os.environ.get("CMAKE_ARGS") or CI_CMAKE_ARGS)


def tools_dir() -> Path:
    """The folder holding the built tools; builds them first when they are missing.
    LOCALR1_BENCH_TOOLS names a folder of tools built elsewhere (a CUDA build, say)."""
    if os.environ.get("LOCALR1_BENCH_TOOLS"):
        return Path(os.environ["LOCALR1_BENCH_TOOLS"])
    return _built(TOOLS, cmake_args(), "")


def rpc_tools_dir() -> Path:
    """The RPC variant's folder (llama-bench with --rpc, ggml-rpc-server), built when missing;
    LOCALR1_BENCH_RPC_TOOLS names one built elsewhere."""
    if os.environ.get("LOCALR1_BENCH_RPC_TOOLS"):
        return Path(os.environ["LOCALR1_BENCH_RPC_TOOLS"])
    return _built(RPC_TOOLS, [*cmake_args(), "-DGGML_RPC=ON"], "rpc-")


def _built(targets: tuple[str, ...], flags: list[str], variant: str) -> Path:
    version = importlib.metadata.version("llama-cpp-python")
    key = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:10]
    root = cache_root() / f"llama.cpp-{version}-{variant}{key}"
    bin_dir = root / "build" / "bin"
    if all((bin_dir / target).exists() for target in targets):
        return bin_dir
    source = _source(version, root)
    build = root / "build"
    _log(f"building {', '.join(targets)} from {source} (a few minutes on 2 cores)")
    # LLAVA_BUILD is llama-cpp-python's own option; cmake ignores it here with a warning.
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DBUILD_SHARED_LIBS=OFF",
                    *flags], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2),
                    "--target", *targets], check=True, stdout=subprocess.DEVNULL)
    return bin_dir


def tool(name: str) -> Path:
    return tools_dir() / name


def _source(version: str, root: Path) -> Path:
    source = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if source.is_dir():
        return source
    # Another variant's extracted sdist of this version serves as well (the build is outside).
    shared = sorted(cache_root().glob(f"llama.cpp-{version}-*/{source.relative_to(root)}"))
    if shared:
        return shared[0]
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        _log(f"downloading the llama-cpp-python {version} sdist")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "--no-build-isolation", "-d", str(root),
                        f"llama-cpp-python=={version}"], check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(sdist) as archive:
        archive.extractall(root, filter="data")
    return source


def _log(message: str) -> None:
    print(f"llama_cpp_tools: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(rpc_tools_dir() if "--rpc" in sys.argv[1:] else tools_dir())
