"""Backups of a database directory: a consistent compacting copy taken online, its manifest, and a restore that
refuses a database in use and gives a restored database a new UUID unless told to keep it.

LMDB holds a shared fcntl lock on ``lock.mdb`` for as long as any process has the environment open, so a
database is "in use" exactly when an exclusive lock on that file cannot be had (or this process has it open).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import uuid as uuid_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lmdb

from pynndb.core.meta import MARK, UUID
from pynndb.errors import BackupError, DatabaseInUse

if TYPE_CHECKING:
    from pynndb.core.database import Database

MANIFEST = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes done, bytes expected)


def _ignore(done: int, total: int) -> None:
    return None


def copy(db: Database, dest: str, progress: Progress | None = None) -> dict[str, Any]:
    """Write a compacted copy of `db` to directory `dest` (must be new or empty) in one read transaction.

    Returns what that transaction saw: uuid, sequence, marks, replication, read_only, bytes written."""
    report = progress or _ignore
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        raise BackupError(f"{dest} exists and is not an empty directory")
    os.makedirs(dest, exist_ok=True)
    expected = db.storage_used()[0]
    replication = db.replication
    target = os.path.join(dest, "data.mdb")
    # copyfd streams the copy through a pipe so that the bytes can be counted for a progress bar.
    read_end, write_end = os.pipe()
    failure: list[BaseException] = []
    with db._snapshot_txn() as txn:
        facts = {
            "uuid": replication.uuid,
            "sequence": replication.last_sequence(txn),
            "replication": replication.enabled,
            "read_only": replication.read_only,
            "marks": _marks(txn, db),
        }

        def produce() -> None:
            try:
                db._env.copyfd(write_end, compact=True, txn=txn)
            except BaseException as error:  # reported by the consumer below
                failure.append(error)
            finally:
                os.close(write_end)

        producer = threading.Thread(target=produce, name="pynndb-backup-copy", daemon=True)
        producer.start()
        written = 0
        try:
            with open(target, "wb") as out:
                while chunk := os.read(read_end, CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                    report(written, max(expected, written))
                out.flush()
                os.fsync(out.fileno())
        finally:
            os.close(read_end)
            producer.join()
    if failure:
        raise BackupError(f"copy of {db.path} failed: {failure[0]}") from failure[0]
    report(written, written)
    facts["bytes"] = written
    return facts


def _marks(txn: lmdb.Transaction[bytes], db: Database) -> dict[str, int]:
    found: dict[str, int] = {}
    cursor = txn.cursor(db=db._meta)
    if cursor.set_range(MARK):
        for key, value in cursor:
            if not key.startswith(MARK):
                break
            found[key[len(MARK) :].decode()] = int.from_bytes(value, "big")
    return found


def write_manifest(dest: str, manifest: dict[str, Any]) -> None:
    """Store the manifest (uuid, sequence, digest, ...) beside the copy."""
    body = dict(manifest, format=FORMAT)
    with open(os.path.join(dest, MANIFEST), "w") as out:
        json.dump(body, out, indent=2, sort_keys=True)
        out.write("\n")


def read_manifest(backup: str) -> dict[str, Any]:
    """The manifest of a backup directory; BackupError when it is not a backup."""
    path = os.path.join(backup, MANIFEST)
    if not os.path.isfile(os.path.join(backup, "data.mdb")) or not os.path.isfile(path):
        raise BackupError(f"{backup} is not a pynndb backup (needs data.mdb and {MANIFEST})")
    try:
        with open(path) as source:
            manifest = json.load(source)
    except (OSError, ValueError) as error:
        raise BackupError(f"{path} cannot be read: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "uuid" not in manifest:
        raise BackupError(f"{path} is not a manifest this version understands")
    return manifest


def in_use(path: str) -> str | None:
    """Why the database at `path` is in use (open in this or another process), or None when it is not."""
    from pynndb.core import registry

    if registry.find(path) is not None:
        return "this process has it open"
    lock_path = os.path.join(path, "lock.mdb")
    if not os.path.isfile(lock_path):
        return None
    # Closing any descriptor of a file drops every fcntl lock this process holds on it, so never probe a file
    # this process has open through LMDB (checked above).
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        return "another process has it open"
    finally:
        os.close(fd)
    return None


@contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """Hold LMDB's lock file exclusively: openers in other processes wait until the restore is done."""
    fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            raise DatabaseInUse(f"{path} is in use by another process: stop it before restoring") from None
        yield
    finally:
        os.close(fd)


def restore(
    backup: str, path: str, same_uuid: bool = False, force: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Put the backup's database at `path`; a new UUID unless `same_uuid`. Refuses a database in use, and an
    existing database unless `force`. Replication marks and registrations come back as they were backed up."""
    report = progress or _ignore
    manifest = read_manifest(backup)
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise BackupError(f"{path} is a file, not a database directory")
    existing = os.path.isfile(os.path.join(path, "data.mdb"))
    if not existing and os.path.isdir(path) and set(os.listdir(path)) - {"lock.mdb"}:
        raise BackupError(f"{path} holds files but no database: refusing to restore into it")
    reason = in_use(path) if existing or os.path.isdir(path) else None
    if reason:
        raise DatabaseInUse(f"{path} is in use ({reason}): stop it before restoring")
    if existing and not force:
        raise BackupError(f"{path} already holds a database: pass force to replace it")
    os.makedirs(path, exist_ok=True)
    staging = os.path.join(path, ".restore.mdb")
    with _exclusive(path):
        source = os.path.join(backup, "data.mdb")
        total = os.path.getsize(source)
        done = 0
        with open(source, "rb") as inp, open(staging, "wb") as out:
            while chunk := inp.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                report(done, total)
            out.flush()
            os.fsync(out.fileno())
        uuid = manifest["uuid"] if same_uuid else str(uuid_module.uuid4())
        if not same_uuid:
            _set_uuid(staging, uuid)
        os.replace(staging, os.path.join(path, "data.mdb"))
    return {"path": path, "uuid": uuid, "backup_uuid": manifest["uuid"], "sequence": manifest["sequence"]}


def _set_uuid(data_file: str, uuid: str) -> None:
    # The staging file is private to this restore: no lock file needed (lock=False creates none).
    env = lmdb.open(
        data_file, subdir=False, lock=False, max_dbs=4, map_size=max(1 << 30, 2 * os.path.getsize(data_file))
    )
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"__meta__", txn=txn, create=False)
            txn.put(UUID, uuid.encode(), db=meta)
    finally:
        env.close()


def remove(path: str) -> None:
    """Delete a backup directory (used to clean up after a failed backup)."""
    shutil.rmtree(path, ignore_errors=True)
