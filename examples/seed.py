"""The seed example: two nodes, one database replicated to the other, checked with diff.

Run it as is: ``python examples/seed.py`` (uses ports 7000-7104 on 127.0.0.1 and a temporary directory, removed at
the end; ``python examples/seed.py --keep`` keeps it and prints where it is).
"""

import shutil
import sys
import tempfile
from time import sleep

from pynndb import Controller, Doc, Manager, Plugin

workdir = tempfile.mkdtemp(prefix="pynndb-seed-")
path1 = f"{workdir}/db1"
path2 = f"{workdir}/db2"

try:
    nodea = Controller(7000, 7002, 7004, label="nodea").start()
    nodeb = Controller(7100, 7102, 7104, label="nodeb").start()
    nodea.connect(nodeb)
    cmd = Plugin(nodea)
    cmd.connect()
    manager = Manager()
    db1 = manager.database(path1, config={"replication": True})
    db2 = manager.database(path2, config={"replication": True})
    uuid = db1.replication.uuid
    peer = cmd.call("LOOKUP", {"name": "nodeb"}).get("peer")
    cmd.call("REGISTER", {"path": db1._path})
    cmd.call("REPLICATE", {"path": db2._path, "uuid": uuid}, target=peer)
    people = db1.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.append(Doc({"name": "Tom Jones"}))
    sleep(1)
    assert cmd.diff([db1.replication.uuid, db2.replication.uuid]) == {}

    print("db2 holds:", [doc.doc for doc in db2.table("people").find()])
    cmd.close()
    nodea.stop()
    nodeb.stop()
    manager.close()
finally:
    if "--keep" in sys.argv[1:]:
        print("databases kept in", workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
