"""Rate limiting on Redis, side by side on one redis-server (started here on a free loopback port,
in a temporary directory, and stopped): keel's Redis limiter, the `limits` package's
RedisStorage (moving window and sliding-window counter), and a hand-written redis-cell-style
GCRA Lua script called from redis-py (EVALSHA). Decisions/s per client process and round trips
per decision (Redis `INFO commandstats`: calls of every command during the run / decisions),
with 1 and N client processes.

    .venv/bin/python bench/python/bench_redis.py [--decisions 20000] [--procs 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

GCRA_LUA = """
-- redis-cell-style GCRA: KEYS[1]; ARGV: limit, period (ms), cost
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now))
return {1, math.floor((now - allow_at) / interval), math.ceil(new_tat - now), -1}
"""

LIMIT = 1_000_000_000  # every decision is computed in full; nothing short-circuits on a denial
WINDOW = 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make(system: str, url: str):
    """A function deciding one request for a key."""
    if system == "keel":
        import keel

        lim = keel.RateLimiter(LIMIT, WINDOW, name="bench", redis_url=url)
        return lambda key: lim.hit(key).allowed
    import redis

    client = redis.Redis.from_url(url)
    if system == "redis-py + GCRA script":
        script = client.register_script(GCRA_LUA)
        return lambda key: script(keys=["cell:" + key], args=[LIMIT, WINDOW * 1000, 1])[0] == 1
    from limits import RateLimitItemPerHour, storage, strategies

    store = storage.RedisStorage(url)
    item = RateLimitItemPerHour(LIMIT)
    strategy = {
        "limits moving window": strategies.MovingWindowRateLimiter,
        "limits sliding counter": strategies.SlidingWindowCounterRateLimiter,
    }[system](store)
    return lambda key: strategy.hit(item, key)


def client(system: str, url: str, n: int, idx: int, start, out) -> None:
    decide = make(system, url)
    keys = [f"user-{idx}-{i}" for i in range(100)]
    for k in keys:  # warm: connections, scripts loaded
        decide(k)
    start.wait()
    t0 = time.perf_counter()
    for i in range(n):
        decide(keys[i % 100])
    out.put(time.perf_counter() - t0)


def command_calls(url: str) -> int:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


def run(system: str, url: str, procs: int, n: int) -> tuple[float, float]:
    """(median decisions/s per client, round trips per decision)."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    ps = [ctx.Process(target=client, args=(system, url, n, i, start, out)) for i in range(procs)]
    for p in ps:
        p.start()
    start.wait()  # every client warmed up
    before = command_calls(url)
    times = [out.get() for _ in ps]
    after = command_calls(url)
    for p in ps:
        p.join()
    return statistics.median(n / t for t in times), (after - before) / (n * procs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=20000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (make redis-server)"
    port = free_port()
    url = f"redis://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d],
            stdout=subprocess.DEVNULL,
        )
        try:
            import redis

            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            systems = [
                "keel",
                "redis-py + GCRA script",
                "limits moving window",
                "limits sliding counter",
            ]
            for procs in (1, args.procs):
                n = args.decisions // procs if procs > 1 else args.decisions
                rates: dict[str, list[float]] = {s: [] for s in systems}
                trips: dict[str, float] = {}
                for r in range(args.rounds):
                    for j in range(len(systems)):
                        s = systems[(r + j) % len(systems)]
                        rate, rt = run(s, url, procs, n)
                        rates[s].append(rate)
                        trips[s] = rt
                print(f"\n{procs} client process(es), {n} decisions each, median of {args.rounds}")
                print("| system | decisions/s per client | round trips / decision | keel is x |")
                print("|---|---:|---:|---:|")
                keel_rate = statistics.median(rates["keel"])
                for s in systems:
                    m = statistics.median(rates[s])
                    print(f"| {s} | {m:,.0f} | {trips[s]:.2f} | {keel_rate / m:.2f} |")
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
