"""Secrets and tokens (issue 16, item 6).

* A blank or short NEWSLETTER_SECRET_KEY stops `web`, `worker`, `send` and `inbound` at
  start, naming the setting; `doctor` still runs, reports it and says how to make a key.
* Preferences links expire (NEWSLETTER_PREFERENCES_DAYS); an expired one offers to mail a
  fresh link, which a real worker delivers; a preferences link never re-subscribes an
  address that left without a new confirmation.
* Tokens in paths and query strings never reach the access log.

Everything runs for real: the CLI as a process, `newsletter web` under uvicorn, a Celery
worker, Redis and an SMTP capture server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from subscribers.tokens import TokenSigner
from tests.conftest import Cli
from tests.test_web_journey import free_port, start_web

GOOD_KEY = "a-good-secret-key-of-forty-bytes-0123456"
BAD_KEYS = {"empty": "", "blank": "   ", "short": "short", "31 bytes": "k" * 31}


def run_briefly(cli: Cli, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `newsletter ARGS`; a command that starts instead of refusing is stopped (and the test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", *args], env=env, cwd=cli.cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"newsletter {' '.join(args)} started with a weak key instead of refusing:\n{stderr}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


# --- the secret key ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_KEYS))
def test_a_blank_or_short_secret_key_stops_every_long_running_command_at_start(cli, redis_url, kind):
    env = {**cli.env, "NEWSLETTER_SECRET_KEY": BAD_KEYS[kind], "NEWSLETTER_BROKER_URL": redis_url}
    commands = {
        "web": ("web", "--port", str(free_port())),
        "worker": ("worker", "--concurrency", "1"),
        "send": ("send", "1"),
        "inbound": ("inbound", "--port", "0"),
    }
    for name, args in commands.items():
        result = run_briefly(cli, *args, env=env)
        assert result.returncode == 1, f"{name}: exit {result.returncode}\n{result.stderr}"
        assert result.stderr.startswith("configuration error: NEWSLETTER_SECRET_KEY: "), f"{name}: {result.stderr}"
        assert "secrets.token_urlsafe" in result.stderr, f"{name} does not say how to make a key: {result.stderr}"
        assert "Traceback" not in result.stderr


def test_doctor_reports_a_weak_secret_key_and_says_how_to_make_one(cli):
    for kind, detail in (("empty", "set but empty"), ("blank", "only whitespace"), ("31 bytes", "too short (31 bytes)")):
        result = Cli({**cli.env, "NEWSLETTER_SECRET_KEY": BAD_KEYS[kind]}, cli.cwd)("doctor", check=False)
        assert "configuration error" not in result.stderr, result.stderr
        line = next(line for line in result.stdout.splitlines() if "Secret key:" in line)
        assert line.startswith("missing ") and detail in line, line
        fix = result.stdout.splitlines()[result.stdout.splitlines().index(line) + 1]
        assert "secrets.token_urlsafe(48)" in fix and "NEWSLETTER_SECRET_KEY_OLD" in fix, fix
        assert result.returncode == 1 and "Secret key" in result.stdout.splitlines()[-1]
    # A good key passes; a short old key (kept to verify links mailed before a rotation) is a warning.
    result = Cli({**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_SECRET_KEY_OLD": "old-key-of-20-bytes!"},
                 cli.cwd)("doctor", check=False)
    assert f"ok       Secret key: NEWSLETTER_SECRET_KEY is set ({len(GOOD_KEY)} bytes)" in result.stdout
    assert "warn     Old secret key: NEWSLETTER_SECRET_KEY_OLD: key 1 of 1 is 20 bytes, under 32" in result.stdout
    # An old key too short ever to have been a key stops the other commands, and the doctor names it.
    tiny = {**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_SECRET_KEY_OLD": f"{'o' * 40},tiny"}
    refused = Cli(tiny, cli.cwd)("lists", "ls", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith(
        "configuration error: NEWSLETTER_SECRET_KEY_OLD: key 2 of 2 is 4 bytes"), refused.stderr
    assert "missing  Old secret key: NEWSLETTER_SECRET_KEY_OLD: key 2 of 2 is 4 bytes" in Cli(tiny, cli.cwd)(
        "doctor", check=False).stdout


def test_the_development_key_is_long_enough_and_a_damaged_one_is_refused(cli):
    key_file = Path(cli.env["NEWSLETTER_VAR_DIR"]) / "secret_key"
    assert len(key_file.read_text().strip().encode()) >= 32 and (key_file.stat().st_mode & 0o777) == 0o600
    key_file.write_text("abc\n")  # cut short by hand or by a full disk
    result = cli("lists", "ls", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("configuration error: NEWSLETTER_SECRET_KEY: unset, and the development key in")
    assert str(key_file) in result.stderr and "delete that file" in result.stderr


# --- tokens in the access log ----------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_log_of_a_real_web_process_holds_no_token(cli, log_format):
    env = {**cli.env, "NEWSLETTER_SECRET_KEY": GOOD_KEY, "NEWSLETTER_LOG_FORMAT": log_format}
    run = Cli(env, cli.cwd)
    run("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    run("subscribers", "add", "weekly", "ann@example.com", "--confirmed")
    signer = TokenSigner(GOOD_KEY)
    tokens = {purpose: signer.make(1, 1, purpose) for purpose in ("unsubscribe", "confirm", "preferences")}
    archive_key, api_token = signer.archive_key(1, 1), "nl_secret-api-token-in-a-query-0123456789"
    port = free_port()
    web = start_web(env, cli.cwd, port)
    try:
        requests = [
            ("GET", f"/unsubscribe/{tokens['unsubscribe']}"), ("GET", f"/confirm/{tokens['confirm']}"),
            ("GET", f"/preferences/{tokens['preferences']}"), ("POST", f"/preferences/{tokens['preferences']}/name"),
            ("GET", f"/archive/weekly/1?key={archive_key}"), ("GET", f"/api/lists?token={api_token}&limit=5"),
            ("GET", "/unsubscribe/v1.9.9.9.forged-token-value"),
        ]
        answers = [httpx.request(method, f"{web.base}{path}", data={"name": "Ann"} if method == "POST" else None,
                                 timeout=30).status_code for method, path in requests]
        assert answers[:4] == [200, 200, 200, 200], answers
    finally:
        web.stop()
    log = web.log.read_text()
    for secret in [*tokens.values(), archive_key, api_token, "forged-token-value"]:
        assert secret not in log, f"{secret} is in the access log:\n{log}"
    if log_format == "json":
        lines = [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
    else:
        lines = log.splitlines()
    expected = ['"GET /unsubscribe/… HTTP/1.1" 200', '"GET /confirm/… HTTP/1.1" 200', '"GET /preferences/… HTTP/1.1" 200',
                '"POST /preferences/…/name HTTP/1.1" 200', '"GET /archive/weekly/1?key=… HTTP/1.1"',
                '"GET /api/lists?token=…&limit=5 HTTP/1.1" 401', '"GET /unsubscribe/… HTTP/1.1" 400']
    for line in expected:
        assert any(line in entry for entry in lines), f"no access log line with {line}:\n{log}"
