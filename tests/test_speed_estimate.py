"""Speed estimates: decode tokens/s from model size and memory bandwidth (measured once per
machine, cached), shown as "~N tok/s" beside the fit label, and recommendations that skip
models too slow to be usable. No timing assertions: the measured bandwidth is only checked to
be a positive number; what it is depends on the machine. The cache tests count calls of a
stand-in measurement with a given figure on a machine whose load they set."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.errors import ConfigError
from localr1.models import bandwidth, fit, hardware, speed
from localr1.models.catalog import load_catalog
from localr1.models.pull_plan import plan_pull
from localr1.paths import app_paths

GB = 10**9


def localr1(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def machine(ram_gb: float, cpu_gb_s: float | None, vram_gb: float = 0,
            gpu_gb_s: float | None = None) -> fit.MachineMemory:
    return fit.MachineMemory(int(ram_gb * GB), int(ram_gb * GB), vram_gb > 0, int(vram_gb * GB),
                             "CUDA" if vram_gb else "CPU",
                             cpu_gb_s and cpu_gb_s * GB, gpu_gb_s and gpu_gb_s * GB)


class Meter:
    """Stands in for measure_bandwidth: returns `figure`, records the thread counts asked."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.figure = 10 * GB

    def __call__(self, threads: int) -> float:
        self.calls.append(threads)
        return self.figure


@pytest.fixture()
def meter(monkeypatch) -> Meter:
    """Measurements counted (the suite's bandwidth override off), on an idle machine unless a
    test sets the load average."""
    monkeypatch.delenv(bandwidth.OVERRIDE_ENV, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    stand_in = Meter()
    monkeypatch.setattr(bandwidth, "measure_bandwidth", stand_in)
    return stand_in


def set_load(monkeypatch, load: float) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


def write_cache(directory: Path, bytes_per_second: float, measured_at: float,
                threads: int = 1) -> Path:
    cache_file = directory / bandwidth.CACHE_FILE_NAME
    cache_file.write_text(json.dumps({"machine": bandwidth.machine_identity(threads),
                                      "bytes_per_second": bytes_per_second,
                                      "measured_at": measured_at}))
    return cache_file


# ---- the estimate ----------------------------------------------------------------------------


def test_the_estimate_is_a_function_of_size_and_bandwidth():
    assert speed.decode_tokens_per_second(GB, 20 * GB) == pytest.approx(
        speed.DECODE_EFFICIENCY * 20)
    # Twice the bytes: half the speed; twice the bandwidth: twice the speed.
    assert speed.decode_tokens_per_second(2 * GB, 20 * GB) == pytest.approx(
        speed.decode_tokens_per_second(GB, 10 * GB))
    # All on the GPU or all on the CPU is the plain estimate; a split lies between.
    split = speed.split_tokens_per_second(GB, 0.5, 100 * GB, 10 * GB)
    assert speed.decode_tokens_per_second(GB, 10 * GB) < split < \
        speed.decode_tokens_per_second(GB, 100 * GB)
    assert speed.split_tokens_per_second(GB, 1.0, 100 * GB, 10 * GB) == pytest.approx(
        speed.decode_tokens_per_second(GB, 100 * GB))
    assert [speed.speed_text(x) for x in (123.4, 12.6, 2.44, None)] == \
        ["~123 tok/s", "~13 tok/s", "~2.4 tok/s", "speed unknown"]


def test_fit_carries_the_speed_of_where_the_weights_run():
    shape = fit.ModelShape(4 * GB, 28, 4, 128, 128, 32768)
    on_cpu = fit.assess(shape, 4096, machine(32, cpu_gb_s=20))
    assert on_cpu.label == fit.CPU_IN_RAM
    assert on_cpu.tokens_per_second == pytest.approx(speed.DECODE_EFFICIENCY * 20 / 4)
    assert on_cpu.speed_text == "~3.0 tok/s"
    on_gpu = fit.assess(shape, 4096, machine(32, cpu_gb_s=20, vram_gb=24, gpu_gb_s=1000))
    assert on_gpu.label == fit.FITS_IN_GPU and on_gpu.speed_text == "~150 tok/s"
    unknown_gpu = fit.assess(shape, 4096, machine(32, cpu_gb_s=20, vram_gb=24))
    assert unknown_gpu.speed_text == "speed unknown"
    too_large = fit.assess(shape, 4096, machine(2, cpu_gb_s=20))
    assert too_large.speed_text == "-"


def test_a_split_over_an_unknown_gpu_is_bounded_by_its_cpu_part():
    # 8 GB card of unknown bandwidth (Vulkan, a card not in the table), 20 GB/s RAM.
    here = machine(64, cpu_gb_s=20, vram_gb=8)
    catalog = {e.name: e for e in load_catalog().entries()}
    big = fit.assess_catalog_entry(catalog["r1:32b-q4_k_m"], 4096, here)
    assert big.label == fit.PARTIAL_OFFLOAD and big.speed_is_upper_bound
    held_on_cpu = big.weights_bytes * (1 - 8 * GB / big.needed_bytes)
    assert big.tokens_per_second == pytest.approx(
        speed.DECODE_EFFICIENCY * 20 * GB / held_on_cpu, rel=1e-6)
    assert big.speed_text.startswith("up to ~") and big.speed_text.endswith(" tok/s")
    assert fit.fit_text(big).startswith(f"{fit.PARTIAL_OFFLOAD}, up to ~")
    # So the 32B and 70B are not recommended on it; what fits on the card still is.
    chosen = recommended(here)
    assert "r1:32b-q4_k_m" not in chosen and "r1:70b-q4_k_m" not in chosen
    assert {"r1:1.5b-q8_0", "r1:7b-q6_k", "r1:8b-q6_k"} <= chosen  # the largest on the card


def test_gpu_bandwidth_from_the_table():
    assert bandwidth.table_bandwidth("NVIDIA H200") == 4800 * GB
    assert bandwidth.table_bandwidth("NVIDIA GeForce RTX 4070 Ti SUPER") == 672 * GB
    assert bandwidth.table_bandwidth("NVIDIA GeForce RTX 4070 Ti") == 504 * GB
    assert bandwidth.table_bandwidth("NVIDIA GeForce RTX 4070") == 504 * GB
    assert bandwidth.table_bandwidth("Apple M2 Pro") == 200 * GB
    assert bandwidth.table_bandwidth("Apple M2") == 100 * GB
    assert bandwidth.table_bandwidth("NVIDIA L4") == 300 * GB
    assert bandwidth.table_bandwidth("NVIDIA L40S") == 864 * GB
    assert bandwidth.table_bandwidth("NVIDIA A10") == 600 * GB
    assert bandwidth.table_bandwidth("Some New GPU 9000") is None


@pytest.mark.parametrize(("name", "gb_s"), [
    ("NVIDIA A100-SXM4-40GB", 1555), ("NVIDIA A100-PCIE-40GB", 1555),
    ("NVIDIA A100-SXM4-80GB", 2039), ("NVIDIA A100 80GB PCIe", 1935),
    ("Tesla V100-SXM2-16GB", 900), ("Tesla V100-PCIE-32GB", 900), ("Tesla T4", 320),
    ("NVIDIA H100 80GB HBM3", 3350), ("NVIDIA H100 PCIe", 2000),
    ("NVIDIA GeForce RTX 3060 Ti", 448), ("NVIDIA GeForce RTX 3060", 360),
    ("NVIDIA GeForce RTX 3080 Ti", 912), ("NVIDIA GeForce RTX 3080", 760),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", 576), ("NVIDIA GeForce RTX 4090", 1008),
    ("NVIDIA GeForce RTX 3080 Ti Laptop GPU", 512),
    # A laptop part not in the table is unknown, not its desktop namesake.
    ("NVIDIA GeForce RTX 3070 Laptop GPU", None), ("NVIDIA GeForce RTX 3060 Max-Q", None),
])
def test_gpu_names_as_nvidia_smi_reports_them(name, gb_s):
    assert bandwidth.table_bandwidth(name) == (gb_s and gb_s * GB)


def test_nvidia_smi_is_asked_once_per_process(monkeypatch):
    runs = []

    def fake_run(command, **kwargs):
        runs.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="NVIDIA H200\n", stderr="")

    monkeypatch.setattr(bandwidth.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(bandwidth.subprocess, "run", fake_run)
    bandwidth.nvidia_gpu_name.cache_clear()
    try:
        cuda = hardware.BackendInfo("CUDA", True, "")
        assert [bandwidth.gpu_bandwidth(cuda) for _ in range(3)] == [4800 * GB] * 3
        assert len(runs) == 1
    finally:
        bandwidth.nvidia_gpu_name.cache_clear()


# ---- measured once, cached -------------------------------------------------------------------


def test_a_real_measurement_is_a_positive_figure():
    measured = bandwidth.measure_bandwidth(2)
    assert 0 < measured < float("inf")


def test_the_cache_file_is_written_once_and_reused(tmp_path, meter):
    first = bandwidth.cpu_bandwidth(tmp_path, threads=2)
    assert first == meter.figure and meter.calls == [2]
    cache_file = tmp_path / bandwidth.CACHE_FILE_NAME
    written = cache_file.read_text()
    assert json.loads(written)["machine"] == bandwidth.machine_identity(2)
    assert bandwidth.cpu_bandwidth(tmp_path, threads=2) == first
    assert meter.calls == [2] and cache_file.read_text() == written
    # Another thread count is another machine as far as decoding goes.
    bandwidth.cpu_bandwidth(tmp_path, threads=1)
    assert meter.calls == [2, 1]


@pytest.mark.parametrize("content", ["not json", "[]", '{"bytes_per_second": "fast"}',
                                     '{"bytes_per_second": -5, "machine": null}', ""])
def test_a_corrupt_cache_file_is_measured_again(tmp_path, meter, content):
    cache_file = tmp_path / bandwidth.CACHE_FILE_NAME
    cache_file.write_text(content)
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == meter.figure
    assert meter.calls == [1]
    assert json.loads(cache_file.read_text())["machine"] == bandwidth.machine_identity(1)


def test_another_machine_measures_again(tmp_path, meter):
    identity = {**bandwidth.machine_identity(1), "cpu": "another CPU"}
    cache_file = tmp_path / bandwidth.CACHE_FILE_NAME
    cache_file.write_text(json.dumps({"machine": identity, "bytes_per_second": 1.0,
                                      "measured_at": time.time()}))
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == meter.figure
    assert meter.calls == [1]


def test_a_measurement_under_load_is_used_once_then_measured_again(tmp_path, meter,
                                                                   monkeypatch):
    cpus = os.cpu_count() or 1
    set_load(monkeypatch, cpus / 2 + 0.5)  # busy: other programs slow the copies down
    meter.figure = 4 * GB
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 4 * GB
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 4 * GB
    assert meter.calls == [1, 1]  # still busy: not kept as the machine's figure
    set_load(monkeypatch, cpus / 2)  # idle enough now
    meter.figure = 12 * GB
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB
    assert meter.calls == [1, 1, 1]  # measured idle: cached


def test_a_busy_measurement_never_lowers_the_figure(tmp_path, meter, monkeypatch):
    write_cache(tmp_path, 12 * GB, time.time() - 8 * 24 * 3600)  # old: measured again
    set_load(monkeypatch, (os.cpu_count() or 1) + 1)
    meter.figure = 3 * GB
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB
    assert meter.calls == [1]


def test_an_old_figure_is_measured_again_keeping_the_higher(tmp_path, meter):
    week = 7 * 24 * 3600
    write_cache(tmp_path, 12 * GB, time.time() - week + 3600)  # six days and 23 hours
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB
    assert meter.calls == []
    write_cache(tmp_path, 12 * GB, time.time() - week - 3600)
    meter.figure = 5 * GB  # measured under a load the load average missed
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB
    assert meter.calls == [1]
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 12 * GB  # fresh again
    assert meter.calls == [1]
    write_cache(tmp_path, 12 * GB, time.time() - week - 3600)
    meter.figure = 15 * GB  # the old one was taken under load
    assert bandwidth.cpu_bandwidth(tmp_path, threads=1) == 15 * GB
    assert meter.calls == [1, 1]


# ---- recommendations -------------------------------------------------------------------------


def recommended(here: fit.MachineMemory) -> set[str]:
    return fit.recommended_entries(load_catalog().entries(), 4096, here)


def test_a_model_too_slow_is_not_recommended():
    # 2-core CPU-only machine, 64 GB RAM: r1:32b fits, but at ~0.6 tok/s.
    slow_cpu = recommended(machine(64, cpu_gb_s=20))
    assert "r1:32b-q4_k_m" not in slow_cpu and "r1:7b-q4_k_m" not in slow_cpu
    assert slow_cpu == {"r1:1.5b-q4_k_m"}
    # Same RAM, fast memory (a workstation): the 7B and 8B are usable too, the 32B is not.
    fast_cpu = recommended(machine(64, cpu_gb_s=80))
    assert {"r1:1.5b-q4_k_m", "r1:7b-q4_k_m", "r1:8b-q4_k_m"} <= fast_cpu
    assert "r1:32b-q4_k_m" not in fast_cpu
    # Speed unknown: by fit alone, as before.
    assert "r1:32b-q4_k_m" in recommended(machine(64, cpu_gb_s=None))


def test_with_nothing_fast_enough_the_fastest_model_is_suggested():
    assert recommended(machine(64, cpu_gb_s=2)) == {"r1:1.5b-q4_k_m"}


# ---- shown by the CLI ------------------------------------------------------------------------


def test_list_shows_the_speed_beside_the_fit(monkeypatch, r1_prefill_model, meter):
    assert localr1("import", r1_prefill_model, "--name", "tiny").exit_code == 0
    # This machine (its bandwidth a stand-in figure): measured on the first listing, cached.
    table = localr1("list", "--available").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "PARAMS", "FIT", "SPEED", "NOTES"]
    assert any(" tok/s" in line and "~" in line for line in table[1:])
    assert (app_paths().cache_dir / bandwidth.CACHE_FILE_NAME).is_file() and meter.calls
    header, row = localr1("list").stdout.splitlines()
    assert header.split() == ["NAME", "SIZE", "QUANT", "PARAMS", "FIT", "SPEED", "LAST", "USED"]
    assert row.startswith("tiny ") and "tok/s" in row
    (listed,) = json.loads(localr1("list", "--json").stdout)
    assert listed["tokens_per_second"] > 0
    # A fixed machine: exact figures.
    monkeypatch.setattr(fit, "machine_memory", lambda: machine(64, cpu_gb_s=20))
    line = next(t for t in localr1("list", "--available").stdout.splitlines()
                if t.startswith("r1:32b-q4_k_m "))
    assert line.split()[4:10] == ["CPU", "only,", "fits", "in", "RAM", "~0.6"]
    assert "recommended" not in line


@pytest.mark.parametrize("value", ["fast", "0", "-3", "inf"])
def test_a_bad_bandwidth_override_is_one_line(monkeypatch, value):
    monkeypatch.setenv(bandwidth.OVERRIDE_ENV, value)
    with pytest.raises(ConfigError, match="LOCALR1_MEMORY_BANDWIDTH"):
        bandwidth.cpu_bandwidth(Path("/nonexistent"), threads=1)


def test_the_bandwidth_override_skips_the_measurement(tmp_path, monkeypatch, meter):
    monkeypatch.setenv(bandwidth.OVERRIDE_ENV, "12.5")
    assert bandwidth.cpu_bandwidth(tmp_path, threads=2) == 12.5 * GB
    assert meter.calls == [] and not (tmp_path / bandwidth.CACHE_FILE_NAME).exists()


def test_show_prints_the_speed_beside_the_fit(monkeypatch, r1_prefill_model):
    monkeypatch.setattr(fit, "machine_memory", lambda: machine(64, cpu_gb_s=20))
    assert localr1("import", r1_prefill_model, "--name", "tiny").exit_code == 0
    [installed] = [line for line in localr1("show", "tiny").stdout.splitlines()
                   if line.startswith("fit ")]
    assert f"{fit.CPU_IN_RAM}, ~" in installed and " tok/s (about " in installed
    [catalog] = [line for line in localr1("show", "r1:32b-q4_k_m").stdout.splitlines()
                 if line.startswith("fit ")]
    assert f"{fit.CPU_IN_RAM}, ~0.6 tok/s (about " in catalog


R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"


def test_pull_shows_the_speed_and_goes_on_despite_a_bad_speed_setting(monkeypatch, tmp_path,
                                                                         r1_prefill_model):
    from tests.hub_server import hub_for_tests

    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as server:
        server.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        planned = plan_pull("r1")  # the suite's LOCALR1_MEMORY_BANDWIDTH: a speed
        assert planned.warning is None and " tok/s (needs about " in planned.fit_text
        monkeypatch.setenv(bandwidth.OVERRIDE_ENV, "fast")
        planned = plan_pull("r1")
        assert planned.fit.label == fit.CPU_IN_RAM and planned.fit.tokens_per_second is None
        result = localr1("pull", "r1")
    assert result.exit_code == 0, result.output
    warning, facts = result.stderr.splitlines()[:2]
    assert warning == ("localr1: warning: LOCALR1_MEMORY_BANDWIDTH='fast': give the memory "
                       "bandwidth in GB/s, e.g. 20; ignored for this pull (no speed estimate)")
    assert facts.endswith(f"; {fit.CPU_IN_RAM}, speed unknown " + facts.split(" unknown ")[1])
    assert result.stdout.startswith("pulled r1:1.5b-q4_k_m: ")
