"""A sub-database's stored pairs read from LMDB's own leaf pages, for snapshots.

Reading a table through py-lmdb's cursors costs a GIL release and re-acquire for every step and every value, about
three for each stored pair: most of a source's CPU in a full sync (docs/benchmarks.md, Round 24). A read
transaction's pages are never written while it lives (LMDB is copy-on-write and keeps what a reader sees), so a
source reads the leaf pages of each sub-database straight from the data file instead, a run of consecutive pages
per system call, and takes the pairs out of them in compiled code (`leaf_pairs`, into `Pairs`: the batches
core/bulk.py's cursor reading makes, in the same order).

The source finds a sub-database's root page in the main database's record of it (`Tree`, read through py-lmdb in
the same transaction, so the root is the transaction's), walks its branch pages down to the leaves in key order
(`PageFile.leaves`) and reads the leaves (`PageFile.read`). A key's few duplicates held in its leaf (a sub-page) are
read with the leaf; a value in overflow pages, or a key's duplicates in a tree of their own (many duplicates), are
read from the file (`PageFile.resolve`).

Layout read (LMDB 0.9, 64-bit, little-endian: `supported`): a page starts with its number (8 bytes), 2 bytes of
padding, its flags, and the start and end of its free space (`lower`, `upper`: 2 bytes each); the node offsets
follow (2 bytes each, in key order) up to `lower`. A node: its data size (4 bytes) or, in a branch page, the child's
page number (6 bytes, with the flags field), its flags (2), its key size (2), the key, then the data.
Everything read is checked against the page's bounds: a malformed page raises MalformedEntry, it is never read past
(core/snapshot_read.py then reads that database through cursors).
"""

from __future__ import annotations

import os
import struct
import sys
from typing import Final

import lmdb

from pynndb.errors import MalformedEntry

PAGE_HEADER: Final = 16
NODE_HEADER: Final = 8
P_BRANCH: Final = 0x01
P_LEAF: Final = 0x02
P_OVERFLOW: Final = 0x04
P_META: Final = 0x08
P_LEAF2: Final = 0x20
KIND: Final = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2  # the flags that say what a page is
F_BIGDATA: Final = 0x01  # the value is in overflow pages: the node holds their first page's number
F_SUBDATA: Final = 0x02  # the node holds a sub-database record (of a tree of duplicates, in a leaf of a sub-database)
F_DUPDATA: Final = 0x04  # the node's key has several values (duplicates): a sub-page, or a tree when F_SUBDATA
DUPSORT: Final = 0x04  # a sub-database's flag: keys may have several values
NO_PAGE: Final = 0xFFFFFFFFFFFFFFFF  # the root of an empty tree
# A sub-database's record in its parent: pad, flags, depth, branch / leaf / overflow pages, entries, root.
DB_RECORD: Final = struct.Struct("<IHHQQQQQ")
MAX_DEPTH: Final = 32  # far deeper than any B-tree of 2^64 pages of 4 KiB
# Data files whose pages did not read as expected: read through py-lmdb's cursors from then on (core/snapshot_read).
refused: set[str] = set()


def supported() -> bool:
    """Whether this process reads the page layout above: LMDB 0.9 (the data format py-lmdb has always bundled) on a
    64-bit little-endian machine."""
    return lmdb.version()[:2] == (0, 9) and sys.byteorder == "little" and struct.calcsize("P") == 8


class Tree:
    """A sub-database's record in its parent: its root page, depth and pages."""

    def __init__(self, record: bytes | None) -> None:
        if record is None or len(record) != DB_RECORD.size:
            raise MalformedEntry("not a sub-database record")
        _pad, flags, depth, branches, leaves, overflow, _entries, root = DB_RECORD.unpack(record)
        self.root: int = root
        self.depth: int = depth
        self.branches: int = branches  # (these two count the pages of its keys' trees of duplicates too)
        self.leaf_pages: int = leaves
        # Every leaf is plain (no value in overflow pages, no duplicates): its pairs are its nodes.
        self.plain: bool = overflow == 0 and not flags & DUPSORT


def _u16(page: bytes, at: int) -> int:
    return page[at] | (page[at + 1] << 8)


def _u32(page: bytes, at: int) -> int:
    return page[at] | (page[at + 1] << 8) | (page[at + 2] << 16) | (page[at + 3] << 24)


def _nodes(page: bytes, base: int, size: int) -> tuple[int, int]:
    """(number of nodes, start of the node area) of the page of `size` bytes at `page[base]`, checked."""
    lower = _u16(page, base + 12)
    upper = _u16(page, base + 14)
    if lower < PAGE_HEADER or lower > upper or upper > size or lower & 1:
        raise MalformedEntry("a page's free-space bounds do not fit it")
    return (lower - PAGE_HEADER) >> 1, upper


def _node(page: bytes, base: int, size: int, index: int, upper: int) -> int:
    """The offset in `page` of node `index` of the page at `page[base]`, checked to lie in its node area."""
    offset = _u16(page, base + PAGE_HEADER + 2 * index)
    if offset < upper or offset + NODE_HEADER > size:
        raise MalformedEntry("a node lies outside its page")
    return base + offset


Batch = tuple[list[bytes], list[bytes], list[int], list[int]]  # keys, values, their lengths


class Pairs:
    """Where pairs read from pages go: batches (keys, values, key lengths, value lengths) cut after the pair that
    brings a batch to `chunk_bytes` of keys and values, or at `chunk_pairs` pairs (as core/bulk.py's `_batches`)."""

    def __init__(self, chunk_bytes: int, chunk_pairs: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunk_pairs = max(1, chunk_pairs)
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.key_lengths: list[int] = []
        self.value_lengths: list[int] = []
        self.size = 0
        self.ready: list[Batch] = []

    def add(self, key: bytes, value: bytes, key_length: int, value_length: int) -> None:
        self.keys.append(key)
        self.values.append(value)
        self.key_lengths.append(key_length)
        self.value_lengths.append(value_length)
        self.size += key_length + value_length
        if self.size >= self.chunk_bytes or len(self.keys) >= self.chunk_pairs:
            self.cut()

    def cut(self) -> None:
        """The pairs added since the last batch make one."""
        if self.keys:
            self.ready.append((self.keys, self.values, self.key_lengths, self.value_lengths))
            self.keys, self.values, self.key_lengths, self.value_lengths, self.size = [], [], [], [], 0

    def take(self) -> list[Batch]:
        """The batches made so far (each once)."""
        ready, self.ready = self.ready, []
        return ready


def leaf_pairs(frame: bytes, start: int, end: int, psize: int, sink: Pairs, file: PageFile | None = None) -> None:
    """Add the pairs of the leaf pages in `frame[start:end]` (pages of `psize` bytes) to `sink`, in key order; a
    key's duplicates become one pair each. A value in overflow pages or a key's tree of duplicates is read from
    `file` (the pages' data file). Raises MalformedEntry for anything but such pages, never reading past one."""
    if psize < 512 or psize > 65536 or (end - start) % psize or start < 0 or end > len(frame):
        raise MalformedEntry("stored pages must be whole pages of 512 bytes to 64 KiB")
    base = start
    while base < end:
        if frame[base + 10] & KIND != P_LEAF:
            raise MalformedEntry("a stored page must be a leaf page")
        count, upper = _nodes(frame, base, psize)
        page_end = base + psize
        low = base + upper
        pointer = base + PAGE_HEADER
        for _index in range(count):
            # (read inline, not through _u16 / _node: this loop runs for every pair of a snapshot)
            node = base + (frame[pointer] | (frame[pointer + 1] << 8))
            pointer += 2
            if node < low or node + NODE_HEADER > page_end:
                raise MalformedEntry("a node lies outside its page")
            data_size = frame[node] | (frame[node + 1] << 8) | (frame[node + 2] << 16) | (frame[node + 3] << 24)
            key_at = node + NODE_HEADER
            data_at = key_at + (frame[node + 6] | (frame[node + 7] << 8))
            flags = frame[node + 4] | (frame[node + 5] << 8)
            # (a node in overflow pages or with a tree holds a page number or a record, not `data_size` bytes)
            held = 8 if flags == F_BIGDATA else DB_RECORD.size if flags == F_DUPDATA | F_SUBDATA else data_size
            if key_at == data_at or data_at + held > page_end:
                raise MalformedEntry("a node's key and value do not fit its page")
            if flags == 0:
                if data_size == 0:
                    raise MalformedEntry("a stored value must not be empty")
                sink.add(frame[key_at:data_at], frame[data_at : data_at + data_size], data_at - key_at, data_size)
            elif flags == F_DUPDATA:
                _sub_page(frame, data_at, data_size, frame[key_at:data_at], sink)
            elif file is not None and (flags == F_BIGDATA or flags == F_DUPDATA | F_SUBDATA):
                file.resolve(frame, data_at, data_size, flags, frame[key_at:data_at], sink)
            else:
                raise MalformedEntry(f"a leaf holds a node with flags {flags:#x}")
        base = page_end


def _sub_page(page: bytes, base: int, size: int, key: bytes, sink: Pairs) -> None:
    """The duplicates of `key` in a leaf page of `size` bytes at `page[base]` whose nodes' keys are the values: held
    in the key's own leaf (a sub-page), or a leaf of the key's tree of duplicates."""
    if size < PAGE_HEADER or page[base + 10] & KIND != P_LEAF:
        raise MalformedEntry("a key's duplicates must be a leaf page")
    count, upper = _nodes(page, base, size)
    if count == 0:
        raise MalformedEntry("a key's page of duplicates is empty")
    for index in range(count):
        node = _node(page, base, size, index, upper)
        value_at = node + NODE_HEADER
        value_end = value_at + _u16(page, node + 6)
        if value_end == value_at or value_end > base + size or _u32(page, node) or _u16(page, node + 4):
            raise MalformedEntry("a duplicate does not fit its page")
        sink.add(key, page[value_at:value_end], len(key), value_end - value_at)


class PageFile:
    """The data file of an LMDB environment, read a run of pages at a time (`os.pread`: no mapping to fault in).
    Only pages a live read transaction sees may be read: LMDB writes no other page while it lives."""

    def __init__(self, path: str, psize: int) -> None:
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            raise MalformedEntry(f"unexpected LMDB page size {psize}")
        self.psize = psize
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PageFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, first: int, count: int) -> bytes:
        """Pages `first` .. `first + count - 1`, each checked to carry its own number."""
        psize = self.psize
        data = os.pread(self._fd, count * psize, first * psize)
        if len(data) != count * psize:
            raise MalformedEntry(f"page {first + len(data) // psize} lies past the end of the data file")
        for number in range(count):
            base = number * psize
            if int.from_bytes(data[base : base + 8], "little") != first + number:
                raise MalformedEntry(f"page {first + number} does not carry its number")
        return data

    def leaves(self, root: int, depth: int, limit: int) -> list[int]:
        """The leaf pages of the tree of `depth` levels at `root`, in key order: only its branch pages are read (at
        most `limit`, as its record counts them); the leaves are checked as they are read (`read`)."""
        if root == NO_PAGE:
            return []
        if depth < 1 or depth > MAX_DEPTH:
            raise MalformedEntry(f"a tree cannot be {depth} levels deep")
        level = [root]  # one level of the tree at a time, in key order
        read = 0
        for _level in range(depth - 1):
            read += len(level)
            if read > limit:
                raise MalformedEntry("a tree has more branch pages than its record counts")
            below: list[int] = []
            for number in level:
                page = self._read(number, 1)
                if page[10] & KIND != P_BRANCH:
                    raise MalformedEntry(f"page {number} is not a branch page")
                count, upper = _nodes(page, 0, self.psize)
                for index in range(count):
                    node = _node(page, 0, self.psize, index, upper)
                    below.append(int.from_bytes(page[node : node + 6], "little"))
            level = below
        return level

    def read(self, numbers: list[int]) -> bytes:
        """Pages `numbers` back to back, in the order given; consecutive numbers are read in one call."""
        parts: list[bytes] = []
        at = 0
        while at < len(numbers):
            first = numbers[at]
            run = 1
            while at + run < len(numbers) and numbers[at + run] == first + run:
                run += 1
            parts.append(self._read(first, run))
            at += run
        return b"".join(parts)

    def resolve(self, page: bytes, data_at: int, data_size: int, flags: int, key: bytes, sink: Pairs) -> None:
        """Add the pairs of a leaf node whose value is in overflow pages (F_BIGDATA: its first page's number at
        `page[data_at]`) or whose key has a tree of duplicates (its record there) to `sink`."""
        psize = self.psize
        if flags == F_BIGDATA:
            first = int.from_bytes(page[data_at : data_at + 8], "little")
            pages = (PAGE_HEADER + data_size + psize - 1) // psize
            data = self._read(first, 1) if pages == 1 else self._read_overflow(first, pages)
            if data[10] & KIND != P_OVERFLOW:
                raise MalformedEntry(f"page {first} is not an overflow page")
            sink.add(key, data[PAGE_HEADER : PAGE_HEADER + data_size], len(key), data_size)
            return
        tree = Tree(page[data_at : data_at + DB_RECORD.size])
        for number in self.leaves(tree.root, tree.depth, tree.branches):
            _sub_page(self._read(number, 1), 0, psize, key, sink)

    def _read_overflow(self, first: int, pages: int) -> bytes:
        """An overflow value's pages: only the first carries a header (and its number)."""
        data = os.pread(self._fd, pages * self.psize, first * self.psize)
        if len(data) != pages * self.psize or int.from_bytes(data[0:8], "little") != first:
            raise MalformedEntry(f"overflow page {first} is not where its node says")
        return data
