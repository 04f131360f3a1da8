"""The import contracts in pyproject.toml (``[tool.importlinter]``) hold, and each one bites.

They draw the station/county boundary: the device never imports the county side, the protocol package
imports neither side, vision and quality stay free of the store, UI and capture, and the county side
never imports the station's camera, capture, store, UI or agent; and each side (with sync.protocol) never
imports a package only the other side installs (the `station` and `county` extras). ``make lint`` runs the
same check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
CONTRACTS = [contract["name"] for contract in PYPROJECT["tool"]["importlinter"]["contracts"]]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the pyproject.toml in ``cwd``, importing the packages from ``cwd`` first."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


# (module to add the import to, the forbidden import, indexes of the contracts it breaks). Importing the
# county's gallery store from the station side also brings psycopg in (indirectly), and importing the
# station's store from the county side brings sqlite_utils: those break the package contract as well.
VIOLATIONS = [
    ("appliance/imageio.py", "import sync.county.gallery.store", (0, 4)),
    ("firmware/provision.py", "import sync.county.enroll.ca", (0,)),
    ("sync/station/remote.py", "import sync.county.gallery.store", (0, 4)),
    ("sync/protocol/sdnotify.py", "import firmware.lock", (1,)),
    ("appliance/quality/types.py", "import appliance.store", (2,)),
    ("sync/county/gallery/fleet.py", "import appliance.ui.health", (3, 5)),
    # External packages: a distribution that only the other side's lock installs.
    ("appliance/imageio.py", "import psycopg", (4,)),
    ("sync/protocol/sdnotify.py", "import nistitl", (4,)),
    ("sync/county/gallery/fleet.py", "import sqlite_utils", (5,)),
    ("sync/protocol/wire.py", "import apscheduler", (5,)),
]


@pytest.mark.parametrize(("module", "statement", "contracts"), VIOLATIONS,
                         ids=[f"{m}:{s.split()[-1]}" for m, s, _ in VIOLATIONS])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, statement: str, contracts: tuple[int, ...]
) -> None:
    """The same check on a copy of the packages with one forbidden import added fails, naming the contracts
    and the import (so the contracts are not vacuous, e.g. by naming a package that does not exist)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("appliance", "sync", "firmware"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / module).open("a", encoding="utf-8") as fh:
        fh.write(f"\n{statement}  # the forbidden import under test\n")

    result = lint_imports(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    broken = [name for name in CONTRACTS if f"{name} BROKEN" in out]
    assert broken == [CONTRACTS[i] for i in contracts], out
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {statement.split()[-1]}" in out
    assert f"Contracts: {len(CONTRACTS) - len(contracts)} kept, {len(contracts)} broken." in out
