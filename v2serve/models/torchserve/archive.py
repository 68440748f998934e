"""What a TorchServe model archive says about itself: ``MAR-INF/MANIFEST.json`` and ``model-config.yaml``.

Both are read straight from the ``.mar`` (a zip) without extracting it, so that a server knows a model's
name, version, batching and workers before it loads anything; an extracted archive (a folder holding
``MAR-INF/``) reads the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from v2serve.data.archives import read_member

ARCHIVE_SUFFIX = ".mar"
MANIFEST = "MAR-INF/MANIFEST.json"


@dataclass(frozen=True)
class ModelConfig:
    """The frontend part of ``model-config.yaml``, as TorchServe defaults it; ``document`` is the whole file,
    which the handler reads as ``context.model_yaml_config``."""

    batch_size: int = 1
    max_batch_delay_ms: float = 100.0
    min_workers: int | None = None
    max_workers: int | None = None
    response_timeout_s: float = 120.0
    device_type: str | None = None
    document: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: bytes, source: str) -> ModelConfig:
        import yaml

        document = yaml.safe_load(text) or {}
        if not isinstance(document, dict):
            raise ValueError(f"{source}: model-config.yaml must hold a mapping")
        return cls(
            batch_size=_positive_int(document, "batchSize", source, 1),
            max_batch_delay_ms=float(_positive_int(document, "maxBatchDelay", source, 100)),
            min_workers=_positive_int(document, "minWorkers", source, None),
            max_workers=_positive_int(document, "maxWorkers", source, None),
            response_timeout_s=float(_positive_int(document, "responseTimeout", source, 120)),
            device_type=str(document["deviceType"]).lower() if document.get("deviceType") else None,
            document=document,
        )


@dataclass(frozen=True)
class Manifest:
    """``MAR-INF/MANIFEST.json``: the model's name and version, its handler and its config file; ``document``
    is the whole manifest, which the handler reads as ``context.manifest`` (BaseHandler finds its weights
    there)."""

    model_name: str
    model_version: str | None
    handler: str
    config_file: str | None
    document: dict[str, Any]

    @classmethod
    def parse(cls, text: bytes, source: str) -> Manifest:
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source}: {MANIFEST} is not JSON: {exc}") from None
        model = document.get("model") if isinstance(document, dict) else None
        if not isinstance(model, dict) or not model.get("modelName") or not model.get("handler"):
            raise ValueError(f"{source}: {MANIFEST} needs model.modelName and model.handler")
        version = model.get("modelVersion")
        return cls(
            model_name=str(model["modelName"]),
            model_version=None if version in (None, "") else str(version),
            handler=str(model["handler"]),
            config_file=model.get("configFile") or None,
            document=document,
        )


@dataclass(frozen=True)
class ArchiveInfo:
    manifest: Manifest
    config: ModelConfig


def is_archive(path: Path) -> bool:
    """A ``.mar`` file, or a folder holding an extracted one."""
    if path.is_file():
        return path.suffix == ARCHIVE_SUFFIX
    return path.is_dir() and (path / MANIFEST).is_file()


def read_archive(path: Path) -> ArchiveInfo:
    manifest = Manifest.parse(_member(path, MANIFEST, required=True) or b"", str(path))
    config = ModelConfig()
    if manifest.config_file:
        text = _member(path, manifest.config_file, required=True)
        config = ModelConfig.parse(text or b"", f"{path}: {manifest.config_file}")
    return ArchiveInfo(manifest, config)


def _member(path: Path, name: str, *, required: bool) -> bytes | None:
    if path.is_dir():
        file = path / name
        data = file.read_bytes() if file.is_file() and file.resolve().is_relative_to(path.resolve()) else None
    else:
        data = read_member(path, name)
    if data is None and required:
        raise ValueError(f"{path} has no {name}: is it a TorchServe model archive (torch-model-archiver)?")
    return data


def _positive_int(document: dict[str, Any], key: str, source: str, default: Any) -> Any:
    value = document.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "maxBatchDelay" else 1):
        raise ValueError(f"{source}: {key} must be a positive whole number, not {value!r}")
    return value
