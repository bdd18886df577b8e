#!/usr/bin/env python3
"""A TCP proxy that misbehaves on request, for the network fault scenario.

Forwards LISTEN_PORT -> TARGET_PORT on 127.0.0.1 for each pair given, and every 0.1 s reads
the mode from MODE_FILE:

  clean            forward as is
  delay MS JITTER  every chunk held MS +- JITTER milliseconds, order kept
  stall            nothing forwarded (like a link losing every packet); held data flows
                   again, in order, once the mode changes
  reset            every open connection closed with a TCP reset (SO_LINGER 0), then clean

Stands in for netem where the kernel has no sch_netem: delays and stalls apply per
connection and direction, after TCP, so they look like a slow or lossy path to both ends.

Usage: proxy.py MODE_FILE LISTEN_PORT:TARGET_PORT...
"""

import asyncio
import random
import socket
import struct
import sys
import time

MODE = ["clean"]
CONNECTIONS = set()


def held_for():
    mode = MODE[0].split()
    if mode[0] == "delay":
        ms, jitter = float(mode[1]), float(mode[2]) if len(mode) > 2 else 0.0
        return max(0.0, ms + random.uniform(-jitter, jitter)) / 1000
    return 0.0


async def pump(reader, writer):
    """Copies one direction, each chunk released at its own due time, in order."""
    queue = asyncio.Queue()

    async def release():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            while MODE[0] == "stall":
                await asyncio.sleep(0.05)
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    releaser = asyncio.ensure_future(release())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            # The due time keeps the order: a later chunk never leaves before an earlier.
            await queue.put((time.monotonic() + held_for(), data))
        await queue.put((0, None))
        await releaser
        writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        releaser.cancel()


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def handle(client_reader, client_writer, target):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        reset(client_writer)
        return
    pair = (client_writer, server_writer)
    CONNECTIONS.add(pair)
    try:
        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
    finally:
        CONNECTIONS.discard(pair)
        for w in pair:
            w.transport.abort()


async def watch(mode_file):
    while True:
        try:
            with open(mode_file, encoding="utf-8") as f:
                mode = f.read().strip() or "clean"
        except OSError:
            mode = "clean"
        if mode == "reset":
            for pair in list(CONNECTIONS):
                for w in pair:
                    reset(w)
            with open(mode_file, "w", encoding="utf-8") as f:
                f.write("clean\n")
            mode = "clean"
        MODE[0] = mode
        await asyncio.sleep(0.1)


async def main():
    mode_file = sys.argv[1]
    for spec in sys.argv[2:]:
        listen, target = (int(p) for p in spec.split(":"))
        await asyncio.start_server(
            lambda r, w, t=target: handle(r, w, t), "127.0.0.1", listen, reuse_address=True
        )
    await watch(mode_file)


if __name__ == "__main__":
    asyncio.run(main())
