"""How fast does SmtpTransport.send hand messages to an SMTP server, next to smtplib?

Run as ``python bench/bench_transport.py [messages]``. Sends the same ~20 KB message,
one recipient per transaction over one connection, first with a plain
``smtplib.SMTP.sendmail`` loop, then with :class:`SmtpTransport` (pipelined, and one
command at a time), all into the same sink: Postfix's ``smtp-sink`` when installed
(``apt-get install postfix`` provides /usr/sbin/smtp-sink), else the CaptureServer,
which is much slower and so measures mostly itself. Prints messages per second, the
client's CPU time per message, and the ratios. Each figure is the best of a few runs.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import SmtpSettings  # noqa: E402
from newsletter.devtools.smtp_capture import CaptureServer  # noqa: E402
from newsletter.mail.transport import SmtpTransport  # noqa: E402

RUNS = 3
SENDER = "news@example.org"


def sample_message(size: int = 20_000) -> bytes:
    """A quoted-printable-looking message in wire form, with a few lines starting with '.'."""
    head = (
        f"From: Info War Desk <{SENDER}>\r\nTo: reader@example.com\r\nSubject: This week in info war\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode()
    line = b"Disinformation campaigns target elections, health and trust in institutions=\r\n"
    body = bytearray()
    while len(head) + len(body) < size:
        body += line
        if len(body) % 20 == 0:
            body += b"..stuffed line\r\n"
    return head + bytes(body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def sink() -> Iterator[tuple[str, int]]:
    """(name, port) of a running sink, stopped afterwards."""
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if binary is None:
        with CaptureServer(port=0) as server:
            yield "CaptureServer (aiosmtpd; install postfix for smtp-sink, a faster sink)", server.port
        return
    port = free_port()
    command = [binary, f"127.0.0.1:{port}", "1000"]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "nobody"]  # smtp-sink refuses to run as root
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"smtp-sink did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                    ) from None
                time.sleep(0.05)
        yield "Postfix smtp-sink", port
    finally:
        proc.terminate()
        proc.wait(5)


def measure(send_all: Callable[[int], None], count: int) -> tuple[float, float]:
    """Best (messages per second, client CPU µs per message) over RUNS runs."""
    send_all(min(count, 200))  # warm up: connection, caches
    best_rate, best_cpu = 0.0, float("inf")
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        send_all(count)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best_rate, best_cpu = max(best_rate, count / wall), min(best_cpu, cpu / count * 1e6)
    return best_rate, best_cpu


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    wire = sample_message()
    # smtplib dot-stuffs by itself, so it gets the message before stuffing.
    plain = b"".join(line[1:] if line.startswith(b"..") else line for line in wire.splitlines(keepends=True))
    recipients = [f"reader{n}@example.com" for n in range(count)]
    with sink() as (name, port):
        print(f"{count} messages of {len(wire) / 1000:.1f} kB, one recipient each, into {name} on 127.0.0.1:{port}")
        client = smtplib.SMTP("127.0.0.1", port)
        client.ehlo()

        def smtplib_loop(n: int) -> None:
            for rcpt in recipients[:n]:
                client.sendmail(SENDER, [rcpt], plain)

        results = {"smtplib sendmail": measure(smtplib_loop, count)}
        client.quit()
        for label, pipelining in (("SmtpTransport, pipelined", True), ("SmtpTransport, one command at a time", False)):
            with SmtpTransport(SmtpSettings("127.0.0.1", port), pipelining=pipelining) as transport:

                def transport_loop(n: int, transport: SmtpTransport = transport) -> None:
                    for rcpt in recipients[:n]:
                        transport.send(SENDER, rcpt, wire)

                results[label] = measure(transport_loop, count)
                if transport.connections_opened != 1:
                    print(f"  note: {label} opened {transport.connections_opened} connections")
    base_rate = results["smtplib sendmail"][0]
    for label, (rate, cpu) in results.items():
        print(f"  {label:38} {rate:9,.0f} msg/s   {cpu:6.1f} µs client CPU/msg   {rate / base_rate:4.2f}x smtplib")
    return 0


if __name__ == "__main__":
    sys.exit(main())
