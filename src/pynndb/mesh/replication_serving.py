"""Answers to replicas' requests for a source served by this node (gap repair, snapshots), off the node loop.

A snapshot can take long: answers run on a small pool, each streamed frame by frame to the requester's node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pynndb.errors import MeshError
from pynndb.replication.messages import Request, encode
from pynndb.replication.source import Publisher

log = logging.getLogger("pynndb.replication")


class SourceServer:
    """Serves requests with the source's `Publisher`; ``send(origin, frame)`` carries each answer frame."""

    def __init__(self, label: str, send: Callable[[str, bytes], None], served: Callable[[], None]) -> None:
        self._send = send
        self._served = served
        self._pool = ThreadPoolExecutor(2, thread_name_prefix=f"pynndb-{label}-serve")

    def submit(self, publisher: Publisher, request: Request, origin: str) -> None:
        """Answer ``request`` (from node ``origin``) on a serving thread."""

        def answer() -> None:
            prefix = request.replica.encode()
            try:
                for message in publisher.serve(request):
                    self._send(origin, encode(message, prefix))
                self._served()
            except MeshError as error:
                # The requester went away (killed, restarted with a new id): it will ask again when back.
                log.info("answer to %s for %s dropped: %s", origin, request.source, error)
            except Exception:
                log.exception("serving a replication request failed")

        self._pool.submit(answer)

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
