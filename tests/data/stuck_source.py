"""A filesystem whose reads never return until released: the stuck source of the data_url tests.

Importing this module registers it as ``stuck://`` with fsspec, so a server started on ``EchoModel`` from
here (``tests.data.stuck_source:EchoModel``) can be pointed at it from a subprocess too.
"""

from __future__ import annotations

import threading

import fsspec
from fsspec.spec import AbstractFileSystem

from tests.fixtures import EchoModel

RELEASE = threading.Event()
STARTED = threading.Semaphore(0)


class StuckFileSystem(AbstractFileSystem):
    protocol = "stuck"
    cachable = False

    def info(self, path, **kwargs):
        STARTED.release()
        RELEASE.wait()
        return {"name": path, "size": 1, "type": "file"}


fsspec.register_implementation("stuck", StuckFileSystem, clobber=True)

__all__ = ["EchoModel", "StuckFileSystem"]
