"""Replication built from the raw building blocks only: the floor that `replication.py` compares pynndb with.

It has the shape of a pynndb deployment, and nothing else:
- the application (the calling process) writes a py-lmdb environment with the same settings as pynndb's default
  (writemap, map_async): each write is one transaction that puts the documents (orjson), their index entries and
  one journal entry holding the documents, then rings a doorbell (a datagram on a UNIX socket, as pynndb's
  commit doorbell does);
- a source process waits on that doorbell, reads the journal entries after the last it sent and sends them in one
  pyzmq message (PUSH, TCP on 127.0.0.1);
- a replica process (PULL) writes each message's documents, their index entries (the name parsed from each
  document) and its mark in one transaction, with one `putmulti` a sub-database;
- the application reads the replica's environment through its own handle.
Sustained ingest writes transactions of many documents (one journal entry, one ring a transaction); the source
sends at most MESSAGE_ENTRIES entries a message. A full sync is the source's stored pairs (records, then index
entries) streamed in chunks of about 1 MiB in key order into an empty environment with ``putmulti(append=True)``,
one transaction a chunk.

What it leaves out is what pynndb adds on these paths: the mesh (routing, links, heartbeats, the command channel),
per-source marks and snapshot markers, the schema and index definitions, versions, the journal's entry format and
trimming, checks on every message. pynndb's figure divided by this one is the cost of those layers.
Each process is started here and stops by itself: at the end of its work, or after LIFETIME seconds.
Run alone: ``python benchmarks/raw_replication.py`` (a few samples of each pattern and one full sync).
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import accumulate, chain, islice, pairwise
from typing import Any

import lmdb
import orjson
import zmq

SETTINGS: dict[str, Any] = {"map_size": 1 << 31, "writemap": True, "map_async": True, "max_dbs": 4}
SEQ = struct.Struct(">Q")  # journal keys: big-endian, so they sort in sequence order
LENGTH = struct.Struct("<I")
KEY_SIZE = 24  # every document's key: 24 hex digits, time-ordered as pynndb's
CHUNK_PAIRS = 8192  # pairs read at a time by a full sync's source (about 1 MiB of records)
MESSAGE_ENTRIES = 1000  # journal entries a message at most (a source that fell behind sends several)
LIFETIME = 900.0  # every child process stops by itself after this long
WAIT = 1.0  # how long a child waits on a socket before it checks its lifetime


def _open(path: str) -> tuple[lmdb.Environment, Any, Any, Any, Any]:
    """The environment and its sub-databases: documents, index (duplicates), journal, meta."""
    env = lmdb.open(path, **SETTINGS)
    return (
        env,
        env.open_db(b"docs"),
        env.open_db(b"index", dupsort=True),
        env.open_db(b"journal"),
        env.open_db(b"meta"),
    )


def _say(**message: Any) -> None:
    """A line to the parent (which reads the child's stdout)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _cpu() -> float:
    return time.process_time()


# --- child processes --------------------------------------------------------------------------------------------
def _replica(path: str) -> None:
    """Apply every message until an empty one: its documents, their index entries and the mark, one transaction."""
    env, docs, index, _journal, meta = _open(path)
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.rcvtimeo = int(WAIT * 1000)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    _say(port=port)
    deadline = time.monotonic() + LIFETIME
    loads, unpack = orjson.loads, LENGTH.unpack_from
    started = None
    try:
        while time.monotonic() < deadline:
            try:
                frame = pull.recv()
            except zmq.Again:
                continue
            if started is None:
                started = _cpu()
            if not frame:
                break
            if frame[0] == 0x53:  # 'S': a chunk of stored pairs (full sync)
                _load_chunk(env, docs, index, frame)
                continue
            keys: list[bytes] = []
            stored: list[bytes] = []
            offset, size, last = 0, len(frame), b""
            while offset < size:
                (length,) = unpack(frame, offset)
                entry = frame[offset + 4 : offset + 4 + length]
                offset += 4 + length
                last = _read_entry(entry, keys, stored)
            with env.begin(write=True) as txn:
                txn.cursor(db=docs).putmulti(zip(keys, stored, strict=True))
                names = [loads(document)["name"].encode() for document in stored]
                txn.cursor(db=index).putmulti(zip(names, keys, strict=True), dupdata=True)
                txn.put(b"mark", last, db=meta)
    finally:
        _say(done=time.perf_counter(), cpu=_cpu() - (started or _cpu()))
        pull.close(linger=0)
        context.term()
        env.close()


def _entry(sequence: bytes, keys: list[bytes], documents: list[bytes]) -> bytes:
    """A journal entry: sequence (8 bytes), count (u32), document lengths (u32 each), keys (24 bytes each), the
    documents."""
    count = len(keys)
    return b"".join((sequence, struct.pack(f"<I{count}I", count, *map(len, documents)), *keys, *documents))


def _read_entry(entry: bytes, keys: list[bytes], documents: list[bytes]) -> bytes:
    """Add an entry's keys and documents to the lists; its sequence."""
    (count,) = LENGTH.unpack_from(entry, 8)
    lengths = struct.unpack_from(f"<{count}I", entry, 12)
    start = 12 + 4 * count
    keys += [entry[begin : begin + KEY_SIZE] for begin in range(start, start + KEY_SIZE * count, KEY_SIZE)]
    bounds = accumulate(lengths, initial=start + KEY_SIZE * count)
    documents += [entry[begin:end] for begin, end in pairwise(bounds)]
    return entry[:8]


def _load_chunk(env: lmdb.Environment, docs: Any, index: Any, frame: bytes) -> None:
    """b'S', which (0 documents, 1 index), count, key lengths (u16), value lengths (u32), keys, values."""
    which, count = struct.unpack_from("<BI", frame, 1)
    offset = 6
    key_lengths = struct.unpack_from(f"<{count}H", frame, offset)
    offset += 2 * count
    value_lengths = struct.unpack_from(f"<{count}I", frame, offset)
    offset += 4 * count
    key_bounds = list(accumulate(key_lengths, initial=offset))
    value_bounds = accumulate(value_lengths, initial=key_bounds[-1])
    keys = [frame[begin:end] for begin, end in pairwise(key_bounds)]
    values = [frame[begin:end] for begin, end in pairwise(value_bounds)]
    pairs = zip(keys, values, strict=True)
    with env.begin(write=True) as txn:
        txn.cursor(db=index if which else docs).putmulti(pairs, dupdata=bool(which), append=True)


def _source(path: str, doorbell: str, port: int) -> None:
    """Ship journal entries when the doorbell rings, until a b'stop' ring."""
    env, _docs, _index, journal, _meta = _open(path)
    bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bell.bind(doorbell)
    bell.setblocking(False)
    poller = select.poll()
    poller.register(bell, select.POLLIN)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    _say(ready=True)
    deadline = time.monotonic() + LIFETIME
    started = _cpu()
    sent = 0
    pack = LENGTH.pack
    try:
        while time.monotonic() < deadline:
            if not poller.poll(WAIT * 1000):
                continue
            stop = False
            while not stop:  # every ring that came: one read serves them all
                try:
                    stop = bell.recv(16) == b"stop"
                except BlockingIOError:
                    break
            while True:  # every entry after the last sent, at most MESSAGE_ENTRIES a message
                entries = []
                with env.begin(buffers=False) as txn:
                    cursor = txn.cursor(db=journal)
                    if cursor.set_range(SEQ.pack(sent + 1)):
                        entries = list(islice(cursor.iternext(keys=False, values=True), MESSAGE_ENTRIES))
                if entries:
                    sent += len(entries)
                    push.send(b"".join(chain.from_iterable((pack(len(entry)), entry) for entry in entries)))
                if len(entries) < MESSAGE_ENTRIES:
                    break
            if stop:
                break
    finally:
        _end(push, context, started, WAIT)
        bell.close()
        env.close()


def _sync_source(path: str, port: int) -> None:
    """On b'go' (stdin), stream the stored pairs of the documents and the index, then an empty message."""
    env, docs, index, _journal, _meta = _open(path)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    _say(ready=True)
    sys.stdin.readline()
    started = _cpu()
    try:
        with env.begin(buffers=False) as txn:
            for which, dbi in ((0, docs), (1, index)):
                for keys, values in _chunks(txn, dbi):
                    count = len(keys)
                    head = b"S" + struct.pack(f"<BI{count}H{count}I", which, count, *map(len, keys), *map(len, values))
                    push.send(b"".join(chain((head,), keys, values)))
    finally:
        _end(push, context, started, LIFETIME)
        env.close()


def _end(push: zmq.Socket[bytes], context: zmq.Context[zmq.Socket[bytes]], started: float, linger: float) -> None:
    """A sending child's end: the empty message that ends the replica, its CPU time to the parent, its sockets."""
    push.send(b"")
    _say(cpu=_cpu() - started)
    push.close(linger=int(linger * 1000))
    context.term()


def _chunks(txn: lmdb.Transaction[bytes], dbi: Any) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """A sub-database's keys and values, CHUNK_PAIRS at a time, read with two cursors in step."""
    key_cursor, value_cursor = txn.cursor(db=dbi), txn.cursor(db=dbi)
    key_cursor.first()
    value_cursor.first()
    keys_left = key_cursor.iternext(keys=True, values=False)
    values_left = value_cursor.iternext(keys=False, values=True)
    while keys := list(islice(keys_left, CHUNK_PAIRS)):
        yield keys, list(islice(values_left, CHUNK_PAIRS))


# --- the application's side -------------------------------------------------------------------------------------
class Child:
    """One child process running a role of this module; it talks in JSON lines on its stdout."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"raw replication child {self.pid} ended ({self.process.wait(WAIT)})")
        return dict(json.loads(line))

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def _create(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    _open(path)[0].close()


class RawPair:
    """The application's side of the raw pipeline for lag samples: `write(i)` commits document i and rings the
    doorbell, returning its key; `visible(key)` reads the replica's environment."""

    def __init__(self, workdir: str, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        source_path, replica_path = os.path.join(workdir, "raw-source"), os.path.join(workdir, "raw-replica")
        for path in (source_path, replica_path):
            _create(path)
        self.doorbell = os.path.join(workdir, "raw-doorbell")
        self.replica_process = Child("replica", replica_path)
        self.source_process: Child | None = None
        try:
            port = self.replica_process.read()["port"]
            self.source_process = Child("source", source_path, self.doorbell, str(port))
            self.source_process.read()
        except BaseException:
            self.close()
            raise
        self.env, self.docs, self.index, self.journal, _meta = _open(source_path)
        self.replica_env, self.replica_docs = _open(replica_path)[:2]
        self.bell = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.bell.setblocking(False)
        self.sequence = 0

    def write(self, i: int) -> bytes:
        """Document i in one transaction, then a ring; its key."""
        return self.write_many(i, 1)

    def write_many(self, first: int, count: int) -> bytes:
        """Documents first .. first + count - 1 in one transaction and one journal entry, one ring; the last key."""
        chosen = self.documents[first : first + count]
        keys = [b"%024x" % (0x5F0000000000000000000000 + i) for i in range(first, first + count)]
        stored = list(map(orjson.dumps, chosen))
        self.sequence += 1
        sequence = SEQ.pack(self.sequence)
        with self.env.begin(write=True) as txn:
            txn.cursor(db=self.docs).putmulti(zip(keys, stored, strict=True), append=True)
            names = [document["name"].encode() for document in chosen]
            txn.cursor(db=self.index).putmulti(zip(names, keys, strict=True), dupdata=True)
            txn.put(sequence, _entry(sequence, keys, stored), db=self.journal, append=True)
        self.ring(b"")
        return keys[-1]

    def ring(self, what: bytes) -> None:
        try:
            self.bell.sendto(what, self.doorbell)
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens (or the listener is busy with rings already queued): as pynndb's doorbell

    def visible(self, key: bytes) -> bool:
        with self.replica_env.begin() as txn:
            return txn.get(key, db=self.replica_docs) is not None

    def cpu(self) -> tuple[float, float]:
        """Stop both children; (source CPU, replica CPU) in seconds."""
        assert self.source_process is not None
        self.ring(b"stop")
        source = self.source_process.read()["cpu"]
        replica = self.replica_process.read()["cpu"]
        return source, replica

    def close(self) -> None:
        for child in (self.source_process, self.replica_process):
            if child is not None:
                child.stop()
        for env in (getattr(self, "env", None), getattr(self, "replica_env", None)):
            if env is not None:
                env.close()
        if hasattr(self, "bell"):
            self.bell.close()


def load_source(path: str, documents: list[dict[str, Any]]) -> None:
    """A full sync's source: every document under a time-ordered key and its index entry."""
    _create(path)
    env, docs, index, _journal, _meta = _open(path)
    try:
        with env.begin(write=True) as txn:
            keys = [b"%024x" % (0x5F0000000000000000000000 + i) for i in range(len(documents))]
            txn.cursor(db=docs).putmulti(zip(keys, map(orjson.dumps, documents), strict=True), append=True)
            entries = sorted((document["name"].encode(), key) for key, document in zip(keys, documents, strict=True))
            txn.cursor(db=index).putmulti(entries, dupdata=True)
    finally:
        env.close()


def full_sync(workdir: str, source_path: str, run: int) -> dict[str, float]:
    """One full sync into a fresh environment (removed afterwards); seconds from the go to the last commit."""
    replica_path = os.path.join(workdir, f"raw-sync-replica-{run}")
    _create(replica_path)
    replica = Child("replica", replica_path)
    source = None
    try:
        port = replica.read()["port"]
        source = Child("sync-source", source_path, str(port))
        source.read()
        start = time.perf_counter()
        source.tell("go")
        source_cpu = source.read()["cpu"]
        finished = replica.read()
        return {"seconds": finished["done"] - start, "source_cpu": source_cpu, "replica_cpu": finished["cpu"]}
    finally:
        for child in (source, replica):
            if child is not None:
                child.stop()
        for name in os.listdir(replica_path):
            os.remove(os.path.join(replica_path, name))
        os.rmdir(replica_path)


def _demo() -> None:
    from common import make_documents, percentiles

    with tempfile.TemporaryDirectory(prefix="pynndb-bench-raw-") as workdir:
        documents = make_documents(2000)
        pair = RawPair(workdir, documents)
        try:
            lags = []
            for i in range(200):
                start = time.perf_counter()
                key = pair.write(i)
                while not pair.visible(key):
                    os.sched_yield()
                lags.append(time.perf_counter() - start)
            p50, p99 = percentiles(lags)
            print(f"raw back-to-back lag: p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")
        finally:
            pair.close()
        source_path = os.path.join(workdir, "raw-sync-source")
        load_source(source_path, make_documents(200_000))
        sync = full_sync(workdir, source_path, 0)
        print(f"raw full sync of 200k documents: {sync['seconds'] * 1e3:.0f} ms")


if __name__ == "__main__":
    roles = {"replica": _replica, "source": _source, "sync-source": _sync_source}
    if len(sys.argv) > 1 and sys.argv[1] in roles:
        role = sys.argv[1]
        arguments: list[Any] = sys.argv[2:]
        if role == "source":
            arguments[2] = int(arguments[2])
        elif role == "sync-source":
            arguments[1] = int(arguments[1])
        roles[role](*arguments)
    else:
        _demo()
