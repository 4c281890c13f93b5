"""Only a configured proxy is believed: X-Forwarded-For against a real `newsletter web`.

A real uvicorn server (the CLI's `newsletter web`) listens on 127.0.0.1; the clients connect
from other loopback addresses (127.0.0.2, 127.0.0.3, ...) with httpx's ``local_address``, so
the server sees each as a different TCP peer. X-Forwarded-For is believed only when the peer
is in NEWSLETTER_TRUSTED_PROXIES; otherwise the peer is the client, for the subscribe rate
limit and for the consent record alike.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from newsletter.store import db
from newsletter.store.models import Subscriber, Subscription
from tests.conftest import Cli, clean_environ
from tests.test_web_journey import WebProcess, free_port, start_web

SUBSCRIBE_LIMIT = 10  # NEWSLETTER_SUBSCRIBE_LIMIT's default: form posts per client address per hour


@dataclass
class Site:
    """A database with the list "weekly", and `newsletter web` processes started on it."""

    env: dict[str, str]
    tmp: Path
    port: int
    started: list[WebProcess] = field(default_factory=list)

    def start(self, **settings: str) -> str:
        web = start_web({**self.env, **settings}, self.tmp, self.port)
        self.started.append(web)
        return web.base

    def client(self, address: str) -> httpx.Client:
        """A client whose connections come from ``address`` (a loopback address: the TCP peer the server sees)."""
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=60, transport=httpx.HTTPTransport(local_address=address)
        )

    def consent_ip(self, email: str) -> str | None:
        engine = db.make_engine(self.env["NEWSLETTER_DATABASE_URL"])
        try:
            with db.session_factory(engine)() as session:
                return session.scalar(
                    select(Subscription.ip)
                    .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
                    .where(Subscriber.email == email)
                )
        finally:
            engine.dispose()


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[Site]:
    port = free_port()
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"),
        NEWSLETTER_DATABASE_URL=f"sqlite:///{tmp_path / 'var' / 'newsletter.db'}",
        NEWSLETTER_BROKER_URL=redis_url,  # rate limits; confirmation emails are queued there, no worker runs
        NEWSLETTER_SECRET_KEY="test-secret-key-0123456789abcdef",
        NEWSLETTER_BASE_URL=f"http://127.0.0.1:{port}",
    )
    cli = Cli(env=env, cwd=tmp_path)
    cli("db", "upgrade")
    cli("lists", "create", "weekly", "--name", "The Weekly", "--from-email", "news@example.org")
    running = Site(env, tmp_path, port)
    yield running
    for web in running.started:
        web.stop()


def subscribe(client: httpx.Client, email: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"} if forwarded_for else {}
    return client.post("/subscribe/weekly", data={"email": email}, headers=headers).status_code


def subscribe_together(
    site: Site, address: str, count: int, forwarded_for: Callable[[int], str], email: Callable[[int], str]
) -> list[int]:
    """``count`` form posts from ``address`` released at the same moment, each with its own X-Forwarded-For."""
    barrier = threading.Barrier(count, timeout=120)

    def one(i: int) -> int:
        with site.client(address) as client:
            barrier.wait()
            return subscribe(client, email(i), forwarded_for(i))

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.redis
@pytest.mark.slow
def test_without_trusted_proxies_a_local_process_cannot_choose_its_address(site):
    """By default no proxy is trusted, 127.0.0.1 included (uvicorn's FORWARDED_ALLOW_IPS default was)."""
    site.start()
    statuses = subscribe_together(
        site, "127.0.0.1", 25, lambda i: f"203.0.113.{i + 1}", lambda i: f"reader{i}@example.com"
    )
    # One client however many addresses it claims: the limit counted the peer, each post exactly once.
    assert Counter(statuses) == {200: SUBSCRIBE_LIMIT, 429: 25 - SUBSCRIBE_LIMIT}
    stored = {i: site.consent_ip(f"reader{i}@example.com") for i, status in enumerate(statuses) if status == 200}
    assert set(stored.values()) == {"127.0.0.1"}
    # Refused posts stored nothing.
    assert all(site.consent_ip(f"reader{i}@example.com") is None for i, status in enumerate(statuses) if status == 429)


@pytest.mark.redis
@pytest.mark.slow
def test_x_forwarded_for_is_believed_only_from_the_configured_proxy(site):
    site.start(NEWSLETTER_TRUSTED_PROXIES="127.0.0.2")

    # An untrusted peer (127.0.0.3) is its own client, whatever it forwards: the limit counts it,
    # and the consent record stores it.
    statuses = subscribe_together(
        site, "127.0.0.3", 15, lambda i: f"203.0.113.{i + 1}", lambda i: f"third{i}@example.com"
    )
    assert Counter(statuses) == {200: SUBSCRIBE_LIMIT, 429: 15 - SUBSCRIBE_LIMIT}
    assert {site.consent_ip(f"third{i}@example.com") for i, s in enumerate(statuses) if s == 200} == {"127.0.0.3"}

    # 127.0.0.1 is not trusted either once a proxy is configured (and has a limit of its own).
    with site.client("127.0.0.1") as local:
        assert subscribe(local, "local@example.com", "203.0.113.99") == 200
    assert site.consent_ip("local@example.com") == "127.0.0.1"

    # The trusted proxy (127.0.0.2) is believed: the client is the right-most address of
    # X-Forwarded-For that is not a trusted proxy (what the client itself prepended is ignored).
    with site.client("127.0.0.2") as proxy:
        assert subscribe(proxy, "chain@example.com", "198.51.100.1, 203.0.113.9, 127.0.0.2") == 200
        assert subscribe(proxy, "plain@example.com", None) == 200  # no header: the proxy itself
    assert site.consent_ip("chain@example.com") == "203.0.113.9"
    assert site.consent_ip("plain@example.com") == "127.0.0.2"

    # Through the proxy, every forwarded client has its own limit: more posts than one client
    # may make all pass, each stored with its client's address ...
    statuses = subscribe_together(
        site, "127.0.0.2", 15, lambda i: f"192.0.2.{i + 1}", lambda i: f"proxied{i}@example.com"
    )
    assert statuses == [200] * 15
    assert [site.consent_ip(f"proxied{i}@example.com") for i in range(15)] == [f"192.0.2.{i + 1}" for i in range(15)]
    # ... and one forwarded client is limited like any other.
    statuses = subscribe_together(site, "127.0.0.2", 15, lambda i: "192.0.2.200", lambda i: f"same{i}@example.com")
    assert Counter(statuses) == {200: SUBSCRIBE_LIMIT, 429: 15 - SUBSCRIBE_LIMIT}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("*", "would believe X-Forwarded-For from anyone"),
        ("10.0.0.5/8", "'10.0.0.5/8' is not an IP address or network"),
        ("127.0.0.1, proxy.internal", "'proxy.internal' is not an IP address or network"),
    ],
)
def test_a_trusted_proxy_setting_that_is_not_addresses_is_refused_naming_it(value, problem):
    from newsletter.config import Settings
    from newsletter.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"NEWSLETTER_TRUSTED_PROXIES": value, "NEWSLETTER_SECRET_KEY": "k" * 48})
    assert str(refused.value).startswith("NEWSLETTER_TRUSTED_PROXIES: ") and problem in str(refused.value)
    accepted = Settings.from_environ(
        {"NEWSLETTER_TRUSTED_PROXIES": " 127.0.0.1, 10.0.0.0/8,::1 ", "NEWSLETTER_SECRET_KEY": "k" * 48}
    )
    assert accepted.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
