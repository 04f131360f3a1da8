"""Our reader of dlib's shape_predictor_5_face_landmarks.dat: structure, strictness, and the bundle's copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.vision.bundle import sha256_file
from appliance.vision.shape_predictor import SHAPE_PREDICTOR_ROLE, ShapePredictor, ShapePredictorError
from firmware.models.build import DLIB_PACKAGE, DLIB_SHAPE_FILE, packaged_file
from firmware.models.dlib_dat import DatFormatError
from firmware.models.dlib_shape import ShapePredictorArrays, parse_shape_predictor


@pytest.fixture(scope="module")
def dat_bytes() -> bytes:
    path, _ = packaged_file(DLIB_PACKAGE, DLIB_SHAPE_FILE)  # raises (fails) without the model package
    return path.read_bytes()


@pytest.fixture(scope="module")
def arrays(dat_bytes: bytes) -> ShapePredictorArrays:
    return parse_shape_predictor(dat_bytes)


def test_structure_is_dlibs_five_point_cascade(arrays: ShapePredictorArrays) -> None:
    # dlib's published training setup for this model: 15 cascades of 500 depth-4 trees over 800 pixels.
    assert arrays.num_parts == 5
    assert arrays.split_idx.shape == (15, 500, 15, 2)
    assert arrays.leaf_values.shape == (15, 500, 16, 5, 2)
    assert arrays.tree_depth == 4
    assert arrays.anchor_idx.shape == (15, 800) and arrays.deltas.shape == (15, 800, 2)
    assert arrays.split_idx.min() >= 0 and arrays.split_idx.max() < 800
    assert set(np.unique(arrays.anchor_idx)) <= set(range(5))
    assert np.isfinite(arrays.split_thresh).all() and np.isfinite(arrays.leaf_values).all()


def test_mean_shape_is_a_face_in_the_unit_square(arrays: ShapePredictorArrays) -> None:
    p = arrays.initial_shape
    assert ((p > 0) & (p < 1)).all()
    # dlib order: subject's left eye outer, inner; right eye outer, inner; under the nose.
    assert p[0, 0] > p[1, 0] > p[4, 0] > p[3, 0] > p[2, 0]
    assert p[4, 1] > p[:4, 1].max()
    # The cascade refines, it does not jump: the trees' corrections are small next to the face.
    assert np.abs(arrays.leaf_values).max() < 0.2


def test_truncated_file_names_the_offset(dat_bytes: bytes) -> None:
    with pytest.raises(DatFormatError, match=r"offset \d+") as exc:
        parse_shape_predictor(dat_bytes[:5000])
    assert "truncated" in str(exc.value)


def test_wrong_version_and_garbage_are_refused(dat_bytes: bytes) -> None:
    with pytest.raises(DatFormatError, match="shape_predictor version 1"):
        parse_shape_predictor(b"\x01\x02" + dat_bytes[2:200])
    with pytest.raises(DatFormatError, match="column matrix"):
        parse_shape_predictor(b"\x01\x01\x01\x0a" + dat_bytes[4:200])  # positive dims: not dlib's matrix


def test_converted_file_round_trips(tmp_path: Path, arrays: ShapePredictorArrays) -> None:
    out = tmp_path / "sp.npz"
    arrays.save(out)
    loaded = ShapePredictor.load(out)
    for name, value in arrays.as_dict().items():
        assert np.array_equal(getattr(loaded, name), value), name
    first = out.read_bytes()
    arrays.save(out)
    assert out.read_bytes() == first  # deterministic, so the manifest hash is reproducible


def test_broken_converted_file_is_refused(tmp_path: Path, arrays: ShapePredictorArrays) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, format_version=np.int32(1), initial_shape=arrays.initial_shape)
    with pytest.raises(ShapePredictorError, match="missing"):
        ShapePredictor.load(bad)
    bad.write_bytes(b"not a zip")
    with pytest.raises(ShapePredictorError, match="cannot read"):
        ShapePredictor.load(bad)


def test_bundle_carries_the_predictor_with_its_hash(bundle, arrays: ShapePredictorArrays) -> None:
    entry = bundle.by_role(SHAPE_PREDICTOR_ROLE)
    path = bundle.root / entry.file
    assert entry.sha256 == sha256_file(path)
    assert entry.source_package == DLIB_PACKAGE and entry.extra["source_file"] == DLIB_SHAPE_FILE
    assert entry.extra["cascades"] == 15 and entry.extra["tree_depth"] == 4
    loaded = ShapePredictor.load(path)
    assert np.array_equal(loaded.leaf_values, arrays.leaf_values)
