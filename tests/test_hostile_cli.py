"""Hostile arguments never give a traceback: every command and subcommand (walked from click's
command tree) gets huge, negative, NaN, infinite, empty and overlong values, a FIFO, /dev/full
and a folder, and must answer with exit 0, 1, 2 or 130 and at most one line on stderr. Then the
specific repros: a too-large --cid, 2 MB of random bytes on stdin, bad batch params, outputs
that are not regular files, NaN settings, blank prompts, Ctrl+C."""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from localr1.cli.main import cli, main
from tests.fixtures import scripted_models as sm
from tests.test_run_cli import run_in_terminal

EXIT_CODES = {0, 1, 2, 130}


def localr1(*args, input: bytes | str = b"", env=None, timeout=180):
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run([sys.executable, "-m", "localr1", *map(str, args)], input=data,
                          capture_output=True, env=env or os.environ.copy(), timeout=timeout)


def assert_one_error_line(result, code: int | None = None) -> str:
    stderr = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if code is not None:
        assert result.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ---- the walk ------------------------------------------------------------------------------


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        # chat opens the TUI (tested in tests/tui); ls is list; worker serves until Ctrl+C
        # (its bad arguments: tests/test_rpc_worker.py)
        if name in ("chat", "ls", "worker"):
            continue
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


class FifoFeeder:
    """Answers every open of a FIFO with a little junk, so a command reading it never blocks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            fd = os.open(self.path, os.O_WRONLY)  # waits for a reader
            try:
                if not self.stop.is_set():
                    os.write(fd, b"junk\n")
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)

    def close(self) -> None:
        self.stop.set()
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets a waiting open return
        self.thread.join(timeout=10)
        os.close(reader)


def invoke_in_process(args: list[str]) -> tuple[int, str, str]:
    """localr1's console entry point, in this process (a few hundred runs stay fast)."""
    runner = CliRunner()
    saved_argv = sys.argv
    with runner.isolation(input=b"") as (out, err, _):
        sys.argv = ["localr1", *args]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.argv = saved_argv
    return code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode(
        "utf-8", "replace")


def hostile_cases(command: click.Command, values: list[str], tail: list[str]):
    """Argument lists giving one parameter of `command` one hostile value each."""
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    base = ["1" for p in arguments if p.required]
    for param in command.params:
        if isinstance(param, click.Option):
            if not (param.is_flag or param.name == "help"):
                yield from ([*base, param.opts[-1], value, *tail] for value in values)
        else:
            index = arguments.index(param)
            yield from ([*base[:index], value, *base[index + 1:]] for value in values)


def walk(tmp_path: Path, commands, tail: dict[tuple[str, ...], list[str]]) -> int:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    values = [str(2**63), "-1", "nan", "inf", "", "x" * 300, str(fifo), "/dev/full",
              str(folder)]
    faulthandler.dump_traceback_later(600, exit=True)  # a hang fails loudly, never forever
    failures = []
    runs = 0
    try:
        for path, command in commands:
            for args in hostile_cases(command, values, tail.get(path, [])):
                feeder = FifoFeeder(fifo)
                try:
                    code, out, err = invoke_in_process([*path, *args])
                finally:
                    feeder.close()
                runs += 1
                lines = [line for line in err.splitlines() if line.strip()]
                if (code not in EXIT_CODES or "Traceback" in out + err
                        or "internal error" in err or len(lines) > 1):
                    failures.append(f"{' '.join(path)} {args!r}: exit {code}: {err[-300:]}")
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not failures, "\n".join(failures)
    return runs


def test_every_command_answers_hostile_arguments_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # `import --scan` looks here
    monkeypatch.chdir(tmp_path)  # values like "-1" become output files: keep them here
    assert walk(tmp_path, leaf_commands(cli), {}) > 300


# ---- specific repros -----------------------------------------------------------------------


def test_a_conversation_id_beyond_sqlite_is_one_line():
    result = localr1("run", "--cid", "9223372036854775808", "hi")
    assert result.returncode in (1, 2)
    assert_one_error_line(result)


def test_random_bytes_on_stdin_are_decoded_not_a_traceback(r1_prefill_model):
    noise = random.Random(7).randbytes(2_000_000)
    result = localr1("run", "-m", r1_prefill_model, "--no-log", input=noise)
    assert result.returncode in (0, 1)
    assert_one_error_line(result)  # the prompt is far too long for the context: one line


def test_invalid_utf8_on_stdin_reaches_the_model_as_replacement_characters(r1_prefill_model):
    result = localr1("run", "-m", r1_prefill_model, "--no-log", "--json",
                     input=b"caf\xe9 \xff\xfe latte\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == sm.ANSWER_TEXT


@pytest.mark.parametrize("option,value", [
    ("--temperature", "nan"), ("--temperature", "inf"), ("--top-p", "nan"),
    ("--min-p", "nan"), ("--seed", str(2**63)), ("--ctx", str(2**63)),
    ("--max-tokens", str(2**63)), ("--top-k", str(2**63)),
])
def test_nan_inf_and_huge_options_are_usage_errors(option, value):
    result = localr1("run", "-m", "any", option, value, "hi")
    line = assert_one_error_line(result, code=2)
    assert option in line


@pytest.mark.parametrize("text", [
    "[sampling]\ntemperature = nan\n", "[sampling]\ntop_p = inf\n",
    "[sampling]\nmin_p = -nan\n", "[sampling]\nrepeat_penalty = inf\n",
    "context_size = 9223372036854775807\n",
])
def test_nan_and_inf_in_config_are_one_line(tmp_path, text):
    env = os.environ.copy()
    env["LOCALR1_HOME"] = str(tmp_path)
    (tmp_path / "config.toml").write_text(text)
    line = assert_one_error_line(localr1("config", "show", env=env), code=1)
    assert "config.toml:" in line


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_blank_prompts_are_never_sent(prompt):
    line = assert_one_error_line(localr1("run", "-m", "any-model", prompt), code=2)
    assert "the prompt is empty" in line


def test_bad_batch_params_become_error_records_and_the_batch_goes_on(tmp_path,
                                                                      r1_prefill_model):
    records = [
        {"id": "type", "prompt": "hi", "params": {"temperature": "hot"}},
        {"id": "negative", "prompt": "hi", "params": {"max_tokens": -5}},
        {"id": "negative-k", "prompt": "hi", "params": {"top_k": -1}},
        {"id": "bool", "prompt": "hi", "params": {"top_k": True}},
        {"id": "huge", "prompt": "hi", "params": {"seed": 2**70}},
        {"id": "good", "prompt": "hi", "params": {"temperature": 1, "seed": None}},
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(2, '{"id": "nan", "prompt": "hi", "params": {"temperature": NaN}}')
    lines.insert(3, '{"id": "inf", "prompt": "hi", "params": {"repeat_penalty": Infinity}}')
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = localr1("batch", "-m", r1_prefill_model, source)
    assert result.returncode == 1  # some records failed
    out = {r["id"]: r for r in map(json.loads, result.stdout.decode().splitlines())}
    assert out["good"]["error"] is None and out["good"]["answer"] == sm.ANSWER_TEXT
    for bad in ("type", "negative", "negative-k", "bool", "huge", "nan", "inf"):
        assert out[bad]["error"].startswith(f"line {out[bad]['line']}: params."), out[bad]
    assert "must be float or int, not str" in out["type"]["error"]
    assert "1 done, 7 failed" in assert_one_error_line(result)


def test_batch_to_a_full_disk_is_one_line_and_exit_1(tmp_path, r1_prefill_model):
    result = localr1("batch", "-m", r1_prefill_model, "-o", "/dev/full", input="hi\n",
                     timeout=120)
    line = assert_one_error_line(result, code=1)
    assert "/dev/full" in line and "No space left on device" in line


def test_batch_to_dev_stdout_through_a_pipe_does_not_hang(r1_prefill_model):
    command = (f"{sys.executable} -m localr1 batch -m '{r1_prefill_model}' -o /dev/stdout "
               "| cat")
    result = subprocess.run(["sh", "-c", command], input=b"hi\n", capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == sm.ANSWER_TEXT


def test_batch_to_dev_stdout_on_a_terminal_does_not_hang(tmp_path, r1_prefill_model):
    source = tmp_path / "in.txt"
    source.write_text("hi\n")
    code, shown = run_in_terminal("batch", "-m", r1_prefill_model, "-o", "/dev/stdout", source)
    assert code == 0
    assert '"answer": "Hello!' in shown


def test_ctrl_c_exits_130_with_one_line(r1_loop_model):
    # The loop model reasons until its context is full: long enough to interrupt. Waiting for
    # the first reasoning byte on stderr means the turn is running when SIGINT arrives.
    process = subprocess.Popen([sys.executable, "-m", "localr1", "run", "-m", r1_loop_model,
                                "--no-log", "hi"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr.decode() and "Aborted!" not in stderr.decode()
    assert stderr.decode().rstrip().splitlines()[-1] == "localr1: interrupted"


@pytest.mark.parametrize("command", [["run", "--no-log", "--hide-reasoning", "hi"], ["batch"]])
def test_stdout_on_a_full_disk_is_one_line_and_exit_1(command, r1_prefill_model):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "localr1", command[0], "-m",
                                 str(r1_prefill_model), *command[1:]], input=b"hi\n",
                                stdout=full, stderr=subprocess.PIPE, timeout=120)
    line = assert_one_error_line(result, code=1)
    assert "No space left on device" in line
    assert "Exception ignored" not in result.stderr.decode()
