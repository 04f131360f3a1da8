"""Shared test data for the camera tests: real face images and videos from ../shared/data (never copied
into the repo). Missing data is a failure, not a skip: a green run must mean the backends were exercised."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path} (set BOOKING_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="session")
def deepface_dir(shared_data: Path) -> Path:
    path = shared_data / "faces" / "deepface"
    if not any(path.glob("*.jpg")):
        pytest.fail(f"no face images in {path}")
    return path


@pytest.fixture(scope="session")
def meds_video(shared_data: Path) -> Path:
    videos = sorted((shared_data / "faces" / "openmpf_meds").glob("*.mp4"))
    if not videos:
        pytest.fail(f"no .mp4 in {shared_data / 'faces' / 'openmpf_meds'}")
    return videos[0]


class FakeClock:
    """Monotonic time that moves only when told to, or when the code under test sleeps."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
