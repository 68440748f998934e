"""TorchServe model archives (``.mar``) served as they are, handlers unchanged.

``TorchServeArchive`` is the model: its name and version come from the archive's manifest, its batching,
instances and deadline from its ``model-config.yaml`` (``batchSize``/``maxBatchDelay`` onto dynamic
batching, ``minWorkers``/``maxWorkers`` onto instances, ``responseTimeout`` onto the deadline,
``deviceType`` onto the GPU a handler is given). Loading extracts the archive under bounds into a folder of
its own and initialises one handler per instance (see ``handler``). A request is a ``HandlerRequest``
(what TorchServe's frontend passes: the body or each form field, with its content type) and its answer a
``HandlerAnswer`` (bytes, with the status, content type and headers the handler set); v2 infer reaches it
too, with each BYTES element of its ``body`` input one request.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from v2serve.data.archives import extract
from v2serve.models.base import Model, RequestContext, Tensors
from v2serve.models.torchserve.archive import ARCHIVE_SUFFIX, ArchiveInfo, is_archive, read_archive
from v2serve.models.torchserve.handler import HandlerAnswer, HandlerRequest, LoadedHandler, Parameter, load_handler
from v2serve.protocol.types import TensorSpec

__all__ = ["ARCHIVE_SUFFIX", "HandlerAnswer", "HandlerRequest", "Parameter", "TorchServeArchive", "is_archive"]

INPUT = "body"
OUTPUT = "output"


class TorchServeArchive(Model):
    """A TorchServe model archive, served with its own handler (see the package's description)."""

    platform = "torchserve"
    inputs = (TensorSpec(INPUT, "BYTES", [-1]),)
    outputs = (TensorSpec(OUTPUT, "BYTES", [-1]),)

    def __init__(
        self, name: str | None = None, version: str | None = None, model_path: str | None = None, **options: Any
    ) -> None:
        if model_path is None:
            raise ValueError("a TorchServe archive model needs model_path: the .mar file or its extracted folder")
        self.archive: ArchiveInfo = read_archive(Path(model_path))
        manifest, config = self.archive.manifest, self.archive.config
        from_archive: dict[str, Any] = {
            "max_batch_size": config.batch_size if config.batch_size > 1 else 0,
            "max_batch_delay_ms": config.max_batch_delay_ms,
            "instances": config.max_workers or config.min_workers or _default_workers(),
            "timeout_s": config.response_timeout_s,
        }
        # A model-settings.json's args or a registration's batch_size win over the archive's config.
        from_archive.update({key: value for key, value in options.items() if value is not None})
        super().__init__(name or manifest.model_name, version or manifest.model_version, model_path, **from_archive)
        self.gpu_id: int | None = None
        """The GPU the handlers were given (``system_properties["gpu_id"]``), once loaded; None: the CPU."""
        self.may_stream = True
        """Whether the handler may send intermediate answers (``send_intermediate_predict_response``), as its
        code says once loaded: the front-ends wait for the others' answers more cheaply."""
        self._handlers: queue.SimpleQueue[LoadedHandler] = queue.SimpleQueue()
        self._loaded: list[LoadedHandler] = []
        self._folder: Path | None = None

    def load(self) -> None:
        source = Path(str(self.model_path))
        try:
            if source.is_dir():
                folder = source
            else:
                self._folder = Path(tempfile.mkdtemp(prefix="v2serve-mar-"))
                folder = extract(source, self._folder / "model")
            self._initialise(folder)
        except BaseException:
            self.unload()
            raise

    def _initialise(self, folder: Path) -> None:
        self.gpu_id = _gpu_id(self.archive.config.device_type)
        for _ in range(max(1, self.instances)):
            handler = load_handler(
                self.archive.manifest, self.archive.config, folder,
                name=self.name, gpu_id=self.gpu_id, batch_size=max(1, self.max_batch_size),
            )  # fmt: skip
            self._loaded.append(handler)
            self._handlers.put(handler)
        self.may_stream = any(handler.may_stream for handler in self._loaded)

    def unload(self) -> None:
        for handler in self._loaded:
            handler.close()
        self._loaded = []
        self._handlers = queue.SimpleQueue()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def predict(self, inputs: Tensors, context: RequestContext) -> Tensors:
        return self._handle(inputs, context, explain=False)

    def explain(self, inputs: Tensors, context: RequestContext) -> Tensors:
        return self._handle(inputs, context, explain=True)

    def _handle(self, inputs: Tensors, context: RequestContext, *, explain: bool) -> Tensors:
        rows = inputs[INPUT]
        requests = [_as_request(row) for row in rows.reshape(-1)]
        contexts = _per_request(context, len(requests))
        handler = self._handlers.get()  # never waits: the scheduler runs at most ``instances`` calls at once
        try:
            if not any(request.envelope for request in requests):
                answers = handler.run(requests, [c.id for c in contexts], [c.headers for c in contexts], explain)
            else:  # TorchServe's envelopes read the first request of a batch alone: each runs on its own
                answers = [
                    answer
                    for request, own in zip(requests, contexts, strict=True)
                    for answer in handler.run([request], [own.id], [own.headers], explain)
                ]
        finally:
            self._handlers.put(handler)
        output = np.empty(len(answers), dtype=object)
        output[:] = answers
        return {OUTPUT: output.reshape(rows.shape)}


def _as_request(row: Any) -> HandlerRequest:
    if isinstance(row, HandlerRequest):
        return row
    if isinstance(row, str):
        row = row.encode()
    return HandlerRequest([Parameter(INPUT, bytes(row))])


def _per_request(context: RequestContext, count: int) -> Sequence[RequestContext]:
    """Each request's own context when a batch joined several one-row requests; a request of several rows
    (v2 infer with a BYTES batch) shares its context across them."""
    if context.batch is not None and len(context.batch) == count:
        return context.batch
    return [context] * count


def _default_workers() -> int:
    """TorchServe's default: a worker per core (here: instance threads, each with its own handler)."""
    return max(1, min(os.cpu_count() or 1, 4))


def _gpu_id(device_type: str | None) -> int | None:
    if device_type == "cpu":
        return None
    try:
        import torch
    except ImportError:
        return None
    return 0 if torch.cuda.is_available() else None
