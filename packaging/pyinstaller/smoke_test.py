"""Smoke-test a frozen localr1 (the PyInstaller bundle, or any `localr1` executable) from
outside the source tree: --version, doctor, run on a scripted fixture model, `serve` answering
one chat completion (uvicorn loads its protocol modules by name), the same with `--rpc` on a
`localr1 worker` from the bundle (the model in a spawned child process), `eval` scoring a
two-problem set (math-verify in a spawned child process of the frozen app), and the TUI driven
in tmux
(a prompt sent, the reasoning collapsed to "Thought for", the answer shown).

    python packaging/pyinstaller/smoke_test.py dist/localr1/localr1

Exits 0 when every check passed; prints what it checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.fixtures.scripted_models import ANSWER_TEXT, build_scripted_model  # noqa: E402


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}" + (f": {detail}" if detail and not ok else ""))
    if not ok:
        sys.exit(1)


def run(exe: Path, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def tui(exe: Path, model: Path, env: dict[str, str], cwd: Path) -> None:
    if shutil.which("tmux") is None:
        check("TUI in tmux", False, "tmux is not installed")
    session = f"localr1-smoke-{os.getpid()}"
    env_args = [f"{k}={v}" for k, v in env.items() if k.startswith(("LOCALR1_", "HF_"))]
    command = ["env", *env_args, str(exe), "chat", "--model", str(model)]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                    "-c", str(cwd), *command], check=True)
    try:
        screen = wait_screen(session, lambda s: "context" in s, "the chat screen")
        subprocess.run(["tmux", "send-keys", "-t", session, "hi there", "Enter"], check=True)
        screen = wait_screen(session, lambda s: "Thought for" in s and ANSWER_TEXT in s,
                             "the answer")
        check("TUI: prompt sent, reasoning collapsed to 'Thought for', answer shown", True)
        print("     " + "\n     ".join(line for line in screen.splitlines() if line.strip())[:2000])
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(exe: Path, model: Path, env: dict[str, str], cwd: Path, *options: str,
          what: str = "serve answers a chat completion") -> None:
    port = free_port()
    process = subprocess.Popen([str(exe), "serve", "-m", str(model), "--port", str(port),
                                "--ctx", "512", "--parallel", "1", *options], env=env, cwd=cwd,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                reply = json.loads(response.read())
        except (urllib.error.URLError, ConnectionError) as exc:
            reply = {"error": str(exc)}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    answer = (reply.get("choices") or [{}])[0].get("message", {}).get("content")
    check(what, answer == ANSWER_TEXT, json.dumps(reply) + "\n" + stderr[-2000:])


def serve_with_a_worker(exe: Path, model: Path, env: dict[str, str], cwd: Path) -> None:
    """`localr1 worker` from the bundle, and `serve --rpc` on it: the model then loads in a
    spawned child process of the frozen app (engine/model_process)."""
    port = free_port()
    worker = subprocess.Popen([str(exe), "worker", "--port", str(port), "--threads", "1"],
                              env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        serve(exe, model, env, cwd, "--rpc", f"127.0.0.1:{port}", "--gpu-layers", "all",
              what="serve --rpc answers from its model process, on a worker")
    finally:
        worker.kill()
        worker.wait(timeout=30)


def evaluate(exe: Path, env: dict[str, str], cwd: Path) -> None:
    """A model that always answers \\boxed{42}, on a set whose answers are 42 and 7: pass@1 is
    0.5 only if the answer checker's child process started and math-verify judged both."""
    model = build_scripted_model(cwd / "boxed-r1.F16.gguf", "boxed_right")
    problems = cwd / "two.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in (
        {"id": "six-sevens", "problem": "What is six times seven?", "answer": "42"},
        {"id": "three-four", "problem": "What is three plus four?", "answer": "7"})))
    result = run(exe, "eval", str(problems), "-m", str(model), "--samples", "1",
                 "--max-tokens", "200", "--json", env=env, cwd=cwd)
    try:
        (score,) = json.loads(result.stdout)["models"]
    except (ValueError, KeyError):
        score = {}
    check("eval scores a set with math-verify in a child process",
          result.returncode == 0 and score.get("pass_at_1") == 0.5
          and score.get("solved") == ["six-sevens"], result.stdout + result.stderr)


def wait_screen(session: str, done, what: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                capture_output=True, text=True).stdout
        if done(screen):
            return screen
        time.sleep(0.3)
    check(f"TUI shows {what}", False, "screen was:\n" + screen)
    return screen


def main() -> None:
    exe = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory(prefix="localr1-smoke-") as tmp:
        work = Path(tmp)
        model = build_scripted_model(work / "scripted-r1.F16.gguf", "prefill")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["LOCALR1_HOME"] = str(work / "home")
        version = run(exe, "--version", env=env, cwd=work)
        check("--version", version.returncode == 0 and "localr1" in version.stdout,
              version.stdout + version.stderr)
        doctor = run(exe, "doctor", env=env, cwd=work)
        check("doctor", doctor.returncode == 0 and "llama" in doctor.stdout,
              doctor.stdout + doctor.stderr)
        # llama.cpp's bindings and libraries come from the bundle, not from a Python install.
        check("doctor: llama-cpp-python is the bundled copy",
              f"at {exe.parent}" in doctor.stdout, doctor.stdout)
        answer = run(exe, "run", "-m", str(model), "hi", env=env, cwd=work)
        check("run on a fixture model", answer.returncode == 0
              and answer.stdout.strip() == ANSWER_TEXT, answer.stdout + answer.stderr)
        serve(exe, model, env, work)
        serve_with_a_worker(exe, model, env, work)
        evaluate(exe, env, work)
        tui(exe, model, env, work)
    print("smoke test passed")


if __name__ == "__main__":
    main()
