"""Fixtures for the quality-engine tests: real images from the shared data, analysed once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.types import Face


@pytest.fixture(scope="session")
def load(faces_dir: Path) -> Callable[[str], np.ndarray]:
    """`load("img2.jpg")` / `load("meds-aa-S029-01.jpg")`: a shared real image as RGB (cached)."""
    cache: dict[str, np.ndarray] = {}

    def _load(name: str) -> np.ndarray:
        if name not in cache:
            hits = sorted(faces_dir.glob(f"*/{name}"))
            if not hits:
                pytest.fail(f"shared image {name} not found under {faces_dir}")
            cache[name] = read_image(hits[0])
        return cache[name].copy()

    return _load


@pytest.fixture(scope="session")
def face_of(analyzer) -> Callable[[np.ndarray], Face]:
    """The largest face of an image (mesh and iris), failing the test when there is none."""

    def _face(image: np.ndarray) -> Face:
        faces = analyzer.analyze(image, landmarks=True, iris=True)
        if not faces:
            pytest.fail("no face found in a test image that must have one")
        return faces[0]

    return _face


@pytest.fixture(scope="session")
def engine(analyzer):
    from appliance.quality import QualityEngine

    return QualityEngine(analyzer, "nist-sap30")
