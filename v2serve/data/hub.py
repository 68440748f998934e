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
import time
from collections.abc import Callable
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
        try:
            folder: str = snapshot_download(
                repo_id, revision=info.sha, endpoint=endpoint, cache_dir=self.settings.cache_dir, allow_patterns=files
            )
        except (HfHubHTTPError, OSError) as exc:
            raise UpstreamError(f"downloading {repo_id!r} from the hub failed: {exc}") from exc
        seconds = max(time.monotonic() - started, 1e-6)
        logger.info("downloaded %s in %.1f s (%.1f MB/s)", repo_id, seconds, size / 1e6 / seconds)
        return folder

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
