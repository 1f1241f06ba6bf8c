"""An application process for test_node_processes.py: writes to a database file that a node process serves.

`python mesh_application.py PATH [MAX_ENTRIES]` then commands on stdin, one per line:
`seed` (the snippet's write), `write COUNT RATE` (COUNT events with unique serials, at most RATE per second),
`quit`. Each prints JSON lines on stdout (flushed): progress while writing, then {"done": total written}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pynndb import Doc, Manager


def say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def main(path: str, max_entries: str | None = None) -> None:
    config: dict[str, Any] = {"replication": True}
    if max_entries is not None:
        config["journal"] = {"max_entries": int(max_entries)}
    manager = Manager()
    db = manager.database("app", path, config=config)
    events = db.table("events")
    events.ensure("by_serial", "{serial}")  # unique: a duplicated event could not be stored twice
    written = events.records()
    say(ready=True, written=written)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "quit":
            break
        if command == "seed":
            people = db.table("people")
            people.ensure("by_name", "{name}", duplicates=True)
            people.append(Doc({"name": "Tom Jones"}))
            say(done=1)
        elif command == "write":
            count, rate = int(args[0]), float(args[1])
            started = time.monotonic()
            for number in range(count):
                events.append({"serial": f"{written:08d}", "n": written})
                written += 1
                if written % 50 == 0 and number + 1 < count:
                    say(written=written)
                delay = started + (number + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            say(done=written)
    manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
