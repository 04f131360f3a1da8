"""One import shim for the TFLite interpreter.

LiteRT (`ai_edge_litert`) is tried first: it has wheels for Python 3.10-3.14 on aarch64 and x86_64
and is 2-4.5x faster than `tflite_runtime`. `tflite_runtime` 2.14 is the fallback for platforms
LiteRT does not cover (32-bit Pi OS); it needs numpy < 2, hence an optional extra with its own pins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class RuntimeMissing(RuntimeError):
    """Neither interpreter package is importable."""


def _import_interpreter() -> tuple[type, Any, str]:
    """Return (Interpreter class, load_delegate function, runtime name)."""
    try:
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, getattr(litert, "load_delegate", None), "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflite

        return tflite.Interpreter, tflite.load_delegate, "tflite_runtime"
    except ImportError:
        pass
    raise RuntimeMissing(
        "No TFLite interpreter is installed: install 'ai-edge-litert' (pip install ai-edge-litert) "
        "or, where it has no wheel, 'tflite-runtime' (pip install 'booking-station[tflite-runtime]')."
    )


def runtime_name() -> str:
    """Name of the interpreter package that will be used."""
    return _import_interpreter()[2]


@dataclass(frozen=True)
class RuntimeOptions:
    """How models run: from the device profile / station config."""

    threads: int = 1
    delegate: str | None = None  # path of an external delegate library (e.g. a GPU delegate on Jetson)
    delegate_options: dict[str, str] | None = None


class Model:
    """A loaded TFLite model with named float inputs and outputs.

    A thin wrapper so callers never touch interpreter details (tensor indices, allocation).
    Not thread-safe: give each thread its own Model.
    """

    def __init__(self, path: Path | str, options: RuntimeOptions | None = None) -> None:
        options = options or RuntimeOptions()
        interpreter_cls, load_delegate, self.runtime = _import_interpreter()
        delegates = None
        if options.delegate:
            if load_delegate is None:
                raise RuntimeMissing(f"{self.runtime} cannot load external delegates ({options.delegate})")
            delegates = [load_delegate(options.delegate, options.delegate_options or {})]
        self.path = Path(path)
        self._interp = interpreter_cls(
            model_path=str(self.path), num_threads=max(1, int(options.threads)), experimental_delegates=delegates
        )
        self._interp.allocate_tensors()
        self.inputs = self._interp.get_input_details()
        self.outputs = self._interp.get_output_details()

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs[0]["shape"])

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Run once; outputs come back in the model's output order, as copies."""
        for detail, array in zip(self.inputs, arrays, strict=True):
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        self._interp.invoke()
        return [self._interp.get_tensor(d["index"]).copy() for d in self.outputs]
