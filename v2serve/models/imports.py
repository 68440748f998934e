"""Objects named by import path: ``package.module:Name``, or ``path/to/file.py:Name`` (a file imported on its
own, again whenever its content changes). Model code and graph steps are named this way."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def import_object(path: str, base_dir: Path | None = None) -> Any:
    """The object named by ``module:attr`` or ``file.py:attr``."""
    module_name, attr = split_import_path(path)
    if module_name.endswith(".py"):
        module = _import_file(Path(base_dir or ".") / module_name)
    else:
        module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None


def split_import_path(path: str) -> tuple[str, str]:
    module_name, sep, attr = path.partition(":")
    if not sep or not attr:
        raise ValueError(f"{path!r} is not an import path of the form 'module:Name' or 'file.py:Name'")
    return module_name, attr


def _import_file(file: Path) -> Any:
    """The module of a Python file, imported again whenever its content changed (a repository reload must
    serve the new code), and reused while it did not."""
    file = file.resolve()
    if not file.is_file():
        raise ValueError(f"no such file: {file}")
    source = file.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    module_name = f"v2serve_user_{hashlib.sha256(str(file).encode()).hexdigest()[:16]}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    return import_file_as(file, module_name)


def import_file_as(file: Path, module_name: str) -> ModuleType:
    """Import the Python file ``file`` as module ``module_name``, registered in ``sys.modules`` (dataclasses
    and pickles look a class's module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
