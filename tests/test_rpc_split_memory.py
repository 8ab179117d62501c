"""One answer for a split over RPC workers with a draft model: the fit label and the load's
memory check both take it from split_memory.plan_split_memory. A draft never goes to the
workers (it is loaded with no device), so it counts wholly on this machine in both, and the
split gives this machine only the RAM the draft and the compute buffers leave.

The load runs in a child process: registering RPC devices is process-global."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.engine.loading import check_split_memory
from localr1.engine.rpc_split import SplitDevice, plan_split
from localr1.engine.split_memory import plan_split_memory, this_machine_bytes
from localr1.errors import InsufficientMemoryError
from localr1.models import fit, hardware
from localr1.models.gguf_header import read_gguf_header
from tests.conftest import requires_rpc
from tests.rpc_workers import two_workers

GB = 1_000_000_000
N_CTX = 8192
PATH = Path("big.gguf")
MODEL = fit.ModelShape(30 * GB, 40, 8, 128, 128, 131072)  # 30 GB of 40 layers
WORKERS = fit.RpcWorkers(("10.0.0.1:50052", "10.0.0.2:50052"), (16 * GB, 16 * GB))


def machine(ram: int, workers: fit.RpcWorkers = WORKERS) -> fit.MachineMemory:
    return fit.MachineMemory(ram, ram, False, 0, "CPU", cpu_bandwidth=20 * GB, workers=workers)


def estimate(shape: fit.ModelShape) -> hardware.MemoryEstimate:
    return hardware.estimate_memory_for_shape(shape.weights_bytes, shape.n_layers,
                                              shape.n_kv_heads, shape.key_length,
                                              shape.value_length, N_CTX)


def devices(workers: fit.RpcWorkers = WORKERS) -> list[SplitDevice]:
    return [SplitDevice(f"RPC {endpoint}", free)
            for endpoint, free in zip(workers.endpoints, workers.device_free, strict=True)]


def load_refuses(ram: int, draft: fit.ModelShape, workers: fit.RpcWorkers = WORKERS) -> bool:
    """Whether the load's memory check refuses, on the figures a load computes."""
    planned = plan_split_memory(estimate(MODEL), "auto", ram, devices(workers), estimate(draft))
    try:
        check_split_memory(PATH, planned, estimate(MODEL), N_CTX, draft=estimate(draft))
    except InsufficientMemoryError:
        return True
    return False


def test_a_draft_the_old_split_left_no_room_for_now_fits_in_both():
    """20 GB here, 16 + 16 GB on the workers and an 8 GB draft: the old load split the layers
    by all 20 GB and then found no room for the draft (refused), while the old label scaled the
    draft by this machine's share of the layers (fits). Now the split leaves the draft room,
    and both say it runs."""
    draft = fit.ModelShape(8 * GB, 28, 2, 128, 128, 131072)
    ram = 20 * GB
    model, draft_estimate = estimate(MODEL), estimate(draft)
    # The old load: the split by all the RAM here, the draft beside its share: too much.
    old_split = plan_split(MODEL.n_layers, "auto", ram, devices())
    assert this_machine_bytes(model, old_split.cpu_layers / old_split.total, draft_estimate) > ram
    labelled = fit.assess(MODEL, N_CTX, machine(ram), draft=draft)
    assert labelled.label_text == "fits (with 2 workers and draft)"
    assert not load_refuses(ram, draft)
    planned = plan_split_memory(model, "auto", ram, devices(), draft_estimate)
    assert planned.split.cpu_layers < old_split.cpu_layers  # the draft's room went to the workers


def test_the_draft_counts_wholly_on_this_machine_in_both():
    """A draft this machine barely holds: scaled by a small local share (the old label) it
    seemed to fit; wholly here, with the compute buffers, it does not, in the label and in the
    load alike."""
    draft = fit.ModelShape(9 * GB, 28, 2, 128, 128, 131072)
    big_workers = fit.RpcWorkers(WORKERS.endpoints, (40 * GB, 40 * GB))
    ram = 10 * GB
    model, draft_estimate = estimate(MODEL), estimate(draft)
    planned = plan_split_memory(model, "auto", ram, devices(big_workers), draft_estimate)
    share = planned.split.cpu_layers / planned.split.total
    assert planned.local_bytes == this_machine_bytes(model, share) + draft_estimate.total_bytes
    labelled = fit.assess(MODEL, N_CTX, machine(ram, big_workers), draft=draft)
    assert labelled.label_text == "too large even with 2 workers (with draft)"
    assert load_refuses(ram, draft, big_workers)
    with pytest.raises(InsufficientMemoryError, match=r"\+ draft .* or no --draft"):
        check_split_memory(PATH, planned, model, N_CTX, draft=draft_estimate)
    # Without the draft, both say it runs.
    alone = plan_split_memory(model, "auto", ram, devices(big_workers))
    assert alone.fits and fit.assess(MODEL, N_CTX, machine(ram, big_workers)).runs


def test_the_compute_buffers_are_set_aside_before_this_machines_share():
    """2 GB here, 9.5 GB on a worker, 10 GB of layers: split by all 2 GB, this machine got 7
    layers and no room for the compute buffers beside them; split by what they leave, it gets
    5, and both sides hold their part."""
    model = hardware.MemoryEstimate(10 * GB, 0, hardware.COMPUTE_OVERHEAD_BYTES, 40)
    worker = [SplitDevice("RPC a:1", int(9.5 * GB))]
    old_split = plan_split(40, "auto", 2 * GB, worker)
    assert this_machine_bytes(model, old_split.cpu_layers / old_split.total) > 2 * GB
    planned = plan_split_memory(model, "auto", 2 * GB, worker)
    assert planned.split.placement == "CPU 5 layers · RPC a:1 36 layers"
    assert planned.fits
    check_split_memory(PATH, planned, model, N_CTX)


# ---- a real load with two loopback workers ---------------------------------------------------


workers = pytest.fixture(scope="module", name="workers")(two_workers)

# The child loads the model with its draft and the workers, with this machine's available RAM
# set by the test (the workers' free memory is what they report), and says what happened.
_LOAD_CHILD = """
import json, sys
from pathlib import Path
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.errors import InsufficientMemoryError
from localr1.models import hardware
available = int(sys.argv[3])
hardware.memory_info = lambda: hardware.MemoryInfo(available, available)
model = Path(sys.argv[1])
try:
    engine = Engine.load(EngineConfig(model, context_size=512, draft=model,
                                      rpc=tuple(sys.argv[2].split(","))))
except InsufficientMemoryError as exc:
    print(json.dumps({"refused": str(exc)}))
else:
    print(json.dumps({"placement": engine.info.placement}))
"""


def load_in_child(model, workers, available: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, str(model), ",".join(workers), str(available)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@requires_rpc
def test_the_label_and_a_real_load_agree_with_a_draft(smollm2_model, workers):
    """SmolLM2 drafting for itself: just under what this machine must keep (the whole draft
    and both compute buffers) the label and the load both refuse; the old label said it fit,
    counting only this machine's share of the draft. With room to spare, both run."""
    header = read_gguf_header(smollm2_model)
    shape = fit.ModelShape(header.data_size, header.block_count, header.head_count_kv,
                           header.key_length, header.value_length, header.context_length)
    n_ctx = min(512, header.context_length)
    model, draft = (hardware.estimate_memory(header, n_ctx) for _ in range(2))
    kept_here = model.overhead_bytes + draft.total_bytes
    counted = fit.rpc_workers(workers)
    assert counted.counted, counted.problem
    refusal = ""
    for available, runs in ((kept_here - 1, False), (kept_here + 2 * GB, True)):
        memory = fit.MachineMemory(available, available, False, 0, "CPU", workers=counted)
        labelled = fit.assess(shape, 512, memory, draft=shape)
        loaded = load_in_child(smollm2_model, workers, available)
        assert labelled.runs is runs, (available, labelled)
        assert ("placement" in loaded) is runs, (available, loaded)
        refusal = refusal or loaded.get("refused", "")
    assert "+ draft" in refusal and "no --draft" in refusal, refusal
