"""Benchmark: CSV import speed, peak memory and cost growth, on SQLite and PostgreSQL.

Each import runs as a real `newsletter subscribers import` in a fresh process (so its peak
RSS is its own), into a fresh database: a SQLite file, or a PostgreSQL database created for
the run at 127.0.0.1:5432 and dropped after it. The figures are reported next to a baseline
measured in the same run, on the same file and the same store: the ceiling, a bare load of
the file's rows into a bare table with no checks at all (``csv.reader`` and one
``executemany`` per 10,000 rows on SQLite; ``csv.reader`` and ``COPY ... FROM STDIN`` on
PostgreSQL), in one transaction. The last lines give each store's cost growth: seconds for
the largest file over seconds for the smallest, against the ratio of their sizes (linear
cost gives the same number).

    python bench/bench_import.py [--rows 100000,1000000] [--database sqlite,postgresql] [--reimport]

``--reimport`` imports each file a second time into the same database (every row then
already a subscriber: the "unchanged" path). Without a PostgreSQL server the PostgreSQL
rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchkit import PG_ADMIN_URL, database  # noqa: E402  (after the path is set)


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "name", "city", "plan"])
        for i in range(rows):
            writer.writerow([f"Reader.{i}@Example{i % 97}.com", f"Léa Reader {i}", "Zürich", ("free", "patron")[i % 2]])


def postgres_reachable() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: skip PostgreSQL, say why
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def newsletter(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "newsletter", *args], env=env, check=True, capture_output=True)


@dataclass
class Run:
    seconds: float
    peak_mb: float
    cpu: float  # CPU seconds of the import process
    db_cpu: float  # CPU seconds of its PostgreSQL server process (0 on SQLite: the import process does it all)
    busy: float  # share of the machine's CPU busy while it ran (all processes, other helpers' included)
    summary: str


def cpu_times() -> tuple[int, int]:
    """The machine's (total, idle) CPU ticks so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:8]]
    return sum(values), values[3] + values[4]


class BackendCpu:
    """Samples the CPU time of the PostgreSQL server processes serving ``application_name``, until stopped."""

    def __init__(self, url: str, application_name: str) -> None:
        self.url, self.application_name = url, application_name
        self.seen: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        import psycopg

        ticks = os.sysconf("SC_CLK_TCK")
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.wait(0.1):
                pids = [
                    pid
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.application_name,)
                    )
                ]
                for pid in pids:
                    try:
                        with open(f"/proc/{pid}/stat") as handle:
                            fields = handle.read().rsplit(")", 1)[1].split()
                    except OSError:  # ended meanwhile, or not on this machine
                        continue
                    self.seen[pid] = (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return sum(self.seen.values())


def import_in_child(env: dict[str, str], file: Path, url: str) -> Run:
    """Run one import as its own process and measure it."""
    application_name = f"bench_import_{uuid.uuid4().hex[:8]}"
    backend = BackendCpu(PG_ADMIN_URL, application_name) if url.startswith("postgresql") else None
    with tempfile.TemporaryFile() as errors:
        machine0 = cpu_times()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "subscribers", "import", "bench", str(file), "--confirmed"],
            env={**env, "PGAPPNAME": application_name},
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        stdout = proc.stdout.read().decode() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        machine1 = cpu_times()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.stdout:
            proc.stdout.close()
        db_cpu = backend.stop() if backend is not None else 0.0
        if status != 0:
            errors.seek(0)
            raise SystemExit(f"import failed:\n{errors.read().decode(errors='replace')}")
    total, idle = machine1[0] - machine0[0], machine1[1] - machine0[1]
    return Run(
        seconds=elapsed,
        peak_mb=usage.ru_maxrss / 1024,
        cpu=usage.ru_utime + usage.ru_stime,
        db_cpu=db_cpu,
        busy=1 - idle / max(1, total),
        summary=stdout.strip(),
    )


def _bare_rows(file: Path) -> Iterator[tuple[str, str, str]]:
    with open(file, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for email, name, city, plan in reader:
            yield email, name, json.dumps({"city": city, "plan": plan})


def ceiling_sqlite(file: Path, folder: Path) -> float:
    """Seconds to load the file's rows into a bare SQLite table, no checks: the ceiling."""
    path = folder / "ceiling.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE bare (id INTEGER PRIMARY KEY, email TEXT, name TEXT, attributes TEXT)")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    chunk: list[tuple[str, str, str]] = []
    for row in _bare_rows(file):
        chunk.append(row)
        if len(chunk) >= 10_000:
            conn.executemany("INSERT INTO bare (email, name, attributes) VALUES (?, ?, ?)", chunk)
            chunk = []
    conn.executemany("INSERT INTO bare (email, name, attributes) VALUES (?, ?, ?)", chunk)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def ceiling_postgresql(file: Path, url: str) -> float:
    """Seconds to COPY the file's rows into a bare PostgreSQL table, no checks: the ceiling."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        conn.execute("CREATE TABLE bare (id bigserial PRIMARY KEY, email text, name text, attributes jsonb)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bare (email, name, attributes) FROM STDIN") as copy:
            for row in _bare_rows(file):
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bare")
        conn.commit()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", "--sizes", dest="rows", default="100000,1000000", help="file sizes, comma-separated")
    parser.add_argument("--database", default="sqlite,postgresql", help="sqlite, postgresql or both, comma-separated")
    parser.add_argument("--reimport", action="store_true", help="import each file a second time (all unchanged)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    kinds = [k.strip() for k in args.database.split(",") if k.strip()]
    if "postgresql" in kinds and (why := postgres_reachable()) is not None:
        print(f"PostgreSQL skipped: not reachable at {PG_ADMIN_URL} ({why})")
        kinds.remove("postgresql")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print(
        f"{'store':<11} {'rows':>9} {'run':<9} {'import s':>9} {'rows/s':>9} {'peak RSS MB':>12} {'CPU s':>7}"
        f" {'DB CPU s':>9} {'busy':>5} {'ceiling s':>10} {'x ceiling':>10}  summary"
    )
    seconds: dict[str, dict[int, float]] = {kind: {} for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            file = Path(tmp) / f"subscribers-{rows}.csv"
            write_csv(file, rows)
            for kind in kinds:
                folder = Path(tmp) / f"{kind}-{rows}"
                folder.mkdir()
                with database(kind, folder, "newsletter_bench_import") as url:
                    env = {**os.environ, "NEWSLETTER_VAR_DIR": str(folder), "PYTHONPATH": str(ROOT)}
                    env["NEWSLETTER_DATABASE_URL"] = url
                    newsletter(env, "db", "upgrade")
                    newsletter(env, "lists", "create", "bench", "--name", "Bench", "--from-email", "b@example.com")
                    ceiling = ceiling_sqlite(file, folder) if kind == "sqlite" else ceiling_postgresql(file, url)
                    runs = ("first", "reimport") if args.reimport else ("first",)
                    for run_name in runs:
                        run = import_in_child(env, file, url)
                        if run_name == "first":
                            seconds[kind][rows] = run.seconds
                        print(
                            f"{kind:<11} {rows:>9} {run_name:<9} {run.seconds:>9.1f} {rows / run.seconds:>9.0f}"
                            f" {run.peak_mb:>12.0f} {run.cpu:>7.1f} {run.db_cpu:>9.1f} {run.busy:>5.0%}"
                            f" {ceiling:>10.1f} {run.seconds / ceiling:>10.1f}  {run.summary}",
                            flush=True,
                        )
    for kind, by_size in seconds.items():
        if len(by_size) >= 2:
            small, large = min(by_size), max(by_size)
            print(
                f"{kind}: {large} rows cost {by_size[large] / by_size[small]:.1f}x the time of {small} rows "
                f"({large / small:.0f}x the rows; linear = {large / small:.0f}x)"
            )


if __name__ == "__main__":
    main()
