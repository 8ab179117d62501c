"""--rpc for run, batch and doctor --model: the layers split between this machine and loopback
`localr1 worker`s, the text exactly a local run's, the split named, and llama.cpp's own load log
agreeing with rpc_split's.

Registering RPC devices is process-global (every later load in the process would offload to
them), so no client runs in pytest's process: clients and workers are subprocesses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.config import checked_setting
from localr1.engine.loading import check_memory, check_split_memory
from localr1.engine.rpc_split import SplitDevice, layer_devices, plan_split
from localr1.engine.split_memory import plan_split_memory
from localr1.errors import InsufficientMemoryError
from localr1.models import hardware
from localr1.paths import app_paths
from tests.conftest import requires_rpc
from tests.fixtures import scripted_models as sm
from tests.rpc_workers import two_workers
from tests.test_run_cli import localr1

GIB = 1024**3
# A GPU build puts its GPU after the workers in llama.cpp's device list (untested here).
BACKEND = hardware.backend_info()


# ---- the split, as llama.cpp computes it ---------------------------------------------------


def test_auto_split_gives_this_machine_one_share():
    devices = [SplitDevice("RPC a:1", 8 * GIB), SplitDevice("RPC b:2", 8 * GIB)]
    split = plan_split(30, "auto", 8 * GIB, devices)
    # 31 layers (the output layer counts); the CPU keeps a third, the output goes to the last.
    assert split.placement == "CPU 10 layers · RPC a:1 11 layers · RPC b:2 10 layers"
    assert (split.offloaded, split.total) == (21, 31)
    bigger_worker = plan_split(30, "auto", 4 * GIB, [SplitDevice("RPC a:1", 12 * GIB)])
    assert bigger_worker.placement == "CPU 8 layers · RPC a:1 23 layers"


def test_gpu_layers_sends_that_many_layers_to_the_workers():
    devices = [SplitDevice("RPC a:1", 1 * GIB), SplitDevice("RPC b:2", 3 * GIB)]
    assert plan_split(30, 5, 64 * GIB, devices).placement == \
        "CPU 26 layers · RPC a:1 2 layers · RPC b:2 3 layers"  # split points 0.25, 1
    assert plan_split(30, -1, 64 * GIB, devices).cpu_layers == 0
    assert plan_split(30, 99, 64 * GIB, devices).offloaded == 31
    assert plan_split(30, 0, 64 * GIB, devices).placement == \
        "CPU 31 layers · RPC a:1 0 layers · RPC b:2 0 layers"
    assert plan_split(30, 1, 64 * GIB, devices).placement == \
        "CPU 30 layers · RPC a:1 1 layer · RPC b:2 0 layers"


def test_split_points_are_float32_and_upper_bound_like_llama_cpp():
    # A layer exactly on a split point goes to the next device (std::upper_bound).
    assert layer_devices(2, 3, (1.0, 1.0, 1.0)) == [0, 1, 2]
    # In float32 the 1 byte is lost in 2**30 + 1, so device 1's split point is exactly 1/17
    # and layer 14 (1/17 into the offloaded ones) goes past it; in double it would stay.
    assigned = layer_devices(29, 17, (1.0, 2.0**30, 2.0**34, 10.0))
    assert assigned[12:16] == [-1, 0, 2, 2]


def test_the_memory_check_counts_the_workers_memory(tmp_path):
    available = hardware.memory_info().available_bytes
    n_layers = 40
    # Weights one and a half times this machine's free RAM: refused alone, loads with workers.
    estimate = hardware.MemoryEstimate(available * 3 // 2, 0, 0, n_layers)
    model = tmp_path / "big.gguf"
    with pytest.raises(InsufficientMemoryError, match="of RAM"):
        check_memory(model, estimate, 0, 4096)

    def check(requested: int | str, workers: list[SplitDevice]) -> None:
        planned = plan_split_memory(estimate, requested, available, workers)
        check_split_memory(model, planned, estimate, 4096)

    check("auto", [SplitDevice("RPC a:1", available), SplitDevice("RPC b:2", available)])
    small = [SplitDevice("RPC a:1", available // 100), SplitDevice("RPC b:2", available)]
    with pytest.raises(InsufficientMemoryError, match=r"RPC a:1 would hold \d+ layers"):
        check(-1, small)
    with pytest.raises(InsufficientMemoryError, match="of RAM"):  # too little on the workers
        check("auto", [SplitDevice("RPC a:1", available // 100)])


def test_the_memory_check_counts_a_draft_kept_here_in_full(tmp_path):
    available = hardware.memory_info().available_bytes
    estimate = hardware.MemoryEstimate(available * 3 // 2, 0, 0, 40)
    draft = hardware.MemoryEstimate(available * 8 // 10, 0, 0, 24)
    model = tmp_path / "big.gguf"
    workers = [SplitDevice("RPC a:1", available), SplitDevice("RPC b:2", available)]

    def check(requested: int | str, draft: hardware.MemoryEstimate | None) -> None:
        planned = plan_split_memory(estimate, requested, available, workers, draft)
        check_split_memory(model, planned, estimate, 4096, draft=draft)

    # 27 of 41 layers on the workers: a third of the model stays here, and fits alone; with a
    # draft (with --rpc always on this machine's CPU, whole) it does not.
    check(27, None)
    with pytest.raises(InsufficientMemoryError, match=r"\+ draft"):
        check(27, draft)
    check("auto", draft)  # the split leaves room for the draft


# ---- options and config --------------------------------------------------------------------


@pytest.mark.parametrize("value, problem", [
    ("nonsense", "nonsense: expected HOST:PORT (like 127.0.0.1:50052)"),
    ("127.0.0.1:0", "127.0.0.1:0: the port must be a number from 1 to 65535"),
    ("127.0.0.1:70000", "127.0.0.1:70000: the port must be a number from 1 to 65535"),
    (":50052", ":50052: expected HOST:PORT"),
    ("127.0.0.1:50052,", "an empty RPC worker address"),
    ("host name:1", "host name:1: 'host name' is not a host name"),
    # What the RPC backend cannot reach is refused here too, not later at load (exit 1).
    ("[::1]:50052", "[::1]:50052: llama.cpp's RPC connects over IPv4 only"),
    ("a..b:1", "a..b:1: 'a..b' is not a host name or an IPv4 address"),
])
def test_a_bad_rpc_value_is_one_line_exit_2(value, problem, r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--rpc", value, "hi")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"Invalid value for '--rpc': {problem}" in result.stderr


def test_a_bad_rpc_setting_names_its_line(r1_prefill_model):
    config = write_config('kv_type = "f16"\nrpc = ["127.0.0.1:50052", "nowhere"]\n')
    result = localr1("run", "-m", r1_prefill_model, "hi")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"Error: {config}:2:1: 'rpc': nowhere: expected HOST:PORT "
                                     "(like 127.0.0.1:50052)")
    write_config('rpc = ["[::1]:50052"]\n')
    assert "'rpc': [::1]:50052: llama.cpp's RPC connects over IPv4 only" in \
        localr1("run", "-m", r1_prefill_model, "hi").stderr
    write_config('rpc = "127.0.0.1:50052"\n')
    assert "'rpc' must be list" in localr1("run", "-m", r1_prefill_model, "hi").stderr
    write_config("rpc = [50052]\n")
    assert "'rpc' must list workers as strings" in \
        localr1("run", "-m", r1_prefill_model, "hi").stderr


def test_the_rpc_setting_is_what_the_backend_takes():
    assert checked_setting("rpc", ["127.0.0.1:50052", "host.lan:7,127.0.0.1:50052"]) == \
        ("127.0.0.1:50052", "host.lan:7")
    assert checked_setting("rpc", []) == ()  # no workers
    for bad in (["[::1]:50052"], ["a..b:1"], ["-a:1"]):
        with pytest.raises(ValueError):
            checked_setting("rpc", bad)


def write_config(text: str) -> Path:
    config = app_paths().config_file
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    return config


# ---- two loopback workers ------------------------------------------------------------------


workers = pytest.fixture(scope="module", name="workers")(two_workers)


def run_json(model: Path, *args: str) -> dict:
    result = localr1("run", "-m", model, "--json", "--no-log", "--seed", "7",
                     "--temperature", "0", "--max-tokens", "24", *args,
                     "Name three colors.")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def split_pattern(first: str, second: str) -> str:
    local_gpu = rf" · {BACKEND.name} (\d+) layers?" if BACKEND.can_offload else ""
    return (rf"CPU (\d+) layers? · RPC {re.escape(first)} (\d+) layers? · "
            rf"RPC {re.escape(second)} (\d+) layers?{local_gpu}")


@requires_rpc
@pytest.mark.parametrize("fixture", ["smollm2_model", "r1_prefill_model"])
def test_run_rpc_gives_the_local_text_and_names_both_workers(fixture, request, workers):
    model = request.getfixturevalue(fixture)
    local = run_json(model)
    split = run_json(model, "--rpc", ",".join(workers))
    assert (split["reasoning"], split["answer"]) == (local["reasoning"], local["answer"])
    if fixture == "r1_prefill_model":
        assert split["answer"] == sm.ANSWER_TEXT
    if BACKEND.can_offload:
        assert local["placement"].startswith(BACKEND.name), local["placement"]
    else:
        assert local["placement"] == "CPU"
    layers = re.fullmatch(split_pattern(*workers), split["placement"])
    assert layers, split["placement"]
    if fixture == "smollm2_model":  # 31 layers; the scripted model has 2, one per share
        assert all(int(count) > 0 for count in layers.groups())


@requires_rpc
def test_config_rpc_and_gpu_layers(smollm2_model, workers):
    write_config(f"rpc = {json.dumps(list(workers))}\n")
    assert re.fullmatch(split_pattern(*workers), run_json(smollm2_model)["placement"])
    # --gpu-layers N: N layers to the workers (the last one gets the output layer).
    placement = run_json(smollm2_model, "--gpu-layers", "4")["placement"]
    if BACKEND.can_offload:  # the local GPU takes a share by its free memory
        layers = re.fullmatch(split_pattern(*workers), placement)
        assert layers and int(layers[1]) == 27, placement
    else:  # the 4 by each worker's available RAM (this machine's, asked a moment apart)
        layers = re.fullmatch(split_pattern(*workers), placement)
        assert layers and int(layers[1]) == 27, placement
        assert sorted(int(count) for count in layers.groups()[1:]) in ([1, 3], [2, 2]), placement


@requires_rpc
def test_doctor_model_says_where_the_layers_went(smollm2_model, workers):
    result = localr1("doctor", "--model", smollm2_model, "--rpc", ",".join(workers))
    line = next(line for line in result.stdout.splitlines() if "runs on" in line)
    assert re.search(split_pattern(*workers), line), result.stdout


@requires_rpc
def test_batch_rpc_gives_the_local_records(smollm2_model, workers, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Name three colors.\nSay hello.\n", encoding="utf-8")

    def answers(*args: str) -> list[str]:
        output = tmp_path / f"out{len(args)}.jsonl"
        result = localr1("batch", prompts, "-o", output, "-m", smollm2_model, "--seed", "3",
                         "--temperature", "0", "--max-tokens", "16", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line)["answer"] for line in output.read_text().splitlines()]

    assert answers("--rpc", ",".join(workers)) == answers()


# The child loads the model with the workers and prints llama.cpp's own account of the load
# next to ours: its per-layer device lines (debug level) and "offloaded N/M layers".
_LOAD_LOG_CHILD = """
import json, sys
from pathlib import Path
from localr1.engine import llama_log
llama_log.install()
lines, record = [], llama_log.record
llama_log.record = lambda level, text: (lines.append(text), record(level, text))
from localr1.engine.llama_engine import Engine, EngineConfig
engine = Engine.load(EngineConfig(Path(sys.argv[1]), context_size=512,
                                  rpc=tuple(sys.argv[2].split(",")), gpu_layers=sys.argv[3]
                                  if sys.argv[3] == "auto" else int(sys.argv[3])))
print(json.dumps({"split": engine.info.layer_split.device_layers,
                  "cpu": engine.info.layer_split.cpu_layers, "log": "".join(lines)}))
"""


@requires_rpc
@pytest.mark.parametrize("gpu_layers", ["auto", "7"])
def test_the_split_is_llama_cpps_own(smollm2_model, workers, gpu_layers):
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_LOG_CHILD, str(smollm2_model), ",".join(workers),
         gpu_layers], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    devices = re.findall(r"layer +\d+ assigned to device (\w+)", loaded["log"])
    assert len(devices) == 31  # SmolLM2: 30 layers and the output layer
    ours = [devices.count("CPU")] + [layers for _, layers in loaded["split"]]
    assert ours[0] == loaded["cpu"]
    local_gpu = sorted(set(devices) - {"CPU", "RPC0", "RPC1"})  # "CUDA0" on a GPU build
    assert [devices.count(name) for name in ("CPU", "RPC0", "RPC1", *local_gpu)] == ours
    offloaded = re.search(r"offloaded (\d+)/(\d+) layers", loaded["log"])
    assert (int(offloaded[1]), int(offloaded[2])) == (31 - ours[0], 31)
    for endpoint in workers:  # both workers hold weights
        assert re.search(rf"RPC\d\[{re.escape(endpoint)}\] model buffer size", loaded["log"])


def test_rpc_is_refused_with_an_endpoint():
    result = localr1("run", "--endpoint", "http://127.0.0.1:9", "--rpc", "127.0.0.1:50052", "hi")
    assert result.returncode == 2, result.stderr
    assert "--rpc cannot be used with --endpoint" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# The child marks in llama.cpp's log where the draft model loads and where its context is made
# (the first turn), so the draft's own lines can be told from the model's.
_DRAFT_LOG_CHILD = """
import json, sys
from pathlib import Path
from localr1.chat_message import ChatMessage
from localr1.engine import drafters, llama_log
from localr1.engine.events import GenerationParams
from localr1.engine.llama_engine import Engine, EngineConfig
llama_log.install()
lines, record = [], llama_log.record
llama_log.record = lambda level, text: (lines.append(text), record(level, text))

def marked(cls, what):
    init = cls.__init__
    def wrapped(self, *args, **kwargs):
        lines.append(f"<{what}>")
        init(self, *args, **kwargs)
        lines.append(f"</{what}>")
    cls.__init__ = wrapped

marked(drafters.DraftModel, "draft")
marked(drafters.ModelDrafter, "context")
model = Path(sys.argv[1])
engine = Engine.load(EngineConfig(model, context_size=512, draft=model,
                                  rpc=tuple(sys.argv[2].split(","))))
params = GenerationParams(temperature=0, max_tokens=8)
events = list(engine.stream_chat([ChatMessage("user", "Name three colors.")], params))
log = "".join(lines)
part = lambda what: log.split(f"<{what}>")[1].split(f"</{what}>")[0]
print(json.dumps({"placement": engine.info.placement, "log": log, "draft": part("draft"),
                  "context": part("context")}))
"""


@requires_rpc
def test_a_draft_with_rpc_stays_on_this_machine(smollm2_model, workers):
    """llama.cpp offloads to every registered device: a draft loaded like the model would send
    its layers and buffers to the workers (uncounted, a network trip per drafted token)."""
    result = subprocess.run(
        [sys.executable, "-c", _DRAFT_LOG_CHILD, str(smollm2_model), ",".join(workers)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert re.fullmatch(split_pattern(*workers), loaded["placement"]), loaded["placement"]
    assert re.search(r"RPC\d\[", loaded["log"])  # the model itself is on the workers
    assert "offloaded 0/31 layers" in loaded["draft"], loaded["draft"]
    for part in ("draft", "context"):
        assert loaded[part].strip() and "RPC" not in loaded[part], loaded[part]
