"""Benchmark: CSV import speed and peak memory, 100,000 and 1,000,000 subscribers on SQLite.

Each import runs as a real `newsletter subscribers import` in a fresh process (so its peak
RSS is its own), against a fresh SQLite database. Figures are reported next to a baseline
measured in the same run on the same file: a bare `csv.reader` pass (the floor any import
pays) and, on the first 10,000 rows, a naive row-at-a-time ORM import (what set-based
batches replace).

    python bench/bench_import.py [--sizes 100000,1000000] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_csv(path: Path, rows: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "name", "city", "plan"])
        for i in range(rows):
            writer.writerow([f"Reader.{i}@Example{i % 97}.com", f"Léa Reader {i}", "Zürich", ("free", "patron")[i % 2]])


def import_in_child(env: dict[str, str], file: Path) -> tuple[float, float, str]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "subscribers", "import", "bench", str(file), "--confirmed"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"import failed:\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024, stdout.strip()


def bare_csv_read(file: Path) -> float:
    started = time.perf_counter()
    with open(file, encoding="utf-8-sig", newline="") as handle:
        for _ in csv.reader(handle):
            pass
    return time.perf_counter() - started


def naive_orm_import(file: Path, rows: int) -> float:
    """Row-at-a-time ORM import of the first ``rows`` rows: the approach the issue rules out."""
    from sqlalchemy import select

    from newsletter.store import db
    from newsletter.store.models import MailingList, Subscriber, Subscription
    from subscribers.addresses import normalise_email

    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{tmp}/naive.db")
        db.upgrade(engine)
        sessions = db.session_factory(engine)
        with db.transaction(sessions) as session:
            mailing_list = MailingList(slug="naive", name="Naive", from_email="n@example.com")
            session.add(mailing_list)
            session.flush()
            started = time.perf_counter()
            with open(file, encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle)
                next(reader)
                for i, (email, name, city, plan) in enumerate(reader):
                    if i >= rows:
                        break
                    address = normalise_email(email)
                    sub = session.scalar(select(Subscriber).where(Subscriber.email == address))
                    if sub is None:
                        sub = Subscriber(email=address, name=name, attributes={"city": city, "plan": plan})
                        session.add(sub)
                        session.flush()
                    session.add(
                        Subscription(list_id=mailing_list.id, subscriber_id=sub.id, status="confirmed", source="import")
                    )
                    session.flush()
            elapsed = time.perf_counter() - started
        engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'rows':>10} {'import s':>9} {'rows/s':>9} {'peak RSS MB':>12} {'bare csv s':>11} {'x bare':>7}  summary")
    naive_rate = None
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            file = Path(tmp) / f"subscribers-{rows}.csv"
            write_csv(file, rows)
            var = Path(tmp) / f"var-{rows}"
            env = {**os.environ, "NEWSLETTER_VAR_DIR": str(var), "PYTHONPATH": str(ROOT)}
            env.pop("NEWSLETTER_DATABASE_URL", None)
            for command in (
                ["db", "upgrade"],
                ["lists", "create", "bench", "--name", "Bench", "--from-email", "b@example.com"],
            ):
                subprocess.run([sys.executable, "-m", "newsletter", *command], env=env, check=True, capture_output=True)
            elapsed, peak_mb, summary = import_in_child(env, file)
            bare = bare_csv_read(file)
            print(
                f"{rows:>10} {elapsed:>9.1f} {rows / elapsed:>9.0f} {peak_mb:>12.0f} {bare:>11.2f} {elapsed / bare:>7.1f}  {summary}"
            )
            if naive_rate is None:
                naive_rows = min(rows, 10_000)
                naive = naive_orm_import(file, naive_rows)
                naive_rate = naive_rows / naive
                print(
                    f"baseline: naive row-at-a-time ORM import, first {naive_rows} rows: {naive_rate:.0f} rows/s; "
                    f"set-based import is {rows / elapsed / naive_rate:.1f}x faster per row"
                )


if __name__ == "__main__":
    main()
