"""A stand-in for the micro-controller under klippy, for tests: no package
ships Klipper's MCU firmware, so this answers on a pseudo-terminal the
commands klippy sends to an MCU without pins (identify, get_uptime,
get_clock, get_config, allocate_oids, finalize_config, emergency_stop,
reset, clear_shutdown), with a 50 MHz clock that runs in real time. Every
message is encoded and decoded with klippy's own `msgproto` module (run it
with the klippy venv's python). Everything above it, klippy and Moonraker,
is the real thing; fileagent never talks to this layer.

usage: python klipper-mcu.py LINK
  LINK: the path klippy's `[mcu] serial` names; it must start with
  /tmp/klipper_host_ (klippy then opens it as a pipe, with no baud rate,
  as it does for Klipper's Linux host MCU). The link is made to a new pty
  and removed at exit. Prints "ready" once klippy may open it."""

import json
import os
import select
import signal
import sys
import time
import tty
import zlib

from klippy import msgproto

CLOCK_FREQ = 50_000_000
MOVE_COUNT = 1024

COMMANDS = {
    "identify offset=%u count=%c": 1,
    "get_uptime": 2,
    "get_clock": 3,
    "get_config": 4,
    "allocate_oids count=%c": 5,
    "finalize_config crc=%u": 6,
    "emergency_stop": 7,
    "reset": 8,
    "clear_shutdown": 9,
}
RESPONSES = {
    "identify_response offset=%u data=%.*s": 0,
    "uptime high=%u clock=%u": 10,
    "clock clock=%u": 11,
    "config is_config=%c crc=%u is_shutdown=%c move_count=%hu": 12,
    "shutdown clock=%u static_string_id=%hu": 13,
    "is_shutdown static_string_id=%hu": 14,
    "stats count=%u sum=%u sumsq=%u": 15,
    "starting": 16,
}
DICTIONARY = {
    "version": "fileagent-test-mcu",
    "build_versions": "python stand-in",
    "commands": COMMANDS,
    "responses": RESPONSES,
    "enumerations": {"static_string_id": {"emergency stop": 1}},
    "config": {"MCU": "linux", "CLOCK_FREQ": CLOCK_FREQ, "STATS_SUMSQ_BASE": 256},
}


class Mcu:
    """The MCU's state and its answers to each command."""

    def __init__(self):
        self.started = time.monotonic()
        self.identify = zlib.compress(json.dumps(DICTIONARY).encode())
        self.parser = msgproto.MessageParser()
        self.parser.process_identify(json.dumps(DICTIONARY).encode(), decompress=False)
        self.reset()

    def reset(self):
        self.config_crc = 0
        self.is_config = 0
        self.shutdown = 0

    def clock(self):
        return int((time.monotonic() - self.started) * CLOCK_FREQ)

    def answer(self, name, params):
        """The responses (name, fields) to one command."""
        if name == "identify":
            offset, count = params["offset"], params["count"]
            return [("identify_response", {"offset": offset,
                                           "data": self.identify[offset:offset + count]})]
        if name == "get_uptime":
            clock = self.clock()
            return [("uptime", {"high": clock >> 32, "clock": clock & 0xFFFFFFFF})]
        if name == "get_clock":
            return [("clock", {"clock": self.clock() & 0xFFFFFFFF})]
        if name == "get_config":
            return [("config", {"is_config": self.is_config, "crc": self.config_crc,
                                "is_shutdown": self.shutdown, "move_count": MOVE_COUNT})]
        if name == "finalize_config":
            self.config_crc, self.is_config = params["crc"], 1
        elif name == "emergency_stop":
            self.shutdown = 1
            return [("shutdown", {"clock": self.clock() & 0xFFFFFFFF, "static_string_id": 1})]
        elif name == "reset":
            self.reset()
        elif name == "clear_shutdown":
            self.shutdown = 0
        return []

    def encode(self, name, fields):
        return self.parser.messages_by_name[name].encode_by_name(**fields)


def serve(mcu, master):
    """Reads message blocks from klippy, acknowledges each and answers its
    commands, until killed."""
    buffer = b""
    next_seq = 0
    parent = os.getppid()
    while True:
        if not select.select([master], [], [], 1.0)[0]:
            if os.getppid() != parent:
                return  # whoever started it is gone: so is the printer
            continue
        buffer += os.read(master, 4096)
        while buffer:
            length = mcu.parser.check_packet(buffer)
            if length == 0:
                break
            if length < 0:
                # Out of step: drop up to the next sync byte, as the firmware does.
                sync = buffer.find(bytes([msgproto.MESSAGE_SYNC]))
                buffer = buffer[sync + 1:] if sync >= 0 else b""
                continue
            block, buffer = buffer[:length], buffer[length:]
            seq = block[msgproto.MESSAGE_POS_SEQ] & msgproto.MESSAGE_SEQ_MASK
            if seq == next_seq:
                next_seq = (seq + 1) & msgproto.MESSAGE_SEQ_MASK
                answers = commands(mcu, block)
            else:
                answers = []  # a retransmission of what was answered: ack only
            # The answers, then an empty block, as the firmware does: klippy
            # wakes a command's sender at the ack after its answer.
            out = [frame(next_seq, mcu.encode(n, f)) for n, f in answers]
            os.write(master, b"".join(out + [frame(next_seq, [])]))


def frame(seq, payload):
    """One message block: length, sequence, payload, CRC, sync byte (as
    msgproto.MessageParser.encode means to, which nests the CRC's list)."""
    block = [msgproto.MESSAGE_MIN + len(payload), msgproto.MESSAGE_DEST | seq] + payload
    block += msgproto.crc16_ccitt(block)
    return bytes(block + [msgproto.MESSAGE_SYNC])


def commands(mcu, block):
    """The answers to every command in one block."""
    answers = []
    pos = msgproto.MESSAGE_HEADER_SIZE
    end = len(block) - msgproto.MESSAGE_TRAILER_SIZE
    while pos < end:
        message = mcu.parser.messages_by_id[block[pos]]
        params, pos = message.parse(block, pos)
        answers += mcu.answer(message.name, params)
    return answers


def main():
    link = sys.argv[1]
    if not link.startswith("/tmp/klipper_host_"):
        sys.exit("the link must start with /tmp/klipper_host_ (klippy opens it as a pipe then)")
    master, slave = os.openpty()
    tty.setraw(slave)
    # Kept open here, so the master side never reads EIO while klippy
    # closes and reopens the link (FIRMWARE_RESTART, a klippy restart).
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.ttyname(slave), link)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("ready", flush=True)
        serve(Mcu(), master)
    finally:
        os.unlink(link)


if __name__ == "__main__":
    main()
