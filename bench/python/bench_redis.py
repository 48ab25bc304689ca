"""Rate limiting on Redis, side by side on one redis-server (started here on a free loopback port,
in a temporary directory, and stopped): keel's Redis limiter, the `limits` package's
RedisStorage (moving window and sliding-window counter), and a hand-written redis-cell-style
GCRA Lua script called from redis-py (EVALSHA). Decisions/s per client process and round trips
per decision (commands the client sends, counted with MONITOR),
with 1 and N client processes.

A last row measures the floor of any design that makes one round trip per decision: the
`redis-benchmark` C client sending PING over one connection per process, one at a time (no
pipelining), in the same rounds. No one-round-trip limiter can exceed it per client; the table
prints the rate that "10x `limits`" would need beside it.

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
        return lambda key: lim.check(key).allowed
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
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        decide(keys[i % 100])
    out.put((time.perf_counter() - t0, time.process_time() - c0))


def round_trips(system: str, url: str, n: int = 300) -> float:
    """Commands sent by the client per decision, counted with MONITOR (commands run inside a
    script show as `[0 lua]` and are not round trips; `INFO commandstats` counts them too)."""
    import redis

    decide = make(system, url)
    keys = [f"rt-{i}" for i in range(100)]
    for k in keys:  # warm: connections, scripts loaded
        decide(k)
    host, port = url.rsplit("/", 1)[-1].split(":")
    mon = socket.create_connection((host, int(port)))
    mon.sendall(b"MONITOR\r\n")
    buf = b""
    while b"+OK\r\n" not in buf:
        buf += mon.recv(4096)
    buf = buf.split(b"+OK\r\n", 1)[1]
    for i in range(n):
        decide(keys[i % 100])
    redis.Redis.from_url(url).echo("bench-end")
    while b"bench-end" not in buf:
        buf += mon.recv(65536)
    mon.close()
    lines = buf.split(b"\r\n")
    client_cmds = [x for x in lines if b" lua]" not in x and b"bench-end" not in x and x.strip()]
    return len(client_cmds) / n


def server_cpu(url: str) -> float:
    import redis

    cpu = redis.Redis.from_url(url).info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


FLOOR = "floor: PING round trip (redis-benchmark, C)"


def floor(url: str, procs: int, n: int) -> tuple[float, float, float]:
    """Round trips/s per client of `procs` concurrent redis-benchmark processes (one connection
    each, no pipelining): the ceiling for one round trip per decision."""
    bench = shutil.which("redis-benchmark")
    assert bench, "redis-benchmark is not installed (Debian redis-tools, with redis-server)"
    port = url.rsplit(":", 1)[1]
    cmd = [bench, "-p", port, "-c", "1", "-n", str(n), "-t", "ping_mbulk", "--csv"]
    ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    rates = []
    for p in ps:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
        row = [line for line in out.splitlines() if "PING" in line][0]
        rates.append(float(row.split(",")[1].strip('"')))
    return statistics.median(rates), float("nan"), float("nan")


def run(system: str, url: str, procs: int, n: int) -> tuple[float, float, float]:
    """The median decisions/s per client, client CPU and server CPU microseconds per decision
    (CPU time moves much less than wall time on a loaded machine)."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    ps = [ctx.Process(target=client, args=(system, url, n, i, start, out)) for i in range(procs)]
    for p in ps:
        p.start()
    start.wait()  # every client warmed up
    s0 = server_cpu(url)
    times = [out.get() for _ in ps]
    s1 = server_cpu(url)
    for p in ps:
        p.join()
    rate = statistics.median(n / wall for wall, _ in times)
    client_us = statistics.median(cpu / n * 1e6 for _, cpu in times)
    return rate, client_us, (s1 - s0) / (n * procs) * 1e6


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
            trips = {s: round_trips(s, url) for s in systems}
            trips[FLOOR] = 1.0
            systems.append(FLOOR)
            for procs in (1, args.procs):
                n = args.decisions // procs if procs > 1 else args.decisions
                rates: dict[str, list[tuple[float, float, float]]] = {s: [] for s in systems}
                for r in range(args.rounds):
                    for j in range(len(systems)):
                        s = systems[(r + j) % len(systems)]
                        if s == FLOOR:
                            rates[s].append(floor(url, procs, n))
                        else:
                            rates[s].append(run(s, url, procs, n))
                print(f"\n{procs} client process(es), {n} decisions each, median of {args.rounds}")
                print(
                    "| system | decisions/s per client | client CPU µs / decision "
                    "| Redis CPU µs / decision | round trips / decision | keel is x (rate) "
                    "| keel is x (client CPU) |"
                )
                print("|---|---:|---:|---:|---:|---:|---:|")

                def med(s: str, i: int, rates=rates) -> float:
                    return statistics.median(x[i] for x in rates[s])

                for s in systems:
                    if s == FLOOR:
                        x = med("keel", 0) / med(s, 0)
                        print(f"| {s} | {med(s, 0):,.0f} | | | 1.00 | {x:.2f} | |")
                        continue
                    print(
                        f"| {s} | {med(s, 0):,.0f} | {med(s, 1):.1f} | {med(s, 2):.1f} "
                        f"| {trips[s]:.2f} | {med('keel', 0) / med(s, 0):.2f} "
                        f"| {med(s, 1) / med('keel', 1):.2f} |"
                    )
                need = 10 * med("limits moving window", 0)
                print(
                    f"\n10x `limits` (moving window) would need {need:,.0f} decisions/s per "
                    f"client; one round trip per decision tops out at {med(FLOOR, 0):,.0f}/s "
                    "here (the floor row)."
                )
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
