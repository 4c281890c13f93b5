"""Benchmark: how long a `newsletter` command takes from start to exit, against `python -c pass`.

    python bench/bench_startup.py [--runs 15] [--keep]

Every command is a fresh process, run as a user runs it (the ``newsletter`` script beside this
Python, or ``python -m newsletter`` without it), against a small SQLite database made first under
a temporary NEWSLETTER_VAR_DIR: one list, one subscriber, the sample issue and one send of it
(scheduled, so that no broker is needed). The commands run in turn, ``--runs`` rounds of all of
them, so that whatever else loads the machine meanwhile weighs on each alike; the figures are
medians, with the fastest run and the CPU time (user + system) beside them. `python -c pass`
is the floor every Python command pays on this machine; the ratio to it carries over to other
machines better than the times do.

Issue 17 asks that `newsletter --help` and `newsletter sends status ID --json` answer in under
0.3 s on this kind of machine; the last lines say whether they do.

Python writes its bytecode cache as it normally does (PYTHONDONTWRITEBYTECODE is dropped from the
commands' environment; one untimed run of each fills the cache first): an installed application
runs from its cache, and compiling every module anew would time the compiler instead.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"
TARGET = 0.3  # seconds


def newsletter_command() -> list[str]:
    script = Path(sys.executable).parent / "newsletter"
    return [str(script)] if script.exists() else [sys.executable, "-m", "newsletter"]


def environment(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["NEWSLETTER_VAR_DIR"] = str(var_dir)
    env["COLUMNS"] = "120"
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def make_database(newsletter: list[str], env: dict[str, str], cwd: Path) -> str:
    """One list, one confirmed subscriber, the sample issue and a scheduled send of it; returns the send's id."""
    run([*newsletter, "db", "upgrade"], env, cwd)
    run([*newsletter, "lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org"], env, cwd)
    run([*newsletter, "subscribers", "add", "weekly", "ann@example.org", "--confirmed"], env, cwd)
    issue = run([*newsletter, "issues", "create", "weekly", str(SAMPLE_ISSUE)], env, cwd).split()[-1]
    return run([*newsletter, "send", issue, "--at", "2099-01-04T08:00+00:00"], env, cwd).split()[-1]


def timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds of every command (default 15)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = environment(tmp / "var")
    newsletter = newsletter_command()
    try:
        send_id = make_database(newsletter, env, tmp)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "newsletter --help": [*newsletter, "--help"],
            f"newsletter sends status {send_id} --json": [*newsletter, "sends", "status", send_id, "--json"],
            "newsletter lists ls": [*newsletter, "lists", "ls"],
            "newsletter issues ls --json": [*newsletter, "issues", "ls", "--json"],
        }
        for args in commands.values():
            timed(args, env, tmp)  # fills the bytecode cache
        print(
            f"bench_startup: {options.runs} runs of each command, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.2f} before (the figures assume nothing else runs); {' '.join(newsletter)}"
        )
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.runs):
            for name, args in commands.items():
                wall, cpu = timed(args, env, tmp)
                walls[name].append(wall)
                cpus[name].append(cpu)
        floor = statistics.median(walls["python -c pass"])
        print(f"{'command':<40} {'median':>8} {'fastest':>8} {'CPU':>8} {'x pass':>7}")
        for name in commands:
            median = statistics.median(walls[name])
            print(
                f"{name:<40} {median * 1000:6.0f} ms {min(walls[name]) * 1000:5.0f} ms "
                f"{statistics.median(cpus[name]) * 1000:5.0f} ms {median / floor:6.1f}x"
            )
        print(f"load average {os.getloadavg()[0]:.2f} after")
        for name in ("newsletter --help", f"newsletter sends status {send_id} --json"):
            median = statistics.median(walls[name])
            holds = median < TARGET
            print(
                f"target: {name} under {TARGET:g} s: {'holds' if holds else 'does NOT hold'} "
                f"({median:.3f} s, {median / floor:.1f}x python -c pass)"
            )
        return 0
    finally:
        if options.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
