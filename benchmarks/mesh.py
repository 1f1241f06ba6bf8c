"""Mesh benchmark: command round trips and topic throughput, against raw pyzmq measured in the same run.

Everything runs in this process on 127.0.0.1 (nodes are threads, like the raw pyzmq anchors), medians of
several runs, bounded in time. Run: ``python benchmarks/mesh.py [--quick]``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Callable

import zmq

from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin

PAYLOAD = b'{"name":"Name 123456","age":53,"email":"user123456@example.com","tags":["a","b"],"city":"Paris"}'
PAYLOAD = PAYLOAD + b" " * (123 - len(PAYLOAD))  # the 123-byte document of ANCHORS.md


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]


def time_round_trips(call: Callable[[], object], count: int) -> tuple[float, float]:
    for _ in range(min(200, count)):
        call()  # warm-up
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def raw_round_trip(count: int) -> tuple[float, float]:
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


def mesh_round_trip(hops: int, count: int) -> tuple[float, float]:
    nodes = chain(hops + 1)
    plugin = Plugin(nodes[0]).connect()
    target = nodes[-1].id
    try:
        return time_round_trips(lambda: plugin.call("PING", target=target), count)
    finally:
        plugin.close()
        for node in nodes:
            node.stop()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    options = parser.parse_args()
    runs, trips, messages = (2, 500, 20_000) if options.quick else (5, 3000, 200_000)
    started = time.monotonic()

    raw_p50, raw_p99 = median_of(runs, lambda: raw_round_trip(trips))
    rows = [("raw pyzmq DEALER/ROUTER round trip", raw_p50, raw_p99, 1.0)]
    for hops, label in (
        (0, "PING via Plugin, 0 hops (local node)"),
        (1, "PING via Plugin, 1 hop"),
        (3, "PING via Plugin, 3 hops"),
    ):
        p50, p99 = median_of(runs, lambda h=hops: mesh_round_trip(h, trips))
        rows.append((label, p50, p99, p50 / raw_p50))
    print(f"\nCommand round trip (medians of {runs} runs x {trips} calls)")
    print(f"{'path':44} {'p50 us':>9} {'p99 us':>9} {'p50 / raw':>10}")
    for label, p50, p99, ratio in rows:
        print(f"{label:44} {p50 * 1e6:9.0f} {p99 * 1e6:9.0f} {ratio:10.2f}")

    (raw_rate,) = median_of(runs, lambda: (raw_pub_sub(messages),))
    throughput = [("raw pyzmq PUB/SUB, 123-byte messages", raw_rate, 1.0)]
    for hops in (1, 3):
        (rate,) = median_of(runs, lambda h=hops: (mesh_throughput(h, messages),))
        throughput.append((f"mesh publish -> subscriber, {hops} hop{'s' if hops > 1 else ''}", rate, rate / raw_rate))
    print(f"\nTopic throughput (medians of {runs} runs x {messages} messages of {len(PAYLOAD)} bytes)")
    print(f"{'path':44} {'msgs/s':>12} {'ratio':>10}")
    for label, rate, ratio in throughput:
        print(f"{label:44} {rate:12,.0f} {ratio:10.2f}")
    print(f"\n(total {time.monotonic() - started:.1f}s)")


if __name__ == "__main__":
    main()
