"""`python -m firmware.targets` offline: markers per target, the wheel tags a glibc accepts, the lock's
hashes per pin, and the table and exit code with a fake checker in place of pip (no network here: the
real run is `make targets`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from packaging.version import Version

from firmware import targets as t
from firmware.lock import ROOT, pins

TARGETS = {target.name: target for target in t.TARGETS}

LOCK = """\
# The device set: exact versions and hashes.
# inputs-sha256: 0000
numpy==2.2.6 ; python_full_version < '3.11' \\
    --hash=sha256:aaa1 \\
    --hash=sha256:aaa2
numpy==2.4.6 ; python_full_version == '3.11.*' \\
    --hash=sha256:bbb1
    # via opencv-python-headless
protobuf==7.36.2 ; platform_machine != 'armv7l' \\
    --hash=sha256:ccc1
colorama==0.4.6 ; platform_machine != 'armv7l' and sys_platform == 'win32' \\
    --hash=sha256:ddd1
    # via
    #   tqdm
tzdata==2026.6 \\
    --hash=sha256:eee1 \\
    --hash=sha256:eee2
"""


def test_targets_table_is_what_we_claim() -> None:
    assert set(TARGETS) == {"bookworm", "trixie", "jetpack6", "ci"}
    assert (TARGETS["bookworm"].machine, TARGETS["bookworm"].python_version, TARGETS["bookworm"].glibc) == (
        "aarch64", "3.11", (2, 36))
    assert (TARGETS["trixie"].python_version, TARGETS["trixie"].glibc) == ("3.13", (2, 41))
    assert (TARGETS["jetpack6"].python_version, TARGETS["jetpack6"].glibc) == ("3.10", (2, 35))
    assert (TARGETS["ci"].machine, TARGETS["ci"].python_version) == ("x86_64", "3.11")


def test_environment_is_the_targets_not_this_machines() -> None:
    env = TARGETS["trixie"].environment()
    assert env["platform_machine"] == "aarch64"  # this machine is x86_64
    assert env["python_version"] == "3.13" and env["python_full_version"].startswith("3.13.")
    assert env["sys_platform"] == "linux" and env["platform_system"] == "Linux" and env["os_name"] == "posix"
    assert env["implementation_name"] == "cpython" and env["platform_python_implementation"] == "CPython"


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("python_full_version < '3.11'", {"bookworm": False, "trixie": False, "jetpack6": True, "ci": False}),
        ("python_full_version == '3.11.*'", {"bookworm": True, "trixie": False, "jetpack6": False, "ci": True}),
        ("python_full_version >= '3.12'", {"bookworm": False, "trixie": True, "jetpack6": False, "ci": False}),
        ("platform_machine != 'armv7l'", {"bookworm": True, "trixie": True, "jetpack6": True, "ci": True}),
        ("platform_machine == 'aarch64'", {"bookworm": True, "trixie": True, "jetpack6": True, "ci": False}),
        ("platform_machine != 'armv7l' and sys_platform == 'win32'", dict.fromkeys(TARGETS, False)),
        ("platform_python_implementation != 'PyPy'", dict.fromkeys(TARGETS, True)),
        (
            "python_full_version >= '3.11' and implementation_name != 'PyPy'",
            {"bookworm": True, "trixie": True, "jetpack6": False, "ci": True},
        ),
        ("", dict.fromkeys(TARGETS, True)),
    ],
)
def test_marker_per_target(marker: str, expected: dict[str, bool]) -> None:
    pin = t.Pin("pkg", Version("1.0"), marker)
    assert {name: pin.applies(target) for name, target in TARGETS.items()} == expected


def test_manylinux_tags_for_a_glibc() -> None:
    tags = t.manylinux_platforms("aarch64", (2, 36))
    # Best first, every level down to 2.17 (pip takes --platform literally), plus the manylinux2014 alias.
    assert tags[0] == "manylinux_2_36_aarch64"
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert [f"manylinux_2_{n}_aarch64" for n in range(36, 16, -1)] == [x for x in tags if x.startswith("manylinux_")]
    assert not any(tag.startswith("linux_") or "x86_64" in tag for tag in tags)
    assert "manylinux_2_37_aarch64" not in t.manylinux_platforms("aarch64", (2, 36))
    assert "manylinux_2_41_aarch64" in TARGETS["trixie"].platforms()
    assert TARGETS["jetpack6"].platforms()[0] == "manylinux_2_35_aarch64"


def test_x86_64_also_accepts_the_older_manylinux_levels() -> None:
    tags = t.manylinux_platforms("x86_64", (2, 36))
    assert {"manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"} <= set(tags)
    assert tags.index("manylinux2014_x86_64") == tags.index("manylinux_2_17_x86_64") + 1


def test_abis_cover_cpython_stable_abi_and_none() -> None:
    assert TARGETS["trixie"].abis() == ["cp313", "abi3", "none"]
    assert TARGETS["jetpack6"].abis() == ["cp310", "abi3", "none"]


def test_read_pins_agrees_with_the_lock_parser_and_keeps_each_pins_hashes() -> None:
    found = t.read_pins(LOCK)
    assert {(p.name, p.version, p.marker) for p in found} == {
        (name, version, marker) for name, versions in pins(LOCK).items() for version, marker in versions
    }
    by_label = {p.label: p for p in found}
    assert by_label["numpy==2.2.6"].hashes == {"aaa1", "aaa2"}
    assert by_label["numpy==2.4.6"].hashes == {"bbb1"}
    assert by_label["tzdata==2026.6"].hashes == {"eee1", "eee2"}


def test_read_pins_of_the_real_device_lock() -> None:
    found = t.read_pins((ROOT / "device.lock").read_text(encoding="utf-8"))
    assert found and all(p.hashes for p in found)
    assert len(found) == sum(len(v) for v in pins((ROOT / "device.lock").read_text(encoding="utf-8")).values())


class FakeChecker:
    """Answers from a table instead of pip; records the calls (from several threads)."""

    def __init__(self, answers: dict[tuple[str, str], t.Cell]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, pin: t.Pin, target: t.Target) -> t.Cell:
        with self._lock:
            self.calls.append((pin.label, target.name))
        return self.answers.get((pin.label, target.name), t.Cell(t.OK, f"{pin.name}-{pin.version}-py3-none-any.whl"))


def test_check_asks_only_for_applicable_cells() -> None:
    fake = FakeChecker({})
    found = t.read_pins(LOCK)
    results = t.check(found, t.TARGETS, fake, jobs=4)
    assert len(results) == len(found) * len(t.TARGETS)
    assert ("numpy==2.2.6", "jetpack6") in fake.calls
    assert ("numpy==2.2.6", "trixie") not in fake.calls
    assert not any(label.startswith("colorama") for label, _ in fake.calls)
    assert results[("numpy==2.2.6", "trixie")].status == t.NOT_APPLICABLE
    assert results[("colorama==0.4.6", "ci")].status == t.NOT_APPLICABLE
    assert not t.failures(results)


def test_a_checker_that_raises_gives_an_error_cell() -> None:
    def broken(pin: t.Pin, target: t.Target) -> t.Cell:
        raise TimeoutError("pip took too long")

    results = t.check(t.read_pins(LOCK), TARGETS.values(), broken, jobs=2)
    assert results[("tzdata==2026.6", "ci")] == t.Cell(t.ERROR, detail="TimeoutError: pip took too long")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], answers: dict, *args: str) -> tuple[int, str]:
    lock = tmp_path / "device.lock"
    lock.write_text(LOCK, encoding="utf-8")
    code = t.main(["--lock", str(lock), *args], checker=FakeChecker(answers))
    return code, capsys.readouterr().out


def test_table_rendering_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = {
        ("protobuf==7.36.2", "trixie"): t.Cell(t.MISSING, detail="no compatible wheel"),
        ("numpy==2.2.6", "jetpack6"): t.Cell(t.SOURCE_ONLY, detail="no compatible wheel"),
    }
    code, out = _run(tmp_path, capsys, answers, "--out", str(tmp_path / "bench"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["package", "bookworm", "trixie", "jetpack6", "ci"]
    rows = {line.split()[0]: line for line in lines[2:7]}
    assert set(rows) == {"colorama==0.4.6", "numpy==2.2.6", "numpy==2.4.6", "protobuf==7.36.2", "tzdata==2026.6"}
    assert rows["protobuf==7.36.2"].split() == ["protobuf==7.36.2", "ok", "missing", "ok", "ok"]
    assert rows["numpy==2.2.6"].split() == ["numpy==2.2.6", "n/a", "n/a", "source", "only", "n/a"]
    assert rows["colorama==0.4.6"].split()[1:] == ["n/a"] * 4
    # Columns line up: each status starts where its header does.
    assert rows["protobuf==7.36.2"].index("missing") == lines[0].index("trixie")
    assert any(line.startswith("trixie (") and "1 ok, 1 missing, 3 n/a" in line for line in lines)
    assert any(line.startswith("jetpack6 (") and "1 source only" in line for line in lines)
    assert "  missing: protobuf==7.36.2 on trixie (no compatible wheel)" in lines
    assert (tmp_path / "bench" / "targets.txt").read_text(encoding="utf-8") == out
    doc = json.loads((tmp_path / "bench" / "targets.json").read_text(encoding="utf-8"))
    assert doc["ok"] is False and doc["summary"]["trixie"]["missing"] == 1


def test_all_ok_exits_0_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(tmp_path, capsys, {}, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True and doc["lock"] == "device.lock"
    assert [target["name"] for target in doc["targets"]] == ["bookworm", "trixie", "jetpack6", "ci"]
    numpy = next(p for p in doc["packages"] if p["version"] == "2.4.6")
    assert numpy["cells"]["bookworm"] == {"status": "ok", "file": "numpy-2.4.6-py3-none-any.whl"}
    assert numpy["cells"]["trixie"] == {"status": "n/a"}
    assert doc["summary"]["bookworm"] == {"ok": 3, "missing": 0, "source only": 0, "hash?": 0, "error": 0, "n/a": 2}
    assert "://" not in out  # no index address in what we print


def test_report_hash_not_in_lock_is_flagged(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    pin = t.Pin("tzdata", Version("2026.6"), "", frozenset({"eee1"}))

    def write(sha: str) -> None:
        report.write_text(json.dumps({"install": [{"download_info": {
            "url": "file:///somewhere/tzdata-2026.6-py2.py3-none-any.whl",
            "archive_info": {"hashes": {"sha256": sha}},
        }}]}), encoding="utf-8")

    write("eee1")
    assert t._report_cell(report, pin) == t.Cell(t.OK, "tzdata-2026.6-py2.py3-none-any.whl")
    write("fff9")
    assert t._report_cell(report, pin).status == t.BAD_HASH
