"""Building Model instances from import paths and model directories.

A target is either an import path ``package.module:ClassName`` (or ``path/to/file.py:ClassName``), or a
directory. A directory holding ``model-settings.json`` is one model; otherwise each of its immediate
subdirectories holding one is. ``model-settings.json``::

    {"name": "add_sub", "version": "1", "implementation": "model.py:AddSub",
     "model_path": "weights.onnx", "args": {"threshold": 0.5}}

``implementation`` is a runtime name (``onnx``, ``torch``) or an import path: a ``.py`` file inside the
model's directory (``model.py:MyModel``), or a module of v2serve or of an installed package the operator
named in ``implementation_packages``. Nothing else is imported: a model directory cannot reach files or
modules outside itself. ``model_path`` is relative to the directory unless absolute or a URL; ``args`` are
passed to the class's constructor.

Trust model: loading a model runs its code. Whoever can write a model directory (or the repository a server
loads from) can run code in the server; the confinement above only stops a settings file from borrowing
code it does not ship.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from v2serve.errors import did_you_mean
from v2serve.models.base import Model
from v2serve.models.imports import import_object, split_import_path
from v2serve.models.runtimes import RUNTIMES, runtime_class
from v2serve.models.torchserve import ARCHIVE_SUFFIX, TorchServeArchive, is_archive

SETTINGS_FILE = "model-settings.json"


def model_from_import_path(path: str, **kwargs: Any) -> Model:
    cls = import_object(path)
    return instantiate(cls, path, **kwargs)


def instantiate(cls: Any, label: str, **kwargs: Any) -> Model:
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ValueError(f"{label!r} is not a subclass of v2serve.Model")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        hint = ""
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unexpected:
            hint = did_you_mean(unexpected.group(1), _keyword_parameters(cls))
        raise ValueError(f"cannot create {cls.__name__} for {label!r}: {exc}{hint}") from None


def _keyword_parameters(cls: type) -> set[str]:
    """The keyword parameters of every ``__init__`` in ``cls``'s MRO (a subclass passes ``**kwargs`` on)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    return names - {"self"}


def model_from_directory(
    directory: Path,
    name: str | None = None,
    version: str | None = None,
    *,
    packages: Sequence[str] = (),
    require_name: bool = False,
) -> Model:
    """The model a model-settings.json describes; ``name`` and ``version`` apply where it names none.

    ``packages``: installed packages (besides v2serve) whose modules ``implementation`` may name.
    ``require_name``: refuse a settings file that names a model other than ``name`` (a repository's
    directory ``hijack`` must not replace model ``add_sub``).
    """
    settings_file = directory / SETTINGS_FILE
    settings = read_model_settings(settings_file)
    if require_name and settings.get("name") is not None and settings["name"] != name:
        raise ValueError(
            f"{settings_file} names model {settings['name']!r}, but it lies in the repository as {name!r}: "
            "a model is loaded under its directory's name only"
        )
    implementation = settings.get("implementation")
    if not isinstance(implementation, str):
        raise ValueError(f"{settings_file} needs an 'implementation' such as 'model.py:MyModel'")
    kwargs: dict[str, Any] = dict(settings.get("args") or {})
    kwargs["name"] = settings.get("name") or name or directory.name
    if settings.get("version") is not None:
        kwargs["version"] = str(settings["version"])
    elif version is not None:
        kwargs["version"] = version
    if settings.get("model_path"):
        kwargs["model_path"] = _resolve_model_path(settings["model_path"], directory)
    if implementation in RUNTIMES:
        cls = runtime_class(implementation)
    else:
        _confine(implementation, directory, packages, settings_file)
        cls = import_object(implementation, base_dir=directory)
    return instantiate(cls, str(settings_file), **kwargs)


SETTINGS_KEYS = ("name", "version", "implementation", "model_path", "args")
"""What a model-settings.json may say; anything else is refused, not ignored."""
_MODEL_OPTIONS = ("max_batch_size", "max_batch_delay_ms", "instances", "max_queue_size", "timeout_s", "warmup_inputs")


def read_model_settings(settings_file: Path) -> dict[str, Any]:
    """A model-settings.json's object; ValueError naming the file (and the line and column of a syntax
    error, or the closest valid key to an unknown one)."""
    try:
        settings = orjson.loads(settings_file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{settings_file}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_file} must hold a JSON object")
    for key in settings:
        if key in SETTINGS_KEYS:
            continue
        if key in _MODEL_OPTIONS:
            raise ValueError(f"{settings_file}: {key!r} goes under 'args' (it is the model class's argument)")
        raise ValueError(
            f"{settings_file}: unknown key {key!r}{did_you_mean(key, SETTINGS_KEYS)} "
            f"(a model-settings.json holds {', '.join(SETTINGS_KEYS)})"
        )
    return settings


TRUSTED_PACKAGES = ("v2serve",)


def _confine(implementation: str, directory: Path, packages: Sequence[str], settings_file: Path) -> None:
    module_name, _ = split_import_path(implementation)
    if module_name.endswith(".py"):
        if not (directory / module_name).resolve().is_relative_to(directory.resolve()):
            raise ValueError(f"{settings_file}: implementation {implementation!r} lies outside the model's directory")
        return
    package = module_name.split(".", 1)[0]
    if package not in (*TRUSTED_PACKAGES, *packages):
        raise ValueError(
            f"{settings_file}: implementation {implementation!r} is a module of package {package!r}, which is not "
            "in implementation_packages (V2SERVE_IMPLEMENTATION_PACKAGES); ship the code as a .py file in the "
            "model's directory, or name the package there"
        )


def _resolve_model_path(model_path: str, directory: Path) -> str:
    if "://" in model_path or Path(model_path).is_absolute():
        return model_path
    return str((directory / model_path).resolve())


def models_from_target(target: str, packages: Sequence[str] = (), store: str | None = None) -> list[Model]:
    """Every model a CLI target names: an import path, a model directory (or a directory of them), a
    TorchServe archive (``.mar``, or its extracted folder) or a store of archives and model directories;
    ``name=archive.mar`` serves an archive under that name (TorchServe's ``--models``), its path relative to
    ``store`` when it is not a file here.

    ``packages``: as for ``model_from_directory``; an import path given here is the operator's own choice.
    """
    name, archive = _named_archive(target, store)
    if archive is not None:
        return [TorchServeArchive(name=name, model_path=str(archive))]
    path = Path(target)
    if ":" not in target and not path.exists():
        raise ValueError(
            f"{target!r}: no such file or directory (a target is a model directory, a graph file, a TorchServe "
            "archive (.mar), or an import path 'module:Class' or 'file.py:Class')"
        )
    if is_archive(path):
        return [TorchServeArchive(model_path=str(path))]
    if path.is_dir():
        if (path / SETTINGS_FILE).is_file():
            return [model_from_directory(path, packages=packages)]
        found = sorted(
            child for child in path.iterdir() if (child / SETTINGS_FILE).is_file() or _is_stored_archive(child)
        )
        if not found:
            raise ValueError(
                f"{target!r} holds no {SETTINGS_FILE} and no TorchServe archive, neither itself nor in a subdirectory"
            )
        return [
            TorchServeArchive(model_path=str(child))
            if _is_stored_archive(child)
            else model_from_directory(child, packages=packages)
            for child in found
        ]
    return [model_from_import_path(target)]


def _is_stored_archive(path: Path) -> bool:
    return not path.name.startswith(".") and is_archive(path) and not (path / SETTINGS_FILE).is_file()


def _named_archive(target: str, store: str | None) -> tuple[str | None, Path | None]:
    """``name=path.mar`` (a name, then an archive): the name and the archive's path."""
    name, equals, path = target.partition("=")
    if not equals or not name or not path.endswith(ARCHIVE_SUFFIX):
        return None, None
    archive = Path(path)
    if not archive.exists() and store is not None and not archive.is_absolute():
        archive = Path(store) / archive
    if not archive.is_file():
        raise ValueError(f"{target!r}: no archive {str(archive)!r}")
    return name, archive
