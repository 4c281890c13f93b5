"""Benchmark: what engagement tracking costs a send, and how fast the click redirect answers.

    python bench/bench_tracking.py [--recipients 100000] [--workers 4] [--database postgresql] [--rounds 3]
                                   [--seconds 10] [--connections 32]

In a temporary folder, on a throwaway database (``--database``: postgresql by default, or sqlite),
with the machine's Redis (db 14) and Postfix's ``smtp-sink``:

1. **Send rate, tracked against untracked.** Two lists of ``--recipients`` confirmed subscribers,
   ``plain`` (tracking off) and ``tracked`` (anonymous), each with the sample issue. A worker of
   concurrency ``--workers`` sends each list's issue in turn, ``--rounds`` times (plain, tracked,
   tracked, plain, ...: the machine's drift falls on both alike). The ratio is the median of the
   rounds' tracked-over-plain ratios; goal >= 0.98 (link rewriting and the open image add under 2 %).
2. **Redirects.** A real `newsletter web` on the same database; ``wrk`` (Debian's package) follows
   the tracked send's links for ``--seconds`` over ``--connections`` connections, each request a
   different reader (10,000 tokens, cycled) and link. Goal: >= 2,000 requests a second on this
   machine (wrk shares its cores), every one a 302. Then the web app is stopped (its buffered clicks
   are written on the way out) and the clicks recorded are reconciled with the redirects wrk
   counted: at least as many (a request still in flight when wrk's clock stopped may have been
   recorded without being counted by wrk), at most that many more.

Figures, not pass/fail; the machine's load before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_send import (  # noqa: E402  (after the path is set)
    SAMPLE_ISSUE,
    Newsletter,
    Sink,
    free_port,
    machine_busy,
    system_redis,
    timed_send,
)
from benchkit import database  # noqa: E402

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
READERS = 10_000


def send_rates(nl: Newsletter, sink: Sink, recipients: int, workers: int, rounds: int) -> dict[str, list[float]]:
    issues = {}
    for slug, tracking in (("plain", "off"), ("tracked", "anonymous")):
        seconds = nl.create_list(slug, recipients)
        nl("lists", "update", slug, "--tracking", tracking)
        issues[slug] = nl("issues", "create", slug, str(SAMPLE_ISSUE)).split()[-1]
        print(f"list {slug}: {recipients:,} recipients (import {seconds:.1f} s), tracking {tracking}", flush=True)
    rates: dict[str, list[float]] = {"plain": [], "tracked": []}
    worker = nl.worker(workers, sink.port)
    try:
        for number in range(1, rounds + 1):
            # Each round sends both, one right after the other, the first of the pair in turn: the machine's
            # drift (a tenth from one minute to the next here) falls on both alike.
            for slug in ("plain", "tracked") if number % 2 else ("tracked", "plain"):
                result = timed_send(nl, issues[slug], worker)
                rate = result["sent"] / result["wall"]
                rates[slug].append(rate)
                print(
                    f"  round {number} {slug}: send {result['id']} {result['status']}, sent {result['sent']:,} of "
                    f"{result['total']:,} in {result['wall']:.2f} s = {rate:,.0f} msg/s",
                    flush=True,
                )
    finally:
        worker.stop()
    return rates


def click_paths(nl: Newsletter) -> tuple[str, list[str]]:
    """The last tracked send's id and READERS click paths, each a different reader, links in turn."""
    from sqlalchemy import func, select

    from newsletter.store.models import Delivery, Send, SendLink
    from subscribers.tokens import TokenSigner

    signer = TokenSigner(nl.settings.secret_key)
    with nl.sessions() as session:
        send_id = session.scalar(select(func.max(Send.id)).where(Send.tracking == "anonymous"))
        assert send_id is not None, "no tracked send"
        deliveries = session.scalars(
            select(Delivery.id).where(Delivery.send_id == send_id).order_by(Delivery.id).limit(READERS)
        ).all()
        positions = session.scalars(select(SendLink.position).where(SendLink.send_id == send_id)).all()
    paths = [
        f"/t/c/{send_id}/{positions[i % len(positions)]}/{signer.tracking_token(send_id, d)}"
        for i, d in enumerate(deliveries)
    ]
    return str(send_id), paths


def redirects(nl: Newsletter, folder: Path, seconds: float, connections: int) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("redirects: wrk is not installed (apt-get install wrk); skipped")
        return
    from sqlalchemy import func, select

    from newsletter.store.models import EngagementEvent

    send_id, paths = click_paths(nl)
    script = folder / "clicks.lua"
    table = ",\n".join(f'"{p}"' for p in paths)
    script.write_text(
        f"local paths = {{\n{table}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n"
        f'  return wrk.format("GET", paths[(i % #paths) + 1], {{["User-Agent"] = "{CHROME}"}})\nend\n'
    )
    port = free_port()
    log = folder / "web.log"
    web = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "web", "--port", str(port)],
        env=nl.env,
        cwd=nl.folder,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(f"http://127.0.0.1:{port}{paths[0]}", headers={"User-Agent": CHROME})
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit(f"newsletter web did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        assert first.status_code == 302, first.status_code
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.killpg(web.pid, signal.SIGTERM)  # a graceful stop writes the buffered clicks
        web.wait(60)
    answered = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    with nl.sessions() as session:
        recorded = session.scalar(
            select(func.count()).select_from(EngagementEvent).where(EngagementEvent.send_id == int(send_id))
        )
    recorded = (recorded or 0) - 1  # the first request, made before wrk's
    print(
        f"redirects: {per_second:,.0f} requests/s over {connections} connections for {seconds:g} s "
        f"({answered:,} answered, {int(bad.group(1)) if bad else 0} not a redirect; latency mean "
        f"{latency.group(1) if latency else '?'}, max {latency.group(3) if latency else '?'}); goal >= 2,000/s"
    )
    verdict = "reconciled" if answered <= recorded <= answered + connections else "MISMATCH"
    print(f"clicks recorded: {recorded:,} for {answered:,} redirects wrk counted ({verdict})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if binary is None:
        print("smtp-sink is not installed (apt-get install postfix); nothing to measure against")
        return 0
    print(
        f"{os.cpu_count()} CPUs, busy {machine_busy():.0%} before the bench (load average "
        f"{os.getloadavg()[0]:.2f}): the figures assume nothing else runs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as name:
        tmp = Path(name)
        broker = system_redis()
        sink = Sink(binary, tmp)
        var_dir = tmp / "var"
        try:
            with database(args.database, var_dir) as url:
                env = {
                    "NEWSLETTER_VAR_DIR": str(var_dir),
                    "NEWSLETTER_DATABASE_URL": url,
                    "NEWSLETTER_BASE_URL": "https://news.example.org",
                    "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
                    "NEWSLETTER_SECRET_KEY": "bench-secret-key-0123456789abcdefgh",
                }
                if broker:
                    env["NEWSLETTER_BROKER_URL"] = broker
                (tmp / "work").mkdir()
                nl = Newsletter(tmp / "work", env)
                try:
                    nl("db", "upgrade")
                    rates = send_rates(nl, sink, args.recipients, args.workers, args.rounds)
                    ratios = [t / p for t, p in zip(rates["tracked"], rates["plain"], strict=True)]
                    print(
                        f"send rate at N={args.workers} on {args.database}: tracked over plain, round by round "
                        f"{', '.join(f'{r:.3f}' for r in ratios)}; median {median(ratios):.3f} (medians of the rates: "
                        f"{median(rates['tracked']):,.0f} against {median(rates['plain']):,.0f} msg/s); goal >= 0.98",
                        flush=True,
                    )
                    redirects(nl, tmp, args.seconds, args.connections)
                finally:
                    nl.engine.dispose()
        finally:
            sink.stop()
            if broker:
                system_redis()
    print(f"machine: busy {machine_busy():.0%} after the bench (load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
