"""Reader for dlib's portable serialization of a DNN (`net_type` saved with `dlib::serialize`).

We read dlib's face descriptor weights ourselves so that neither dlib nor TensorFlow has to be on the
build machine or the device. The format is dlib's own, not a documented interchange format, so this
reader is strict: anything it does not recognise is a `DatFormatError` naming the byte offset and what
was expected there, rather than silently producing wrong weights.

Encoding (dlib/serialize.h and the `serialize` friends in dlib/dnn/*.h):

- integer: one control byte (low 4 bits: number of bytes that follow, at most 8; top bit: negative;
  bits 0x70 reserved, always 0) then those bytes, little-endian;
- float: a (mantissa, exponent) pair of such integers, value = mantissa * 2**exponent (exponents
  32000/32001/32002 mean +inf/-inf/NaN);
- bool: the ASCII byte '0' or '1';
- string: an integer length then the bytes;
- tensor: an integer version, four integer dimensions (samples, k, rows, columns), then the values:
  version 1 writes each as a float as above, version 2 as raw little-endian IEEE float32;
- alias tensor (a view into a layer's parameter tensor): version 1 and four dimensions, no data.

A network is written outside-in but each `add_layer` writes its sub-network *before* its own layer,
so the file reads: the loss layer, one version integer per wrapper (`add_layer`, tag and skip layers)
from the outside in, the input layer, then each computational layer from the input side out, each
followed by its `add_layer` bookkeeping (flags and cached tensors, empty in a saved model).

Tag and skip layers contribute nothing but their version integer, so the residual wiring is not in
the file: it comes from the network's C++ type (see `firmware.models.dlib_resnet`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Reserved bits of an integer control byte; a set bit means this is not an integer at all.
_RESERVED_BITS = 0x70
_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
# Longest string we accept as a layer tag; anything longer is corruption, not a tag.
_MAX_TAG_LEN = 64
_CONV_MODE, _FC_MODE = 0, 1
_FC_HAS_BIAS, _FC_NO_BIAS = 0, 1


class DatFormatError(ValueError):
    """The file is not a dlib DNN we can read: truncated, corrupt, or an unsupported layer/version."""

    def __init__(self, offset: int, expected: str, found: str = "") -> None:
        self.offset = offset
        self.expected = expected
        self.found = found
        detail = f"; found {found}" if found else ""
        super().__init__(f"dlib .dat format error at offset {offset} (0x{offset:x}): expected {expected}{detail}")


@dataclass(frozen=True)
class Layer:
    """One layer of the network, in forward (input-to-output) order.

    `kind` is the layer type without dlib's version suffix ("con", "affine", "relu", "max_pool",
    "avg_pool", "add_prev", "fc", "input_rgb_image_sized", "loss_metric"); `tag` is the exact tag
    found in the file; `params` holds scalar settings and `weights` numpy arrays in dlib's layout.
    """

    kind: str
    tag: str
    offset: int
    params: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


class _Reader:
    """Cursor over the file bytes; every read checks bounds and says what it was reading."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining():
            raise DatFormatError(self.pos, f"{n} bytes of {what}", f"only {self.remaining()} left (truncated file)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self, what: str, signed: bool = True) -> int:
        start = self.pos
        if self.remaining() < 1:
            raise DatFormatError(start, f"integer ({what})", "end of file (truncated file)")
        control = self.data[start]
        size = control & 0x0F
        negative = bool(control & 0x80)
        if control & _RESERVED_BITS or size > 8 or (negative and not signed):
            raise DatFormatError(start, f"integer control byte ({what})", f"0x{control:02x}")
        self.pos += 1
        value = int.from_bytes(self.take(size, what), "little")
        return -value if negative else value

    def unsigned(self, what: str) -> int:
        return self.integer(what, signed=False)

    def float(self, what: str) -> float:
        start = self.pos
        if self.remaining() >= 1 and self.data[start] & _RESERVED_BITS:
            raise DatFormatError(start, f"binary float ({what})", "dlib's old ASCII float format (unsupported)")
        mantissa = self.integer(f"{what} mantissa")
        exponent = self.integer(f"{what} exponent")
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(mantissa, exponent)

    def boolean(self, what: str) -> bool:
        start = self.pos
        byte = bytes(self.take(1, what))
        if byte not in (b"0", b"1"):
            raise DatFormatError(start, f"bool '0' or '1' ({what})", repr(byte))
        return byte == b"1"

    def string(self, what: str) -> str:
        start = self.pos
        length = self.unsigned(f"length of {what}")
        if length > _MAX_TAG_LEN:
            raise DatFormatError(start, f"{what} (short text)", f"length {length}")
        raw = bytes(self.take(length, what))
        if not all(32 <= b < 127 for b in raw):
            raise DatFormatError(start, f"{what} (printable text)", repr(raw))
        return raw.decode("ascii")

    def peek_string(self) -> str | None:
        """The string at the cursor if there is a plausible one, without moving the cursor."""
        saved = self.pos
        try:
            return self.string("text")
        except DatFormatError:
            return None
        finally:
            self.pos = saved

    def dims(self, what: str) -> tuple[int, int, int, int]:
        start = self.pos
        shape = tuple(self.integer(f"{what} dimension {i}") for i in range(4))
        if any(d < 0 for d in shape):
            raise DatFormatError(start, f"non-negative dimensions of {what}", str(shape))
        return shape  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        start = self.pos
        version = self.integer(f"{what} tensor version")
        shape = self.dims(what)
        count = math.prod(shape)
        if version == 2:
            raw = self.take(4 * count, f"{what} values ({count} float32)")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        if version == 1:
            # Each value is at least 2 bytes; refuse absurd sizes before allocating.
            if 2 * count > self.remaining():
                raise DatFormatError(self.pos, f"{count} values of {what}", "fewer bytes left (truncated file)")
            values = np.fromiter((self.float(f"{what} value") for _ in range(count)), np.float32, count)
            return values.reshape(shape)
        raise DatFormatError(start, f"tensor version 1 or 2 ({what})", str(version))

    def alias(self, what: str) -> tuple[int, int, int, int]:
        start = self.pos
        version = self.integer(f"{what} alias version")
        if version != 1:
            raise DatFormatError(start, f"alias tensor version 1 ({what})", str(version))
        return self.dims(what)


def _slice_params(
    params: np.ndarray, offset: int, shape: tuple[int, ...], what: str, at: int
) -> tuple[np.ndarray, int]:
    """Cut one alias view (filters, biases, gamma...) out of a layer's flat parameter tensor."""
    flat = params.reshape(-1)
    count = math.prod(shape)
    if offset + count > flat.size:
        raise DatFormatError(at, f"{what} of {count} values inside a parameter tensor of {flat.size}")
    return flat[offset : offset + count].reshape(shape).copy(), offset + count


def _read_con(r: _Reader, tag: str, at: int) -> Layer:
    params = r.tensor("con params")
    num_filters = r.integer("con num_filters")
    nr, nc = r.integer("con nr"), r.integer("con nc")
    stride_y, stride_x = r.integer("con stride_y"), r.integer("con stride_x")
    pad_y, pad_x = r.integer("con padding_y"), r.integer("con padding_x")
    filt_shape = r.alias("con filters")
    bias_shape = r.alias("con biases")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.float(f"con {name}")
    use_bias = r.boolean("con use_bias") if tag == "con_5" else True
    if filt_shape[0] != num_filters or filt_shape[2:] != (nr, nc):
        raise DatFormatError(at, f"con filters of shape ({num_filters}, k, {nr}, {nc})", str(filt_shape))
    filters, off = _slice_params(params, 0, filt_shape, "con filters", at)
    weights = {"filters": filters}
    if use_bias:
        weights["biases"], off = _slice_params(params, off, (num_filters,), "con biases", at)
        if math.prod(bias_shape) != num_filters:
            raise DatFormatError(at, f"con biases of {num_filters} values", str(bias_shape))
    return Layer(
        "con",
        tag,
        at,
        dict(
            num_filters=num_filters,
            nr=nr,
            nc=nc,
            stride_y=stride_y,
            stride_x=stride_x,
            padding_y=pad_y,
            padding_x=pad_x,
            use_bias=use_bias,
        ),
        weights,
    )


def _read_affine(r: _Reader, tag: str, at: int) -> Layer:
    params = r.tensor("affine params")
    gamma_shape = r.alias("affine gamma")
    beta_shape = r.alias("affine beta")
    mode = r.integer("affine mode")
    if mode not in (_CONV_MODE, _FC_MODE):
        raise DatFormatError(at, "affine mode 0 (conv) or 1 (fc)", str(mode))
    n = math.prod(gamma_shape)
    if math.prod(beta_shape) != n:
        raise DatFormatError(at, "affine gamma and beta of equal size", f"{gamma_shape} and {beta_shape}")
    gamma, off = _slice_params(params, 0, (n,), "affine gamma", at)
    beta, _ = _slice_params(params, off, (n,), "affine beta", at)
    return Layer("affine", tag, at, {"mode": "conv" if mode == _CONV_MODE else "fc"}, {"gamma": gamma, "beta": beta})


def _read_pool(r: _Reader, tag: str, at: int) -> Layer:
    kind = tag[: -len("_2")]
    nr, nc = r.integer(f"{kind} nr"), r.integer(f"{kind} nc")
    stride_y, stride_x = r.integer(f"{kind} stride_y"), r.integer(f"{kind} stride_x")
    pad_y, pad_x = r.integer(f"{kind} padding_y"), r.integer(f"{kind} padding_x")
    return Layer(
        kind, tag, at, dict(nr=nr, nc=nc, stride_y=stride_y, stride_x=stride_x, padding_y=pad_y, padding_x=pad_x)
    )


def _read_fc(r: _Reader, tag: str, at: int) -> Layer:
    num_outputs = r.unsigned("fc num_outputs")
    num_inputs = r.unsigned("fc num_inputs")
    params = r.tensor("fc params")
    w_shape = r.alias("fc weights")
    b_shape = r.alias("fc biases")
    bias_mode = r.integer("fc bias_mode")
    for name in (
        "learning_rate_multiplier",
        "weight_decay_multiplier",
        "bias_learning_rate_multiplier",
        "bias_weight_decay_multiplier",
    ):
        r.float(f"fc {name}")
    if math.prod(w_shape) != num_inputs * num_outputs:
        raise DatFormatError(at, f"fc weights of {num_inputs}x{num_outputs}", str(w_shape))
    if bias_mode not in (_FC_HAS_BIAS, _FC_NO_BIAS):
        raise DatFormatError(at, "fc bias mode 0 or 1", str(bias_mode))
    # dlib computes output = input (samples x inputs) times weights (inputs x outputs).
    w, off = _slice_params(params, 0, (num_inputs, num_outputs), "fc weights", at)
    weights = {"weights": w}
    if bias_mode == _FC_HAS_BIAS:
        weights["biases"], _ = _slice_params(params, off, (math.prod(b_shape),), "fc biases", at)
    return Layer(
        "fc", tag, at, dict(num_outputs=num_outputs, num_inputs=num_inputs, has_bias=bias_mode == _FC_HAS_BIAS), weights
    )


def _read_no_params(r: _Reader, tag: str, at: int) -> Layer:
    return Layer(tag.rstrip("_"), tag, at)


_LAYER_READERS = {
    "con_4": _read_con,
    "con_5": _read_con,
    "affine_": _read_affine,
    "relu_": _read_no_params,
    "add_prev_": _read_no_params,
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
}


def _read_input(r: _Reader) -> Layer:
    at = r.pos
    tag = r.string("input layer tag")
    if tag != "input_rgb_image_sized":
        raise DatFormatError(at, "input layer tag 'input_rgb_image_sized'", repr(tag))
    means = [r.float(f"avg_{c}") for c in ("red", "green", "blue")]
    rows, cols = r.unsigned("input rows"), r.unsigned("input columns")
    return Layer("input_rgb_image_sized", tag, at, {"mean_rgb": tuple(means), "rows": rows, "cols": cols})


def _read_loss(r: _Reader) -> Layer:
    start = r.pos
    version = r.integer("add_loss_layer version")
    if version != 1:
        raise DatFormatError(start, "add_loss_layer version 1", str(version))
    at = r.pos
    tag = r.string("loss layer tag")
    if tag == "loss_metric_2":
        margin, dist = r.float("loss margin"), r.float("loss distance threshold")
    elif tag == "loss_metric_":
        margin, dist = 0.1, 0.75  # dlib hard-coded these before it started saving them
    else:
        raise DatFormatError(at, "loss layer tag 'loss_metric_2'", repr(tag))
    return Layer("loss_metric", tag, at, {"margin": margin, "distance_threshold": dist})


def _read_trailer(r: _Reader, version: int, on_input: bool, layer: Layer) -> None:
    """Skip an `add_layer`'s bookkeeping; in a saved model the tensors are empty but still written."""
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.boolean(f"{what} of {layer.tag} at offset {layer.offset}")
    names = ["x_grad", "cached_output"]
    names += ["grad_final"] if on_input else (["params_grad"] if version >= 2 else [])
    for name in names:
        r.tensor(f"{name} of {layer.tag}")
    if on_input and version >= 3:
        r.unsigned("sample_expansion_factor")


def read_dat(path: Path | str) -> list[Layer]:
    """Parse a dlib DNN file into layers in forward order: input layer, computational layers, loss.

    Raises `DatFormatError` (with the byte offset) for truncated, corrupt or unsupported files.
    """
    return parse_dat(Path(path).read_bytes())


def parse_dat(data: bytes) -> list[Layer]:
    """Parse the bytes of a dlib DNN file; see `read_dat`."""
    r = _Reader(data)
    loss = _read_loss(r)

    # Wrapper versions, outside in, until the input layer's tag appears.
    wrappers: list[tuple[int, int]] = []
    while True:
        text = r.peek_string()
        if text is not None and text.startswith("input"):
            break
        at = r.pos
        wrappers.append((at, r.integer("layer wrapper version")))
        if wrappers[-1][1] not in (1, 2, 3):
            raise DatFormatError(at, "layer wrapper version 1, 2 or 3", str(wrappers[-1][1]))
    if not wrappers:
        raise DatFormatError(r.pos, "at least one layer before the input layer")
    inner_at, inner_version = wrappers[-1]
    if inner_version not in (2, 3):
        raise DatFormatError(inner_at, "add_layer version 2 or 3 next to the input layer", str(inner_version))
    # Outside the innermost add_layer, add_layer writes version 2 and tag/skip layers version 1.
    outer_add_layers = sum(1 for _, v in wrappers[:-1] if v == 2)

    layers = [_read_input(r)]
    while r.remaining() > 0:
        at = r.pos
        tag = r.string("layer tag")
        reader = _LAYER_READERS.get(tag)
        if reader is None:
            raise DatFormatError(at, f"a layer tag ({', '.join(sorted(_LAYER_READERS))})", repr(tag))
        layer = reader(r, tag, at)
        on_input = len(layers) == 1
        _read_trailer(r, inner_version if on_input else 2, on_input, layer)
        layers.append(layer)

    computational = len(layers) - 1
    if computational != outer_add_layers + 1:
        raise DatFormatError(
            r.pos, f"{outer_add_layers + 1} layers (one per add_layer wrapper)", f"{computational} (truncated file?)"
        )
    layers.append(loss)
    return layers
