"""Admin login limits that cannot be raced or turned against the admin, against a real `newsletter web`.

A real uvicorn server (the CLI's `newsletter web`) listens on 127.0.0.1 with Redis for the
counters; clients connect from other loopback addresses (127.0.0.2, 127.0.0.3, ...) with
httpx's ``local_address``, so each address is a different client. A password is checked only
when its attempt was counted first (401 = checked and wrong, 429 = refused unchecked), so the
number of 401s is the number of password checks.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from newsletter.http.ratelimit import FAILED_LOGINS_PER_IP, FAILED_LOGINS_PER_KNOWN_ADDRESS, FAILED_LOGINS_PER_USER
from tests.conftest import Cli, clean_environ
from tests.test_admin_ui import csrf_of
from tests.test_web_journey import WebProcess, free_port, start_web

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
WRONG = "wrong password, guessed"


@dataclass
class Site:
    port: int
    started: list[WebProcess] = field(default_factory=list)

    def login_form(self, address: str) -> tuple[httpx.Client, str]:
        """A client at ``address`` (a loopback address: the TCP peer the server sees) holding a fresh login form."""
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=120, transport=httpx.HTTPTransport(local_address=address)
        )
        form = client.get("/admin/login")
        assert form.status_code == 200, form.text
        return client, csrf_of(form.text)

    def log_in(self, address: str, username: str, password: str) -> int:
        """One login attempt from ``address``: 303 (logged in), 401 (checked, wrong) or 429 (refused unchecked)."""
        client, token = self.login_form(address)
        try:
            return post_login(client, token, username, password)
        finally:
            client.close()

    def log_in_together(self, attempts: list[tuple[str, str, str]]) -> list[int]:
        """(address, username, password) attempts, each posted at the same moment from its own connection."""
        barrier = threading.Barrier(len(attempts), timeout=120)

        def one(attempt: tuple[str, str, str]) -> int:
            address, username, password = attempt
            client, token = self.login_form(address)
            try:
                barrier.wait()
                return post_login(client, token, username, password)
            finally:
                client.close()

        with ThreadPoolExecutor(len(attempts)) as pool:
            return list(pool.map(one, attempts))


def post_login(client: httpx.Client, token: str, username: str, password: str) -> int:
    answer = client.post("/admin/login", data={"username": username, "password": password, "csrf_token": token})
    assert answer.status_code in (303, 401, 429), (answer.status_code, answer.text[:500])
    if answer.status_code == 429:
        assert 0 < int(answer.headers["retry-after"]) <= 900
    return answer.status_code


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    port = free_port()
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"),
        NEWSLETTER_BROKER_URL=redis_url,  # the login counters
        NEWSLETTER_SECRET_KEY="test-secret-key-0123456789abcdef",
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
    )
    cli = Cli(env=env, cwd=tmp_path)
    cli("db", "upgrade")
    for username, role in (("admin", "admin"), ("eddie", "editor")):
        cli("admin", "create-user", "--username", username, "--role", role, "--password-stdin", input=PASSWORD + "\n")
    running = Site(port)
    running.started.append(start_web(env, tmp_path, port))
    yield running
    for web in running.started:
        web.stop()


def test_parallel_wrong_passwords_get_no_more_checks_than_the_limit(site):
    # 50 guesses at one account from 50 addresses at once: the account's limit holds across them.
    statuses = site.log_in_together([(f"127.0.0.{10 + i}", "admin", WRONG) for i in range(50)])
    assert Counter(statuses) == {401: FAILED_LOGINS_PER_USER, 429: 50 - FAILED_LOGINS_PER_USER}

    # 50 guesses from one address at 50 accounts at once: the address's limit holds.
    statuses = site.log_in_together([("127.0.0.5", f"user{i}", WRONG) for i in range(50)])
    assert Counter(statuses) == {401: FAILED_LOGINS_PER_IP, 429: 50 - FAILED_LOGINS_PER_IP}


def test_an_attacker_elsewhere_cannot_lock_the_admin_out_of_their_usual_address(site):
    admin_at, attacker_at, stranger_at = "127.0.0.2", "127.0.0.3", "127.0.0.4"
    # The admin logs in from their usual address, more often than any limit: a success is no failure.
    for _ in range(FAILED_LOGINS_PER_USER + 2):
        assert site.log_in(admin_at, "admin", PASSWORD) == 303

    # An attacker at another address guesses until the account refuses new addresses ...
    statuses = [site.log_in(attacker_at, "admin", WRONG) for _ in range(FAILED_LOGINS_PER_USER + 5)]
    assert statuses == [401] * FAILED_LOGINS_PER_USER + [429] * 5
    assert site.log_in(attacker_at, "admin", PASSWORD) == 429  # even the right password is not checked there
    assert site.log_in(stranger_at, "admin", PASSWORD) == 429  # nor from any address the admin never used

    # ... but the admin, from where they logged in before, still can (after a typo too).
    assert site.log_in(admin_at, "admin", WRONG) == 401
    assert site.log_in(admin_at, "admin", PASSWORD) == 303

    # The attacker's own address is limited: guesses at other accounts run out, then everything
    # from it is refused, while the same account from elsewhere is untouched.
    left = FAILED_LOGINS_PER_IP - FAILED_LOGINS_PER_USER
    statuses = [site.log_in(attacker_at, f"guess{i}", WRONG) for i in range(left + 3)]
    assert statuses == [401] * left + [429] * 3
    assert site.log_in(attacker_at, "eddie", PASSWORD) == 429
    assert site.log_in(stranger_at, "eddie", PASSWORD) == 303

    # The admin's usual address has a limit of its own, which only it feeds.
    statuses = [site.log_in(admin_at, "admin", WRONG) for _ in range(FAILED_LOGINS_PER_KNOWN_ADDRESS + 2)]
    assert statuses == [401] * (FAILED_LOGINS_PER_KNOWN_ADDRESS - 1) + [429] * 3  # one typo above already counted
    assert site.log_in(admin_at, "admin", PASSWORD) == 429
