"""Does every platform we claim get a binary wheel for every locked package? (`make targets`)

A lock (firmware/lock.py) pins versions and hashes for every Python and machine at once, but it cannot say
whether a pinned version *publishes a wheel* for a Pi on Trixie's Python 3.13 or for a Jetson's 3.10. If
it does not, `pip install --require-hashes` on that station either fails or starts compiling C++ on a Pi
for an hour, and we would only find out in the field. This check asks the package index, without
installing anything, for each lock line and each target:

- the line's environment marker is evaluated for the target (a false marker: ``n/a``, the station never
  installs that line);
- pip resolves ``name==version`` with ``--only-binary=:all:`` and the target's exact wheel tags
  (``--platform`` for every manylinux level the target's glibc accepts, its CPython ABI, abi3 and none),
  in ``--dry-run`` mode with a ``--report``: ``ok``;
- the file pip chose must carry one of the lock's hashes for that pin, or the station's
  ``--require-hashes`` install refuses it: ``hash?``;
- no wheel, but an sdist of that version: ``source only`` (the station would build it); nothing at all:
  ``missing``; pip failing for another reason (network, index): ``error``.

pip is used, not our own reading of the index, so the answer follows the machine's own index
configuration and pip's own tag and Requires-Python rules, which are the ones a station applies. pip's
``--platform`` is taken literally (``manylinux_2_36_aarch64`` does not accept a ``manylinux_2_17``
wheel), so `Target.platforms` spells out every compatible tag. pip fetches only a wheel's metadata when
the index serves it (PEP 658); otherwise it downloads the whole wheel, so by default it is asked to read
the metadata with HTTP range requests instead (``--use-feature=fast-deps``, dropped automatically by a
pip that no longer has it; ``--full-downloads`` turns it off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.version import Version

from firmware.lock import ROOT, pins

OK, MISSING, SOURCE_ONLY, NOT_APPLICABLE, BAD_HASH, ERROR = "ok", "missing", "source only", "n/a", "hash?", "error"
STATUSES = (OK, MISSING, SOURCE_ONLY, BAD_HASH, ERROR, NOT_APPLICABLE)

# The oldest glibc each machine's manylinux wheels can declare (PEP 600): aarch64 wheels start at 2.17.
_MIN_GLIBC_MINOR = {"aarch64": 17, "x86_64": 5}
# The legacy names (PEP 513/571/599) of some manylinux levels; wheels still carry them as their only tag.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


@dataclass(frozen=True)
class Target:
    """One platform a station (or CI) installs the lock on: what its wheel tags and markers depend on."""

    name: str
    machine: str  # platform_machine: aarch64, x86_64
    python: str  # full CPython version, e.g. "3.11.2": markers compare python_full_version
    glibc: tuple[int, int]
    description: str = ""

    @property
    def python_version(self) -> str:
        """``X.Y``: the marker variable ``python_version``."""
        return ".".join(self.python.split(".")[:2])

    @property
    def abi(self) -> str:
        """The CPython ABI tag (cp311): wheels built for one CPython minor version."""
        return "cp" + self.python_version.replace(".", "")

    def environment(self) -> dict[str, str]:
        """The marker environment of the target, complete so nothing leaks in from the machine running us."""
        return {
            "implementation_name": "cpython",
            "implementation_version": self.python,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": self.python,
            "python_version": self.python_version,
            "sys_platform": "linux",
        }

    def platforms(self) -> list[str]:
        """Every platform tag this target accepts, best first (pip prefers earlier ``--platform`` values)."""
        return manylinux_platforms(self.machine, self.glibc)

    def abis(self) -> list[str]:
        return [self.abi, "abi3", "none"]


def manylinux_platforms(machine: str, glibc: tuple[int, int]) -> list[str]:
    """``manylinux_2_N_<machine>`` from the given glibc down to the oldest level, with the legacy aliases.

    Only manylinux tags: a plain ``linux_aarch64`` wheel is built for one machine's libraries and says
    nothing about a Pi's; ``py3-none-any`` needs no platform tag (pip always accepts ``any``).
    """
    major, minor = glibc
    if major != 2:
        raise ValueError(f"glibc {major}.{minor}: manylinux tags exist for glibc 2.x only")
    tags: list[str] = []
    for n in range(minor, _MIN_GLIBC_MINOR.get(machine, 17) - 1, -1):
        tags.append(f"manylinux_2_{n}_{machine}")
        if n in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[n]}_{machine}")
    return tags


def _this_glibc(default: tuple[int, int] = (2, 36)) -> tuple[int, int]:
    """This machine's glibc (the CI target is the machine that runs CI, i.e. this one)."""
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        found = ""
    parts = found.split()[-1].split(".") if found.startswith("glibc ") else []
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 else default


def _ci_python(minor: str = "3.11", default: str = "3.11.2") -> str:
    """The running interpreter's full version when it is CI's CPython minor version (the venv's), else a default."""
    here = platform.python_version()
    return here if here.startswith(minor + ".") and platform.python_implementation() == "CPython" else default


TARGETS: tuple[Target, ...] = (
    Target("bookworm", "aarch64", "3.11.2", (2, 36), "Raspberry Pi OS Bookworm (Pi 5)"),
    Target("trixie", "aarch64", "3.13.5", (2, 41), "Raspberry Pi OS Trixie (Pi 5)"),
    Target("jetpack6", "aarch64", "3.10.12", (2, 35), "JetPack 6 / Ubuntu 22.04 (Jetson)"),
    Target("ci", "x86_64", _ci_python(), _this_glibc(), "the CI machine (this one)"),
)


@dataclass(frozen=True)
class Pin:
    """One lock line: ``name==version ; marker`` and the sha256 of every file the lock accepts for it."""

    name: str
    version: Version
    marker: str = ""
    hashes: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.name}=={self.version}"

    def applies(self, target: Target) -> bool:
        """Whether the target installs this line at all (its marker is true there)."""
        return not self.marker or Marker(self.marker).evaluate(target.environment())


def read_pins(text: str) -> list[Pin]:
    """The lock's lines as `Pin`s, with their hashes.

    Names, versions and markers come from `firmware.lock.pins` (the one lock parser); this only attaches
    the ``--hash=sha256:`` continuation lines to the requirement line above them.
    """
    hashes: dict[tuple[str, Version], set[str]] = {}
    current: tuple[str, Version] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if line and line[0] not in "# -":
            (name, [(version, _marker)]), = pins(line).items()
            current = (name, version)
            hashes.setdefault(current, set())
        elif current and stripped.startswith("--hash=sha256:"):
            hashes[current].add(stripped.removeprefix("--hash=sha256:").rstrip(" \\").strip())
    found = [
        Pin(name, version, marker, frozenset(hashes.get((name, version), ())))
        for name, versions in pins(text).items()
        for version, marker in versions
    ]
    return sorted(found, key=lambda p: (p.name, p.version))


@dataclass(frozen=True)
class Cell:
    """The answer for one pin on one target; ``file`` is the wheel (or sdist) name pip found."""

    status: str
    file: str = ""
    detail: str = ""


Checker = Callable[[Pin, Target], Cell]


def _report_cell(report_path: Path, pin: Pin) -> Cell:
    """An ``ok`` or ``hash?`` cell from pip's ``--report``: the file chosen and whether the lock accepts it."""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    install = report.get("install") or []
    if not install:
        return Cell(ERROR, detail="pip resolved nothing")
    info = install[0].get("download_info", {})
    file = info.get("url", "").split("#")[0].rsplit("/", 1)[-1]
    sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
    if sha256 and pin.hashes and sha256 not in pin.hashes:
        return Cell(BAD_HASH, file, f"sha256 {sha256[:12]}... is not among the lock's {len(pin.hashes)} hashes")
    return Cell(OK, file)


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith("ERROR")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["pip failed"])[-1]


@dataclass
class PipChecker:
    """The real checker: pip in a subprocess, resolving against the machine's configured package index.

    A subprocess, not pip's internals (which are no API), and one per cell so cells run in parallel.
    """

    python: str = sys.executable
    fast_deps: bool = True
    timeout: float = 600.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _target_args(self, target: Target) -> list[str]:
        args = ["--python-version", target.python, "--implementation", "cp"]
        for tag in target.platforms():
            args += ["--platform", tag]
        for abi in target.abis():
            args += ["--abi", abi]
        return args

    def _pip(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_NO_COLOR": "1"}
        return subprocess.run(
            [self.python, "-m", "pip", *args], capture_output=True, text=True, env=env,
            timeout=self.timeout, check=False,
        )

    def _resolve_wheel(self, pin: Pin, target: Target, tmp: Path) -> subprocess.CompletedProcess[str]:
        """``pip install --dry-run`` of the pin with the target's tags, binary only, report to tmp/report.json."""
        args = [
            "install", "--dry-run", "--no-deps", "--ignore-installed", "--only-binary=:all:", "--quiet",
            "--target", str(tmp / "target"), "--report", str(tmp / "report.json"), *self._target_args(target),
        ]
        if self.fast_deps:
            args.append("--use-feature=fast-deps")
        out = self._pip([*args, pin.label])
        if self.fast_deps and out.returncode != 0 and "fast-deps" in out.stderr and "invalid choice" in out.stderr:
            with self._lock:
                self.fast_deps = False  # this pip has dropped the feature: plain metadata/whole-file fetches
            out = self._pip([a for a in args if a != "--use-feature=fast-deps"] + [pin.label])
        return out

    def _has_sdist(self, pin: Pin, target: Target) -> bool | None:
        """Whether the index has an sdist of exactly this version usable on the target (None: pip failed).

        ``pip index versions`` reads only the index page, so telling "source only" from "missing" costs
        no download and no build of the sdist's metadata (which a dry-run install with sources would do).
        """
        out = self._pip([
            "index", "versions", "--json", "--pre", "--no-binary=:all:", *self._target_args(target), pin.name,
        ])
        if out.returncode != 0:
            return False if "No matching distribution" in out.stderr else None
        versions = json.loads(out.stdout).get("versions", [])
        return any(Version(v) == pin.version for v in versions)

    def __call__(self, pin: Pin, target: Target) -> Cell:
        with tempfile.TemporaryDirectory(prefix="targets-") as tmp_dir:
            tmp = Path(tmp_dir)
            out = self._resolve_wheel(pin, target, tmp)
            if out.returncode == 0:
                return _report_cell(tmp / "report.json", pin)
        if "No matching distribution" not in out.stderr and "Could not find a version" not in out.stderr:
            return Cell(ERROR, detail=_last_error(out.stderr))
        sdist = self._has_sdist(pin, target)
        if sdist is None:
            return Cell(ERROR, detail="pip index versions failed")
        if sdist:
            return Cell(SOURCE_ONLY, detail="no compatible wheel, an sdist")
        return Cell(MISSING, detail="no compatible wheel, no sdist")


Results = dict[tuple[str, str], Cell]  # (pin label, target name) -> cell


def _safe(checker: Checker, pin: Pin, target: Target) -> Cell:
    """One cell; a checker that raises (timeout, bad report) gives an ``error`` cell, not a lost run."""
    try:
        return checker(pin, target)
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is reported in that cell
        return Cell(ERROR, detail=f"{type(exc).__name__}: {exc}")


def check(
    pin_list: Sequence[Pin], targets: Sequence[Target], checker: Checker, *, jobs: int = 8,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Every (pin, target) cell: ``n/a`` from the marker, the rest from the checker, ``jobs`` at a time.

    Each check waits on the network, not the CPU, hence threads.
    """
    results: Results = {}
    todo = []
    for pin in pin_list:
        for target in targets:
            if pin.applies(target):
                todo.append((pin, target))
            else:
                results[(pin.label, target.name)] = Cell(NOT_APPLICABLE)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_safe, checker, pin, target): (pin, target) for pin, target in todo}
        for done, future in enumerate(as_completed(futures), 1):
            pin, target = futures[future]
            cell = results[(pin.label, target.name)] = future.result()
            if progress:
                progress(f"[{done}/{len(todo)}] {pin.label} on {target.name}: {cell.status}")
    return results


def summary(results: Results, targets: Iterable[Target]) -> dict[str, dict[str, int]]:
    """Per target, how many cells have each status."""
    out: dict[str, dict[str, int]] = {}
    for target in targets:
        counts = Counter(cell.status for (_label, name), cell in results.items() if name == target.name)
        out[target.name] = {status: counts.get(status, 0) for status in STATUSES}
    return out


def failures(results: Results) -> list[tuple[str, str, Cell]]:
    """The applicable cells that are not ``ok``: any one of them fails the check."""
    return sorted(
        (label, name, cell) for (label, name), cell in results.items() if cell.status not in (OK, NOT_APPLICABLE)
    )


def render_table(pin_list: Sequence[Pin], targets: Sequence[Target], results: Results) -> str:
    """The package x target table, a summary line per target, then each failure with pip's reason."""
    header = ["package", *(t.name for t in targets)]
    rows = [[pin.label, *(results[(pin.label, t.name)].status for t in targets)] for pin in pin_list]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows), ""]
    counts = summary(results, targets)
    for target in targets:
        shown = ", ".join(f"{n} {status}" for status, n in counts[target.name].items() if n)
        out.append(
            f"{target.name} ({target.description}; {target.machine}, CPython {target.python}, "
            f"glibc {target.glibc[0]}.{target.glibc[1]}): {shown or 'nothing locked'}"
        )
    for label, name, cell in failures(results):
        out.append(f"  {cell.status}: {label} on {name}" + (f" ({cell.detail})" if cell.detail else ""))
    return "\n".join(out) + "\n"


def to_json(lock: Path, pin_list: Sequence[Pin], targets: Sequence[Target], results: Results) -> dict:
    """The whole answer as one JSON-able object (for `--json` and `bench-results/targets.json`)."""
    return {
        "lock": lock.name,
        "ok": not failures(results),
        "targets": [
            {
                "name": t.name, "description": t.description, "machine": t.machine, "python": t.python,
                "glibc": f"{t.glibc[0]}.{t.glibc[1]}", "platforms": t.platforms(), "abis": t.abis(),
            }
            for t in targets
        ],
        "summary": summary(results, targets),
        "packages": [
            {
                "name": pin.name, "version": str(pin.version), "marker": pin.marker,
                "cells": {t.name: _cell_json(results[(pin.label, t.name)]) for t in targets},
            }
            for pin in pin_list
        ],
    }


def _cell_json(cell: Cell) -> dict[str, str]:
    return {key: value for key, value in (("status", cell.status), ("file", cell.file), ("detail", cell.detail))
            if value}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.targets",
        description=(
            "Check, without installing anything, that every platform we claim (" +
            ", ".join(f"{t.name}: {t.description}" for t in TARGETS) +
            ") has a binary wheel of every package pinned in a lock, with a file the lock's hashes accept. "
            "Cells: ok, missing (no wheel, no sdist), source only (an sdist would be built on the station), "
            "hash? (the wheel is not one of the lock's files), error (pip failed), n/a (the line's marker is "
            "false there). Exits 1 when any applicable cell is not ok. Asks the package index through pip."
        ),
    )
    parser.add_argument("--lock", type=Path, default=ROOT / "device.lock",
                        help="the lock file to check (default: device.lock, what a station installs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--out", type=Path, help="also write DIR/targets.json and DIR/targets.txt")
    parser.add_argument("--jobs", type=int, default=8, help="pip runs at a time (default 8)")
    parser.add_argument(
        "--full-downloads", action="store_true",
        help="do not ask pip for HTTP range requests (fast-deps) where the index serves no wheel metadata; "
             "pip then downloads each whole wheel",
    )
    return parser


def main(argv: list[str] | None = None, checker: Checker | None = None) -> int:
    args = _parser().parse_args(argv)
    pin_list = read_pins(args.lock.read_text(encoding="utf-8"))
    checker = checker or PipChecker(fast_deps=not args.full_downloads)
    started = time.monotonic()
    results = check(pin_list, TARGETS, checker, jobs=args.jobs, progress=lambda msg: print(msg, file=sys.stderr))
    print(f"checked {len(pin_list)} pins on {len(TARGETS)} targets in {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    table = render_table(pin_list, TARGETS, results)
    doc = to_json(args.lock, pin_list, TARGETS, results)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "targets.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (args.out / "targets.txt").write_text(table, encoding="utf-8")
    print(json.dumps(doc) if args.json else table, end="\n" if args.json else "")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
