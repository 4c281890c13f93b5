"""Benchmark: what DKIM signing costs, per message and for a whole send.

    python bench/bench_dkim.py [--recipients 20000] [--workers 2,4] [--bits 2048] [--messages 300] [--keep]

1. Signing cost, in this one process, on copies of the sample issue (examples/issues/) as a
   worker builds them, with a freshly generated RSA key of ``--bits``: stock dkimpy's
   ``dkim.sign()`` (its RSA step in pure Python) against :class:`newsletter.mail.dkim_signing.DkimSigner`
   (dkimpy's canonicalisation and layout, the RSA step in OpenSSL), and OpenSSL's RSA step
   alone for scale. Every signature of ours is checked with stock ``dkim.verify()`` (its DNS
   lookup answered with the key's record) and with Perl's Mail::DKIM, which shares no code
   with dkimpy, and ours is compared byte for byte with stock's for the same time (PKCS#1
   v1.5 signatures are deterministic).

2. A DKIM-signed send of the sample issue end to end, through the machinery of
   bench/bench_send.py: Postfix's ``smtp-sink`` on a free port, ``--recipients`` confirmed
   subscribers, the machine's Redis (db 14) or the embedded one, SQLite, and for each N in
   ``--workers`` a real ``newsletter worker --concurrency N``: first without DKIM, then with
   NEWSLETTER_DKIM_* and NEWSLETTER_RETURN_PATH set (every message signed, one VERP
   envelope sender per delivery). Figures are messages per second from ``newsletter send``
   to the send seen finished, as in bench_send's "service/s". Goal: signed >= 1,200 msg/s.
   The sink writes every message it receives to a file (``smtp-sink -d``, in both runs), and
   after each signed send every one of them is verified, with stock ``dkim.verify()`` and
   with Mail::DKIM: the very messages that were timed.

Figures, not pass/fail; everything shares the machine's cores, so anything else running
skews them (the machine's load before the runs is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_send  # noqa: E402 - the send machinery: sink, worker, CLI runner, timed send
import benchkit  # noqa: E402 - throwaway databases
import dkim  # noqa: E402

from newsletter.mail.dkim_keys import generate_private_key, private_key_pem, record_value, write_private_key  # noqa: E402
from newsletter.mail.dkim_signing import SIGNED_HEADERS, DkimSigner  # noqa: E402

SELECTOR, DOMAIN = "bench", "example.org"


# --- 1. per message ---------------------------------------------------------------------------


def sample_messages(count: int) -> list[bytes]:
    """``count`` personalised copies of the sample issue, built as a worker builds them."""
    from newsletter.content.issue_files import read_issue_file
    from newsletter.content.rendering import RenderContext, default_template_dir, render_issue
    from newsletter.mail.messages import CompiledMessage, MessageHeaders, Recipient

    rendered = render_issue(
        read_issue_file(bench_send.SAMPLE_ISSUE),
        RenderContext("Info War Weekly", "weekly", "Info War", "1 Example Street", "https://news.example.org"),
        template_dirs=[default_template_dir()],
    )
    headers = MessageHeaders(
        subject=rendered.subject,
        from_email="news@example.org",
        from_name="Info War",
        reply_to=None,
        list_name="Info War Weekly",
        list_slug="weekly",
        message_id_tag="1.bench",
        feedback_id="1:weekly:newsletter",
    )
    message = CompiledMessage(headers, rendered.html, rendered.text)
    copies = []
    for i in range(count):
        token = f"v1.{i}.1.{int(time.time())}.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
        recipient = Recipient(
            delivery_id=i + 1,
            email=f"reader{i:07d}@example{i % 50}.com",
            name=f"Reader Ünï {i}",
            unsubscribe_url=f"https://news.example.org/unsubscribe/{token}",
            preferences_url=f"https://news.example.org/preferences/{token}",
            unsubscribe_mailto=f"mailto:unsubscribe+{token}@example.org?subject=unsubscribe",
            view_online_url="https://news.example.org/archive/weekly/1",
        )
        copies.append(message.build(recipient)[1])
    return copies


def per_message(seconds: float, count: int) -> float:
    return seconds / count * 1000


def signing_cost(bits: int, count: int) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    key = generate_private_key(bits)
    pem, record = private_key_pem(key), record_value(key).encode("ascii")
    signer = DkimSigner(DOMAIN, SELECTOR, key)
    messages = sample_messages(count)
    stock_count = max(10, count // 10)
    size = statistics.mean(len(m) for m in messages) / 1000
    print(
        f"1. signing one copy of the sample issue ({size:.1f} kB), {bits}-bit RSA key, relaxed/simple, "
        f"h= {len(SIGNED_HEADERS)} fields; best of 3 runs",
        flush=True,
    )

    def best(run) -> float:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        return min(timings)

    include = list(SIGNED_HEADERS)
    stock = per_message(
        best(
            lambda: [
                dkim.sign(m, SELECTOR.encode(), DOMAIN.encode(), pem, include_headers=include)
                for m in messages[:stock_count]
            ]
        ),
        stock_count,
    )
    ours = per_message(best(lambda: [signer.signature(m) for m in messages]), count)
    digest = b"\x00" * 32
    pad, algorithm = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    rsa_only = per_message(best(lambda: [key.sign(digest, pad, algorithm) for _ in messages]), count)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    signed = [signer.sign(m) for m in messages]
    verified = sum(dkim.verify(m, dnsfunc=dns) for m in signed)
    with tempfile.TemporaryDirectory(prefix="bench-dkim-verify-") as folder:
        files = [Path(folder) / f"{n}.eml" for n in range(len(signed))]
        for path, data in zip(files, signed, strict=True):
            path.write_bytes(data)
        independent = mail_dkim_passes(files, record.decode("ascii"))
    now = int(time.time())
    real_time = dkim.time.time
    dkim.time.time = lambda: float(now)
    try:
        identical = all(
            dkim.sign(m, SELECTOR.encode(), DOMAIN.encode(), pem, include_headers=include)
            == signer.signature(m, now=now)
            for m in messages[:20]
        )
    finally:
        dkim.time.time = real_time
    print(f"   stock dkimpy dkim.sign()              {stock:7.3f} ms  ({stock_count} messages)")
    print(f"   ours, DkimSigner.signature()          {ours:7.3f} ms  ({count} messages): {stock / ours:.1f}x faster")
    print(
        f"     of which OpenSSL's RSA step         {rsa_only:7.3f} ms  (the rest, canonicalisation and hashing: "
        f"{ours - rsa_only:.3f} ms)"
    )
    print(
        f"   stock dkim.verify() accepts ours: {verified} of {count}; byte-identical to stock dkim.sign() at equal t=: "
        f"{'yes' if identical else 'NO'} (20 compared)"
    )
    print(f"   Perl's Mail::DKIM (shares no code with dkimpy) accepts ours: {independent}")
    print(
        f"   ceiling on this machine: {1000 / ours:,.0f} signatures/s per core, "
        f"{(os.cpu_count() or 1) * 1000 / ours:,.0f}/s on all {os.cpu_count()} cores\n",
        flush=True,
    )


def mail_dkim_passes(files: list[Path], record: str) -> str:
    """'N of M' message files that Perl's Mail::DKIM (tests/tools/mail_dkim_verify.pl) passes, or why it did not run."""
    if (
        shutil.which("perl") is None
        or subprocess.run(["perl", "-MMail::DKIM::Verifier", "-e", "1"], capture_output=True).returncode
    ):
        return "not checked (apt-get install libmail-dkim-perl)"
    passed = 0
    for start in range(0, len(files), 2000):  # a command line of at most 2,000 file names
        done = subprocess.run(
            [
                "perl",
                str(ROOT / "tests" / "tools" / "mail_dkim_verify.pl"),
                f"{SELECTOR}._domainkey.{DOMAIN}.",
                record,
                *map(str, files[start : start + 2000]),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        passed += sum(line.split(" ", 2)[1] == "pass" for line in done.stdout.splitlines())
    return f"{passed:,} of {len(files):,}"


# --- 2. a whole send ----------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes (from /proc/PID/stat)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def signed_sends(binary: str, recipients: int, concurrencies: list[int], bits: int, keep: bool) -> None:
    folder = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-dkim-"))
        if keep
        else tempfile.TemporaryDirectory(prefix="bench-dkim-")
    )
    with folder as name:
        tmp = Path(name)
        if keep:
            print(f"keeping {tmp}")
        var_dir = tmp / "var"
        key_file = tmp / "dkim.pem"
        key = generate_private_key(bits)
        write_private_key(key_file, key)
        broker = bench_send.system_redis()
        # Received messages go to memory (tmpfs) where there is one: the sink's writes cost less CPU there.
        received = Path(
            tempfile.mkdtemp(prefix="bench-dkim-received-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        )
        sink = bench_send.Sink(binary, tmp, dump=received)
        try:
            with benchkit.database("sqlite", var_dir) as database_url:
                plain = {
                    "NEWSLETTER_VAR_DIR": str(var_dir),
                    "NEWSLETTER_DATABASE_URL": database_url,
                    "NEWSLETTER_BASE_URL": "https://news.example.org",
                    "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
                    "NEWSLETTER_SECRET_KEY": "bench-secret-key-0123456789abcdefgh",
                }
                if broker:
                    plain["NEWSLETTER_BROKER_URL"] = broker
                signed = {
                    **plain,
                    "NEWSLETTER_DKIM_DOMAIN": DOMAIN,
                    "NEWSLETTER_DKIM_SELECTOR": SELECTOR,
                    "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(key_file),
                    "NEWSLETTER_RETURN_PATH": "bounces@example.org",
                }
                nl = bench_send.Newsletter(tmp, signed)
                try:
                    run_sends(nl, sink, tmp, received, plain, recipients, concurrencies, bits, record_value(key))
                finally:
                    nl.engine.dispose()
        finally:
            sink.stop()
            shutil.rmtree(received, ignore_errors=True)
            if broker:
                bench_send.system_redis()  # flush db 14 again
            else:
                from newsletter.devtools import embedded_redis

                embedded_redis.stop(var_dir)


def verify_received(folder: Path, record: str) -> str:
    """Check every message smtp-sink received (and dumped, with LF line ends) with dkimpy and with Mail::DKIM."""
    files = sorted(folder.iterdir())

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record.encode("ascii") if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    stock = sum(
        dkim.verify(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), dnsfunc=dns) for path in files
    )
    independent = mail_dkim_passes(files, record)
    return (
        f"verified, every message the sink received: stock dkim.verify() passes {stock:,} of {len(files):,}; "
        f"Mail::DKIM passes {independent}"
    )


def run_sends(
    nl,
    sink,
    tmp: Path,
    received_dir: Path,
    plain: dict[str, str],
    recipients: int,
    concurrencies: list[int],
    bits: int,
    signed_record: str,
) -> None:
    nl("db", "upgrade")
    seconds = nl.create_list("weekly", recipients)
    issue_id = nl("issues", "create", "weekly", str(bench_send.SAMPLE_ISSUE)).split()[-1]
    print(
        f"2. a send of the sample issue to {recipients:,} recipients (import: {seconds:.1f} s), SQLite, broker "
        f"{nl.settings.broker_url or 'embedded Redis'}, smtp-sink on 127.0.0.1:{sink.port}, batch size "
        f"{bench_send.BATCH_SIZE}; signed: {bits}-bit key, VERP return path",
        flush=True,
    )
    rows = []
    for n in concurrencies:
        figures = {}
        for kind in ("unsigned", "signed"):
            if kind == "signed":
                worker = nl.worker(n, sink.port)
            else:
                env = {
                    **{k: v for k, v in nl.env.items() if not k.startswith("NEWSLETTER_")},
                    **plain,
                    "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
                    "NEWSLETTER_BATCH_SIZE": str(bench_send.BATCH_SIZE),
                }
                worker = bench_send.Worker(env, tmp, n)
            try:
                if kind == "signed":
                    assert "Signing with DKIM" in worker.log.read_text(), "the worker does not sign"
                before = sink.received()
                pids = worker.pids()
                cpu_before = cpu_seconds(pids), cpu_seconds([sink.proc.pid])
                result = bench_send.timed_send(nl, issue_id, worker)
                received = sink.received() - before
                worker_cpu = cpu_seconds(pids) - cpu_before[0]
                sink_cpu = cpu_seconds([sink.proc.pid]) - cpu_before[1]
            finally:
                problems = worker.stop()
            sent, total = result["sent"], result["total"]
            print(
                f"   N={n} {kind:>8}: send {result['id']} {result['status']}: sent {sent:,} of {total:,} (failed "
                f"{result['failed']}); the sink got {received:,}",
                flush=True,
            )
            if sent != total or received != total:
                print("     !! MISMATCH: not every delivery is logged as sent, or the sink's count differs")
            if kind == "signed":
                print(f"     {verify_received(received_dir, signed_record)}", flush=True)
            for path in received_dir.iterdir():
                path.unlink()
            bench_send.print_problems(problems)
            figures[kind] = (
                sent / result["wall"],
                max(worker.peaks.values(), default=float("nan")),
                worker_cpu / max(1, sent) * 1000,
                sink_cpu / max(1, sent) * 1000,
            )
        rows.append((n, figures["unsigned"], figures["signed"]))
    cores = os.cpu_count() or 1
    print(
        f"\n   {'N':>3} {'unsigned/s':>11} {'signed/s':>9} {'signed/unsigned':>16} {'worker MB':>10} "
        f"{'worker CPU ms/msg':>18} {'sink CPU ms/msg':>16} {'CPU-bound ceiling':>18}"
    )
    for n, (plain_rate, _, plain_cpu, plain_sink), (signed_rate, rss, signed_cpu, signed_sink) in rows:
        print(
            f"   {n:>3} {plain_rate:>11,.0f} {signed_rate:>9,.0f} {signed_rate / plain_rate:>16.2f} {rss:>10.0f} "
            f"{plain_cpu:>8.3f} -> {signed_cpu:.3f} {plain_sink:>8.3f} -> {signed_sink:.3f} "
            f"{cores * 1000 / (signed_cpu + signed_sink):>12,.0f} msg/s"
        )
    print(
        f"   goal: signed >= 1,200 messages/s. The ceiling is what {cores} idle cores allow at the CPU the workers and "
        "smtp-sink used per signed message\n   (Redis and SQLite not counted); CPU time measured on a busy machine "
        "runs high, so the ceiling is on the low side then.",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--workers", default="2,4", help="comma-separated worker concurrencies (default 2,4)")
    parser.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    parser.add_argument("--messages", type=int, default=300, help="messages signed by ours in part 1 (stock: a tenth)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (worker logs) and print its path"
    )
    args = parser.parse_args()
    revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    print(
        f"code {revision.stdout.strip() or 'unknown'}; {os.cpu_count()} CPUs, busy {bench_send.machine_busy():.0%} "
        f"before the bench (load average {os.getloadavg()[0]:.2f}): the figures assume nothing else runs\n",
        flush=True,
    )
    signing_cost(args.bits, args.messages)
    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if binary is None:
        print("2. skipped: smtp-sink is not installed (apt-get install postfix)")
        return 0
    signed_sends(binary, args.recipients, [int(n) for n in args.workers.split(",")], args.bits, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
