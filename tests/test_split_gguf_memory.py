"""A split GGUF (`X-00001-of-00003.gguf`, ...) weighs all its parts: the load's memory check (with
and without RPC workers) counts every part's tensor data, as the fit labels do.

The parts are real GGUFs written by gguf-py whose tensor data is a hole in the file (sparse):
the size of a 70B's parts without their bytes on disk."""

from __future__ import annotations

import os
import re
from pathlib import Path

import gguf
import numpy as np
import pytest

from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.engine.loading import read_model_headers
from localr1.errors import InsufficientMemoryError, ModelFileError
from localr1.models import hardware
from localr1.models.fit import TOO_LARGE, assess, machine_memory, shape_from_summary
from localr1.models.library import build_model
from localr1.sizes import format_bytes
from tests.conftest import requires_rpc
from tests.rpc_workers import two_workers
from tests.test_run_cli import localr1

N_CTX = 4096
MIB = 1024**2


def write_sparse_split_gguf(folder: Path, part_bytes: int, parts: int = 3) -> list[Path]:
    """`big-0000N-of-0000M.gguf`: a llama-shaped header in the first part, one F32 tensor of
    `part_bytes` in each, its data a hole."""
    writer = gguf.GGUFWriter(folder / "big.gguf", "llama", split_max_tensors=1)
    writer.add_name("split memory test")
    writer.add_block_count(32)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(128)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    elements = part_bytes // 4
    for index in range(parts):
        writer.add_tensor_info(f"t{index}", (elements,), np.dtype(np.float32), elements * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    files = sorted(folder.glob(f"big-*-of-{parts:05d}.gguf"))
    for file in files:  # the data starts at the next multiple of the alignment
        os.truncate(file, gguf.GGUFWriter.ggml_pad(file.stat().st_size, 32) + elements * 4)
    return files


def test_the_load_counts_every_part_as_the_label_does(tmp_path):
    parts = write_sparse_split_gguf(tmp_path, MIB)
    assert len(parts) == 3 and parts[0].name == "big-00001-of-00003.gguf"
    label = assess(shape_from_summary(build_model("big", tuple(parts), source="folder",
                                                  owned=False).summary),
                   N_CTX, machine_memory(with_cpu_bandwidth=False))
    load = hardware.estimate_memory(read_model_headers(parts[0]), N_CTX)
    assert load.weights_bytes == label.weights_bytes == 3 * MIB
    assert (load.kv_cache_bytes, load.total_bytes) == (label.kv_cache_bytes, label.needed_bytes)
    parts[2].unlink()  # llama.cpp would fail on it: said here, before it
    with pytest.raises(ModelFileError, match="big-00003-of-00003.gguf: missing part"):
        read_model_headers(parts[0])


def test_the_load_refuses_a_split_model_whose_parts_together_do_not_fit(tmp_path):
    available = hardware.memory_info().available_bytes
    # Each part alone fits in RAM twice over; the three together do not.
    parts = write_sparse_split_gguf(tmp_path, available * 2 // 5)
    machine = machine_memory(with_cpu_bandwidth=False)
    label = assess(shape_from_summary(build_model("big", tuple(parts), source="folder",
                                                  owned=False).summary), N_CTX, machine)
    if not machine.can_offload:
        assert label.label == TOO_LARGE
    with pytest.raises(InsufficientMemoryError) as refused:
        Engine.load(EngineConfig(parts[0], context_size=N_CTX, gpu_layers=0))
    assert str(refused.value).startswith(
        f"big-00001-of-00003.gguf needs about {format_bytes(label.needed_bytes)} of RAM "
        f"(weights {format_bytes(label.weights_bytes)} + KV cache")


workers = pytest.fixture(scope="module", name="workers")(two_workers)


@requires_rpc
def test_a_split_over_workers_counts_every_part(tmp_path, workers):
    """Each worker offers this machine's available RAM: one part a little over it would split
    over the three; the three parts, over three times it, are refused before llama.cpp."""
    available = hardware.memory_info().available_bytes
    parts = write_sparse_split_gguf(tmp_path, available * 11 // 10)
    result = localr1("run", "-m", parts[0], "--rpc", ",".join(workers), "--ctx", N_CTX,
                     "--no-log", "hi")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert re.fullmatch(r"Error: big-00001-of-00003\.gguf(?: needs about .* of RAM \(weights "
                        rf"{re.escape(format_bytes(3 * (available * 11 // 10 // 4 * 4)))} .*"
                        r"|: RPC \S+ would hold \d+ layers .*)", line), line
