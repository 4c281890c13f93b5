"""Mail that spam filters like: SpamAssassin's local rules score every sent message at most 0.

The messages are real: the sample issue and an ordinary short issue go through the CLI, a
Celery worker, Redis and the capture SMTP server, signed with a key from `newsletter dkim
keygen`, with an https base URL, to a subscriber with a name and one without. Each captured
message is scored by Debian's SpamAssassin as `spamassassin -L -t` (local tests only: no
DNS, no network) with its stock rules and scores and no one's preferences, and every rule
that fired is printed with its exact score (run pytest with -s to see them).

The only positive rule allowed is HTML_MESSAGE (0.001, "HTML included in message"), which
every message with an HTML part gets. As captured, a message has no Received header, so
SpamAssassin adds NO_RECEIVED and NO_RELAYS (-0.001 each); with one, as a receiving server
adds it, the same message scores +0.001, which SpamAssassin reports as 0.0.

With -L SpamAssassin does not look up the DKIM key, and its DKIM rules are network rules:
none of them runs, not even DKIM_SIGNED. So the messages are also scored with network tests
on and SpamAssassin's resolver pointed at a DNS server on 127.0.0.1 that holds only the
test key's record (tests/tools/dns_txt_server.pl; every other name is NXDOMAIN, so nothing
leaves the machine): SpamAssassin's own DKIM check must find the signature valid and aligned
with the From domain (DKIM_VALID, DKIM_VALID_AU).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

from tests.conftest import need_service
from tests.test_dkim import DOMAIN, KEY, RECORD_NAME, SELECTOR, keygen, printed_record
from tests.textkit import body_text

DNS_SERVER = Path(__file__).parent / "tools" / "dns_txt_server.pl"
# Every message with an HTML part gets it: SpamAssassin's informational 0.001.
INFORMATIONAL = {"HTML_MESSAGE"}

ORDINARY_ISSUE = """\
---
subject: "Notes from the reading room, week 12"
preheader: "Three long reads we liked, and a date for the spring meetup."
---
Hello *|NAME:there|*,

This week we read a lot about how small newsrooms share their tools. Three pieces stood out:

- [How a local paper moved its archive](https://www.example.org/reads/archive-move), a
  patient account of five years of work.
- [Notes on fact-checking by phone](https://www.example.org/reads/fact-checking), with the
  questions one editor asks every source.
- [A short history of the newsletter](https://www.example.org/reads/history).

The spring meetup is on 14 May at the library on Market Street. Reply to this email if you
would like to give a short talk.

Thanks for reading,
the editors
"""


@dataclass(frozen=True)
class Hit:
    rule: str
    score: float
    description: str


@dataclass(frozen=True)
class Verdict:
    total: float  # the exact sum of the rules' scores
    reported: float  # SpamAssassin's own total, rounded to one decimal
    hits: tuple[Hit, ...]

    def rules(self) -> set[str]:
        return {hit.rule for hit in self.hits}

    def __str__(self) -> str:
        lines = [f"score {self.total:+.3f} (reported {self.reported:.1f})"]
        lines += [f"  {hit.score:+6.3f} {hit.rule:<28} {hit.description}" for hit in self.hits]
        return "\n".join(lines)


_HIT = re.compile(r"^\s*-?[0-9]+\.[0-9]+ ([A-Z0-9_]+)\s+(.*)$")


def spamassassin(data: bytes, home: Path, *, dns_server: str | None = None) -> Verdict:
    """``spamassassin -L -t`` on one message: every rule that fired, with its exact score and description.

    With ``dns_server`` (HOST:PORT), network tests run instead of -L, resolving through that server only.
    The report rounds scores to one decimal, so the exact ones come from a header SpamAssassin is
    asked to add (``_TESTSSCORES_``): a reporting option, no change to any rule or score.
    """
    program = shutil.which("spamassassin")
    if program is None:
        need_service("SpamAssassin is not installed (apt-get install spamassassin)")
    home.mkdir(parents=True, exist_ok=True)
    prefs = home / "user_prefs"
    prefs.write_text("")  # nobody's own preferences: the stock rules and scores only
    args = [program, "-t", "-p", str(prefs), "--cf", "add_header all Scores _TESTSSCORES(,)_"]
    if dns_server is None:
        args.append("-L")
    else:
        args += ["--cf", f"dns_server {dns_server}", "--cf", "dns_available yes"]
    done = subprocess.run(
        args, input=data, capture_output=True, check=True, timeout=120, env={**os.environ, "HOME": str(home)}
    )
    output = done.stdout.decode("utf-8", errors="replace").replace("\r\n", "\n")
    head = re.sub(r"\n[ \t]+", " ", output.split("\n\n", 1)[0])
    scores = re.search(r"^X-Spam-Scores: *(.*)$", head, re.M)
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[0-9.]+) ", head, re.M)
    assert scores and status, f"no SpamAssassin verdict in:\n{output[:3000]}\n{done.stderr.decode(errors='replace')}"
    described: dict[str, str] = {}
    for line in output.rsplit("Content analysis details:", 1)[-1].splitlines()[3:]:
        if match := _HIT.match(line):
            described[match.group(1)] = match.group(2).strip()
        elif line.startswith(" " * 20) and described:  # a description continued on the next line
            last = list(described)[-1]
            described[last] += " " + line.strip()
    hits = []
    for item in filter(None, scores.group(1).replace(" ", "").split(",")):
        rule, _, score = item.partition("=")
        hits.append(Hit(rule, float(score), described.get(rule, "")))
    total = round(sum(h.score for h in hits), 3)
    assert abs(total - float(status.group(1))) < 0.051, f"the rules do not add up to the score:\n{output}"
    return Verdict(total, float(status.group(1)), tuple(sorted(hits, key=lambda h: (-h.score, h.rule))))


@contextmanager
def dns_serving(record: str) -> Iterator[str]:
    """A DNS server on 127.0.0.1 answering only the DKIM record; yields its HOST:PORT."""
    perl = shutil.which("perl")
    if (
        perl is None
        or subprocess.run([perl, "-MNet::DNS::Nameserver", "-MMail::DKIM", "-e", "1"], capture_output=True).returncode
    ):
        need_service("Perl's Net::DNS or Mail::DKIM is missing (apt-get install spamassassin libmail-dkim-perl)")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [perl, str(DNS_SERVER), str(port), RECORD_NAME, record],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = server.stdout.readline() if server.stdout else ""
        assert ready.strip() == "ready", (
            f"the test DNS server did not start: {ready}{server.stdout.read() if server.stdout else ''}"
        )
        yield f"127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait(10)


def test_the_sample_issue_and_an_ordinary_issue_score_at_most_zero(newsroom, tmp_path):
    room = newsroom
    key_file = tmp_path / "dkim.pem"
    _, record = printed_record(keygen(room.cli, "--out", str(key_file)).stdout)
    room.cli.env.update(
        NEWSLETTER_DKIM_DOMAIN=DOMAIN,
        NEWSLETTER_DKIM_SELECTOR=SELECTOR,
        NEWSLETTER_DKIM_PRIVATE_KEY_FILE=str(key_file),
        NEWSLETTER_RETURN_PATH="bounces@example.org",
        NEWSLETTER_SECRET_KEY=KEY,
    )
    assert room.cli.env["NEWSLETTER_BASE_URL"].startswith("https://")
    room.cli(
        "lists",
        "create",
        "weekly",
        "--name",
        "Info War Weekly",
        "--from-email",
        "news@example.org",
        "--from-name",
        "Info War",
    )
    room.cli("subscribers", "add", "weekly", "ann.lee@example.com", "--name", "Ann Lee", "--confirmed")
    room.cli("subscribers", "add", "weekly", "no.name@example.com", "--confirmed")
    ordinary = tmp_path / "week-12.md"
    ordinary.write_text(ORDINARY_ISSUE, encoding="utf-8")
    issue_ids = [
        room.create_issue(),
        room.cli("issues", "create", "weekly", str(ordinary)).stdout.strip().splitlines()[-1],
    ]
    room.start_worker(concurrency=1)
    for issue_id in issue_ids:
        assert room.wait_status(room.send(issue_id))["sent"] == 2
    assert len(room.capture.messages) == 4

    messages = {}
    for n, captured in enumerate(room.capture.messages):
        parsed = message_from_bytes(captured.data, policy=policy.default)
        (rcpt,) = captured.rcpt_tos
        messages[f"{'sample' if 'Qualified Support' in parsed['Subject'] else 'ordinary'} issue to {rcpt}"] = (
            captured.data
        )
        assert captured.data.startswith(b"DKIM-Signature: ") and parsed["From"] == "Info War <news@example.org>"
        greeting = "Hello Ann Lee," if rcpt == "ann.lee@example.com" else "Hello there,"
        assert greeting in body_text(parsed)  # the issue's own, with the name's merge tag
        (tmp_path / f"message-{n}.eml").write_bytes(captured.data)  # kept for a look after a failure
    assert len(messages) == 4

    local = {
        what: spamassassin(data, tmp_path / "sa" / str(n)) for n, (what, data) in enumerate(sorted(messages.items()))
    }
    for what, verdict in local.items():
        print(f"spamassassin -L -t, {what}: {verdict}")
    everything = "\n".join(f"{what}: {verdict}" for what, verdict in local.items())
    assert {what: v.total for what, v in local.items() if v.total > 0 or v.reported > 0} == {}, everything
    positive = {
        what: [h.rule for h in v.hits if h.score > 0 and h.rule not in INFORMATIONAL] for what, v in local.items()
    }
    assert positive == {what: [] for what in local}, everything
    assert all(not any(rule.startswith("DKIM_") for rule in v.rules()) for v in local.values())  # not run with -L

    # SpamAssassin's own DKIM check, its key lookup answered on this machine.
    with dns_serving(record) as dns:
        checked = {
            what: spamassassin(data, tmp_path / "sa-dns" / str(n), dns_server=dns)
            for n, (what, data) in enumerate(sorted(messages.items()))
        }
    for what, verdict in checked.items():
        print(f"spamassassin -t with the DKIM key on a local DNS server, {what}: {verdict}")
    everything = "\n".join(f"{what}: {verdict}" for what, verdict in checked.items())
    for what, verdict in checked.items():
        assert {"DKIM_SIGNED", "DKIM_VALID", "DKIM_VALID_AU"} <= verdict.rules(), everything
        assert "DKIM_INVALID" not in verdict.rules() and verdict.total <= local[what].total, everything
