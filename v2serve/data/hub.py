"""Models by name from the Hugging Face hub, fetched with ``huggingface_hub`` under the operator's rules.

A name (an Ingrain load route's, or a model-settings.json's ``model_path: hf://org/repo``) is fetched only
when ``hub.enabled`` is on and ``hub.allow`` names its organisation or repository.
Before a byte is downloaded, the repository's file list is read and its total size held to
``hub.max_bytes``; the hub's address is held to the data policy's rule on private addresses; a revision
pinned in ``hub.revisions`` is the one fetched. Progress (bytes and rate) goes to the log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from v2serve.data.addresses import refuse_unless_public
from v2serve.errors import Forbidden, ModelNotFound, UpstreamError
from v2serve.settings import DataSettings, HubSettings

logger = logging.getLogger("v2serve.hub")

HUB_PROTOCOL = "hf"
"""``hf://org/repo`` as a model-settings.json's ``model_path``: the repository's folder, fetched by these rules."""


class HubDownloads:
    """Fetches whole model repositories from the hub into its cache (blocking: run it in a thread)."""

    def __init__(self, settings: HubSettings, data: DataSettings) -> None:
        self.settings = settings
        self._allow_private = data.allow_private_addresses

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def allowed(self, repo_id: str) -> bool:
        allow = self.settings.allow
        return "*" in allow or repo_id in allow or repo_id.split("/", 1)[0] in allow

    def download(self, repo_id: str, choose: Callable[[list[str]], list[str]] | None = None) -> str:
        """The local folder of ``repo_id``'s files (those ``choose`` picks from the repository's file list, or
        all); Forbidden when the rules refuse it, ModelNotFound when the hub has no such repository,
        UpstreamError when the hub fails."""
        if not self.enabled:
            raise Forbidden("downloading models from the hub is off on this server (hub.enabled)")
        if not self.allowed(repo_id):
            raise Forbidden(f"{repo_id!r} is not one of the hub repositories this server may fetch (hub.allow)")
        self._check_endpoint()
        from huggingface_hub import HfApi, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

        endpoint = self.settings.endpoint.rstrip("/")
        revision = self.settings.revisions.get(repo_id)
        try:
            info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
        except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
            raise ModelNotFound(f"the hub has no model {repo_id!r}{f' at {revision}' if revision else ''}") from exc
        except (HfHubHTTPError, OSError) as exc:
            raise UpstreamError(f"the hub did not answer for {repo_id!r}: {exc}") from exc
        siblings = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or []}
        files = None if choose is None else choose(sorted(siblings))
        if files == []:
            raise ModelNotFound(f"the hub's {repo_id!r} holds none of the files this model needs")
        size = sum(siblings[name] for name in files or siblings)
        if size > self.settings.max_bytes:
            raise Forbidden(
                f"{repo_id!r} weighs {size:,} bytes, over the {self.settings.max_bytes:,} this server fetches "
                "(hub.max_bytes)"
            )
        started = time.monotonic()
        logger.info("downloading %s at %s from %s: %.1f MB", repo_id, info.sha, endpoint, size / 1e6)
        progress = _Progress(repo_id, self._repository_cache(repo_id), size, self.settings.progress_interval_s)
        try:
            folder: str = snapshot_download(
                repo_id, revision=info.sha, endpoint=endpoint, cache_dir=self.settings.cache_dir, allow_patterns=files
            )
        except (HfHubHTTPError, OSError) as exc:
            raise UpstreamError(f"downloading {repo_id!r} from the hub failed: {exc}") from exc
        finally:
            progress.stop()
        seconds = max(time.monotonic() - started, 1e-6)
        logger.info("downloaded %s in %.1f s (%.1f MB/s)", repo_id, seconds, size / 1e6 / seconds)
        return folder

    def _repository_cache(self, repo_id: str) -> Path:
        from huggingface_hub.constants import HF_HUB_CACHE

        root = Path(self.settings.cache_dir) if self.settings.cache_dir else Path(HF_HUB_CACHE)
        return root / f"models--{repo_id.replace('/', '--')}"

    def _check_endpoint(self) -> None:
        host = urlsplit(self.settings.endpoint).hostname
        if not host:
            raise Forbidden(f"hub.endpoint {self.settings.endpoint!r} names no host")
        if self._allow_private:
            return
        try:
            addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except OSError as exc:
            raise UpstreamError(f"the hub's host {host!r} does not resolve: {exc}") from exc
        for address in addresses:
            refuse_unless_public(host, ipaddress.ip_address(address.split("%", 1)[0]))


class _Progress:
    """Logs, every ``interval`` seconds until stopped, how many bytes a download has written into the
    repository's cache folder (finished and partial files) and its rate: huggingface_hub shows progress on a
    terminal bar only, which a server's log never sees."""

    def __init__(self, repo_id: str, folder: Path, total: int, interval: float) -> None:
        self._repo_id, self._folder, self._total, self._interval = repo_id, folder, total, interval
        self._started = time.monotonic()
        self._baseline = _bytes_under(folder)  # what an earlier download left there
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"hub-progress-{repo_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            done = max(0, _bytes_under(self._folder) - self._baseline)
            seconds = max(time.monotonic() - self._started, 1e-6)
            logger.info(
                "downloading %s: %.1f of %.1f MB (%.1f MB/s)",
                self._repo_id, done / 1e6, self._total / 1e6, done / 1e6 / seconds,
            )  # fmt: skip

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def _bytes_under(folder: Path) -> int:
    """The bytes of the regular files under ``folder`` (a cache's snapshot links are not counted twice)."""
    total = 0
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:  # a partial file renamed while we looked
            continue
    return total
