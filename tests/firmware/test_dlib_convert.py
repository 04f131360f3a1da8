"""dlib face descriptor -> TFLite conversion: parity with dlib's own descriptors, reader and writer checks.

The parity fixture (chips and the descriptors dlib 20.0.1 computed for them) lives in the shared data
folder, outside the repo; these tests fail rather than skip without it, because a conversion that was
never compared with dlib is not one we can ship.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from firmware.models.dlib_dat import DatFormatError, parse_dat, read_dat
from firmware.models.dlib_resnet import convert, default_dat_path, reference_descriptor
from firmware.models.tflite_writer import Padding, TFLiteWriter, padding_for
from tests.conftest import shared_data_dir

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # pragma: no cover - devices without LiteRT wheels
    from tflite_runtime.interpreter import Interpreter

FLOAT32_TOLERANCE = 1e-4
FLOAT16_TOLERANCE = 2e-3



@pytest.fixture(scope="module")
def parity() -> tuple[np.ndarray, np.ndarray]:
    folder = shared_data_dir() / "dlib-parity"
    chips_path, desc_path = folder / "chips.npy", folder / "descriptors.npy"
    if not (chips_path.is_file() and desc_path.is_file()):
        pytest.fail(f"dlib parity fixture missing: {folder} (set BOOKING_SHARED_DATA to the shared data folder)")
    chips, descriptors = np.load(chips_path), np.load(desc_path)
    assert chips.shape[1:] == (150, 150, 3) and chips.dtype == np.uint8
    assert descriptors.shape == (len(chips), 128)
    return chips, descriptors


@pytest.fixture(scope="module")
def dat_path() -> Path:
    return default_dat_path()  # raises (fails) if the weights package is not installed


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, dat_path: Path) -> dict[str, tuple[Path, dict]]:
    out = tmp_path_factory.mktemp("dlib_tflite")
    models = {}
    for dtype in ("float32", "float16"):
        path = out / f"dlib_resnet_v1_{dtype}.tflite"
        models[dtype] = (path, convert(dat_path, path, dtype=dtype))
    return models


def _interpreter(path: Path) -> Interpreter:
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    return interp


def _run_all(path: Path, chips: np.ndarray) -> tuple[np.ndarray, float]:
    """Descriptors of every chip, and the median single-thread latency in ms."""
    interp = _interpreter(path)
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    results, times = [], []
    for chip in chips:
        start = time.perf_counter()
        interp.set_tensor(inp, chip[None].astype(np.float32))
        interp.invoke()
        results.append(interp.get_tensor(out)[0].copy())
        times.append(time.perf_counter() - start)
    return np.stack(results), 1000 * float(np.median(times))


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", FLOAT32_TOLERANCE), ("float16", FLOAT16_TOLERANCE)])
def test_tflite_matches_dlib_on_every_chip(converted, parity, dtype: str, tolerance: float) -> None:
    chips, expected = parity
    path, spec = converted[dtype]
    assert spec == {
        "inputs": [{"name": "chip_rgb", "shape": [1, 150, 150, 3], "dtype": "float32"}],
        "outputs": [{"name": "descriptor", "shape": [1, 128], "dtype": "float32"}],
    }
    interp = _interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert [inp["name"], list(inp["shape"]), inp["dtype"]] == ["chip_rgb", [1, 150, 150, 3], np.float32]
    assert [out["name"], list(out["shape"]), out["dtype"]] == ["descriptor", [1, 128], np.float32]

    got, latency_ms = _run_all(path, chips)
    per_row = np.abs(got - expected).max(axis=1)
    print(
        f"\n{dtype}: max abs diff vs dlib {per_row.max():.3g} over {len(chips)} chips "
        f"(median {np.median(per_row):.3g}); {path.stat().st_size / 1e6:.1f} MB; {latency_ms:.1f} ms/chip"
    )
    worst = int(per_row.argmax())
    assert per_row.max() <= tolerance, f"chip {worst} differs by {per_row[worst]:.3g} (> {tolerance})"


def test_numpy_reference_matches_dlib(dat_path: Path, parity) -> None:
    chips, expected = parity
    layers = read_dat(dat_path)
    for row in (0, len(chips) - 1):
        got = reference_descriptor(layers, chips[row])
        diff = float(np.abs(got - expected[row]).max())
        print(f"\nnumpy reference, chip {row}: max abs diff vs dlib {diff:.3g}")
        assert got.shape == (128,) and diff <= FLOAT32_TOLERANCE


def test_reader_rejects_truncated_file(dat_path: Path) -> None:
    data = dat_path.read_bytes()
    cut = len(data) // 2  # inside a weight tensor
    with pytest.raises(DatFormatError, match=r"offset \d+") as info:
        parse_dat(data[:cut])
    assert 0 < info.value.offset <= cut
    assert "truncated" in str(info.value)

    # Cut exactly where the last layer (fc) begins: every read succeeds, the layer count does not.
    fc_offset = read_dat(dat_path)[-2].offset
    with pytest.raises(DatFormatError, match="layers") as info:
        parse_dat(data[:fc_offset])
    assert info.value.offset == fc_offset


def test_reader_rejects_corrupted_layer_tag(dat_path: Path) -> None:
    data = bytearray(dat_path.read_bytes())
    tag_at = data.index(b"relu_")
    data[tag_at : tag_at + 5] = b"relX_"
    with pytest.raises(DatFormatError) as info:
        parse_dat(bytes(data))
    # The offset is that of the string: its length integer (control byte + one length byte).
    assert info.value.offset == tag_at - 2
    assert f"offset {tag_at - 2}" in str(info.value) and "relX_" in str(info.value)


def _naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Explicitly padded cross-correlation, written as plainly as possible. x [H,W,C], w [O,kh,kw,C]."""
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out_c, kh, kw, _ = w.shape
    oh = 1 + (xp.shape[0] - kh) // stride
    ow = 1 + (xp.shape[1] - kw) // stride
    y = np.zeros((oh, ow, out_c), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            for o in range(out_c):
                y[i, j, o] = (patch * w[o]).sum() + b[o]
    return y


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad"), [(9, 3, 1, 1), (9, 3, 2, 0), (10, 3, 2, 0), (11, 7, 2, 0)]
)
def test_writer_one_conv_model_matches_numpy(tmp_path: Path, size: int, kernel: int, stride: int, pad: int) -> None:
    rng = np.random.default_rng(size * 100 + kernel * 10 + stride)
    w = rng.normal(size=(4, kernel, kernel, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    x = rng.normal(size=(size, size, 3)).astype(np.float32)
    padding, out_size = padding_for(size, kernel, stride, pad)

    writer = TFLiteWriter("one conv")
    inp = writer.add_tensor("x", (1, size, size, 3))
    out = writer.conv2d(inp, writer.add_constant("w", w), writer.add_constant("b", b), "y", stride, padding, relu=True)
    writer.set_io([inp], [out])
    path = tmp_path / "one_conv.tflite"
    writer.save(path)

    interp = _interpreter(path)
    interp.set_tensor(interp.get_input_details()[0]["index"], x[None])
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])[0]
    want = np.maximum(_naive_conv(x, w, b, stride, pad), 0)
    assert got.shape == want.shape == (out_size, out_size, 4)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_padding_without_tflite_equivalent_is_refused() -> None:
    assert padding_for(150, 7, 2, 0) == (Padding.VALID, 72)  # dlib's first conv
    assert padding_for(35, 3, 1, 1) == (Padding.SAME, 35)
    # Stride 2 with one pixel each side: TFLite SAME would put no padding first on an even input.
    with pytest.raises(ValueError, match="no TFLite"):
        padding_for(150, 3, 2, 1)
