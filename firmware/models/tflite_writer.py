"""A small, generic writer for TFLite flatbuffers, so models can be produced without TensorFlow.

TensorFlow is far too heavy for the build machine and has no place on the device, and a converter
chain (dlib -> ONNX -> TF -> TFLite) would add three toolchains to trust. A TFLite file is just a
flatbuffer; LiteRT ships the schema's generated Python object API (`schema_py_generated`), so we
fill `ModelT` & co. directly and pack them with `flatbuffers.Builder`.

Scope, on purpose: one subgraph, float32 activations, constant weights (float32, or float16 followed
by DEQUANTIZE, the standard TFLite fp16 pattern). Every operator is written with the lowest version
that supports what it is used for, so the file loads in tflite-runtime 2.14 as well as in LiteRT.

Layout is NHWC; CONV_2D filters are [out, kh, kw, in]; FULLY_CONNECTED weights are [out, in].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sync.protocol.files import write_file_atomic

TFLITE_SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
# Constant data is aligned like the reference converter does, so kernels can read it in place.
BUFFER_ALIGNMENT = 16
# Builtin codes above this live only in the 32-bit field; older runtimes read the 8-bit one.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127

Op = schema.BuiltinOperator
Padding = schema.Padding
Activation = schema.ActivationFunctionType

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
}


class _AlignedBufferT(schema.BufferT):
    """A BufferT whose data vector starts on a BUFFER_ALIGNMENT boundary of the finished file.

    The generated `BufferT.Pack` aligns uint8 data to 1 byte only; misaligned float weights are
    legal but force copies (or slow unaligned loads on some ARM cores).
    """

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - name fixed by the generated API
        data_offset = None
        if self.data is not None:
            payload = self.data.tobytes() if isinstance(self.data, np.ndarray) else bytes(self.data)
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data_offset = builder.EndVector()
        schema.BufferStart(builder)
        if data_offset is not None:
            schema.BufferAddData(builder, data_offset)
        return schema.BufferEnd(builder)


def padding_for(in_size: int, kernel: int, stride: int, explicit_pad: int) -> tuple[int, int]:
    """TFLite SAME/VALID padding equivalent to a symmetric explicit padding, and the output size.

    Frameworks such as dlib pad explicitly (`explicit_pad` zeros on each side, output
    1 + (in + 2*pad - kernel) // stride). TFLite only knows VALID (no padding) and SAME (output
    ceil(in / stride), padding split with the smaller half before). The two are equivalent when they
    give the same output size and the same padding before the first row/column: windows then sit at
    the same places, and any extra padding after the end is never read. Raises ValueError otherwise,
    rather than building a model whose outputs would be silently shifted.
    """
    explicit_out = 1 + (in_size + 2 * explicit_pad - kernel) // stride
    valid_out = (in_size - kernel) // stride + 1
    if explicit_pad == 0 and valid_out == explicit_out:
        return Padding.VALID, valid_out
    same_out = math.ceil(in_size / stride)
    same_before = max((same_out - 1) * stride + kernel - in_size, 0) // 2
    if same_out == explicit_out and same_before == explicit_pad:
        return Padding.SAME, same_out
    raise ValueError(
        f"explicit padding {explicit_pad} (kernel {kernel}, stride {stride}, input {in_size}) has no "
        f"TFLite SAME/VALID equivalent: explicit gives {explicit_out}, VALID {valid_out}, "
        f"SAME {same_out} with {same_before} before"
    )


class TFLiteWriter:
    """Accumulates tensors, constants and operators of one subgraph and packs them into a .tflite.

    Tensors are referred to by their index. The primitives are `add_tensor`, `add_constant` and
    `add_op`; the op helpers below them only fill in options and the lowest op version.
    """

    def __init__(self, description: str = "") -> None:
        self.description = description
        # Buffer 0 is the conventional empty buffer shared by all non-constant tensors.
        self._buffers: list[schema.BufferT] = [schema.BufferT()]
        self._tensors: list[schema.TensorT] = []
        self._operators: list[schema.OperatorT] = []
        self._opcodes: dict[tuple[int, int], int] = {}
        self._inputs: list[int] = []
        self._outputs: list[int] = []

    # ---------------------------------------------------------------- primitives

    def add_tensor(self, name: str, shape: Sequence[int], dtype: Any = np.float32, buffer: int = 0) -> int:
        """Declare a tensor (an activation unless `buffer` points at constant data)."""
        dtype = np.dtype(dtype)
        if dtype not in _TENSOR_TYPES:
            raise ValueError(f"unsupported tensor dtype {dtype} for '{name}'")
        tensor = schema.TensorT()
        tensor.name = name
        tensor.shape = [int(d) for d in shape]
        tensor.type = _TENSOR_TYPES[dtype]
        tensor.buffer = buffer
        self._tensors.append(tensor)
        return len(self._tensors) - 1

    def add_constant(self, name: str, value: np.ndarray) -> int:
        """A constant tensor holding `value` (its dtype and shape are kept)."""
        value = np.ascontiguousarray(value)
        buffer = _AlignedBufferT()
        buffer.data = value.astype(value.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1)
        self._buffers.append(buffer)
        return self.add_tensor(name, value.shape, value.dtype, buffer=len(self._buffers) - 1)

    def add_op(
        self, opcode: int, inputs: Sequence[int], outputs: Sequence[int], options: Any = None, version: int = 1
    ) -> None:
        """Append an operator; `options` is a `*OptionsT` object whose class names its union type."""
        key = (opcode, version)
        if key not in self._opcodes:
            self._opcodes[key] = len(self._opcodes)
        op = schema.OperatorT()
        op.opcodeIndex = self._opcodes[key]
        op.inputs = [int(i) for i in inputs]
        op.outputs = [int(o) for o in outputs]
        if options is not None:
            op.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
            op.builtinOptions = options
        self._operators.append(op)

    def set_io(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self._inputs = list(inputs)
        self._outputs = list(outputs)

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(self._tensors[tensor].shape)

    def name(self, tensor: int) -> str:
        return self._tensors[tensor].name

    # ---------------------------------------------------------------- op helpers

    def conv2d(
        self, x: int, filters: int, bias: int, out_name: str, stride: int, padding: int, relu: bool = False
    ) -> int:
        """CONV_2D (v1: float32). `filters` is [out, kh, kw, in]; output shape from TFLite's rules."""
        n, h, w, _ = self.shape(x)
        cout, kh, kw, _ = self.shape(filters)
        if padding == Padding.VALID:
            oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
        else:
            oh, ow = math.ceil(h / stride), math.ceil(w / stride)
        out = self.add_tensor(out_name, (n, oh, ow, cout))
        opts = schema.Conv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = padding, stride, stride
        opts.fusedActivationFunction = Activation.RELU if relu else Activation.NONE
        self.add_op(Op.CONV_2D, [x, filters, bias], [out], opts)
        return out

    def pool2d(self, kind: str, x: int, out_name: str, size: int, stride: int, padding: int) -> int:
        """MAX_POOL_2D or AVERAGE_POOL_2D (v1: float32)."""
        n, h, w, c = self.shape(x)
        if padding == Padding.VALID:
            oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
        else:
            oh, ow = math.ceil(h / stride), math.ceil(w / stride)
        out = self.add_tensor(out_name, (n, oh, ow, c))
        opts = schema.Pool2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = padding, stride, stride
        opts.filterHeight, opts.filterWidth = size, size
        opcode = {"max": Op.MAX_POOL_2D, "avg": Op.AVERAGE_POOL_2D}[kind]
        self.add_op(opcode, [x], [out], opts)
        return out

    def add(self, a: int, b: int, out_name: str, relu: bool = False) -> int:
        """ADD (v1: float32, same shapes, optional fused RELU)."""
        if self.shape(a) != self.shape(b):
            raise ValueError(f"ADD operands differ: {self.shape(a)} vs {self.shape(b)}")
        out = self.add_tensor(out_name, self.shape(a))
        opts = schema.AddOptionsT()
        opts.fusedActivationFunction = Activation.RELU if relu else Activation.NONE
        self.add_op(Op.ADD, [a, b], [out], opts)
        return out

    def pad(self, x: int, paddings: Sequence[Sequence[int]], out_name: str) -> int:
        """PAD with zeros (v1: float32, up to 4-D); `paddings` is [[before, after]] per dimension."""
        pads = np.asarray(paddings, dtype=np.int32).reshape(-1, 2)
        shape = [d + int(p.sum()) for d, p in zip(self.shape(x), pads, strict=True)]
        pad_const = self.add_constant(f"{out_name}/paddings", pads)
        out = self.add_tensor(out_name, shape)
        self.add_op(Op.PAD, [x, pad_const], [out], schema.PadOptionsT())
        return out

    def mean(self, x: int, axes: Sequence[int], out_name: str) -> int:
        """MEAN over `axes` without keeping them (v1: float32)."""
        axes_const = self.add_constant(f"{out_name}/axes", np.asarray(axes, dtype=np.int32))
        shape = [d for i, d in enumerate(self.shape(x)) if i not in set(axes)]
        out = self.add_tensor(out_name, shape)
        opts = schema.ReducerOptionsT()
        opts.keepDims = False
        self.add_op(Op.MEAN, [x, axes_const], [out], opts)
        return out

    def fully_connected(self, x: int, weights: int, bias: int, out_name: str) -> int:
        """FULLY_CONNECTED (v1: float32 with a bias tensor; `weights` is [out, in])."""
        batch = self.shape(x)[0]
        out = self.add_tensor(out_name, (batch, self.shape(weights)[0]))
        self.add_op(Op.FULLY_CONNECTED, [x, weights, bias], [out], schema.FullyConnectedOptionsT())
        return out

    def dequantize(self, x: int, out_name: str) -> int:
        """DEQUANTIZE float16 -> float32 (version 3 is the first that accepts float16 input)."""
        out = self.add_tensor(out_name, self.shape(x), np.float32)
        self.add_op(Op.DEQUANTIZE, [x], [out], schema.DequantizeOptionsT(), version=3)
        return out

    # ---------------------------------------------------------------- output

    def to_bytes(self) -> bytes:
        """Pack the model into a .tflite flatbuffer."""
        if not self._inputs or not self._outputs:
            raise ValueError("set_io() must name the model's inputs and outputs before packing")
        subgraph = schema.SubGraphT()
        subgraph.tensors = self._tensors
        subgraph.operators = self._operators
        subgraph.inputs = self._inputs
        subgraph.outputs = self._outputs
        subgraph.name = "main"

        codes = []
        for (opcode, version), _index in sorted(self._opcodes.items(), key=lambda kv: kv[1]):
            code = schema.OperatorCodeT()
            code.builtinCode = opcode
            code.deprecatedBuiltinCode = min(opcode, _PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = version
            codes.append(code)

        model = schema.ModelT()
        model.version = TFLITE_SCHEMA_VERSION
        model.description = self.description
        model.operatorCodes = codes
        model.subgraphs = [subgraph]
        model.buffers = self._buffers

        payload = sum(b.data.size for b in self._buffers if b.data is not None)
        builder = flatbuffers.Builder(payload + 64 * 1024)
        builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def save(self, path: Path | str) -> int:
        """Write the model to `path` (via a temporary file, so a crash never leaves half a model)."""
        path = Path(path)
        data = self.to_bytes()
        write_file_atomic(path, data)
        return len(data)
