"""A minimal, fast SMTP sink for the cluster test: accepts everything, keeps nothing but a record.

For each message it accepts it appends one line ``recipient<TAB>Message-ID`` to the record
file, *before* answering 250: a line in the record is a message the sender may have seen
accepted, so a recipient with two lines got two copies. It speaks just enough ESMTP for
newsletter's transport (EHLO with PIPELINING, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and costs
a few microseconds per message, so 100,000 messages go through it in seconds of CPU.

    python tests/cluster/smtp_sink.py --host 10.77.0.5 --port 2525 --record /tmp/x/record.tsv

SIGTERM flushes the record and exits at once, whatever connections are still open (a cut
host's never close).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
from typing import IO

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(rb"<([^>]*)>")
_EHLO = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800\r\n"


class Sink:
    def __init__(self, record: IO[bytes]) -> None:
        self.record = record
        self.accepted = 0

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        recipients: list[bytes] = []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(_EHLO)
                elif verb == b"HELO":
                    writer.write(b"250 sink\r\n")
                elif verb == b"MAIL":
                    recipients = []
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    found = _ADDRESS.search(line)
                    recipients.append(found.group(1) if found else line[8:].strip())
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.accept(recipients, data)
                    recipients = []
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"RSET":
                    recipients = []
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"NOOP":
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"502 5.5.2 Command not recognized\r\n")
                if not reader._buffer:  # type: ignore[attr-defined]  # nothing pipelined behind: answer now
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def accept(self, recipients: list[bytes], data: bytes) -> None:
        head = data.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(head)
        message_id = found.group(1) if found else b"-"
        for recipient in recipients:
            self.record.write(recipient + b"\t" + message_id + b"\n")
        self.accepted += 1


async def serve(host: str, port: int, record_path: str) -> None:
    with open(record_path, "ab", buffering=1 << 16) as record:
        sink = Sink(record)
        server = await asyncio.start_server(sink.session, host, port, limit=64 << 20, backlog=256)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print(f"sink listening on {host}:{port}", flush=True)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass
            record.flush()  # the controller follows progress by counting the record's lines
        server.close()
        record.flush()
        os.fsync(record.fileno())
        print(f"sink stopping: {sink.accepted} messages accepted", flush=True)
    os._exit(0)  # open connections of a cut host never end: do not wait for their handlers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--record", required=True, help="file that gets one 'recipient<TAB>Message-ID' line per copy")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.record))


if __name__ == "__main__":
    main()
