"""`localr1 doctor` says whether this llama-cpp-python has llama.cpp's RPC backend (`localr1
worker`, `--rpc`), and the exact command that rebuilds it with RPC when it has not.

The installed build has RPC (.ci/run builds it so; elsewhere that test skips without it),
checked through the real command; a build without it, or another release (whose RPC protocol
differs), is faked at llama_cpp in a test of the checks' data.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from localr1.cli.doctor import print_report
from localr1.doctor import Check, run_checks
from localr1.engine import rpc_backend
from localr1.models import hardware
from localr1.paths import app_paths
from tests.conftest import requires_rpc


def localr1(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localr1", *args], input="",
                          capture_output=True, text=True, env=os.environ.copy(), timeout=120)


@requires_rpc
def test_doctor_reports_that_this_build_has_rpc():
    result = localr1("doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [rpc] = [check for check in json.loads(result.stdout) if check["name"] == "RPC"]
    assert rpc["status"] == "ok"
    assert rpc["detail"].startswith("yes")
    assert rpc["advice"] is None
    [line] = [line for line in localr1("doctor").stdout.splitlines() if " RPC " in line]
    assert line.startswith("ok  ") and "localr1 worker and --rpc" in line


def test_reinstall_command_turns_rpc_on_and_keeps_this_builds_gpu():
    gpu_flag = {"CPU": "", "CUDA": " -DGGML_CUDA=on", "Metal": " -DGGML_METAL=on",
                "Vulkan": " -DGGML_VULKAN=on"}[hardware.backend_info().name]
    # The release whose RPC protocol localr1 speaks: a plain upgrade could bring another one.
    assert rpc_backend.reinstall_command() == (
        f'CMAKE_ARGS="-DGGML_RPC=on{gpu_flag}" pip install --force-reinstall --no-cache-dir '
        "llama-cpp-python==0.3.36")


def rpc_check() -> Check:
    checks = run_checks(app_paths())
    [rpc] = [check for check in checks if check.name == "RPC"]
    assert rpc.status == "warn"  # RPC is optional: doctor still exits 0
    assert rpc.advice == f"rebuild with RPC: {rpc_backend.reinstall_command()}"
    report = io.StringIO()
    print_report(checks, report)
    [advice] = [line for line in report.getvalue().splitlines() if "rebuild with RPC" in line]
    assert advice.strip() == f"-> rebuild with RPC: {rpc_backend.reinstall_command()}"
    return rpc


def test_a_build_without_rpc_warns_with_the_reinstall_command(monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_supports_rpc", lambda: False)
    assert rpc_check().detail == ("no: this llama-cpp-python was built without llama.cpp's RPC "
                                  "backend (localr1 worker and --rpc need it)")


def test_a_release_of_another_rpc_protocol_warns_with_the_reinstall_command(monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "__version__", "0.3.35")
    assert rpc_check().detail == (
        "no: llama-cpp-python 0.3.35 does not speak llama.cpp's RPC protocol 7.0.0 that "
        "localr1's RPC needs (0.3.36 does) (localr1 worker and --rpc need it)")
