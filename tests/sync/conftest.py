"""Fixtures for the sync tests: a county PKI, a real Mosquitto broker and station keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sync import factory
from tests.sync.broker import INSTALL_HINT, PKI, MosquittoBroker, make_pki, mosquitto_binary

COUNTY = "king"
STATIONS = ("st-01", "st-02")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(tmp_path: Path, pki: PKI) -> Iterator[MosquittoBroker]:
    """A fresh broker per test (it starts in well under a second); stopped at teardown."""
    if mosquitto_binary() is None:
        pytest.fail(f"Mosquitto is needed for the broker tests and is not installed. Run: {INSTALL_HINT}")
    b = MosquittoBroker(tmp_path / "broker", pki, COUNTY)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def station_keys() -> dict[str, object]:
    return {name: factory.key(i + 1) for i, name in enumerate(STATIONS)}
