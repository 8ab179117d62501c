"""Write localr1.rb, the Homebrew formula, from the dependencies installed here.

    python -m build --sdist                      # dist/localr1-X.Y.Z.tar.gz
    python packaging/homebrew/make_formula.py dist/localr1-X.Y.Z.tar.gz [--url URL]

Run it with the Python of a fresh install (.ci/run's venv): its versions are what a new
install resolves today, and what CI tested.

Each Python dependency of localr1 (the whole tree, with environment markers evaluated for
macOS) becomes a `resource` pinned to the version installed in this environment, with the
sdist's URL and sha256 from PyPI's simple index (JSON, PEP 691): what
`brew update-python-resources` does, without needing brew. Dependencies that Homebrew ships
as formulae (numpy) are `depends_on` instead.
--url is where the release sdist is published (default: PyPI's source URL for this version).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import urllib.request
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
MACOS = {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix",
         "platform_machine": "arm64", "implementation_name": "cpython", "extra": ""}
FROM_FORMULAE = {"numpy"}  # `depends_on "numpy"`: Homebrew's build, not a resource
NOT_NEEDED = {"pip", "setuptools", "wheel"}  # the virtualenv brings its own


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_tree(root: str = "localr1") -> dict[str, str]:
    """name -> installed version, for every runtime dependency of `root` on macOS."""
    found: dict[str, str] = {}

    seen: set[tuple[str, str]] = set()

    def walk(name: str, extras: frozenset[str] = frozenset()) -> None:
        dist = distribution(name)
        key = canonical(dist.metadata["Name"])
        found[key] = dist.version
        # A dependency asked for with extras (textual needs markdown-it-py[linkify]) brings
        # what those extras require: each (distribution, extra) is walked once.
        for extra in ("", *sorted(extras)):
            if (key, extra) in seen:
                continue
            seen.add((key, extra))
            for text in dist.requires or []:
                requirement = Requirement(text)
                if requirement.marker is None or \
                        requirement.marker.evaluate({**MACOS, "extra": extra}):
                    walk(requirement.name, frozenset(map(canonical, requirement.extras)))

    walk(root)
    del found[canonical(root)]
    return {k: v for k, v in sorted(found.items()) if k not in FROM_FORMULAE | NOT_NEEDED}


def sdist_of(name: str, version: str) -> tuple[str, str]:
    """URL and sha256 of `name`'s sdist for `version`, from PyPI's simple index (PEP 691)."""
    request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        files = json.load(response)["files"]
    for file in files:
        filename = file["filename"]
        stem = filename.removesuffix(".tar.gz").removesuffix(".zip")
        if stem == filename or "-" not in stem:
            continue
        project, _, file_version = stem.rpartition("-")
        if canonical(project) == name and file_version == version and not file.get("yanked"):
            return file["url"], file["hashes"]["sha256"]
    raise SystemExit(f"{name} {version} has no sdist on PyPI")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path)
    parser.add_argument("--url")
    args = parser.parse_args()
    version = re.match(r"localr1-(.+)\.tar\.gz$", args.sdist.name)[1]
    url = args.url or \
        f"https://files.pythonhosted.org/packages/source/l/localr1/localr1-{version}.tar.gz"
    resources = []
    for name, pinned in dependency_tree().items():
        resource_url, sha256 = sdist_of(name, pinned)
        resources.append(f'  resource "{name}" do\n    url "{resource_url}"\n'
                         f'    sha256 "{sha256}"\n  end\n')
    template = (HERE / "localr1.rb.in").read_text()
    formula = template.replace("@URL@", url) \
        .replace("@SHA256@", hashlib.sha256(args.sdist.read_bytes()).hexdigest()) \
        .replace("@RESOURCES@", "\n".join(resources).rstrip("\n"))
    (HERE / "localr1.rb").write_text(formula)
    print(f"wrote {HERE / 'localr1.rb'}: {len(resources)} resources")


if __name__ == "__main__":
    main()
