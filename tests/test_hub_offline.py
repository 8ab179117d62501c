"""A Hub that cannot be reached: every pull form fails in one line, at once, naming the host and
why; huggingface_hub's retry chatter stays silent; a connection lost mid-download still retries
and resumes. No real network: `.invalid` names never resolve, and a closed loopback port refuses.
Attempts are counted on the real HTTP client (a request hook), not timed."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localr1.cli.main import cli
from localr1.models.catalog import load_catalog
from localr1.models.download_errors import DownloadError
from localr1.models.hub_download import DownloadOptions
from localr1.models.hub_resolve import HubError, resolve_pull
from localr1.models.library import pull_model
from localr1.models.pull_events import Notice
from localr1.paths import app_paths
from tests.hub_server import TEST_TOKEN, hub_for_tests
from tests.tui.conftest import (  # noqa: F401 - fixtures
    SIZE,
    make_app,
    prefill_engine,
    start_pull_in_models_screen,
    store,
    wait_for,
)

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
R7_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF"
PULL_FORMS = ("r1", f"{R7_REPO}:Q6_K", f"{R7_REPO}/DeepSeek-R1-Distill-Qwen-7B-Q6_K.gguf")
UNRESOLVABLE = "http://nonexistent.invalid"
HINT = "check the network or set HF_ENDPOINT"
MB = 1 << 20
FAST = DownloadOptions(retry_base_delay=0.01, retry_max_delay=0.05, max_retries=3)


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record_requests_in(sent: list) -> None:
    """huggingface_hub's shared client, appending every request it sends (redirects included)
    to `sent`; only loopback and `.invalid` hosts may be asked."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    def record(request: httpx2.Request) -> None:
        if request.url.host != "127.0.0.1" and not request.url.host.endswith(".invalid"):
            raise RuntimeError(f"a test tried to reach {request.url}")
        sent.append(request.url)

    set_client_factory(lambda: httpx2.Client(
        event_hooks={"request": [hf_request_event_hook, record]}, follow_redirects=True,
        timeout=None))


@pytest.fixture()
def attempts(monkeypatch, tmp_path):
    """The URLs of every request sent, online (HF_HUB_OFFLINE lifted) with the test's HF home."""
    from huggingface_hub import constants, set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", TEST_TOKEN)
    sent: list = []
    record_requests_in(sent)
    yield sent
    set_client_factory(default_client_factory)


def pull_in_a_child(reference: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    child_env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), **env}
    child_env.pop("HF_HUB_VERBOSITY", None)
    return subprocess.run([sys.executable, "-m", "localr1", "pull", reference], env=child_env,
                          capture_output=True, text=True, timeout=120)


# ---- resolving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", PULL_FORMS)
def test_an_unresolvable_hub_is_one_line_for_every_pull_form(reference, tmp_path):
    proc = pull_in_a_child(reference, tmp_path, HF_ENDPOINT=UNRESOLVABLE, HF_HUB_OFFLINE="0")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot reach {UNRESOLVABLE} (name not resolved); {HINT}"]
    assert "retrying" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.parametrize("reference", PULL_FORMS)
def test_offline_mode_is_its_own_one_line_for_every_pull_form(reference, tmp_path):
    proc = pull_in_a_child(reference, tmp_path, HF_ENDPOINT=UNRESOLVABLE, HF_HUB_OFFLINE="1")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "Error: HF_HUB_OFFLINE is set, so nothing can be pulled; unset it to download"]


@pytest.mark.parametrize("reference", PULL_FORMS)
@pytest.mark.parametrize("refused", [False, True], ids=["unresolvable", "refused"])
def test_an_unreachable_hub_is_asked_once(reference, refused, attempts, monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}" if refused else UNRESOLVABLE
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    result = CliRunner().invoke(cli, ["pull", reference])
    assert result.exit_code == 1, result.output
    why = "connection refused" if refused else "name not resolved"
    assert result.stderr.splitlines() == [f"Error: cannot reach {endpoint} ({why}); {HINT}"]
    assert len(attempts) == 1, attempts


def test_huggingface_hub_retry_warnings_are_silenced(attempts, monkeypatch, request):
    library_http = logging.getLogger("huggingface_hub.utils._http")
    request.addfinalizer(lambda level=library_http.level: library_http.setLevel(level))
    monkeypatch.setenv("HF_ENDPOINT", UNRESOLVABLE)
    library_http.setLevel(logging.NOTSET)
    monkeypatch.setenv("HF_HUB_VERBOSITY", "info")  # asked for: left alone
    with pytest.raises(HubError):
        resolve_pull("r1", load_catalog())
    assert library_http.level == logging.NOTSET
    monkeypatch.delenv("HF_HUB_VERBOSITY")
    with pytest.raises(HubError):
        resolve_pull("r1", load_catalog())
    assert not library_http.isEnabledFor(logging.WARNING)


# ---- downloading -----------------------------------------------------------------------------


@pytest.fixture()
def hub(attempts, monkeypatch, tmp_path, r1_prefill_model):
    with hub_for_tests(monkeypatch, tmp_path / "hf-home") as server:
        server.add_file(R1_REPO, R1_FILE, r1_prefill_model)
        record_requests_in(attempts)
        yield server


def test_a_download_host_that_refuses_gets_one_quick_retry_then_one_line(hub, attempts):
    port = closed_port()
    hub.files_redirect_to = f"http://127.0.0.1:{port}"  # as the Hub sends files to its CDN
    events = []
    plan = resolve_pull("r1", load_catalog())
    with pytest.raises(HubError) as error:
        pull_model(plan, app_paths().models_dir, on_event=events.append, options=FAST)
    assert str(error.value) == f"cannot reach http://127.0.0.1:{port} (connection refused); {HINT}"
    assert len([url for url in attempts if url.port == port]) == 2
    assert not [e for e in events if isinstance(e, Notice)]  # the quick retry is silent


def test_a_host_lost_mid_download_keeps_retrying_and_the_part_resumes(hub, r1_prefill_model):
    port = closed_port()
    hub.drop_after_bytes, hub.drops_left = 3 * MB, 1
    events = []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, Notice):  # the drop: from now on the file's host refuses
            hub.files_redirect_to = f"http://127.0.0.1:{port}"

    plan = resolve_pull("r1", load_catalog())
    with pytest.raises(DownloadError) as error:
        pull_model(plan, app_paths().models_dir, on_event=on_event, options=FAST)
    assert "after 3 retries" in str(error.value) and "pull again to resume" in str(error.value)
    assert len([e for e in events if isinstance(e, Notice)]) == 3
    part = app_paths().models_dir / R1_REPO / (R1_FILE + ".part")
    assert part.stat().st_size == 3 * MB
    hub.files_redirect_to = None
    pull_model(resolve_pull("r1", load_catalog()), app_paths().models_dir, options=FAST)
    assert (app_paths().models_dir / R1_REPO / R1_FILE).read_bytes() == \
        r1_prefill_model.read_bytes()
    assert hub.gets()[-1].headers.get("range") == f"bytes={3 * MB}-"


# ---- the TUI -----------------------------------------------------------------------------------


async def test_the_pull_panel_shows_the_same_one_line_reason(make_app, prefill_engine,  # noqa: F811
                                                             attempts, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", UNRESOLVABLE)
    app = make_app(engine=prefill_engine)
    async with app.run_test(size=SIZE) as pilot:
        panel = await start_pull_in_models_screen(pilot, "r1:7b-q4_k_m")
        state = lambda: str(panel.query_one("#pull-state").render())  # noqa: E731
        await wait_for(pilot, lambda: "cannot reach" in state(), what="the error")
        assert state().strip() == f"cannot reach {UNRESOLVABLE} (name not resolved); {HINT}"
    assert len(attempts) == 1
