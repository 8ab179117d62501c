"""Fit labels that count RPC workers' free memory: a model too large for this machine "fits
(with 2 workers)" with `--rpc` or config.toml's `rpc`; a worker that does not answer costs at
most fit.WORKER_TIMEOUT and leaves this machine's label, noted "workers unreachable: local only",
or "workers busy: local only" when it took the connection but serves another client.

The workers are `localr1 worker` subprocesses on loopback; their memory is asked in Python
(rpc_backend.worker_memory), which registers nothing, so asking it here is safe. The commands
run as subprocesses, like a user's."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import subprocess
import sys
import time

import pytest

from localr1.engine import rpc_backend
from localr1.models import fit, hardware
from localr1.paths import app_paths
from tests.conftest import requires_rpc
from tests.rpc_workers import free_port, two_workers, wait_until
from tests.test_rpc_run import write_config
from tests.test_run_cli import localr1
from tests.tui.conftest import SIZE, make_app, prefill_engine, store, wait_for  # noqa: F401

GB = 1_000_000_000
GIB = 1024**3
NOTE = "workers unreachable: local only"
BUSY = "workers busy: local only"
HELLO_UNANSWERED = "no answer to the RPC hello in time (busy serving another client, or not an " \
    "RPC worker)"


# ---- the label, from given figures -----------------------------------------------------------


def machine(ram_gb: float, workers: fit.RpcWorkers | None = None) -> fit.MachineMemory:
    return fit.MachineMemory(int(ram_gb * GB), int(ram_gb * GB), False, 0, "CPU",
                             cpu_bandwidth=20 * GB, workers=workers)


def workers_of(*free_gb: float) -> fit.RpcWorkers:
    endpoints = tuple(f"10.0.0.{index}:50052" for index in range(1, len(free_gb) + 1))
    return fit.RpcWorkers(endpoints, tuple(int(free * GB) for free in free_gb))


SHAPE = fit.ModelShape(30 * GB, 40, 8, 128, 128, 131072)  # a 30 GB model of 40 layers


def test_workers_free_memory_makes_a_model_too_large_here_fit():
    alone = fit.assess(SHAPE, 8192, machine(20))
    assert alone.label == fit.TOO_LARGE and alone.label_text == "too large for this machine"
    split = fit.assess(SHAPE, 8192, machine(20, workers_of(16, 16)))
    assert split.label == fit.FITS_WITH_WORKERS and split.runs
    assert split.label_text == "fits (with 2 workers)"
    assert split.needed_bytes == alone.needed_bytes  # the whole model, wherever it goes
    # Only the layers this machine keeps bound the speed: an upper estimate.
    assert split.speed_is_upper_bound and split.speed_text.startswith("up to ~")
    one = fit.assess(SHAPE, 8192, machine(20, workers_of(40)))
    assert one.label_text == "fits (with 1 worker)"


def test_too_large_even_with_the_workers():
    big = fit.assess(SHAPE, 8192, machine(10, workers_of(8, 8)))  # 26 GB free in all
    assert big.label == fit.TOO_LARGE and not big.runs
    assert big.label_text == "too large even with 2 workers" and big.speed_text == "-"


def test_this_machine_must_hold_its_share_and_the_compute_buffers():
    # The split gives this machine a share by its free RAM; the compute buffers come on top.
    shape = fit.ModelShape(10 * GB, 40, 0, 0, 0, None)
    assert fit.assess(shape, 8192, machine(5.5, workers_of(5.5))).runs
    assert not fit.assess(shape, 8192, machine(5, workers_of(5))).runs


def test_a_draft_is_counted_beside_the_workers():
    draft = fit.ModelShape(1 * GB, 28, 2, 128, 128, 131072)
    with_draft = fit.assess(SHAPE, 8192, machine(20, workers_of(16, 16)), draft=draft)
    assert with_draft.label_text == "fits (with 2 workers and draft)"
    assert with_draft.draft_bytes > 0


def test_unreachable_workers_leave_this_machines_label_with_a_note():
    down = fit.RpcWorkers(("10.0.0.1:50052",), problem="10.0.0.1:50052: no worker answers",
                          note=NOTE)
    small = fit.ModelShape(1 * GB, 28, 2, 128, 128, 131072)
    assert fit.assess(small, 8192, machine(20, down)).label_text == \
        f"CPU only, fits in RAM ({NOTE})"
    assert fit.assess(SHAPE, 8192, machine(20, down)).label_text == \
        f"too large for this machine ({NOTE})"
    draft = fit.ModelShape(1 * GB, 28, 2, 128, 128, 131072)
    assert fit.assess(small, 8192, machine(20, down), draft=draft).label_text == \
        f"CPU only, fits in RAM (with draft; {NOTE})"


@requires_rpc
def test_a_closed_port_is_unreachable_at_once():
    port = free_port()
    started = time.monotonic()
    workers = fit.rpc_workers([f"127.0.0.1:{port}"])
    assert time.monotonic() - started < 1
    assert not workers.counted and workers.note == NOTE
    assert workers.problem == f"127.0.0.1:{port}: no worker answers (connection refused)"


def test_a_build_without_rpc_counts_no_workers_and_says_how_to_rebuild(monkeypatch):
    monkeypatch.setattr(rpc_backend, "rpc_problem",
                        lambda: "this llama-cpp-python was built without llama.cpp's RPC backend")
    workers = fit.rpc_workers(["127.0.0.1:50052"])
    assert not workers.counted and workers.note == "no RPC in this build: local only"
    assert workers.problem.startswith("this llama-cpp-python was built without llama.cpp's "
                                      "RPC backend; reinstall it with: ")
    assert 'CMAKE_ARGS="-DGGML_RPC=on' in workers.problem


@requires_rpc
def test_a_silent_worker_costs_the_timeout_at_most():
    """A listener that never answers the hello (a hung worker, or one busy with a client)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        workers = fit.rpc_workers([endpoint, endpoint.replace("127.0.0.1", "localhost")])
        took = time.monotonic() - started
    assert took < fit.WORKER_TIMEOUT + 1, took
    assert not workers.counted and workers.note == BUSY
    assert workers.problem.startswith(f"{endpoint}: {HELLO_UNANSWERED}")


@requires_rpc
def test_busy_and_unreachable_workers_are_told_apart():
    down = f"127.0.0.1:{free_port()}"
    with socket.socket() as silent:  # takes the connection, answers nothing: as a busy worker
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        busy = f"127.0.0.1:{silent.getsockname()[1]}"
        workers = fit.rpc_workers([busy, down])
    assert not workers.counted and workers.note == "workers busy or unreachable: local only"
    assert workers.problem == (f"{busy}: {HELLO_UNANSWERED}; {down}: no worker answers "
                               "(connection refused)")
    assert fit.rpc_workers([down]).note == NOTE


# ---- two loopback workers --------------------------------------------------------------------


workers = pytest.fixture(scope="module", name="workers")(two_workers)


@requires_rpc
def test_worker_memory_asks_in_python_and_registers_nothing(workers):
    from llama_cpp import llama_cpp as bindings

    devices_before = bindings._lib.ggml_backend_dev_count()
    devices = rpc_backend.worker_memory(workers)
    # A CPU worker reports its machine's RAM, the available as free (engine/worker_ram.py).
    total = hardware.memory_info().total_bytes
    assert [(d.endpoint, d.name) for d in devices] == [(workers[0], "RPC0"), (workers[1], "RPC1")]
    assert all(d.free_bytes < d.total_bytes and abs(d.total_bytes - total) < GIB
               for d in devices)
    assert bindings._lib.ggml_backend_dev_count() == devices_before
    again = rpc_backend.worker_memory(workers)  # each worker free for the next ask
    assert [(d.endpoint, d.name, d.total_bytes) for d in again] == \
        [(d.endpoint, d.name, d.total_bytes) for d in devices]


# While a process holds a model on the workers, they answer nobody else (one client at a
# time): asking them again would wait out the timeout. The child loads with the workers, then
# asks worker_memory, as the TUI's model manager does beside a chat split over them.
_HELD_WORKERS_CHILD = """
import json, sys, time
from pathlib import Path
from localr1.engine import rpc_backend
from localr1.engine.llama_engine import Engine, EngineConfig
workers = tuple(sys.argv[2].split(","))
engine = Engine.load(EngineConfig(Path(sys.argv[1]), context_size=512, rpc=workers))
started = time.monotonic()
devices = rpc_backend.worker_memory(workers, timeout=5.0)
took = time.monotonic() - started
print(json.dumps({"took": took, "devices": [d.endpoint for d in devices],
                  "placement": engine.info.placement}))
"""


@requires_rpc
def test_workers_this_process_holds_answer_from_when_it_connected(workers, r1_prefill_model):
    result = subprocess.run(
        [sys.executable, "-c", _HELD_WORKERS_CHILD, str(r1_prefill_model), ",".join(workers)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    child = json.loads(result.stdout)
    assert "RPC" in child["placement"], child  # the model is on the workers
    assert child["devices"] == list(workers) and child["took"] < 1, child


def big_catalog_entry() -> str:
    """A catalog model one and a half times this machine's available RAM: too large here,
    within reach of this machine and two workers (each offers its machine's available RAM)."""
    size_gb = hardware.memory_info().available_bytes * 3 / 2 / GB
    path = app_paths().config_dir / "models.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[models."huge:70b"]
title = "A model bigger than this machine"
repo = "example/huge-GGUF"
parameters = "70B"
architecture = "llama"
context_length = 131072
license = "MIT"
layers = 80
kv_heads = 8
head_dim = 128
temperature = 0.6
top_p = 0.95
default_quant = "Q4_K_M"
quants.Q4_K_M = {{ size_gb = {size_gb:.2f}, file = "huge-Q4_K_M.gguf" }}
""", encoding="utf-8")
    return "huge:70b-q4_k_m"


def catalog_fit(*args: str) -> tuple[dict, str]:
    result = localr1("list", "--available", "--json", *args)
    assert result.returncode == 0, result.stderr
    [row] = [row for row in json.loads(result.stdout) if row["name"] == "huge:70b-q4_k_m"]
    return row, result.stderr


@requires_rpc
def test_a_model_too_large_here_fits_with_two_workers(workers):
    name = big_catalog_entry()
    alone, _ = catalog_fit()
    assert alone["fit"] == fit.TOO_LARGE and alone["workers"] is None
    with_workers, stderr = catalog_fit("--rpc", ",".join(workers))
    assert with_workers["fit"] == fit.FITS_WITH_WORKERS and stderr == ""
    assert with_workers["workers"]["endpoints"] == list(workers)
    assert with_workers["workers"]["counted"] is True
    table = localr1("list", "--available", "--rpc", ",".join(workers)).stdout
    assert "fits (with 2 workers)" in next(line for line in table.splitlines()
                                           if line.startswith(name))
    shown = localr1("show", name, "--rpc", ",".join(workers))
    assert shown.returncode == 0, shown.stderr
    assert "fits (with 2 workers)" in shown.stdout
    assert "too large for this machine" in localr1("show", name).stdout


@requires_rpc
def test_config_rpc_counts_the_workers_for_installed_models_too(workers, r1_prefill_model):
    name = big_catalog_entry()
    write_config(f"rpc = {json.dumps(list(workers))}\n")
    assert catalog_fit()[0]["fit"] == fit.FITS_WITH_WORKERS
    models = app_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "tiny-r1.gguf").symlink_to(r1_prefill_model)
    installed = localr1("list", "--json")
    assert installed.returncode == 0, installed.stderr
    [row] = json.loads(installed.stdout)
    assert row["fit"] == fit.FITS_WITH_WORKERS and row["workers"]["counted"] is True
    assert "fits (with 2 workers)" in localr1("show", name).stdout
    # --rpc wins over the config: a worker that is down leaves this machine's label.
    down = f"127.0.0.1:{free_port()}"
    alone, stderr = catalog_fit("--rpc", down)
    assert alone["fit"] == fit.TOO_LARGE and alone["workers"]["counted"] is False
    assert stderr.strip() == (f"localr1: {down}: no worker answers (connection refused); the "
                              "fit labels count this machine only")


@requires_rpc
def test_an_unreachable_worker_gives_the_local_label_and_the_note_fast(workers):
    name = big_catalog_entry()
    started = time.monotonic()
    baseline = localr1("show", name)
    local_only = time.monotonic() - started
    assert baseline.returncode == 0, baseline.stderr
    with socket.socket() as silent:  # accepts connections, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        shown = localr1("show", name, "--rpc", f"{workers[0]},{endpoint}")
        with_silent = time.monotonic() - started
    assert shown.returncode == 0, shown.stderr
    fit_line = next(line for line in shown.stdout.splitlines() if line.startswith("fit"))
    assert f"too large for this machine ({BUSY})" in fit_line
    assert shown.stderr.startswith(f"localr1: {endpoint}: {HELLO_UNANSWERED}")
    assert with_silent < local_only + fit.WORKER_TIMEOUT + 3, (with_silent, local_only)


@contextlib.contextmanager
def held_connection(endpoint: str):
    """A client of the worker at `endpoint` that completed the hello and stays connected: the
    worker (llama.cpp's RPC server, one client at a time) serves it and nobody else."""
    host, _, port = endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack("<BQ", rpc_backend.RPC_CMD_HELLO, rpc_backend.RPC_CONN_CAPS_SIZE)
                     + bytes(rpc_backend.RPC_CONN_CAPS_SIZE))
        reply = b""
        while len(reply) < 8 + 4 + rpc_backend.RPC_CONN_CAPS_SIZE:  # size, version, caps
            chunk = sock.recv(64)
            assert chunk, "the worker closed the connection at the hello"
            reply += chunk
        yield


@requires_rpc
def test_a_worker_serving_another_client_is_busy_not_unreachable(workers):
    name = big_catalog_entry()
    busy, free = workers
    # llama.cpp's server listens with a backlog of 1: two waiting connections at most, so two
    # asks while it is held (the closed ones wait in its queue until it accepts them).
    with held_connection(busy):
        shown = localr1("show", name, "--rpc", busy)
        started = time.monotonic()
        asked = fit.rpc_workers([busy, free])
        took = time.monotonic() - started
    assert shown.returncode == 0, shown.stderr
    fit_line = next(line for line in shown.stdout.splitlines() if line.startswith("fit"))
    assert f"too large for this machine ({BUSY})" in fit_line
    assert shown.stderr == (f"localr1: {busy}: {HELLO_UNANSWERED}; the fit labels count this "
                            "machine only\n")
    assert not asked.counted and asked.note == BUSY and took < fit.WORKER_TIMEOUT + 1
    assert asked.problem == f"{busy}: {HELLO_UNANSWERED}"  # the free one answered
    # Released, the worker answers the next ask (after the closed connections queued).
    wait_until(lambda: fit.rpc_workers([busy]).counted, "the worker to answer again", timeout=30)


# ---- the TUI's model manager -----------------------------------------------------------------


async def _fit_cells(pilot) -> dict[str, str]:
    """{name: its Fit cell} of both tables, once the screen's worker has listed them."""
    from localr1.tui.screens.models import ModelsScreen

    await pilot.press("ctrl+l")
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    installed, available = screen.installed_table, screen.available_table
    await wait_for(pilot, lambda: installed.row_count == 1 and not installed.loading
                   and available.row_count > 1, what="the lists")
    cells = {}
    for table in (installed, available):
        name, fit_column = (list(table.columns).index(key) for key in ("name", "fit"))
        cells.update({str(table.get_cell_at((row, name))): str(table.get_cell_at((row, fit_column)))
                      for row in range(table.row_count)})
    return cells


def configured():
    """config.toml's settings, as `localr1 chat` starts the app with them."""
    from localr1.config import load_settings

    return load_settings(app_paths().config_file)


@requires_rpc
async def test_the_model_manager_counts_the_workers_off_the_ui_thread(
        make_app, prefill_engine, r1_prefill_model, workers, monkeypatch):  # noqa: F811
    import threading

    name = big_catalog_entry()
    models = app_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "tiny-r1.gguf").symlink_to(r1_prefill_model)
    write_config(f"rpc = {json.dumps(list(workers))}\n")
    askers = []
    original = fit.rpc_workers

    def rpc_workers(endpoints):
        askers.append(threading.current_thread())
        return original(endpoints)

    monkeypatch.setattr(fit, "rpc_workers", rpc_workers)
    app = make_app(engine=prefill_engine, settings=configured())  # as `localr1 chat` reads it
    async with app.run_test(size=SIZE) as pilot:
        cells = await _fit_cells(pilot)
    assert cells["tiny-r1"] == cells[name] == "fits (with 2 workers)"
    assert askers and threading.main_thread() not in askers


@requires_rpc
async def test_the_model_manager_notes_unreachable_workers(
        make_app, prefill_engine, r1_prefill_model):  # noqa: F811
    name = big_catalog_entry()
    models = app_paths().models_dir
    models.mkdir(parents=True, exist_ok=True)
    (models / "tiny-r1.gguf").symlink_to(r1_prefill_model)
    write_config(f'rpc = ["127.0.0.1:{free_port()}"]\n')
    app = make_app(engine=prefill_engine, settings=configured())  # as `localr1 chat` reads it
    async with app.run_test(size=SIZE) as pilot:
        cells = await _fit_cells(pilot)
    assert cells["tiny-r1"] == f"CPU only, fits in RAM ({NOTE})"
    assert cells[name] == f"too large for this machine ({NOTE})"
