"""worker_ram: llama.cpp's CPU device reports the available RAM as free only when its interface
is laid out as localr1 knows, checked before anything in it is called or written.

Each case runs in a child process: a device patched (or a layout that crashes C) must not reach
pytest's own process, whose CPU device every other test uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="llama.cpp reports the available "
                                                            "RAM itself on Windows")

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)

_LAYOUTS_IN_A_CHILD = """
import ctypes, json, sys
from localr1.engine.ggml_devices import DEVICE_TYPE_CPU, ggml_backend
from localr1.engine.worker_ram import report_available_ram
from localr1.errors import LocalR1Error

ggml = ggml_backend()
cpu = ggml.dev_by_type(DEVICE_TYPE_CPU)
slots = ctypes.cast(cpu, ctypes.POINTER(ctypes.c_void_p * 4)).contents
real = list(slots)

def outcome(device):
    try:
        report_available_ram(device)
    except LocalR1Error as exc:
        return str(exc)
    return "patched"

# Not function pointers at all (the old check called them: SIGSEGV).
junk = (ctypes.c_void_p * 4)(*[0x1234] * 4)
# llama.cpp's own functions, in a struct outside its CPU library (not the device we know).
copy = (ctypes.c_void_p * 4)(*real)
cases = {"junk": outcome(ctypes.addressof(junk)), "copy": outcome(ctypes.addressof(copy))}
# Code of the CPU library, but not get_memory where get_memory belongs.
slots[2] = real[0]
cases["get_name as get_memory"] = outcome(cpu)
cases["slot left"] = slots[2] == real[0]
slots[2] = real[2]
cases["real"] = outcome(cpu)
free, total = ggml.memory(cpu)
print(json.dumps({"cases": cases, "free": free, "total": total}))
"""


def test_a_layout_other_than_llama_cpps_is_refused_before_anything_is_called_or_written():
    result = subprocess.run([sys.executable, "-c", _LAYOUTS_IN_A_CHILD], capture_output=True,
                            text=True, timeout=120, env=os.environ | {"PYTHONPATH": _PROJECT_ROOT})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    refusal = ("llama.cpp's CPU device is not laid out as this localr1 knows: cannot report its "
               "free memory")
    assert report["cases"] == {"junk": refusal, "copy": refusal,
                               "get_name as get_memory": refusal, "slot left": True,
                               "real": "patched"}
    # Patched: the free figure is the available RAM, below the total.
    assert 0 < report["free"] < report["total"]
