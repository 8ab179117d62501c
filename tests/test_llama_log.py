"""llama.cpp's log: its real load error in our message, and LOCALR1_DEBUG=1 shows the load log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localr1.engine import llama_log
from localr1.engine.llama_engine import Engine, EngineConfig
from localr1.errors import ModelLoadError
from tests.fixtures.odd_models import write_tiny_model

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def test_levels_follow_ggml_h():
    llama_log.take_errors()
    llama_log.record(llama_log.GGML_LOG_LEVEL_WARN, "control-looking token: 1 '</s>'\n")
    llama_log.record(2, "info line\n")
    llama_log.record(llama_log.GGML_LOG_LEVEL_ERROR, "llama_model_load: error loading model: ")
    llama_log.record(llama_log.GGML_LOG_LEVEL_CONT, "tensor 'x' not found\n")
    llama_log.record(llama_log.GGML_LOG_LEVEL_WARN, "a warning\n")
    llama_log.record(llama_log.GGML_LOG_LEVEL_CONT, "that continues\n")
    assert llama_log.take_errors() == [
        "llama_model_load: error loading model: tensor 'x' not found"]


def test_a_missing_tensor_gives_llama_cpps_own_message(tmp_path):
    path = write_tiny_model(tmp_path / "no-norm.gguf", drop_tensors=("output_norm.weight",))
    with pytest.raises(ModelLoadError) as info:
        Engine.load(EngineConfig(path, context_size=64))
    message = str(info.value)
    assert "\n" not in message
    assert message == ("no-norm.gguf: llama.cpp could not load this model (architecture "
                       "'qwen2'): check_tensor_dims: tensor 'output_norm.weight' not found")


_LOAD = """
import sys
from localr1.engine.llama_engine import Engine, EngineConfig
from pathlib import Path
with Engine.load(EngineConfig(Path(sys.argv[1]), context_size=64)) as engine:
    print("loaded", engine.info.chat_format)
"""


@pytest.mark.parametrize("debug", ["1", None])
def test_localr1_debug_shows_the_load_log(tmp_path, debug):
    path = write_tiny_model(tmp_path / "tiny.gguf", chat_template="{{ messages[0].content }}")
    env = {k: v for k, v in os.environ.items() if k != "LOCALR1_DEBUG"}
    env["PYTHONPATH"] = _PROJECT_ROOT
    if debug:
        env["LOCALR1_DEBUG"] = debug
    result = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loaded")
    if debug:  # logged while fd 2 pointed at /dev/null, so only the saved stderr shows it
        assert "llama_model_loader: loaded meta data with" in result.stderr
        assert "print_info: n_layer" in result.stderr
    else:
        assert result.stderr == ""
