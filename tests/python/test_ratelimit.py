"""keel.RateLimiter, keel.Decision and keel.check_all from Python."""

from __future__ import annotations

import threading

import pytest

import keel


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0, 60), {}, "limit must be at least 1"),
        ((-3, 60), {}, "limit must be at least 1"),
        ((10, 0), {}, "window"),
        ((10, -1.0), {}, "window"),
        ((10, float("nan")), {}, "window"),
        ((10, 1e12), {}, "window"),
        ((10, 60), {"algorithm": "leaky"}, "unknown algorithm"),
        ((10, 60), {"name": "has space"}, "name must be"),
        ((10, 60), {"name": ""}, "name must be"),
    ],
)
def test_bad_policies_raise(args, kwargs, match):
    with pytest.raises(keel.RateLimitConfigError, match=match):
        keel.RateLimiter(*args, **kwargs)


def test_errors_are_value_errors_and_keel_errors():
    assert issubclass(keel.RateLimitConfigError, ValueError)
    assert issubclass(keel.RateLimitConfigError, keel.KeelError)
    assert issubclass(keel.RateLimited, keel.RateLimitError)


@pytest.mark.parametrize("cost", [0, 11])
def test_cost_that_can_never_fit_is_an_error(cost):
    limiter = keel.RateLimiter(10, 60)
    with pytest.raises(keel.RateLimitConfigError, match="can never fit"):
        limiter.check("k", cost)


def test_negative_cost_is_invalid():
    with pytest.raises(keel.InvalidArgument, match="negative"):
        keel.RateLimiter(10, 60).check("k", -1)


@pytest.mark.parametrize("algorithm", ["gcra", "sliding_window"])
def test_limit_then_deny_with_retry_after(algorithm):
    limiter = keel.RateLimiter(3, 60, algorithm=algorithm, name="api")
    decisions = [limiter.check("1.2.3.4") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    assert not denied
    # sliding window: up to the rest of this window plus part of the next
    assert denied.retry_after is not None and 0 < denied.retry_after <= 120
    assert denied.policy == "api"
    names = [n for n, _ in denied.headers()]
    assert names == [
        "RateLimit-Policy",
        "RateLimit",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
    ]
    assert dict(denied.headers())["RateLimit-Policy"] == '"api";q=3;w=60'
    assert limiter.check("5.6.7.8").allowed, "keys are independent"
    assert limiter.stats() == {"allowed": 4, "denied": 1, "keys": 2, "evicted_active": 0}


def test_raw_headers_are_lowercase_bytes_for_asgi():
    d = keel.RateLimiter(5, 10).check("k")
    raw = d.raw_headers()
    assert (b"x-ratelimit-limit", b"5") in raw
    assert all(isinstance(n, bytes) and n == n.lower() for n, _ in raw)
    assert b"retry-after" not in dict(raw)


def test_weighted_cost():
    limiter = keel.RateLimiter(100, 60, name="tokens")
    assert limiter.check("user", 60).remaining == 40
    assert not limiter.check("user", 50).allowed
    assert limiter.check("user", 40).allowed


def test_overrides():
    limiter = keel.RateLimiter(1, 60, name="free")
    limiter.set_override("vip", 3, 60, name="paid")
    assert [limiter.check("vip").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.check("vip").policy == "paid"
    assert limiter.remove_override("vip") is True
    assert limiter.remove_override("vip") is False


def test_check_all_is_all_or_nothing():
    per_key = keel.RateLimiter(1, 60, name="per-key")
    per_ip = keel.RateLimiter(5, 60, name="per-ip")
    assert keel.check_all([(per_key, "k"), (per_ip, "ip")]).allowed
    denied = keel.check_all([(per_ip, "ip"), (per_key, "k")])
    assert not denied.allowed and denied.policy == "per-key"
    # The IP was not charged for the denied request: 1 used, 4 left.
    assert per_ip.check("ip").remaining == 3
    with pytest.raises(keel.InvalidArgument):
        keel.check_all([])


def test_many_threads_allow_exactly_the_limit():
    limiter = keel.RateLimiter(100, 3600)
    barrier = threading.Barrier(50)
    allowed = []

    def worker():
        barrier.wait()
        allowed.extend(limiter.check("shared").allowed for _ in range(20))

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100 and len(allowed) == 1000


def test_rate_limited_exception_carries_the_decision():
    d = keel.RateLimiter(1, 60).check("k")
    d = keel.RateLimiter(1, 60).check("k") if d.allowed else d
    limiter = keel.RateLimiter(1, 60)
    limiter.check("k")
    denied = limiter.check("k")
    err = keel.RateLimited(denied)
    assert err.retry_after == denied.retry_after and err.decision is denied
    assert "rate limit exceeded" in str(err)


@pytest.mark.parametrize("algorithm", ["gcra", "sliding_window"])
def test_raw_headers_always_match_headers(algorithm):
    # raw_headers() reuses rendered tuples (constant policy headers, a cache of recent RateLimit
    # values); whatever it reuses must equal a fresh rendering of the same decision.
    limiter = keel.RateLimiter(50, 2, algorithm=algorithm, name="p")
    limiter.set_override("vip", 7, 3, name="vip-plan")
    for i in range(2000):
        key = "vip" if i % 7 == 0 else f"k{i % 13}"
        d = limiter.check(key, 1 + i % 3)
        fresh = [(n.lower().encode(), v.encode()) for n, v in d.headers()]
        assert d.raw_headers() == fresh
    combined = keel.check_all([(limiter, "k1"), (keel.RateLimiter(9, 1, name="x"), "k1")])
    assert combined.raw_headers() == [
        (n.lower().encode(), v.encode()) for n, v in combined.headers()
    ]


def _shared_worker(path: str, attempts: int, barrier, out) -> None:  # runs in a child process
    import time

    limiter = keel.RateLimiter(250, 3600, shared_path=path, max_keys=1000)
    barrier.wait(timeout=60)
    start = time.monotonic()  # CLOCK_MONOTONIC: one timeline for every process of the host
    allowed = sum(limiter.check("tenant").allowed for _ in range(attempts))
    out.put((allowed, start, time.monotonic()))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_host_shared_four_processes_allow_exactly_the_limit(tmp_path, method):
    import multiprocessing

    ctx = multiprocessing.get_context(method)
    path = str(tmp_path / "rl-state")
    if method == "fork":
        # Opened before forking: the children inherit the mapping.
        keel.RateLimiter(250, 3600, shared_path=path, max_keys=1000)
    out = ctx.Queue()
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_shared_worker, args=(path, 50_000, barrier, out)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # The workers really ran at the same time (a barrier, then enough work to overlap).
    spans = [(start, end) for _, start, end in results]
    overlapping = [s for s in spans if sum(s2 < s[1] and s[0] < e2 for s2, e2 in spans) > 1]
    assert len(overlapping) >= 2, spans
    assert sum(allowed for allowed, _, _ in results) == 250


def test_host_shared_thousand_threads_allow_exactly_the_limit(tmp_path):
    limiter = keel.RateLimiter(100, 3600, shared_path=tmp_path / "rl", max_keys=1000)
    barrier = threading.Barrier(1000)
    allowed = []

    def work():
        barrier.wait()
        allowed.append(sum(limiter.check("shared").allowed for _ in range(20)))

    threads = [threading.Thread(target=work) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_host_shared_limiters_count_together_and_redeploys_get_their_own_file(tmp_path):
    path = tmp_path / "rl"
    a = keel.RateLimiter(3, 60, shared_path=path, max_keys=100)
    assert a.shared and not keel.RateLimiter(3, 60).shared
    assert keel.RateLimiter(3, 60).shared_path is None
    assert a.shared_path == tmp_path / "rl.v2.gcra.3per60s.4096keys"
    b = keel.RateLimiter(3, 60, shared_path=str(path), max_keys=100)
    assert [
        a.check("k").allowed,
        b.check("k").allowed,
        a.check("k").allowed,
        b.check("k").allowed,
    ] == [
        True,
        True,
        True,
        False,
    ]
    # A new policy (rolling redeploy) opens its own file; the old workers keep theirs.
    new = keel.RateLimiter(4, 60, shared_path=path, max_keys=100)
    assert new.shared_path != a.shared_path
    assert [new.check("k").allowed for _ in range(5)] == [True] * 4 + [False]
    assert not a.check("k").allowed
    assert issubclass(keel.RateLimitStateError, OSError)
    assert issubclass(keel.RateLimitStateBusy, keel.RateLimitStateError)
    assert issubclass(keel.RateLimitStateBusy, TimeoutError)


def _truncate_under_live_limiter(path: str) -> None:  # runs in a child process
    limiter = keel.RateLimiter(3, 3600, shared_path=path, max_keys=100)
    assert limiter.check("k").allowed
    with open(limiter.shared_path, "r+b") as f:
        f.truncate(0)
    for i in range(2000):
        limiter.check(f"key-{i}")
    with open(limiter.shared_path, "r+b") as f:
        f.truncate(100)
    # A fresh open of a truncated file re-initialises it.
    assert keel.RateLimiter(3, 3600, shared_path=path, max_keys=100).check("k").allowed


def test_host_shared_truncated_file_never_crashes_the_process(tmp_path):
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_truncate_under_live_limiter, args=(str(tmp_path / "rl"),)
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0, f"the worker died with exit code {proc.exitcode} (SIGBUS is -7)"


def test_host_shared_removed_file_is_re_attached(tmp_path):
    import time

    path = tmp_path / "rl"
    a = keel.RateLimiter(3, 3600, shared_path=path, max_keys=100)
    a.check("warm")
    a.shared_path.unlink()
    b = keel.RateLimiter(3, 3600, shared_path=path, max_keys=100)
    start = time.monotonic()
    while time.monotonic() - start < 0.05:  # longer than the check interval, on the clock
        a.check("tick")
    assert [b.check("k").allowed for _ in range(3)] == [True] * 3
    assert not a.check("k").allowed, "a still counts on the removed file: the limit doubled"
