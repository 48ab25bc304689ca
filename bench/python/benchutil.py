"""Timing helpers shared by the side-by-side benchmarks (imported from the script's own folder)."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any, Callable


def once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """One timed call with the garbage collector paused: (seconds, result)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        gc.enable()


def interleaved_samples(tasks: list[Callable[[], Any]], rounds: int) -> list[list[float]]:
    """Every task's times over `rounds` rounds; round r runs each task once, starting at task
    r mod n, so no system always runs first (or right after the same neighbour) and load drifting
    on a shared machine falls on every system alike."""
    samples: list[list[float]] = [[] for _ in tasks]
    for r in range(rounds):
        for j in range(len(tasks)):
            i = (r + j) % len(tasks)
            samples[i].append(once(tasks[i])[0])
    return samples


def interleaved(tasks: list[Callable[[], Any]], rounds: int) -> list[float]:
    """The median time of each task over interleaved rounds (see `interleaved_samples`)."""
    return [statistics.median(x) for x in interleaved_samples(tasks, rounds)]
