"""Proves that a native call releases the GIL: another Python thread keeps running while the call
is known to be inside native code.

How it cannot pass by accident:

- "Inside native code" is observed, not assumed: a profile hook installed on the worker thread
  only (`sys.setprofile`) sets a flag on the `c_call` event of exactly the callable under test,
  right before the interpreter enters it, and clears it on `c_return` / `c_exception`, right after
  it leaves. The worker runs nothing else with the flag set.
- Forced GIL switches are switched off for the probe (`sys.setswitchinterval(1000)`), so a thread
  gives the GIL up only voluntarily: in blocking I/O, `time.sleep` or an extension's
  `allow_threads`. The worker therefore cannot be preempted between setting the flag and entering
  the call, nor between leaving it and clearing the flag. The main thread can thus see the flag set
  only if the call itself released the GIL.
- While the flag stays set, the main thread (another Python thread) runs `progress` loop
  iterations, giving the GIL back (a short `time.sleep`) every `YIELD_EVERY` iterations so that a
  worker wanting it back gets it. If the call holds the GIL for any stretch longer than `max_gap`
  during the `window`, the main thread cannot run for that long and the gap is reported; if it
  holds the GIL throughout, the main thread never sees the flag set at all.
- For calls that wait on something outside Python (a SQLite lock held by another process), the
  caller passes `release`, called once the progress has been seen, which must report that the
  blocker was still in place (the call cannot have returned before it), e.g. because the process
  holding the lock was still holding it when told to let go.

`negative controls` in test_gil.py run this on calls known to hold the GIL and check it reports
`released=False`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROGRESS = 5_000
YIELD_EVERY = 500


@dataclass
class Probe:
    """What the probe saw. `released` is the verdict; the rest explains it."""

    released: bool
    reason: str
    iterations: int = 0
    inside_for: float = 0.0
    max_gap: float = 0.0
    result: Any = field(default=None, repr=False)
    error: BaseException | None = None

    def __str__(self) -> str:
        inside, gap = self.inside_for * 1000, self.max_gap * 1000
        return (
            f"released={self.released} ({self.reason}); {self.iterations} iterations over "
            f"{inside:.1f} ms inside the call, longest pause {gap:.1f} ms"
        )


def probe(
    fn: Callable[..., Any],
    *args: Any,
    window: float = 0.05,
    max_gap: float = 0.25,
    progress: int = PROGRESS,
    release: Callable[[], bool] | None = None,
    timeout: float = 30.0,
    **kwargs: Any,
) -> Probe:
    """Call `fn(*args, **kwargs)` on a worker thread and watch whether this thread keeps running
    while the worker is inside `fn` (a native callable: the profile hook sees only C calls).

    Released means: while the call was inside native code the main thread ran at least
    `progress` iterations spread over at least `window` seconds, never pausing longer than
    `max_gap`, and (if given) `release()` afterwards confirmed the call was still blocked."""
    inside = [False]

    def hook(_frame: Any, event: str, arg: Any) -> None:
        if arg is fn:
            if event == "c_call":
                inside[0] = True
            elif event in ("c_return", "c_exception"):
                inside[0] = False

    out: dict[str, Any] = {}

    def work() -> None:
        sys.setprofile(hook)
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as e:  # reported, not lost
            out["error"] = e
        finally:
            sys.setprofile(None)

    worker = threading.Thread(target=work, name="gil-probe-worker", daemon=True)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    iterations = 0
    gap = 0.0
    first = last = 0.0
    released_by_us: bool | None = None
    try:
        worker.start()
        deadline = time.monotonic() + timeout
        while not inside[0] and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.0002)
        still_inside = False
        if inside[0]:
            first = last = time.monotonic()
            while inside[0]:
                if iterations >= progress and last - first >= window:
                    # Seen inside again after all the progress: it all happened during the call.
                    still_inside = True
                    break
                iterations += 1
                if iterations % YIELD_EVERY == 0:
                    time.sleep(0.0001)  # give the GIL back; a worker wanting it takes it now
                    now = time.monotonic()
                    gap = max(gap, now - last)
                    last = now
                    if now > deadline:
                        break
            if still_inside and release is not None:
                released_by_us = release()
    finally:
        sys.setswitchinterval(old_interval)
    if release is not None and released_by_us is None:
        release()  # never seen inside: let the blocker go so the worker can finish
    worker.join(timeout)
    assert not worker.is_alive(), f"{fn!r} still running after {timeout} s"
    p = Probe(
        released=False,
        reason="",
        iterations=iterations,
        inside_for=last - first,
        max_gap=gap,
        result=out.get("result"),
        error=out.get("error"),
    )
    if iterations == 0:
        p.reason = "this thread never ran while the call was inside native code"
    elif not still_inside:
        p.reason = "the call returned before the progress was complete (make it longer)"
    elif gap > max_gap:
        p.reason = f"this thread was stopped for {gap * 1000:.0f} ms while the call ran"
    elif released_by_us is False:
        p.reason = "the blocker had already let go: the call may have returned meanwhile"
    else:
        p.released = True
        p.reason = "another thread ran while the call was inside native code"
    return p
