"""Mesh benchmark: command round trips and topic throughput, against raw pyzmq measured in the same run.

Round trips: the mesh nodes run as separate OS processes (``python -m pynndb node``), a chain
``bench0 - bench1 - bench2 - bench3`` on 127.0.0.1, and a ``Plugin`` in this process calls PING on bench0
(0 hops), bench1 (1 hop) and bench3 (3 hops). The raw baseline is a plain pyzmq DEALER -> ROUTER echo -> DEALER
round trip whose ROUTER also runs in its own process, so each side has its own GIL exactly like the mesh path.
Each round measures every path back to back (in a rotating order), so machine noise hits all of them alike; the
table shows the median over rounds of each round's p50 / p99. ``--in-process`` adds the old variant where nodes
are threads of this process (sharing one GIL), labelled as such. Topic throughput runs in-process.

After the rounds, the CPU a call of every process on the raw and the 1-hop path (Python threads and ZeroMQ's I/O
threads apart, from Linux's per-thread schedstat): steadier than the round trips on a shared machine, it says what
each side does rather than when it got the CPU.

Run: ``python benchmarks/mesh.py [--quick] [--in-process] [--no-throughput]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial

import zmq
from common import build_line, free_port, percentiles

from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin

PAYLOAD = b'{"name":"Name 123456","age":53,"email":"user123456@example.com","tags":["a","b"],"city":"Paris"}'
PAYLOAD = PAYLOAD + b" " * (123 - len(PAYLOAD))  # the 123-byte document of ANCHORS.md
CHAIN = 4  # bench0 - bench1 - bench2 - bench3: 0, 1 and 3 hops from bench0


def time_round_trips(call: Callable[[], object], count: int, warmup: int = 200) -> tuple[float, float]:
    for _ in range(min(warmup, count)):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start)
    return percentiles(samples)


def thread_cpu(pid: int) -> dict[str, tuple[str, int]]:
    """CPU time so far (ns) of each thread of process ``pid``: {thread id: (name, ns)} (Linux /proc; {} elsewhere)."""
    found: dict[str, tuple[str, int]] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm, open(f"/proc/{pid}/task/{tid}/schedstat") as stat:
                found[tid] = (comm.read().strip(), int(stat.read().split()[0]))
        except (OSError, ValueError, IndexError):
            continue  # (a thread that ended meanwhile)
    return found


def cpu_per_call(call: Callable[[], object], count: int, processes: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Run ``call`` ``count`` times; each process's CPU a call in seconds: (Python threads, ZeroMQ I/O threads)."""
    before = {name: thread_cpu(pid) for name, pid in processes.items()}
    for _ in range(count):
        call()
    after = {name: thread_cpu(pid) for name, pid in processes.items()}
    spent: dict[str, tuple[float, float]] = {}
    for name in processes:
        python = io = 0
        for tid, (thread, nanoseconds) in after[name].items():
            used = nanoseconds - before[name].get(tid, (thread, 0))[1]
            if thread.startswith("ZMQbg"):
                io += used
            else:
                python += used
        spent[name] = (python / count / 1e9, io / count / 1e9)
    return spent


# --- raw pyzmq baseline ------------------------------------------------------------------------------------
def raw_echo_server() -> None:
    """The raw baseline's ROUTER: echo every message back (run as its own process; prints READY <port>)."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    print(f"READY {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        router.send_multipart(router.recv_multipart())


class Processes:
    """Child processes started for one benchmark run; all killed (by PID) in ``close``."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close(), outlives this method

    def start(self, command: list[str], timeout: float = 30.0) -> str:
        """Start a child and return its READY line (without the word READY)."""
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.children.append(child)
        found: list[str] = []
        ready = threading.Event()

        def wait_ready() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith(b"READY"):
                    found.append(line.decode().split(" ", 1)[1].strip())
                    ready.set()
                    return

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{command[:4]} did not print READY within {timeout}s")
        return found[0]

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        self.log.close()


class RawClient:
    """DEALER side of the raw baseline (in this process), talking to an echo ROUTER process."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.linger = 0
        self.dealer.connect(f"tcp://127.0.0.1:{port}")

    def call(self) -> None:
        self.dealer.send(b"ping")
        self.dealer.recv()

    def close(self) -> None:
        self.dealer.close(0)
        self.context.term()


def start_node_chain(processes: Processes, length: int) -> list[str]:
    """Start ``length`` node processes linked in a chain; return the command address of each."""
    addresses: list[str] = []
    previous: str | None = None
    for index in range(length):
        ports = [free_port() for _ in range(3)]
        command = [sys.executable, "-m", "pynndb", "node", "--label", f"bench{index}"]
        command += ["--ports", ",".join(map(str, ports))]
        if previous is not None:
            command += ["--connect", previous]
        processes.start(command)
        previous = f"tcp://127.0.0.1:{ports[0]}"
        addresses.append(f"tcp://127.0.0.1:{ports[2]}")
    return addresses


def wait_converged(plugin: Plugin, length: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = plugin.call("NODES")["nodes"]
        if sum(1 for entry in nodes.values() if entry["alive"]) == length:
            return
        time.sleep(0.05)
    raise RuntimeError("the benchmark mesh did not converge")


def separate_process_round_trips(
    rounds: int, trips: int
) -> tuple[list[tuple[str, float, float, float]], dict[str, dict[str, tuple[float, float]]]]:
    """Raw and mesh round trips, every path measured once per round (rotating order); medians of rounds. Then the
    CPU a call of each process on the raw and the 1-hop path (``trips`` calls each, after the rounds)."""
    processes = Processes()
    raw: RawClient | None = None
    plugin: Plugin | None = None
    try:
        raw = RawClient(int(processes.start([sys.executable, __file__, "--raw-echo"])))
        addresses = start_node_chain(processes, CHAIN)
        plugin = Plugin(addresses[0]).connect()
        wait_converged(plugin, CHAIN)
        ids = {label: plugin.call("LOOKUP", {"name": label})["peer"] for label in ("bench1", f"bench{CHAIN - 1}")}
        call = plugin.call
        one_hop = partial(call, "PING", target=ids["bench1"])
        paths: list[tuple[str, Callable[[], object]]] = [
            ("raw pyzmq DEALER/ROUTER round trip", raw.call),
            ("PING via Plugin, 0 hops (local node)", lambda: call("PING")),
            ("PING via Plugin, 1 hop", one_hop),
            ("PING via Plugin, 3 hops", partial(call, "PING", target=ids[f"bench{CHAIN - 1}"])),
        ]
        results: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in paths}
        for round_number in range(rounds):
            shift = round_number % len(paths)
            measured = {}
            for label, function in paths[shift:] + paths[:shift]:
                measured[label] = time_round_trips(function, trips)
            raw_p50 = measured[paths[0][0]][0]
            for label, (p50, p99) in measured.items():
                results[label].append((p50, p99, p50 / raw_p50))
        rows = [
            (label, *(statistics.median(column) for column in zip(*results[label], strict=True))) for label, _ in paths
        ]
        me = os.getpid()
        nodes = {f"bench{index}": child.pid for index, child in enumerate(processes.children[1:3])}
        cpu = {
            "raw": cpu_per_call(raw.call, trips, {"client": me, "echo": processes.children[0].pid}),
            "1 hop": cpu_per_call(one_hop, trips, {"client": me, **nodes}),
        }
        return rows, cpu
    finally:
        if plugin is not None:
            plugin.close()
        if raw is not None:
            raw.close()
        processes.close()


# --- in-process variant (nodes are threads of this process, sharing its GIL) -------------------------------
def raw_round_trip_in_process(count: int) -> tuple[float, float]:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if router.poll(50):
                router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo)
    thread.start()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")

    def call() -> None:
        dealer.send(b"ping")
        dealer.recv()

    try:
        return time_round_trips(call, count)
    finally:
        stop.set()
        thread.join()
        dealer.close(0)
        router.close(0)
        context.term()


def chain(length: int) -> list[Controller]:
    nodes = [
        Controller(free_port(), free_port(), free_port(), label=f"bench{i}", heartbeat=1.0).start()
        for i in range(length)
    ]
    for a, b in zip(nodes, nodes[1:], strict=False):
        a.connect(b)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(len(n.directory()) == length for n in nodes):
        time.sleep(0.02)  # directories converge within a heartbeat
    return nodes


def in_process_round_trips(rounds: int, trips: int) -> list[tuple[str, float, float, float]]:
    """The same paths with every node a thread of this process; interleaved rounds, medians of rounds."""
    nodes = chain(CHAIN)
    plugin = Plugin(nodes[0]).connect()
    try:
        call = plugin.call
        paths: list[tuple[str, Callable[[], tuple[float, float]]]] = [
            ("raw DEALER/ROUTER, in-process threads", lambda: raw_round_trip_in_process(trips)),
            ("PING, 0 hops, in-process nodes", lambda: time_round_trips(lambda: call("PING"), trips)),
            (
                "PING, 1 hop, in-process nodes",
                lambda: time_round_trips(lambda: call("PING", target=nodes[1].id), trips),
            ),
            (
                "PING, 3 hops, in-process nodes",
                lambda: time_round_trips(lambda: call("PING", target=nodes[-1].id), trips),
            ),
        ]
        results: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _ in paths}
        for round_number in range(rounds):
            shift = round_number % len(paths)
            measured = {label: measure() for label, measure in paths[shift:] + paths[:shift]}
            raw_p50 = measured[paths[0][0]][0]
            for label, (p50, p99) in measured.items():
                results[label].append((p50, p99, p50 / raw_p50))
        return [
            (label, *(statistics.median(column) for column in zip(*results[label], strict=True))) for label, _ in paths
        ]
    finally:
        plugin.close()
        for node in nodes:
            node.stop()


def raw_pub_sub(count: int) -> float:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.sndhwm = count + 10
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = context.socket(zmq.SUB)
    sub.rcvhwm = count + 10
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    ready = threading.Event()
    received = [0]

    def consume() -> None:
        ready.set()
        deadline = time.monotonic() + 30
        while received[0] < count and time.monotonic() < deadline:
            try:
                sub.recv()
            except zmq.Again:
                continue
            received[0] += 1

    # Wait for the subscription to reach the publisher (slow joiner), bounded.
    for _ in range(200):
        pub.send(b"warm")
        if sub.poll(10):
            break
    while sub.poll(50):
        sub.recv()
    sub.rcvtimeo = 100
    thread = threading.Thread(target=consume)
    thread.start()
    ready.wait()
    start = time.perf_counter()
    for _ in range(count):
        pub.send(PAYLOAD)
    thread.join()
    elapsed = time.perf_counter() - start
    pub.close(0)
    sub.close(0)
    context.term()
    return received[0] / elapsed


def mesh_throughput(hops: int, count: int) -> float:
    nodes = chain(hops + 1)
    done = threading.Event()
    received = [0]

    def on_data(topic: str, payload: bytes, origin: str) -> None:
        received[0] += 1
        if received[0] >= count:
            done.set()

    nodes[-1].subscribe("bench", on_data)
    try:
        deadline = time.monotonic() + 5
        while "bench" not in nodes[0].directory()[nodes[-1].id]["topics"] and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.perf_counter()
        publish = nodes[0].publish
        for _ in range(count):
            publish("bench", PAYLOAD)
        done.wait(30)
        return received[0] / (time.perf_counter() - start)
    finally:
        for node in nodes:
            node.stop()


def median_of(runs: int, measure: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    results = [measure() for _ in range(runs)]
    return tuple(statistics.median(column) for column in zip(*results, strict=True))


def print_cpu(trips: int, cpu: dict[str, dict[str, tuple[float, float]]]) -> None:
    """CPU a call by process: steadier than the round trips on a shared machine (what each side does, not when)."""
    if not any(any(python or io for python, io in path.values()) for path in cpu.values()):
        print("\nCPU a call: not measured (needs Linux's /proc/<pid>/task/*/schedstat)")
        return
    print(f"\nCPU a call ({trips} calls, after the rounds; bench0 is the Plugin's node, bench1 the target)")
    print(f"{'path':8} {'process':8} {'Python threads us':>18} {'ZeroMQ I/O us':>14}")
    for path, spent in cpu.items():
        for process, (python, io) in spent.items():
            print(f"{path:8} {process:8} {python * 1e6:18.1f} {io * 1e6:14.1f}")


def print_round_trips(title: str, rows: list[tuple[str, float, float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'path':44} {'p50 us':>9} {'p99 us':>9} {'p50 / raw':>10}")
    for label, p50, p99, ratio in rows:
        print(f"{label:44} {p50 * 1e6:9.0f} {p99 * 1e6:9.0f} {ratio:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--in-process", action="store_true", help="also measure with nodes as threads of this process")
    parser.add_argument("--no-throughput", action="store_true", help="skip the topic throughput part")
    parser.add_argument("--raw-echo", action="store_true", help=argparse.SUPPRESS)  # the raw baseline's ROUTER
    options = parser.parse_args()
    if options.raw_echo:
        raw_echo_server()
        return
    rounds, trips, runs, messages = (3, 500, 2, 20_000) if options.quick else (7, 2000, 5, 200_000)
    started = time.monotonic()
    print(build_line())

    rows, cpu = separate_process_round_trips(rounds, trips)
    print_round_trips(
        f"Command round trip, nodes in separate processes (median of {rounds} interleaved rounds x {trips} calls)",
        rows,
    )
    print_cpu(trips, cpu)
    if options.in_process:
        rows = in_process_round_trips(rounds, trips)
        print_round_trips(
            f"Command round trip, nodes as threads of one process (median of {rounds} rounds x {trips} calls)", rows
        )

    if not options.no_throughput:
        (raw_rate,) = median_of(runs, lambda: (raw_pub_sub(messages),))
        throughput = [("raw pyzmq PUB/SUB, 123-byte messages", raw_rate, 1.0)]
        for hops in (1, 3):
            (rate,) = median_of(runs, partial(lambda h: (mesh_throughput(h, messages),), hops))
            label = f"mesh publish -> subscriber, {hops} hop{'s' if hops > 1 else ''}"
            throughput.append((label, rate, rate / raw_rate))
        print(
            f"\nTopic throughput, in-process nodes (medians of {runs} runs x {messages} messages of {len(PAYLOAD)} B)"
        )
        print(f"{'path':44} {'msgs/s':>12} {'ratio':>10}")
        for label, rate, ratio in throughput:
            print(f"{label:44} {rate:12,.0f} {ratio:10.2f}")
    print(f"\n(total {time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
