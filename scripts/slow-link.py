#!/usr/bin/env python3
"""A slow, deep link on loopback, to try fileagent as over bad Wi-Fi.

    scripts/slow-link.py LISTEN_PORT TARGET_PORT [BYTES_PER_SEC]

Listens on 127.0.0.1:LISTEN_PORT and relays each connection to
127.0.0.1:TARGET_PORT, both ways at BYTES_PER_SEC (default 200000). It takes
whatever the sender writes at once and holds it, like the buffers of a
congested Wi-Fi link: a client that has "sent" everything may still have
most of it on the way. Loopback only; Ctrl-C stops it.
"""

import asyncio
import sys
import time

PIECE = 16 * 1024


async def pump(reader, writer, rate, held):
    """Reads as fast as the peer writes; forwards at `rate` bytes/s."""
    queue = asyncio.Queue()

    async def take():
        while True:
            data = await reader.read(PIECE)
            held[0] += len(data)
            await queue.put(data)
            if not data:
                return

    async def give():
        start, sent = time.monotonic(), 0
        while True:
            data = await queue.get()
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()
            held[0] -= len(data)
            sent += len(data)
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)

    await asyncio.gather(take(), give(), return_exceptions=True)


async def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    listen, target = int(sys.argv[1]), int(sys.argv[2])
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000

    async def relay(client_reader, client_writer):
        try:
            agent_reader, agent_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError as e:
            print(f"slow-link: cannot reach 127.0.0.1:{target}: {e}", file=sys.stderr)
            client_writer.close()
            return
        up, down = [0], [0]
        await asyncio.gather(
            pump(client_reader, agent_writer, rate, up),
            pump(agent_reader, client_writer, rate, down),
        )

    server = await asyncio.start_server(relay, "127.0.0.1", listen)
    print(f"slow-link: 127.0.0.1:{listen} -> 127.0.0.1:{target} at {rate} B/s", file=sys.stderr)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
