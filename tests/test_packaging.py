"""The distribution recipes in packaging/: the wheel and sdist (built, installed in a fresh
virtual environment, run from outside the source tree), the Homebrew formula's resources, the
Linux desktop entry."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.scripted_models import ANSWER_TEXT

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
RUNTIME_FILES = ("localr1/models.toml", "localr1/tui/app.tcss",
                 "localr1/templates/deepseek-r1.jinja")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build` of this checkout: an sdist and a wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=600)
    return out


def _one(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_wheel_and_sdist_carry_what_the_app_reads_at_run_time(dist):
    with zipfile.ZipFile(_one(dist, "localr1-*.whl")) as wheel:
        names = set(wheel.namelist())
    for path in RUNTIME_FILES:
        assert path in names, f"{path} is missing from the wheel"
    assert not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(_one(dist, "localr1-*.whl")) as wheel:
        assert "localr1 = localr1.cli.main:main" in wheel.read(entry_points).decode()
    with tarfile.open(_one(dist, "localr1-*.tar.gz")) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    for path in (*RUNTIME_FILES, "pyproject.toml", "README.md"):
        assert path in members, f"{path} is missing from the sdist"


def test_the_wheel_installs_and_runs_from_outside_the_source_tree(dist, tmp_path,
                                                                  r1_prefill_model):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    # A real install from the wheel file; pip's wheel cache serves the llama-cpp-python build
    # made for the test environment (CMAKE_ARGS from .ci/run).
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q",
                    str(_one(dist, "localr1-*.whl"))], check=True, timeout=900)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["LOCALR1_HOME"] = str(tmp_path / "home")
    exe = str(bin_dir / "localr1")

    def localr1(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env,
                              cwd=outside, timeout=300)

    where = subprocess.run([str(bin_dir / "python"), "-c",
                            "import localr1; print(localr1.__file__)"],
                           capture_output=True, text=True, cwd=outside, env=env).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    version = localr1("--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout
    doctor = localr1("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "llama-cpp-python" in doctor.stdout and "backend CPU" in doctor.stdout
    answer = localr1("run", "-m", str(r1_prefill_model), "hi")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == ANSWER_TEXT
    # The catalog and the TUI style sheet come from the installed package.
    listed = localr1("list", "--available")
    assert listed.returncode == 0 and "r1:7b" in listed.stdout


def test_pyinstaller_bundle_builds_and_passes_its_smoke_test(tmp_path):
    """packaging/pyinstaller: the one-folder bundle, then smoke_test.py on it (--version,
    doctor with the bundled llama.cpp, run on a fixture model, serve, eval with math-verify in
    a spawned child, the TUI in tmux)."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for the bundle's TUI check (.ci/run installs it)")
    build = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(tmp_path / "work"), "--distpath", str(tmp_path / "dist"),
         str(PACKAGING / "pyinstaller" / "localr1.spec")],
        capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    bundle = tmp_path / "dist" / "localr1"
    assert list((bundle / "_internal" / "llama_cpp" / "lib").glob("libllama*"))
    smoke = subprocess.run([sys.executable, str(PACKAGING / "pyinstaller" / "smoke_test.py"),
                            str(bundle / "localr1")], capture_output=True, text=True,
                           timeout=600)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-2000:]
    assert "smoke test passed" in smoke.stdout


def test_homebrew_formula_has_a_resource_for_every_dependency():
    """Each of localr1's runtime dependencies is a pinned sdist resource of the formula (or a
    Homebrew formula it depends on). The transitive tree is make_formula.py's job, done from a
    fresh install's resolution; it moves with PyPI, so only the direct ones are checked here."""
    import tomllib

    from packaging.requirements import Requirement

    sys.path.insert(0, str(PACKAGING / "homebrew"))
    try:
        from make_formula import FROM_FORMULAE, canonical
    finally:
        sys.path.pop(0)
    formula = (PACKAGING / "homebrew" / "localr1.rb").read_text()
    resources = dict(re.findall(r'resource "([^"]+)" do\n\s+url "([^"]+)"', formula))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        name = canonical(Requirement(text).name)
        assert name in resources or f'depends_on "{name}"' in formula, name
    for url in resources.values():  # sdists, which brew builds, at a pinned version
        assert re.search(r"-[0-9][^/]*\.(tar\.gz|zip)$", url), url
    assert len(re.findall(r'sha256 "[0-9a-f]{64}"', formula)) == len(resources) + 1
    for needed in ('depends_on "cmake" => :build', "virtualenv_install_with_resources",
                   "-DGGML_METAL=on", "test do", "--version", "localr1 doctor"):
        assert needed in formula
    for name in FROM_FORMULAE:
        assert f'depends_on "{name}"' in formula and name not in resources


def test_homebrew_resources_include_what_an_extra_pulls_in():
    """brew installs each resource with --no-deps, so what a dependency's extras require must be
    a resource too: textual asks for markdown-it-py[linkify], which needs linkify-it-py."""
    sys.path.insert(0, str(PACKAGING / "homebrew"))
    try:
        from make_formula import dependency_tree
    finally:
        sys.path.pop(0)
    assert "linkify-it-py" in dependency_tree()
    assert 'resource "linkify-it-py" do' in (PACKAGING / "homebrew" / "localr1.rb").read_text()


def test_linux_desktop_entry():
    path = PACKAGING / "linux" / "localr1.desktop"
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(path)
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Terminal"] == "true"
    assert desktop["Exec"] == "localr1 chat" and desktop["Icon"] == "localr1"
    assert (PACKAGING / "linux" / "localr1.svg").read_text().lstrip().startswith("<svg")
    if shutil.which("desktop-file-validate"):
        result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True,
                                text=True)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_desktop_entry_installs_per_user(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    result = subprocess.run(["sh", str(PACKAGING / "linux" / "install-desktop-entry.sh")],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data/applications/localr1.desktop").is_file()
    assert (tmp_path / "data/icons/hicolor/scalable/apps/localr1.svg").is_file()
