"""--gpu-layers: how "auto", -1 and N become the layer count llama.cpp offloads, and how the
split is shown. The numbers are given, so this runs the same on a machine without a GPU."""

from __future__ import annotations

from dataclasses import replace

import pytest

from localr1.engine.llama_engine import ModelInfo
from localr1.models.hardware import BackendInfo, MemoryEstimate, plan_gpu_layers

GB = 10**9
CUDA = BackendInfo("CUDA", True, "CUDA = 1")
CPU = BackendInfo("CPU", False, "")
# A 7B-like model: 28 layers, 4.4 GB of weights, 0.4 GB of KV cache, 0.5 GB of overhead.
SEVEN_B = MemoryEstimate(int(4.4 * GB), int(0.4 * GB), int(0.5 * GB), 28)


@pytest.mark.parametrize(("free_vram", "layers"), [
    (24 * GB, 29),  # everything fits: all 28 layers and the output layer
    (int(3.0 * GB), 14),  # (3.0 - 0.5) GB / (4.8 GB / 28 layers) = 14.58 -> 14
    (int(0.6 * GB), 0),  # room for the overhead only
    (0, 0),
])
def test_auto_offloads_the_layers_that_fit_in_free_vram(free_vram, layers):
    assert plan_gpu_layers("auto", SEVEN_B, CUDA, free_vram) == layers


def test_auto_with_unknown_vram_tries_all_layers_and_cpu_builds_offload_none():
    assert plan_gpu_layers("auto", SEVEN_B, CUDA, None) == 29  # e.g. Vulkan: like Ollama
    for requested in ("auto", -1, 10):
        assert plan_gpu_layers(requested, SEVEN_B, CPU, 24 * GB) == 0


def test_explicit_counts():
    assert plan_gpu_layers(-1, SEVEN_B, CUDA, 0) == 29
    assert plan_gpu_layers(10, SEVEN_B, CUDA, 0) == 10
    assert plan_gpu_layers(99, SEVEN_B, CUDA, 0) == 29


def test_the_split_as_the_chat_header_shows_it(r1_prefill_model):
    from localr1.engine.llama_engine import Engine, EngineConfig

    engine = Engine.load(EngineConfig(r1_prefill_model, context_size=256, gpu_layers=0))
    try:
        info: ModelInfo = engine.info
    finally:
        engine.close()
    assert info.placement == "CPU"
    assert replace(info, gpu_layers=1, backend="CUDA").placement == \
        f"CUDA 1/{info.n_layers + 1} layers"
    assert replace(info, gpu_layers=99, backend="Metal").placement == \
        f"Metal {info.n_layers + 1}/{info.n_layers + 1} layers"
