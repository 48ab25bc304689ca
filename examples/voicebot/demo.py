"""``make demo``: set the voice bot up and run it on localhost.

    python -m voicebot.demo [--home DIR] [--port N] [--setup-only] [--exit-after-ready]

Creates the home folder with a keyring and ``keel.toml`` (kept if they exist), creates a new
admin API key (every scope), indexes the bundled documents with a progress line, starts the app
with uvicorn, waits until ``/readyz`` answers 200, then prints the page URL, the key and a curl
example, and serves until Ctrl-C. ``--exit-after-ready`` (``make demo DEMO_EXIT_AFTER_READY=1``)
asks one question through the running server and stops: the non-interactive check of the whole
path. ``--setup-only`` stops before starting the server (e.g. before a multi-worker uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import httpx
import uvicorn

import keel

from .settings import Settings, create_admin_key, init_home


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def setup(home: Path, *, out=sys.stdout) -> str:
    """Home folder, admin key, indexed documents; returns the new admin key."""
    config = init_home(home)
    engine = keel.Engine(config)
    key = create_admin_key(engine)
    settings = Settings(home=home.resolve())
    kb = keel.KnowledgeBase(str(settings.kb_path))

    def progress(done: int, total: int | None = None, *_: object) -> None:
        out.write(f"\r  indexing documents: {done}/{total if total is not None else '?'}")
        out.flush()

    report = kb.index_folder(str(settings.docs), progress=progress)
    out.write(
        f"\n  knowledge base: {report.added} added, {report.updated} updated, "
        f"{report.removed} removed, {report.unchanged} unchanged\n"
    )
    del kb, engine
    return key


def banner(url: str, key: str) -> str:
    curl = (
        f"curl -N -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n"
        f'       -d \'{{"question": "How much is a day pass?"}}\' {url}chat'
    )
    return (
        "\n"
        "  keel voice bot is ready\n"
        f"  page:      {url}\n"
        f"  admin key: {key}\n"
        "  (shown once: only its hash is stored; paste it into the page's API key field)\n\n"
        f"  try:  {curl}\n\n"
        "  Ctrl-C stops the server.\n"
    )


async def ask_once(url: str, key: str) -> dict[str, int]:
    """One /chat turn through the running server; counts the events of each type."""
    counts: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {key}"}
    body = {"question": "How much is a day pass?", "session": "demo-check"}
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", url + "chat", json=body, headers=headers) as resp:
            resp.raise_for_status()
            parser = keel.SseParser()
            async for chunk in resp.aiter_bytes():
                for event in parser.feed(chunk):
                    counts[event.event or "message"] = counts.get(event.event or "message", 0) + 1
                    if event.event == "error":
                        raise RuntimeError(json.loads(event.data)["detail"])
    return counts


async def serve(home: Path, host: str, port: int, key: str, exit_after_ready: bool) -> int:
    os.environ["VOICEBOT_HOME"] = str(home.resolve())
    config = uvicorn.Config(
        "voicebot.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # the app logs each request itself, as JSON lines
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://{host}:{port}/"
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(600):
            if task.done():
                return 1
            try:
                if (await client.get(url + "readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            print("the server did not become ready in 60 s", file=sys.stderr)
            server.should_exit = True
            await task
            return 1
    print(banner(url, key), flush=True)
    if exit_after_ready:
        counts = await ask_once(url, key)
        print(f"  one question asked: {counts}", flush=True)
        server.should_exit = True
    await task
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voicebot.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("VOICEBOT_HOME", ".voicebot"))
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("VOICEBOT_PORT", "8000")))
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument(
        "--exit-after-ready",
        action="store_true",
        default=os.environ.get("DEMO_EXIT_AFTER_READY", "") not in ("", "0"),
    )
    args = parser.parse_args(argv)
    print(f"  voice bot home: {args.home.resolve()}")
    key = setup(args.home)
    if args.setup_only:
        print(f"  admin key: {key}")
        return 0
    port = args.port or free_port(args.host)
    try:
        return asyncio.run(serve(args.home, args.host, port, key, args.exit_after_ready))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
