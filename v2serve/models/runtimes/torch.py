"""PyTorch models: TorchScript files, ``torch.export`` programs, or a state dict plus a model class."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from v2serve.models.base import Model, RequestContext, Tensors
from v2serve.models.runtimes import torch_for
from v2serve.protocol.types import TensorSpec


class TorchModel(Model):
    """Serves a PyTorch module.

    - ``model_path`` ending in ``.pt2``: a ``torch.export`` program (``torch.export.save``);
    - ``model_class`` given: ``model_class(**model_args)`` with the state dict at ``model_path`` loaded
      (``weights_only``: no pickled code runs);
    - otherwise a TorchScript file (``torch.jit.save``).

    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``, chosen in ``load``, which runs
    in a worker thread: importing v2serve never initialises CUDA. ``half`` runs the module in float16.
    Inputs are passed positionally in the order of ``inputs`` (declare them: a module has no tensor names);
    outputs (a tensor, a tuple or a dict) are named by ``outputs``, else ``output0``, ``output1``...
    On a GPU each worker thread has its own CUDA stream, and host-to-device copies go through pinned memory.
    """

    platform = "pytorch_libtorch"
    instances = 2

    def __init__(
        self,
        *args: Any,
        device: str = "auto",
        half: bool = False,
        model_class: Any = None,
        model_args: Mapping[str, Any] | None = None,
        inputs: Sequence[TensorSpec | Mapping[str, Any]] | None = None,
        outputs: Sequence[TensorSpec | Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.device_setting = device
        self.half = half
        self.model_class = model_class
        self.model_args = dict(model_args or {})
        if inputs is not None:
            self.inputs = [_as_spec(spec) for spec in inputs]
        if outputs is not None:
            self.outputs = [_as_spec(spec) for spec in outputs]
        self._local = threading.local()

    def load(self) -> None:
        if not self.model_path:
            raise ValueError(f"model {self.name!r} needs a model_path")
        torch, setting = torch_for(self.device_setting)
        self.torch = torch
        self.device = torch.device(setting)
        module = self._load_module(torch)
        if not str(self.model_path).endswith(".pt2"):  # exported programs are already in inference form
            module.eval()
        if self.half:
            module = module.half()
        self.module = module.to(self.device) if hasattr(module, "to") else module

    def _load_module(self, torch: Any) -> Any:
        path = str(self.model_path)
        if path.endswith(".pt2"):
            program = torch.export.load(path)
            if self.device.type != "cpu":
                # An exported graph records the device of the tensors it was traced with; move all of it.
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, self.device)
            return program.module()
        if self.model_class is not None:
            cls = self.model_class
            if isinstance(cls, str):
                from v2serve.models.imports import import_object

                cls = import_object(cls)
            module = cls(**self.model_args)
            module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return module
        return torch.jit.load(path, map_location="cpu")

    def predict(self, inputs: Tensors, context: RequestContext) -> dict[str, np.ndarray]:
        torch = self.torch
        names = [spec.name for spec in self.inputs] or list(inputs)
        with torch.inference_mode():
            if self.device.type != "cuda":
                return self._to_numpy(self.module(*(self._to_cpu_tensor(inputs[name]) for name in names)))
            stream = self._stream()
            with torch.cuda.stream(stream):
                arrays = [inputs[name] for name in names]
                result = self.module(*self._to_cuda(arrays))
                outputs = self._to_numpy(result)
            # The staging buffer is reused by this thread's next call only after this synchronisation.
            stream.synchronize()
            return outputs

    def _stream(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self.torch.cuda.Stream(device=self.device)
        return stream

    def _to_cpu_tensor(self, array: np.ndarray) -> Any:
        # torch.from_numpy shares memory; binary inputs are read-only views of the request body.
        tensor = self.torch.from_numpy(array if array.flags.writeable else array.copy())
        return tensor.half() if self.half and tensor.is_floating_point() else tensor

    def _to_cuda(self, arrays: list[np.ndarray]) -> list[Any]:
        """Copies through this thread's pinned staging buffer (allocating pinned memory per call is slow)."""
        torch = self.torch
        staging = self._staging(sum(_aligned(a.nbytes) for a in arrays))
        tensors, offset = [], 0
        for array in arrays:
            region = staging[offset : offset + array.nbytes]
            offset += _aligned(array.nbytes)
            host = region.view(_torch_dtype(torch, array.dtype)).view(array.shape)
            host.numpy()[...] = array
            tensor = host.to(self.device, non_blocking=True)
            tensors.append(tensor.half() if self.half and tensor.is_floating_point() else tensor)
        return tensors

    def _staging(self, nbytes: int) -> Any:
        buffer = getattr(self._local, "staging", None)
        if buffer is None or buffer.numel() < nbytes:
            # 64-byte aligned regions keep every dtype's view legal.
            buffer = self._local.staging = self.torch.empty(
                max(nbytes, 1) + 64, dtype=self.torch.uint8, pin_memory=True
            )
        return buffer

    def _to_numpy(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, Mapping):
            items = list(result.items())
        else:
            values = list(result) if isinstance(result, tuple | list) else [result]
            names = [spec.name for spec in self.outputs]
            items = [(names[i] if i < len(names) else f"output{i}", value) for i, value in enumerate(values)]
        out = {}
        for name, tensor in items:
            if self.half and tensor.dtype == self.torch.float16:
                tensor = tensor.float()
            out[name] = tensor.detach().to("cpu").numpy()
        return out


def _as_spec(spec: TensorSpec | Mapping[str, Any]) -> TensorSpec:
    if isinstance(spec, TensorSpec):
        return spec
    return TensorSpec(str(spec["name"]), str(spec["datatype"]), [int(d) for d in spec["shape"]])


def _aligned(nbytes: int) -> int:
    """Regions start at multiples of 64 bytes, so every dtype's view of the staging buffer is legal."""
    return (nbytes + 63) // 64 * 64


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
