"""Hyperparameters llama.cpp asserts on are refused by the header check, in one line.

The fuzz test feeds every file the check accepts to real llama.cpp in a long-lived child
process: an accepted file must load or be refused with an error, never abort the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.errors import ModelFileError
from localr1.models.gguf_checks import LLAMA_MAX_LAYERS, MAX_CONTEXT_LENGTH
from localr1.models.gguf_header import read_gguf_header
from tests.fixtures.odd_models import write_tiny_model


def refused(path: Path, key: str) -> str:
    with pytest.raises(ModelFileError) as info:
        read_gguf_header(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: unusable model: "), message
    assert key in message, message
    return message


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ({"block_count": 0}, "qwen2.block_count is 0"),
        ({"block_count": 600}, "qwen2.block_count is 600"),
        ({"context_length": 0}, "qwen2.context_length is 0"),
        ({"context_length": 2**31}, "qwen2.context_length is 2147483648"),
        ({"context_length": 2**32 - 1}, "qwen2.context_length is 4294967295"),
        ({"context_length": 2**40}, "qwen2.context_length"),  # written as uint64
        ({"embedding_length": 0}, "qwen2.embedding_length is 0"),
        ({"attention.head_count": 0}, "qwen2.attention.head_count is 0"),
        ({"attention.head_count_kv": 0}, "qwen2.attention.head_count_kv is 0"),
        ({"attention.head_count_kv": 3}, "does not divide attention.head_count 4"),
        ({"attention.head_count": 3, "attention.head_count_kv": 1},
         "does not divide embedding_length 64"),
        ({"block_count": 2, "attention.head_count": [4, 0]}, "qwen2.attention.head_count is 0"),
        ({"attention.key_length": 0}, "qwen2.attention.key_length is 0"),
        ({"attention.key_length": 32}, "qwen2.attention.value_length is 16 (differs from"),
        ({"rope.dimension_count": 8}, "qwen2.rope.dimension_count is 8"),
        ({"rope.scaling.type": "sideways"}, "qwen2.rope.scaling.type is 'sideways'"),
        ({"expert_used_count": 2}, "qwen2.expert_used_count is 2"),
        ({"expert_count": 2000, "expert_used_count": 2}, "qwen2.expert_count is 2000"),
        ({"nextn_predict_layers": 2}, "qwen2.nextn_predict_layers is 2"),
    ],
)
def test_values_llama_cpp_asserts_on_are_refused(tmp_path, metadata, key):
    refused(write_tiny_model(tmp_path / "odd.gguf", metadata=metadata), key)


def test_a_model_without_vocabulary_is_refused(tmp_path):
    path = write_tiny_model(tmp_path / "novocab.gguf", tokenizer="none")
    with pytest.raises(ModelFileError, match="no vocabulary"):
        read_gguf_header(path)


def test_limits_themselves_are_accepted(tmp_path):
    path = write_tiny_model(tmp_path / "edge.gguf", metadata={
        "block_count": LLAMA_MAX_LAYERS, "context_length": MAX_CONTEXT_LENGTH,
        "attention.key_length": 32, "attention.value_length": 32})
    header = read_gguf_header(path)
    assert header.block_count == 512 and header.context_length == 2**31 - 1


def test_engine_load_gives_one_line_for_block_count_zero(tmp_path):
    path = write_tiny_model(tmp_path / "zero.gguf", metadata={"block_count": 0})
    with pytest.raises(ModelFileError, match=r"qwen2\.block_count is 0 \(llama.cpp needs 1 to"):
        Engine.load(EngineConfig(path))


def test_unchecked_architectures_are_left_to_llama_cpp(tmp_path):
    from tests.fixtures.odd_models import write_unknown_architecture_model

    header = read_gguf_header(write_unknown_architecture_model(tmp_path / "odd.gguf"))
    assert header.architecture == "frobnicator"


# ---- fuzz: whatever the check accepts, llama.cpp does not abort on ---------------------------

_LOADER = r"""
import sys, llama_cpp
from localr1.engine import ggml_abort
ggml_abort.install()
for line in sys.stdin:
    try:
        llama_cpp.Llama(model_path=line.strip(), n_ctx=32, n_threads=1, verbose=False).close()
        print("loaded", flush=True)
    except ValueError:
        print("refused", flush=True)
"""


class Loader:
    """A child process that loads GGUFs with llama.cpp, one path per line, without our check."""

    def __init__(self) -> None:
        self.proc = self._start()

    @staticmethod
    def _start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _LOADER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def load(self, path: Path) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:  # the child died: llama.cpp aborted; a fresh one serves the next file
            _, err = self.proc.communicate()
            code, self.proc = self.proc.returncode, self._start()
            pytest.fail(f"llama.cpp aborted on {path} (exit {code}): {err.strip()}")
        return answer

    def close(self) -> None:
        _, err = self.proc.communicate()
        assert self.proc.returncode == 0, err


@pytest.fixture(scope="module")
def loader():
    child = Loader()
    yield child
    child.close()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_EDGES = [0, 1, 2, 3, 4, 8, 16, 32, 64, 511, 512, 513, 2**31 - 1, 2**31, 2**32 - 1]
# Edge values, powers of two that often fit the tiny model's tensors, anything 32-bit, uint64.
_VALUES = st.one_of(st.none(), st.sampled_from(_EDGES), st.sampled_from([1, 2, 4, 8, 16, 32, 64]),
                    st.integers(0, 130), st.integers(0, 2**32 - 1), st.integers(2**32, 2**40))
_FIELDS = ("block_count", "context_length", "embedding_length", "attention.head_count",
           "attention.head_count_kv", "attention.key_length", "attention.value_length",
           "rope.dimension_count")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({}, optional=dict.fromkeys(_FIELDS, _VALUES)))
def test_fuzz_accepted_headers_never_abort_llama_cpp(loader, fuzz_dir, values):
    with tempfile.NamedTemporaryFile(dir=fuzz_dir, suffix=".gguf", delete=False) as f:
        path = Path(f.name)
    # A value of None removes the key (a missing key is llama.cpp's ordinary error).
    write_tiny_model(path, metadata=values)
    try:
        read_gguf_header(path)
    except ModelFileError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: unusable model: qwen2.")
        event("refused by the header check")
    else:
        answer = loader.load(path)
        assert answer in ("loaded", "refused")
        event(f"llama.cpp {answer}")
    finally:
        path.unlink()


# ---- the CLI says what an odd path is, in one line -------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localr1", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_run_names_a_fifo_a_symlink_loop_and_a_bad_header(tmp_path):
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.gguf"
    loop.symlink_to(loop)
    huge_context = write_tiny_model(tmp_path / "ctx.gguf", metadata={"context_length": 2**31})
    expected = {
        fifo: "not a regular file: a named pipe (FIFO)",
        loop: "symlink loop",
        huge_context: "unusable model: qwen2.context_length is 2147483648",
    }
    for path, words in expected.items():
        for command in (["run", "-m", str(path), "hi"], ["import", str(path)]):
            result = _run_cli(*command)
            assert result.returncode == 1, result.stderr
            [line] = result.stderr.strip().splitlines()
            assert words in line and str(path) in line, (command, line)
