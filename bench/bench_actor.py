"""Benchmark: the cost of an actor `ask` against a bare request/reply over trio channels.

Run: .venv/bin/python bench/bench_actor.py
Prints the median time per round trip over several batches for:
  baseline  a request and a reply over two trio memory channels, no actor machinery
  ask       ActorRef.ask to an actor that answers at once (envelope, reply channel, dispatch)
and the ratio ask/baseline, both measured in the same run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import trio

from actors.base import Actor, Reply, spawn

BATCH = 2000
BATCHES = 15


class Echo(Actor):
    name = "echo"

    async def handle(self, message: Any, reply: Reply | None) -> Any:
        return message


async def baseline_batch() -> float:
    requests_send, requests_recv = trio.open_memory_channel[tuple[int, Any]](64)

    async def server() -> None:
        async for value, reply_to in requests_recv:
            reply_to.send_nowait(value)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        began = time.perf_counter()
        for i in range(BATCH):
            reply_send, reply_recv = trio.open_memory_channel[int](1)
            await requests_send.send((i, reply_send))
            await reply_recv.receive()
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    return elapsed / BATCH


async def ask_batch() -> float:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Echo())
        began = time.perf_counter()
        for i in range(BATCH):
            await ref.ask(i)
        elapsed = time.perf_counter() - began
        nursery.cancel_scope.cancel()
    return elapsed / BATCH


async def main() -> None:
    baseline, ask = [], []
    for _ in range(BATCHES):  # interleaved, so drift hits both alike
        baseline.append(await baseline_batch())
        ask.append(await ask_batch())
    b, a = statistics.median(baseline), statistics.median(ask)
    print(f"baseline round trip  median {b * 1e6:7.1f} us  ({BATCHES} batches of {BATCH})")
    print(f"actor ask            median {a * 1e6:7.1f} us")
    print(f"ratio ask/baseline   {a / b:.2f}x")


if __name__ == "__main__":
    trio.run(main)
