"""Benchmark: end-to-end send throughput on SQLite and PostgreSQL, next to a plain smtplib ceiling.

    python bench/bench_send.py [--recipients 100000] [--workers 2,4] [--database sqlite,postgresql] [--rounds 3]
                               [--million [--million-window S]] [--keep]

What it does, all in a temporary folder:

* starts Postfix's ``smtp-sink`` (a fast SMTP server that throws mail away and advertises
  PIPELINING) on a free 127.0.0.1 port; without it the bench says so and exits 0;
* for each database of ``--database`` (both by default, side by side in one run): creates the
  schema, a list of ``--recipients`` confirmed subscribers (CSV import) and the sample issue,
  on SQLite or on a throwaway PostgreSQL database (``BENCH_PG_URL``, default the local server's
  ``postgres`` database, says where to create it); the broker is the machine's Redis (db 14, or
  ``BENCH_REDIS_URL``; flushed before, between and after: two benches on one database would take
  each other's tasks) or, if unreachable, the embedded one;
* for each N in ``--workers``, ``--rounds`` times (3 by default): starts ``newsletter worker
  --concurrency N``, times a fresh ``newsletter send`` until the send is finished, checks that
  every delivery is logged as sent and that the sink received as many messages; then, as the
  ceiling, pushes as many copies of the SAME message (5,000 recipients' copies built once, as a
  worker builds them, and cycled) through N processes, each a bare ``smtplib.SMTP.sendmail``
  loop on one connection, into the same sink. The table shows the round with the median ratio
  and the line above it every round's: on this 2-core machine the same run's rate drifts by a
  tenth from one minute to the next, the ceiling's as much as the service's.

Reading the table:

  wall s      from just before `newsletter send` until the send is seen finished (polled
              every 0.1 s): CLI start-up (~0.5 s), render, snapshot, enqueue, worker warm-up, delivery.
  span s      finished_at - started_at stored on the send: from the snapshot to the last delivery.
  service/s   sent / wall s; span/s: sent / span s.
  smtplib/s   the ceiling: same message, same N, same sink, as many messages, nothing else to do
              (connections opened and greeted before its clock starts).
  ratio       service/s / smtplib/s; span ratio: span/s / smtplib/s. Goal: >= 0.9 at equal N.
  worker MB   the largest RSS of one worker process seen during the send (sampled every 0.1 s).

Each round also prints where the CPU went, per message, for the send and for its ceiling: the
worker's processes (from when it is ready), the `newsletter send` command, the database, Redis and
the sink (their processes' user + system time from /proc, sampled every 0.1 s), and smtplib's
senders. At N = 4 the machine's two cores are nearly saturated, so the ratio follows these sums;
they also drift less than the rates when the machine's speed does.

Why 100,000 recipients by default: the wall clock carries about a second that does not grow with
the list (the CLI's start-up, its render, the first batch's warm-up), which at 20,000 recipients
(4 s of delivery) alone cost a tenth of the ratio; at 100,000 the send lasts 20 s or so and the
wall ratio measures the send rate, with the span ratio beside it.

``--million`` then, on each database, makes a second list of 1,000,000 subscribers (on PostgreSQL
by SQL, the CSV import being bench_import.py's subject), and with a worker of the largest N running
times ``newsletter send`` (render, snapshot, enqueue; goal: snapshot < 10 s), lets the send finish
(or, with ``--million-window S``, measures S seconds of delivery and cancels) while sampling the RSS of
every worker process (goal < 150 MB each), compares the delivery rate with an smtplib ceiling measured
right after (goal >= 0.9), and on PostgreSQL prints the size of the deliveries table per row
(pg_total_relation_size / rows) after the snapshot and at the end.

Figures, not pass/fail. The sink, Redis, the database and the workers share the machine's
cores, so anything else running skews them: the machine's load before and after is printed.
``--keep`` keeps the temporary folder, with the worker logs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import database  # noqa: E402  (after the path is set)

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"
BATCH_SIZE = 500
#: Rounds per database and N (--rounds): each a send and its ceiling; the table shows the median one.
ROUNDS = 3
MILLION = 1_000_000


# --- services -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink:
    """smtp-sink on a free port; its ``-c`` counters ("sess=1 quit=0 mesg=N\\r") go to a file."""

    def __init__(self, binary: str, folder: Path, dump: Path | None = None) -> None:
        """With ``dump``, every message received is also written there, one file each (``-d``)."""
        self.port = free_port()
        self.counters = folder / "smtp-sink.out"
        command = [binary, "-c", f"127.0.0.1:{self.port}", "2000"]
        if dump is not None:  # a folder whose parent anyone may enter (smtp-sink writes as nobody, below)
            dump.mkdir(exist_ok=True)
            dump.chmod(0o777)
            command[1:1] = ["-d", f"{dump}/m."]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]  # smtp-sink refuses to run as root without -u
        self.proc = subprocess.Popen(command, stdout=open(self.counters, "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"smtp-sink did not start: {self.counters.read_text(errors='replace')}") from None
                time.sleep(0.05)

    def received(self) -> int:
        """Messages received so far."""
        time.sleep(0.2)  # let the last replies and counter lines land
        counts = re.findall(rb"mesg=(\d+)", self.counters.read_bytes()[-200:])
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


def system_redis() -> str | None:
    """The machine's Redis URL (its db 14, flushed), or None to use the embedded one."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).flushdb()
        return REDIS_URL
    except redis.RedisError:
        return None


def machine_busy(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time spent busy over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:8]]
        return sum(values), values[3] + values[4]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def memory_mb(pid: int, field: str) -> float:
    """A memory figure of a process from /proc/PID/status ("VmRSS": now, "VmHWM": its peak), in MB."""
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":")) / 1024


# --- the service, through its command line ----------------------------------------------


#: The process names (/proc/PID/stat) of the servers a send and its ceiling use, and their group in the figures.
SERVER_GROUPS = {"postgres": "database", "redis-server": "redis", "smtp-sink": "sink"}


class ServerCpu:
    """CPU seconds of the machine's database, Redis and SMTP-sink processes over a phase, by group.

    Each process's user + system time is read from /proc whenever :meth:`sample` is called; a process
    that exits between samples (a database backend of a stopped worker) keeps its last reading.
    """

    def __init__(self) -> None:
        self.start: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    head, _, rest = handle.read().rpartition(")")
            except OSError:
                continue
            group = SERVER_GROUPS.get(head.partition("(")[2])
            if group is None:
                continue
            fields = rest.split()
            seconds = (int(fields[11]) + int(fields[12])) / ticks  # as process_cpu
            pid = int(entry.name)
            if pid not in self.start:
                self.start[pid] = seconds if first else 0.0
            self.last[pid] = (group, seconds)

    def seconds(self) -> dict[str, float]:
        self.sample()
        totals: dict[str, float] = {}
        for pid, (group, seconds) in self.last.items():
            totals[group] = totals.get(group, 0.0) + seconds - self.start[pid]
        return totals


def process_cpu(pid: int) -> float:
    """A process's CPU seconds so far, user + system (/proc/PID/stat). Raises OSError when it is gone."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (and theirs), user + system."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """A `newsletter worker --concurrency N` process group, started in its own session."""

    def __init__(self, env: dict[str, str], folder: Path, concurrency: int) -> None:
        self.log = folder / f"worker-c{concurrency}-{time.strftime('%H%M%S')}.log"
        self.peaks: dict[int, float] = {}
        self.servers: ServerCpu | None = None  # sampled with the RSS while a send is timed
        self.cpu_first: dict[int, float] = {}  # each worker process's CPU seconds at its first sample
        self.cpu_last: dict[int, float] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker", "--concurrency", str(concurrency)],
            env=env,
            cwd=folder,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"worker did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The main process and its pool processes."""
        try:
            import psutil

            return [self.proc.pid] + [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except ImportError:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            return [self.proc.pid] + [int(c) for c in children]

    def sample(self) -> None:
        """Record each worker process's RSS; ``peaks`` keeps the highest seen, in MB, by pid."""
        if self.servers is not None:
            self.servers.sample()
        for pid in self.pids():
            with contextlib.suppress(OSError, StopIteration):
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), memory_mb(pid, "VmRSS"))
            with contextlib.suppress(OSError):
                seconds = process_cpu(pid)
                self.cpu_first.setdefault(pid, seconds)
                self.cpu_last[pid] = seconds

    def cpu_seconds(self) -> float:
        """CPU seconds the worker's processes spent between their first and last sample."""
        return sum(self.cpu_last[pid] - first for pid, first in self.cpu_first.items())

    def stop(self) -> Counter[str]:
        """Warm shutdown (SIGTERM to the main process; SIGKILL to the group after 30 s); returns its log's problems."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        problems: Counter[str] = Counter()
        for line in self.log.read_text(errors="replace").splitlines():
            if match := re.search(r"(WARNING|ERROR|CRITICAL)/\S+\] (.*)", line):
                text = re.sub(r"\[[0-9a-f-]{36}\]", "[...]", match[2])  # task ids
                problems[f"{match[1]}: " + re.sub(r"\b\d+\b", "N", text)[:160]] += 1
        return problems


class Newsletter:
    """Runs `newsletter ...` commands with one environment; reads the send table directly."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        from newsletter.config import Settings
        from newsletter.store import db

        self.folder = folder
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        self.env.update(env, PYTHONPATH=str(ROOT), COLUMNS="200")
        self.settings = Settings.from_environ(self.env)
        self.engine = db.make_engine(self.settings.database_url)
        self.sessions = db.session_factory(self.engine)

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "newsletter", *args], env=self.env, cwd=self.folder, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"`newsletter {' '.join(args)}` failed: {proc.stderr.strip().splitlines()[-1]}")
        return proc.stdout

    def create_list(self, slug: str, subscribers: int) -> float:
        """A list of confirmed subscribers imported from a generated CSV; returns the import's seconds."""
        self(
            "lists",
            "create",
            slug,
            "--name",
            "Info War Weekly",
            "--from-email",
            "news@example.org",
            "--from-name",
            "Info War",
        )
        path = self.folder / f"{slug}.csv"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("email,name\n")
            handle.writelines(f"reader{i:07d}@example{i % 50}.com,Reader Ünï {i}\n" for i in range(subscribers))
        started = time.perf_counter()
        self("subscribers", "import", slug, str(path), "--confirmed")
        elapsed = time.perf_counter() - started
        path.unlink()
        return elapsed

    def worker(self, concurrency: int, smtp_port: int) -> Worker:
        env = {
            **self.env,
            "NEWSLETTER_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "NEWSLETTER_BATCH_SIZE": str(BATCH_SIZE),
        }
        return Worker(env, self.folder, concurrency)

    def send(self, issue_id: str, while_running: Callable[[], None] = lambda: None) -> tuple[str, float, float]:
        """Run `newsletter send`; returns (send id, seconds, peak RSS of the command in MB)."""
        out, errors = self.folder / "send.out", self.folder / "send.err"
        peak = 0.0
        started = time.perf_counter()
        with open(out, "w") as stdout, open(errors, "w") as stderr:
            # --again: each run sends the same issue to the same list once more, on purpose.
            proc = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "send", issue_id, "--again"],
                env=self.env,
                cwd=self.folder,
                stdout=stdout,
                stderr=stderr,
            )
            while proc.poll() is None:
                # VmHWM, not wait4's ru_maxrss: that one starts from this (large) process's RSS at fork.
                with contextlib.suppress(OSError, StopIteration):
                    peak = max(peak, memory_mb(proc.pid, "VmHWM"))
                while_running()
                time.sleep(0.02)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"`newsletter send` failed: {errors.read_text().strip().splitlines()[-1]}")
        return out.read_text().split()[-1], elapsed, peak

    def status(self, send_id: str) -> dict:
        return json.loads(self("sends", "status", send_id, "--json"))

    def send_row(self, send_id: str):
        """The send's (status, started_at, finished_at), at full precision."""
        from newsletter.store.models import Send

        with self.sessions() as session:
            send = session.get(Send, int(send_id))
            assert send is not None
            return send.status, send.started_at, send.finished_at


def print_problems(problems: Counter[str]) -> None:
    for text, count in problems.most_common(6):
        print(f"    worker log: {count} x {text}")


# --- the ceiling: plain smtplib over N connections ----------------------------------------

_MESSAGES: list[tuple[str, bytes]] = []  # (recipient, wire bytes), inherited by the forked senders
_SENDER = ""
#: Distinct copies built for the ceiling; a longer run cycles through them (a copy is ~19 kB).
CEILING_COPIES = 5_000


def build_messages(nl: Newsletter, send_id: str) -> None:
    """The first CEILING_COPIES recipients' copies of the stored send, built by the worker's own code."""
    from sqlalchemy import select

    from newsletter.delivery.ports import Claimed
    from newsletter.mail.messages import ascii_address
    from newsletter.runtime import Runtime
    from newsletter.store.models import Delivery, Send, Subscriber
    from newsletter.worker.app import WorkerState

    global _SENDER
    worker = WorkerState(Runtime(nl.settings), os.getpid())
    with nl.sessions() as session:
        send = session.get(Send, int(send_id))
        assert send is not None
        message = worker.message_for(session, send)
        rows = session.execute(
            select(Delivery.id, Delivery.subscriber_id, Delivery.email, Subscriber.name, Delivery.attempts)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(Delivery.send_id == send.id)
            .order_by(Delivery.id)
            .limit(CEILING_COPIES)
        )
        for row in rows:
            _, data = message.build(worker.recipients(message, send, Claimed(*row)))
            _MESSAGES.append((ascii_address(row.email), data))
    _SENDER = message.envelope_from


def _smtplib_sender(port: int, first: int, last: int, barrier, done) -> None:
    client = smtplib.SMTP("127.0.0.1", port)
    client.ehlo()
    barrier.wait(60)
    copies = len(_MESSAGES)
    for i in range(first, last):
        rcpt, data = _MESSAGES[i % copies]
        client.sendmail(_SENDER, [rcpt], data)
    done.put(time.perf_counter())
    client.quit()


def smtplib_ceiling(port: int, processes: int, messages: int) -> float:
    """Messages per second: ``messages`` pre-built copies split over ``processes`` smtplib connections."""
    context = multiprocessing.get_context("fork")
    barrier, done = context.Barrier(processes + 1), context.Queue()
    share = -(-messages // processes)
    slices = [(i * share, min(messages, (i + 1) * share)) for i in range(processes)]
    senders = [context.Process(target=_smtplib_sender, args=(port, *part, barrier, done)) for part in slices]
    for sender in senders:
        sender.start()
    barrier.wait(60)  # every connection is open and greeted
    started = time.perf_counter()
    finished = max(done.get(timeout=1200) for _ in senders)
    for sender in senders:
        sender.join(30)
    return messages / (finished - started)


# --- the runs ------------------------------------------------------------------------------


def timed_send(nl: Newsletter, issue_id: str, worker: Worker) -> dict:
    started = time.perf_counter()
    send_id, _, _ = nl.send(issue_id)
    while (row := nl.send_row(send_id))[0] == "sending":
        if time.perf_counter() - started > 1200:
            raise RuntimeError(f"send {send_id} not finished after 1200 s: {nl.status(send_id)}")
        worker.sample()
        time.sleep(0.1)
    wall = time.perf_counter() - started
    _, started_at, finished_at = row
    result = nl.status(send_id)
    result["wall"] = wall
    result["span"] = (finished_at - started_at).total_seconds() if finished_at else float("nan")
    return result


Row = tuple[str, int, float, float, float, float, float, float]  # database, N, wall, span, service/s, ...


def throughput(
    nl: Newsletter, sink: Sink, concurrencies: list[int], recipients: int, database_kind: str, rounds: int
) -> list[Row]:
    nl("db", "upgrade")
    seconds = nl.create_list("weekly", recipients)
    issue_id = nl("issues", "create", "weekly", str(SAMPLE_ISSUE)).split()[-1]
    print(
        f"{database_kind}: {recipients:,} recipients (import: {seconds:.1f} s), broker "
        f"{nl.settings.broker_url or 'embedded Redis'}, smtp-sink on 127.0.0.1:{sink.port}, batch size {BATCH_SIZE}",
        flush=True,
    )
    rows: list[Row] = []
    for n in concurrencies:
        measured = [_round(nl, sink, issue_id, n, r, database_kind) for r in range(1, max(1, rounds) + 1)]
        # Each figure is the round with the median ratio: the machine's speed drifts by a tenth from one
        # minute to the next (the smtplib ceiling alone, run twice, differs by that much), and each round
        # measures the service and its ceiling one right after the other, so their ratio drifts less.
        measured.sort(key=lambda row: row[4] / row[6])
        median = measured[len(measured) // 2]
        if len(measured) > 1:
            ratios = ", ".join(f"{row[4] / row[6]:.2f}" for row in measured)
            print(
                f"  N={n}: ratios of the {len(measured)} rounds {ratios}; the table shows the median round", flush=True
            )
        rows.append(median)
    return rows


def _round(nl: Newsletter, sink: Sink, issue_id: str, n: int, number: int, database_kind: str) -> Row:
    """One send of the issue by a fresh worker of concurrency ``n``, then the smtplib ceiling for as many."""
    worker = nl.worker(n, sink.port)
    try:
        before = sink.received()
        worker.servers = ServerCpu()
        worker.sample()  # the worker is ready and idle: its start-up is not counted
        children_before = children_cpu()
        result = timed_send(nl, issue_id, worker)
        service_cpu = worker.servers.seconds()
        service_cpu["workers"] = worker.cpu_seconds()
        service_cpu["send command"] = children_cpu() - children_before  # `newsletter send`, waited for
        received = sink.received() - before
    finally:
        problems = worker.stop()
    if not _MESSAGES:
        build_messages(nl, str(result["id"]))
    sent, total = result["sent"], result["total"]
    before = sink.received()
    servers, children_before = ServerCpu(), children_cpu()
    ceiling = smtplib_ceiling(sink.port, n, sent)
    ceiling_cpu = servers.seconds()
    ceiling_cpu["smtplib"] = children_cpu() - children_before
    ceiling_received = sink.received() - before
    rate = sent / result["wall"]
    print(
        f"  N={n} round {number}: send {result['id']} {result['status']}: sent {sent:,} of {total:,} (failed "
        f"{result['failed']}, pending {result['pending']}, skipped {result['skipped']}); the sink got {received:,} "
        f"from the service and {ceiling_received:,} from smtplib; {rate:,.0f} against {ceiling:,.0f} msg/s = "
        f"{rate / ceiling:.2f}",
        flush=True,
    )
    if sent != total or received != total or ceiling_received != sent:
        print("    !! MISMATCH: not every delivery is logged as sent, or the sink's count differs")
    print_problems(problems)
    print(f"    CPU per message: service {_per_message(service_cpu, sent)}; ceiling {_per_message(ceiling_cpu, sent)}")
    rss = max(worker.peaks.values(), default=float("nan"))
    return (database_kind, n, result["wall"], result["span"], rate, sent / result["span"], ceiling, rss)


def _per_message(seconds: dict[str, float], messages: int) -> str:
    """Each group's CPU per message, then the sum: "workers 190, database 45, ... = 330 µs"."""
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    groups = [(group, 1e6 * spent / max(1, messages)) for group, spent in ranked if spent > 0]
    return ", ".join(f"{group} {us:.0f}" for group, us in groups) + f" = {sum(us for _, us in groups):.0f} µs"


def print_table(rows: list[Row]) -> None:
    size = sum(len(data) for _, data in _MESSAGES) / max(1, len(_MESSAGES))
    print(f"\nmessage size: {size / 1000:.1f} kB on average\n")
    print(
        f"{'database':<11}{'N':>3} {'wall s':>7} {'span s':>7} {'service/s':>10} {'span/s':>8} {'smtplib/s':>10} "
        f"{'ratio':>6} {'span ratio':>11} {'worker MB':>10}"
    )
    for kind, n, wall, span, service, per_span, ceiling, rss in rows:
        print(
            f"{kind:<11}{n:>3} {wall:>7.2f} {span:>7.2f} {service:>10,.0f} {per_span:>8,.0f} {ceiling:>10,.0f} "
            f"{service / ceiling:>6.2f} {per_span / ceiling:>11.2f} {rss:>10.0f}"
        )
    print("goals: ratio >= 0.90 of the smtplib ceiling at equal N, on both databases", flush=True)


def million_list(nl: Newsletter, database_kind: str) -> float:
    """The list of a million confirmed subscribers; returns the seconds it took.

    On PostgreSQL it is written by SQL (generate_series): this bench is about sending, and the CSV import of a
    million rows is measured by bench_import.py. Elsewhere through `subscribers import`.
    """
    if database_kind != "postgresql":
        return nl.create_list("million", MILLION)
    from sqlalchemy import text

    nl("lists", "create", "million", "--name", "A Million", "--from-email", "news@example.org")
    started = time.perf_counter()
    with nl.engine.begin() as conn:
        list_id = conn.execute(text("SELECT id FROM mailing_lists WHERE slug = 'million'")).scalar_one()
        first = conn.execute(text("SELECT coalesce(max(id), 0) FROM subscribers")).scalar_one() + 1
        conn.execute(
            text(
                "INSERT INTO subscribers (id, email, name, attributes, created_at, updated_at) "
                "SELECT :first + i, 'million' || lpad(i::text, 7, '0') || '@example' || (i % 50) || '.com', "
                "'Reader Ünï ' || i, '{}'::jsonb, now(), now() FROM generate_series(0, :n - 1) AS i"
            ),
            {"first": first, "n": MILLION},
        )
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('subscribers', 'id'), :last)"), {"last": first + MILLION}
        )
        conn.execute(
            text(
                "INSERT INTO subscriptions (list_id, subscriber_id, status, source, requested_at, confirmed_at, updated_at)"
                " SELECT :list, id, 'confirmed', 'import', now(), now(), now() FROM subscribers WHERE id >= :first"
            ),
            {"list": list_id, "first": first},
        )
    with nl.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE subscribers, subscriptions"))
    return time.perf_counter() - started


def deliveries_size(nl: Newsletter) -> str:
    """The deliveries table's size per row on PostgreSQL: pg_total_relation_size (table, indexes, TOAST) / rows."""
    from sqlalchemy import text

    with nl.engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one()
        total, heap = conn.execute(
            text("SELECT pg_total_relation_size('deliveries'), pg_relation_size('deliveries')")
        ).one()
        dead = conn.execute(
            text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'deliveries'")
        ).scalar_one()
    return (
        f"{rows:,} rows, {total / 1e6:,.0f} MB with its indexes = {total / rows:,.0f} bytes a row "
        f"(the table alone {heap / rows:,.0f}; {dead:,} dead row versions not yet vacuumed)"
    )


def million(nl: Newsletter, sink: Sink, concurrency: int, database_kind: str, window: float | None) -> None:
    print(f"\n--million: {MILLION:,} subscribers on {database_kind}, worker --concurrency {concurrency}", flush=True)
    seconds = million_list(nl, database_kind)
    issue_id = nl("issues", "create", "million", str(SAMPLE_ISSUE)).split()[-1]
    print(f"  the list: {seconds:.1f} s", flush=True)
    worker = nl.worker(concurrency, sink.port)
    try:
        send_id, send_seconds, send_rss = nl.send(issue_id, while_running=worker.sample)
        delivering = time.perf_counter()
        print(
            f"  newsletter send (render, snapshot, enqueue): {send_seconds:.1f} s (goal: snapshot < 10 s); "
            f"its peak RSS {send_rss:.0f} MB",
            flush=True,
        )
        first = nl.status(send_id)
        if database_kind == "postgresql":
            print(f"  deliveries after the snapshot: {deliveries_size(nl)}", flush=True)
        measured_from = time.perf_counter()
        while (row := nl.send_row(send_id))[0] == "sending":
            elapsed = time.perf_counter() - delivering
            if elapsed > (window or 3600):
                break
            worker.sample()
            time.sleep(0.5)
        last, measured = nl.status(send_id), time.perf_counter() - measured_from
        if last["status"] == "sending":
            nl("sends", "cancel", send_id)
    finally:
        problems = worker.stop()
    delivered = last["sent"] - first["sent"]
    rate = delivered / measured
    _, started_at, finished_at = row
    ceiling = smtplib_ceiling(sink.port, concurrency, min(200_000, max(delivered, 20_000)))
    print(
        f"  send {send_id}: sent {last['sent']:,} of {last['total']:,}, status {nl.status(send_id)['status']}"
        + ("" if last["status"] == "finished" else f" (cancelled after a {window:.0f} s window)")
    )
    print(f"  delivery: {delivered:,} in {measured:.1f} s = {rate:,.0f} msg/s", end="")
    if finished_at is not None and last["status"] == "finished":
        span = (finished_at - started_at).total_seconds()
        print(f"; span (snapshot to last delivery) {span:.1f} s = {last['sent'] / span:,.0f} msg/s", end="")
    print(
        f"\n  smtplib ceiling at N={concurrency}, right after: {ceiling:,.0f} msg/s; ratio {rate / ceiling:.2f} (goal >= 0.90)"
    )
    peaks = worker.peaks
    each = ", ".join(f"{mb:.0f}" for _, mb in sorted(peaks.items()))
    print(f"  worker RSS, peak of each process (main first): {each} MB")
    print(f"  largest: {max(peaks.values()):.0f} MB (goal < 150 MB)")
    if database_kind == "postgresql":
        print(f"  deliveries at the end: {deliveries_size(nl)}")
    print_problems(problems)


def run_database(
    kind: str,
    tmp: Path,
    sink: Sink,
    broker: str | None,
    concurrencies: list[int],
    recipients: int,
    with_million: bool,
    window: float | None,
    rounds: int = ROUNDS,
) -> list[Row]:
    var_dir = tmp / f"var-{kind}"
    with database(kind, var_dir) as database_url:
        env = {
            "NEWSLETTER_VAR_DIR": str(var_dir),
            "NEWSLETTER_DATABASE_URL": database_url,
            "NEWSLETTER_BASE_URL": "https://news.example.org",
            "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
            "NEWSLETTER_SECRET_KEY": "bench-secret-key-0123456789abcdefgh",
        }
        if broker:
            env["NEWSLETTER_BROKER_URL"] = broker
        folder = tmp / kind
        folder.mkdir()
        nl = Newsletter(folder, env)
        try:
            rows = throughput(nl, sink, concurrencies, recipients, kind, rounds)
            if with_million:
                million(nl, sink, max(concurrencies), kind, window)
            return rows
        finally:
            nl.engine.dispose()
            if not broker:
                from newsletter.devtools import embedded_redis

                embedded_redis.stop(var_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", default="2,4", help="comma-separated worker concurrencies (default 2,4)")
    parser.add_argument(
        "--database", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql (default both)"
    )
    parser.add_argument("--million", action="store_true", help="also measure a 1,000,000-recipient send (slow)")
    parser.add_argument(
        "--million-window",
        type=float,
        default=None,
        help="seconds of the million's delivery to measure, then cancel (default: until it finishes)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"rounds (a send, then its ceiling) per database and N (default {ROUNDS})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (worker logs) and print its path"
    )
    args = parser.parse_args()
    concurrencies = [int(n) for n in args.workers.split(",")]
    kinds = [k.strip() for k in args.database.split(",")]
    if unknown := set(kinds) - {"sqlite", "postgresql"}:
        parser.error(f"--database: unknown {', '.join(sorted(unknown))}; use sqlite, postgresql or both")

    binary = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if binary is None:
        print(
            "smtp-sink is not installed, so there is nothing to measure against; "
            "install it with: apt-get install postfix"
        )
        return 0
    revision = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    print(
        f"code {revision.stdout.strip() or 'unknown'}; {os.cpu_count()} CPUs, busy {machine_busy():.0%} before the "
        f"bench (load average {os.getloadavg()[0]:.2f}): the figures assume nothing else runs",
        flush=True,
    )

    folder = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-send-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="bench-send-")
    )
    with folder as name:
        tmp = Path(name)
        if args.keep:
            print(f"keeping {tmp}")
        broker = system_redis()
        sink = Sink(binary, tmp)
        rows: list[Row] = []
        try:
            for kind in kinds:
                rows += run_database(
                    kind,
                    tmp,
                    sink,
                    broker,
                    concurrencies,
                    args.recipients,
                    args.million,
                    args.million_window,
                    args.rounds,
                )
                if broker:
                    system_redis()  # flush db 14 between the databases
        finally:
            sink.stop()
            if broker:
                system_redis()  # flush db 14 again
        print_table(rows)
        print(f"machine: busy {machine_busy():.0%} after the bench (load average {os.getloadavg()[0]:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
