"""`make cluster-test`: a 100,000-recipient send across several hosts, with a host lost and Redis restarted.

One machine plays five hosts, each a Linux network namespace with its own address on a bridge
(``nlc0``, 10.77.0.0/24) and, for the workers, its own hostname (a UTS namespace):

    controller  10.77.0.1  this process (the root namespace): CLI commands, the timeline, the checks
    db          10.77.0.2  a throwaway PostgreSQL cluster (initdb in a temp dir) and Redis (appendonly)
    w1          10.77.0.3  `newsletter worker --concurrency 2`
    w2          10.77.0.4  `newsletter worker --concurrency 2`: cut off and killed mid-send
    sink        10.77.0.5  tests/cluster/smtp_sink.py: records each message's recipient and Message-ID

The controller creates the schema, imports 100,000 subscribers from a CSV file, creates the
sample issue and starts the send. Once a quarter of the messages are out it takes w2's link
down and kills its worker processes with SIGKILL (their claims must expire and their rows come
back to w1); at half way it restarts Redis (SIGTERM, then a new server on the same append-only
file). When the send has finished it checks that every recipient got exactly one copy, except
at most one duplicate per killed worker process, that the sink's Message-IDs are the delivery
log's, and that every delivery is logged 'sent'; then it prints the timeline.

Needs root, `ip netns`, PostgreSQL's server binaries and redis-server; without them it prints
why and exits 0 (1 when CI=true). Everything it starts (namespaces, the bridge, processes, the
temp dir) is removed on exit, failure or Ctrl-C included. Environment knobs:
CLUSTER_RECIPIENTS (100000), CLUSTER_TIMEOUT (seconds for the send, 900), CLUSTER_KEEP=1
(keep the temp dir with every log).
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
NEWSLETTER = str(VENV_BIN / "newsletter")
PYTHON = str(VENV_BIN / "python")
SINK_SCRIPT = str(Path(__file__).with_name("smtp_sink.py"))
ISSUE_FILE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"

BRIDGE = "nlc0"
SUBNET = "10.77.0"
CONTROLLER_ADDR = f"{SUBNET}.1"
PG_PORT = 5432
REDIS_PORT = 6379
SMTP_PORT = 2525
CONCURRENCY = 2
RECIPIENTS = int(os.environ.get("CLUSTER_RECIPIENTS", "100000"))
SEND_TIMEOUT = float(os.environ.get("CLUSTER_TIMEOUT", "900"))
CUT_AT = 0.25  # share of the messages out when w2 is cut off and killed
REDIS_RESTART_AT = 0.50  # share of the messages out when Redis restarts
SECRET_KEY = "cluster-test-secret-key-0123456789abcdef0123456789"


@dataclass(frozen=True)
class Host:
    name: str
    addr: str

    @property
    def netns(self) -> str:
        return f"nlc-{self.name}"


DB = Host("db", f"{SUBNET}.2")
W1 = Host("w1", f"{SUBNET}.3")
W2 = Host("w2", f"{SUBNET}.4")
SINK = Host("sink", f"{SUBNET}.5")
HOSTS = (DB, W1, W2, SINK)


class ClusterFailure(Exception):
    """The run went wrong or a check failed: the message says what."""


# --- the timeline ---------------------------------------------------------------------


@dataclass
class Timeline:
    t0: float | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def mark(self, text: str) -> None:
        now = time.monotonic()
        self.events.append((now, text))
        print(f"[cluster {self.clock(now)}] {text}", flush=True)

    def add_logged(self, wall: float, text: str) -> None:
        """An event a worker logged (at ``wall``, seconds since the epoch), put in its place in the timeline."""
        self.events.append((wall - time.time() + time.monotonic(), text))
        self.events.sort(key=lambda event: event[0])

    def clock(self, moment: float) -> str:
        if self.t0 is None or moment < self.t0:
            return f"setup +{moment - self.started:6.1f}s"
        return f"t={moment - self.t0:6.1f}s"

    def render(self) -> str:
        lines = ["", "Timeline (setup, then t=0: the send started)"]
        lines += [f"  {self.clock(moment):>15}  {text}" for moment, text in self.events]
        return "\n".join(lines)


# --- running things -------------------------------------------------------------------


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600, check: bool = True) -> str:
    """Run a command to its end; its stdout, or ClusterFailure naming the command and its stderr."""
    done = subprocess.run(list(cmd), env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ClusterFailure(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr.strip()}\n{done.stdout.strip()}")
    return done.stdout


def in_netns(host: Host, cmd: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", host.netns, *cmd]


def as_hostname(host: Host, cmd: Sequence[str]) -> list[str]:
    """``cmd`` in a UTS namespace of its own named after the host (claims name their host)."""
    return ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host.name, *cmd]


def as_postgres(cmd: Sequence[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]


@dataclass
class Proc:
    """A long-running process in its own process group, its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        if self.alive():
            self.signal_group(sig)
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(10)
        self.signal_group(signal.SIGKILL)  # stragglers of the group (a pool child whose parent is gone)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in text[-lines:])


def pids_in_group(pgid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):  # fields: state ppid pgrp ...
            found.append(int(Path(stat).parent.name))
    return found


def wait_for(what: str, ready: Callable[[], bool], timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and not proc.alive():
            raise ClusterFailure(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        time.sleep(0.2)
    raise ClusterFailure(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{proc.tail()}" if proc else ""))


# --- the cluster ----------------------------------------------------------------------


class Cluster:
    def __init__(self, stack: contextlib.ExitStack, workdir: Path, timeline: Timeline) -> None:
        self.stack = stack
        self.dir = workdir
        self.timeline = timeline
        self.procs: list[Proc] = []
        self.workers: dict[str, Proc] = {}
        self.redis: Proc | None = None
        self.sink: Proc | None = None
        self.record = workdir / "sink" / "record.tsv"
        self.database_url = f"postgresql://newsletter@{DB.addr}:{PG_PORT}/newsletter"
        self.broker_url = f"redis://{DB.addr}:{REDIS_PORT}/0"
        stack.callback(remove_network)  # runs after the processes are stopped (an ExitStack unwinds last first)
        stack.callback(self._stop_all)

    # network

    def build_network(self) -> None:
        remove_network()  # a run killed before its clean-up left them behind
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{CONTROLLER_ADDR}/24", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        for host in HOSTS:
            outside, inside = f"nlc-{host.name}-o", f"nlc-{host.name}-i"
            run(["ip", "netns", "add", host.netns])
            run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
            run(["ip", "link", "set", outside, "master", BRIDGE, "up"])
            run(["ip", "link", "set", inside, "netns", host.netns])
            run(["ip", "-n", host.netns, "link", "set", inside, "name", "eth0"])
            run(["ip", "-n", host.netns, "addr", "add", f"{host.addr}/24", "dev", "eth0"])
            run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
            run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        self.timeline.mark(f"network: bridge {BRIDGE}, hosts " + ", ".join(f"{h.name}={h.addr}" for h in HOSTS))

    def cut(self, host: Host) -> None:
        run(["ip", "-n", host.netns, "link", "set", "eth0", "down"])

    # processes

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.dir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.dir
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _stop_all(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not leave the rest running
        workers_first = sorted(reversed(self.procs), key=lambda proc: not proc.name.startswith("worker"))
        for proc in workers_first:
            try:
                proc.stop(signal.SIGTERM, wait=15)
            except Exception as exc:  # stop the others all the same
                print(f"cluster clean-up: stopping {proc.name} failed: {exc}", file=sys.stderr)
                proc.signal_group(signal.SIGKILL)

    def start_postgres(self) -> None:
        data, sockets = self.dir / "pg" / "data", self.dir / "pg" / "run"
        for path in (data.parent, data, sockets):
            path.mkdir(exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        bindir = postgres_bindir()
        run(as_postgres([f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]))
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        settings = {
            "listen_addresses": DB.addr,
            "port": str(PG_PORT),
            "unix_socket_directories": str(sockets),
            "max_connections": "200",
            # A throwaway cluster: no crash safety needed, and the machine is small.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # A host whose network is cut never closes its connections: the server must notice the
            # silent peer, or a transaction it had open keeps its row locks (docs: README,
            # "Running workers on several machines").
            "tcp_keepalives_idle": "10",
            "tcp_keepalives_interval": "5",
            "tcp_keepalives_count": "3",
            # Keepalives only probe a quiet connection: one whose peer vanished with a reply not yet
            # acknowledged is retransmitted to for up to 15 minutes unless this bounds it.
            "tcp_user_timeout": "30000",
        }
        args = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        proc = self.start("postgres", in_netns(DB, as_postgres([f"{bindir}/postgres", "-D", str(data), *args])))
        wait_for("PostgreSQL", lambda: pg_ready(DB.addr), 60, proc)
        import psycopg

        with psycopg.connect(f"postgresql://postgres@{DB.addr}:{PG_PORT}/postgres", autocommit=True) as conn:
            conn.execute("CREATE ROLE newsletter LOGIN")
            conn.execute("CREATE DATABASE newsletter OWNER newsletter")
        self.timeline.mark(f"db host: PostgreSQL {bindir.split('/')[-2]} at {DB.addr}:{PG_PORT} (initdb in {data})")

    def start_redis(self, *, again: bool = False) -> None:
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        cmd = [
            "redis-server",
            "--bind", DB.addr,
            "--port", str(REDIS_PORT),
            "--protected-mode", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--dir", str(data),
        ]  # fmt: skip
        self.redis = self.start("redis" + ("-again" if again else ""), in_netns(DB, cmd))
        wait_for("Redis", lambda: redis_ready(self.broker_url), 60, self.redis)

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.stop(signal.SIGTERM, wait=30)

    def start_sink(self) -> None:
        self.record.parent.mkdir(exist_ok=True)
        self.record.touch()
        cmd = [PYTHON, SINK_SCRIPT, "--host", SINK.addr, "--port", str(SMTP_PORT), "--record", str(self.record)]
        self.sink = self.start("sink", in_netns(SINK, cmd))
        wait_for("the SMTP sink", lambda: "listening" in self.sink.log.read_text(), 30, self.sink)  # type: ignore[union-attr]

    def app_env(self, var_dir: Path) -> dict[str, str]:
        var_dir.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(
            NEWSLETTER_DATABASE_URL=self.database_url,
            NEWSLETTER_BROKER_URL=self.broker_url,
            NEWSLETTER_SMTP_URL=f"smtp://{SINK.addr}:{SMTP_PORT}",
            NEWSLETTER_SECRET_KEY=SECRET_KEY,
            NEWSLETTER_VAR_DIR=str(var_dir),
            NEWSLETTER_BASE_URL="https://news.example.org",
            NEWSLETTER_POSTAL_ADDRESS="Info War Weekly, 1 Example Street, 12345 Example City",
            NEWSLETTER_LOG_FORMAT="text",
        )
        return env

    def start_worker(self, host: Host) -> None:
        env = self.app_env(self.dir / f"var-{host.name}")
        cmd = in_netns(host, as_hostname(host, [NEWSLETTER, "worker", "--concurrency", str(CONCURRENCY)]))
        proc = self.start(f"worker-{host.name}", cmd, env)
        self.workers[host.name] = proc
        wait_for(f"the worker on {host.name}", lambda: " ready" in proc.log.read_text(errors="replace"), 120, proc)

    def kill_host_workers(self, host: Host) -> list[int]:
        """SIGKILL every process of the host's worker (its main process and pool); returns their pids."""
        proc = self.workers[host.name]
        pids = pids_in_group(proc.popen.pid)
        proc.signal_group(signal.SIGKILL)
        proc.popen.wait(30)
        return pids

    def newsletter(self, *args: str, timeout: float = 600) -> str:
        return run([NEWSLETTER, *args], env=self.app_env(self.dir / "var-controller"), timeout=timeout)

    def sink_lines(self) -> int:
        with open(self.record, "rb") as record:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: record.read(1 << 20), b""))


def remove_network() -> None:
    for host in HOSTS:
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"nlc-{host.name}-o"], capture_output=True)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def postgres_bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if not found:
        raise ClusterFailure("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return str(Path(found[-1]).parent)


def pg_ready(addr: str) -> bool:
    import psycopg

    try:
        psycopg.connect(f"postgresql://postgres@{addr}:{PG_PORT}/postgres", connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def redis_ready(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())  # raises BusyLoadingError while it reads its append-only file
    except redis.RedisError:
        return False
    finally:
        client.close()


def missing_prerequisites() -> str | None:
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns, setpriv)"
    for tool in ("ip", "unshare", "setpriv", "redis-server"):
        if shutil.which(tool) is None:
            return f"needs {tool} on PATH"
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return "needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin/initdb)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` does not work here"
    if not Path(NEWSLETTER).exists():
        return f"needs the project installed in {VENV_BIN.parent} (make install)"
    return None


# --- the scenario ---------------------------------------------------------------------


def write_subscribers(path: Path, count: int) -> set[str]:
    emails = set()
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name"])
        for i in range(count):
            email = f"reader{i:06d}@mail{i % 97:02d}.example.net"
            writer.writerow([email, f"Reader {i}"])
            emails.add(email)
    return emails


@dataclass
class Outcome:
    killed: list[int]
    killed_pool: int
    send_id: int
    finished: float


def scenario(cluster: Cluster, timeline: Timeline) -> tuple[set[str], Outcome]:
    cluster.build_network()
    cluster.start_postgres()
    cluster.start_redis()
    timeline.mark(f"db host: Redis at {DB.addr}:{REDIS_PORT}, appendonly yes (appendfsync everysec)")
    cluster.start_sink()
    timeline.mark(f"sink host: SMTP sink at {SINK.addr}:{SMTP_PORT}")

    cluster.newsletter("db", "upgrade")
    cluster.newsletter("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    csv_path = cluster.dir / "subscribers.csv"
    emails = write_subscribers(csv_path, RECIPIENTS)
    started = time.monotonic()
    cluster.newsletter("subscribers", "import", "weekly", str(csv_path), "--confirmed", timeout=1200)
    timeline.mark(
        f"controller: schema created, {RECIPIENTS} subscribers imported in {time.monotonic() - started:.1f} s"
    )
    issue = cluster.newsletter("issues", "create", "weekly", str(ISSUE_FILE)).strip().splitlines()[-1]

    for host in (W1, W2):
        cluster.start_worker(host)
        timeline.mark(f"{host.name}: `newsletter worker --concurrency {CONCURRENCY}` ready (hostname {host.name})")

    timeline.t0 = time.monotonic()
    timeline.mark(f"send started: `newsletter send {issue}` to {RECIPIENTS} recipients")
    send_id = int(cluster.newsletter("send", issue).strip().splitlines()[-1])
    timeline.mark(f"send {send_id} queued (snapshot taken, batches queued)")

    killed: list[int] = []
    killed_pool = 0
    redis_restarted = False
    deadline = time.monotonic() + SEND_TIMEOUT
    last_report = time.monotonic()
    while True:
        out = cluster.sink_lines()
        if not killed and out >= RECIPIENTS * CUT_AT:
            cluster.cut(W2)
            timeline.mark(f"host w2 cut: eth0 down ({out} messages at the sink)")
            main_pid = cluster.workers["w2"].popen.pid
            killed = cluster.kill_host_workers(W2)
            killed_pool = len([pid for pid in killed if pid != main_pid])
            timeline.mark(f"w2 workers killed with SIGKILL: {len(killed)} processes ({killed_pool} pool processes)")
        if killed and not redis_restarted and out >= RECIPIENTS * REDIS_RESTART_AT:
            before = redis_keys(cluster.broker_url)
            timeline.mark(f"Redis restart: SIGTERM ({out} messages at the sink; {before} keys in Redis)")
            cluster.stop_redis()
            timeline.mark("Redis stopped")
            cluster.start_redis(again=True)
            redis_restarted = True
            after = redis_keys(cluster.broker_url)
            timeline.mark(f"Redis started again from its append-only file: {after} keys")
            if before and not after:
                raise ClusterFailure("Redis came back empty: its append-only file was not read")
        if not cluster.workers["w1"].alive():
            raise ClusterFailure(f"the worker on w1 exited:\n{cluster.workers['w1'].tail(40)}")
        status = send_status(cluster.database_url, send_id)
        if status == "finished":
            finished = time.monotonic()
            timeline.mark(f"send finished ({cluster.sink_lines()} messages at the sink)")
            break
        if status not in ("sending", "scheduled"):
            raise ClusterFailure(f"send {send_id} is {status}:\n{cluster.newsletter('sends', 'status', str(send_id))}")
        if time.monotonic() > deadline:
            raise ClusterFailure(
                f"send {send_id} did not finish within {SEND_TIMEOUT:.0f} s; its status:\n"
                + run(
                    [NEWSLETTER, "sends", "status", str(send_id)],
                    env=cluster.app_env(cluster.dir / "var-controller"),
                    check=False,
                )
                + f"\nworker w1's log:\n{cluster.workers['w1'].tail(40)}"
            )
        if time.monotonic() - last_report >= 15:
            last_report = time.monotonic()
            timeline.mark(f"progress: {out} messages at the sink, send {status}")
        time.sleep(0.5)
    if not killed or not redis_restarted:
        raise ClusterFailure("the send finished before the host was cut and Redis restarted: the run proves nothing")
    return emails, Outcome(killed, killed_pool, send_id, finished)


def redis_keys(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def send_status(database_url: str, send_id: int) -> str:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        row = conn.execute("SELECT status FROM sends WHERE id = %s", (send_id,)).fetchone()
    return str(row[0]) if row else "missing"


def read_record(path: Path) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as record:
        for line in record:
            recipient, _, message_id = line.rstrip("\n").partition("\t")
            rows.append((recipient, message_id.strip("<>")))
    return rows


#: What the surviving worker logs about taking over the dead host's work (newsletter.worker's messages).
_TAKEOVER = re.compile(r"re-queueing \d+ batch|released \d+ deliveries|Connection to broker lost|recovered=[1-9]")


def worker_events(log: Path) -> Iterator[tuple[float, str]]:
    """The takeover lines of a worker's log (text format: ``2026-12-05 21:57:24,594 LEVEL logger: message``)."""
    for line in log.read_text(errors="replace").splitlines():
        if _TAKEOVER.search(line) is None:
            continue
        try:
            logged = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        message = line[24:].split(": ", 1)[-1]
        found = re.search(r"(batch \d+-\d+): BatchResult\(.*(recovered=\d+)", message)
        if found:
            message = f"{found.group(1)}: {found.group(2)} from the Redis journal (sent by a dead worker, not resent)"
        yield logged.timestamp(), message


def check(cluster: Cluster, emails: set[str], outcome: Outcome, timeline: Timeline) -> list[str]:
    """The assertions; returns the summary lines. Raises ClusterFailure naming what is wrong."""
    assert cluster.sink is not None
    cluster.sink.stop(signal.SIGTERM, wait=30)  # flushes the record
    for wall, text in worker_events(cluster.workers["w1"].log):
        timeline.add_logged(wall, f"w1 logged: {text}")
    record = read_record(cluster.record)
    copies = Counter(recipient for recipient, _ in record)
    strangers = set(copies) - emails
    missing = emails - set(copies)
    doubled = {r: n for r, n in copies.items() if n > 1}
    duplicates = sum(n - 1 for n in doubled.values())
    allowed = outcome.killed_pool

    log_csv = cluster.newsletter("sends", "log", str(outcome.send_id), "--csv", timeout=600)
    log_rows = list(csv.DictReader(log_csv.splitlines()))
    statuses = Counter(row["status"] for row in log_rows)
    logged_ids = {row["email"]: (row["message_id"] or "").strip("<>") for row in log_rows}
    foreign_ids = [(r, m) for r, m in record if r in logged_ids and logged_ids[r] != m]

    summary = [
        f"Recipients: {len(emails)}; messages at the sink: {len(record)}; distinct recipients: {len(copies)}",
        f"Duplicates: {duplicates} (allowed: at most {allowed}, one per killed worker process)"
        + (": " + ", ".join(f"{r} x{n}" for r, n in sorted(doubled.items())) if doubled else ""),
        f"Missing: {len(missing)}; unknown recipients: {len(strangers)}",
        f"Delivery log: {len(log_rows)} rows, by status: {dict(sorted(statuses.items()))}",
        f"Message-IDs at the sink that differ from the delivery log's: {len(foreign_ids)}",
        f"Send: {outcome.finished - (timeline.t0 or 0):.1f} s from start to finished, "
        f"{len(record) / (outcome.finished - (timeline.t0 or 0)):.0f} messages/s",
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} recipients got no copy, e.g. {sorted(missing)[:5]}")
    if strangers:
        problems.append(f"{len(strangers)} messages went to addresses not on the list, e.g. {sorted(strangers)[:5]}")
    if duplicates > allowed or any(n > 2 for n in doubled.values()):
        problems.append(f"{duplicates} duplicate copies, more than the {allowed} allowed: {doubled}")
    if len(log_rows) != len(emails) or statuses.get("sent", 0) != len(emails):
        problems.append(f"the delivery log is not {len(emails)} rows all 'sent': {dict(statuses)}")
    if foreign_ids:
        problems.append(
            f"{len(foreign_ids)} copies carry a Message-ID the delivery log does not have: {foreign_ids[:5]}"
        )
    if problems:
        raise ClusterFailure("\n".join(["checks failed:", *problems, *summary]))
    return summary


def main() -> int:
    reason = missing_prerequisites()
    if reason is not None:
        strict = os.environ.get("CI", "").lower() == "true"
        print(f"cluster-test {'FAILED' if strict else 'skipped'}: {reason}", flush=True)
        return 1 if strict else 0
    timeline = Timeline()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_signals_raise())
        workdir = Path(tempfile.mkdtemp(prefix="newsletter-cluster-"))
        workdir.chmod(0o755)  # the postgres user reaches its data directory below it
        if os.environ.get("CLUSTER_KEEP") != "1":
            stack.callback(shutil.rmtree, workdir, True)
        cluster = Cluster(stack, workdir, timeline)
        try:
            emails, outcome = scenario(cluster, timeline)
            summary = check(cluster, emails, outcome, timeline)
        except ClusterFailure as exc:
            print(timeline.render(), flush=True)
            print(f"\ncluster-test FAILED: {exc}", file=sys.stderr, flush=True)
            for proc in cluster.procs:
                if proc.name.startswith(("worker", "redis", "postgres")):
                    print(f"\n--- {proc.name} log (last lines) ---\n{proc.tail(15)}", file=sys.stderr)
            if os.environ.get("CLUSTER_KEEP") == "1":
                print(f"logs kept in {workdir}", file=sys.stderr)
            return 1
        print(timeline.render())
        print("\n" + "\n".join(summary))
    print(f"\ncluster-test passed in {time.monotonic() - started:.0f} s (clean-up included)", flush=True)
    return 0


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so the clean-up runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
