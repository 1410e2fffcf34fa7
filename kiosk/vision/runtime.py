"""LiteRT runtime wrapper: one interpreter per model file, created once and reused.

The interpreter comes from ``ai-edge-litert`` (LiteRT) and, where a device has
only ``tflite-runtime``, from that; both apply the XNNPACK CPU delegate by
default. The thread count is configurable. Every call records how long the
pure ``invoke()`` took so benchmarks can show the glue around the model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kiosk.errors import ModelError

FloatArray = npt.NDArray[np.float32]


class _Interpreter(Protocol):
    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, index: int, value: npt.NDArray[Any]) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, index: int) -> npt.NDArray[Any]: ...


def _interpreter_class() -> tuple[type[Any], str]:
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError as exc:
        raise ModelError(
            "no TFLite runtime is installed: pip install ai-edge-litert "
            "(or tflite-runtime on a device where LiteRT has no wheel)"
        ) from exc


def runtime_name() -> str:
    """Which runtime package runs the models."""
    return _interpreter_class()[1]


class Model:
    """One loaded model: fixed input shape, float32 tensors, reusable and thread-safe."""

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        cls, _ = _interpreter_class()
        if not path.is_file():
            raise ModelError(f"model file {path} is missing; run `kiosk models fetch`")
        try:
            self._interp: _Interpreter = cls(model_path=str(path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"cannot load model {path} ({exc}); run `kiosk models fetch` to reinstall it"
            ) from exc
        self.path = path
        inputs = self._interp.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"model {path} has {len(inputs)} inputs; the kiosk expects one")
        self._input_index = int(inputs[0]["index"])
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inputs[0]["shape"])
        self._outputs = [int(d["index"]) for d in self._interp.get_output_details()]
        self._lock = threading.Lock()
        #: Seconds spent inside ``invoke()`` by the last :meth:`run`.
        self.last_invoke_s = 0.0

    def run(self, tensor: FloatArray) -> list[FloatArray]:
        """Run the model on one input tensor; return copies of all outputs."""
        if tensor.shape != self.input_shape:
            raise ValueError(f"{self.path.name} takes {self.input_shape}, got {tensor.shape}")
        with self._lock:
            self._interp.set_tensor(self._input_index, tensor.astype(np.float32, copy=False))
            start = time.perf_counter()
            self._interp.invoke()
            self.last_invoke_s = time.perf_counter() - start
            return [np.array(self._interp.get_tensor(i), dtype=np.float32) for i in self._outputs]
