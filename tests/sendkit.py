"""The real send path for tests: a capture SMTP server, a Redis, `newsletter worker` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from newsletter.devtools.smtp_capture import CaptureServer
from tests.conftest import ROOT, Cli

SAMPLE_ISSUE = ROOT / "examples" / "issues" / "this-week-in-info-war.md"


@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready." in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log.read_text()}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log.read_text()}")

    def kill9(self) -> None:
        """SIGKILL the worker's whole process group: main process and pool children, no cleanup."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@dataclass
class Newsroom:
    """A list, its subscribers, an issue, and the machinery to send it."""

    cli: Cli
    capture: CaptureServer
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def setup_list(self, count: int, *, slug: str = "weekly") -> list[str]:
        self.cli(
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
        path = self.tmp / f"{slug}.csv"
        addresses = [f"reader{i:05d}@example.com" for i in range(count)]
        path.write_text(
            "email,name\n" + "".join(f"{a},Reader Ünï {i}\n" for i, a in enumerate(addresses)), encoding="utf-8"
        )
        self.cli("subscribers", "import", slug, str(path), "--confirmed")
        return addresses

    def create_issue(self, slug: str = "weekly") -> str:
        return self.cli("issues", "create", slug, str(SAMPLE_ISSUE)).stdout.strip().splitlines()[-1]

    def start_worker(self, concurrency: int = 2, **env: str) -> Worker:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        handle = open(log, "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker", "--concurrency", str(concurrency)],
            env={**self.cli.env, **env},
            cwd=self.cli.cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(proc, log)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def send(self, issue_id: str, *extra: str) -> str:
        return self.cli("send", issue_id, *extra).stdout.strip().splitlines()[-1]

    def status(self, send_id: str) -> dict:
        return json.loads(self.cli("sends", "status", send_id, "--json").stdout)

    def wait_status(self, send_id: str, statuses: tuple[str, ...] = ("finished",), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.status(send_id)
            if current["status"] in statuses:
                return current
            time.sleep(0.5)
        logs = "\n".join(w.log.read_text()[-3000:] for w in self.workers)
        raise AssertionError(f"send {send_id} still {current} after {timeout}s\n{logs}")

    def wait_received(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.capture.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def received(self) -> Counter[str]:
        return Counter(rcpt for m in self.capture.messages for rcpt in m.rcpt_tos)

    def parsed(self, address: str) -> EmailMessage:
        for m in self.capture.messages:
            if address in m.rcpt_tos:
                return message_from_bytes(m.data, policy=policy.default)
        raise AssertionError(f"nothing received for {address}")

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
