"""A fault proxy: TCP forwarders on 127.0.0.1 that nodes link through, able to cut, black-hole or delay a link.

A mesh link is a discovery exchange on the peer's port1, then one TCP connection to the port2 it names. A `Link`
forwards both: its discovery side rewrites the `link_port` in the peer's DISCOVERED answer (a same-length edit,
so ZMTP frame lengths stay valid) to the proxy's own link port, so the link connection goes through the proxy too.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field

UP, CUT, BLACKHOLE, DELAY = "up", "cut", "blackhole", "delay"
CHUNK = 65536


def listening_socket() -> socket.socket:
    """A listening socket on 127.0.0.1 whose port has five digits (the same width as every ephemeral port)."""
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        if len(str(sock.getsockname()[1])) == 5:
            sock.listen(64)
            sock.setblocking(False)
            return sock
        sock.close()
    raise RuntimeError("no five-digit port found")


@dataclass
class Link:
    """Forwards connections to one node (its discovery and link ports) for the nodes that connect to it."""

    name: str
    discovery_target: int
    link_target: int
    mode: str = UP
    delay: float = 0.0
    discovery_socket: socket.socket = field(default_factory=listening_socket)
    link_socket: socket.socket = field(default_factory=listening_socket)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    connections: int = 0

    @property
    def discovery_port(self) -> int:
        return int(self.discovery_socket.getsockname()[1])

    @property
    def link_port(self) -> int:
        return int(self.link_socket.getsockname()[1])

    @property
    def address(self) -> str:
        """What a node passes to --connect to reach the target through this proxy."""
        return f"tcp://127.0.0.1:{self.discovery_port}"

    def rewrite(self) -> tuple[bytes, bytes]:
        old = b'"link_port":%d' % self.link_target
        new = b'"link_port":%d' % self.link_port
        if len(old) != len(new):
            raise RuntimeError(f"port widths differ: {self.link_target} vs {self.link_port}")
        return old, new


class FaultProxy:
    """Runs every `Link` on one asyncio loop in a background thread; `set_mode` changes a link at once."""

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._thread.start()

    def add(self, name: str, discovery_target: int, link_target: int) -> Link:
        link = Link(name, discovery_target, link_target)
        self.links[name] = link
        self._call(self._serve(link))
        return link

    def set_mode(self, name: str, mode: str, delay: float = 0.0) -> None:
        """UP, CUT (drop every connection, refuse new ones), BLACKHOLE (swallow traffic) or DELAY (`delay` s)."""
        link = self.links[name]
        link.mode, link.delay = mode, delay
        if mode == CUT:
            self._call(self._drop(link))

    def heal(self) -> None:
        for name in self.links:
            self.set_mode(name, UP)

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for link in self.links.values():
                await self._drop(link)

        if self._thread.is_alive():
            self._call(shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
        for link in self.links.values():
            link.discovery_socket.close()
            link.link_socket.close()

    # --- the loop ---------------------------------------------------------------------------------------------
    def _call(self, coroutine: object, timeout: float = 10.0) -> object:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        return future.result(timeout)

    async def _serve(self, link: Link) -> None:
        for sock, target, rewrite in (
            (link.discovery_socket, link.discovery_target, True),
            (link.link_socket, link.link_target, False),
        ):

            def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, target=target, rewrite=rewrite):
                return self._connection(link, target, rewrite, reader, writer)

            self._servers.append(await asyncio.start_server(handler, sock=sock))

    async def _drop(self, link: Link) -> None:
        for writer in list(link.writers):
            writer.transport.abort()
        link.writers.clear()

    async def _connection(
        self, link: Link, target: int, rewrite: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if link.mode == CUT:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", target), 5)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()  # the node is down: the client sees a reset, as without a proxy
            return
        link.connections += 1
        link.writers.update((writer, upstream_writer))
        replace = link.rewrite() if rewrite else None
        tasks = [
            asyncio.ensure_future(self._pipe(link, reader, upstream_writer, None)),
            asyncio.ensure_future(self._pipe(link, upstream_reader, writer, replace)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for end in (writer, upstream_writer):
            end.transport.abort()
            link.writers.discard(end)

    @staticmethod
    async def _pipe(
        link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replace: tuple[bytes, bytes] | None
    ) -> None:
        held = b""
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            if link.mode == BLACKHOLE:
                continue
            if replace is not None:
                data = (held + data).replace(*replace)
                # Hold back a tail that may be the start of the pattern split across two reads.
                held = b""
                for size in range(len(replace[0]) - 1, 1, -1):  # a lone '"' is never held: it may end a frame
                    if data.endswith(replace[0][:size]):
                        data, held = data[:-size], data[-size:]
                        break
            if link.mode == DELAY and link.delay > 0:
                await asyncio.sleep(link.delay)
            if link.mode == CUT:
                return
            writer.write(data)
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                return
