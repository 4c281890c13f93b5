"""Several SMTP relays: NEWSLETTER_SMTP_URL's list, RelayTransport over real aiosmtpd servers, cool-downs
shared in a real Redis, and sends spread over two real capture servers by real workers (one stopped mid-send)."""

from __future__ import annotations

import html
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from newsletter.config import Settings, SmtpRelay, SmtpSettings, parse_smtp_relays
from newsletter.delivery.relay_state import RedisCoolDowns, add_shares, relay_key, relay_report
from newsletter.devtools.smtp_capture import DISCONNECT, CaptureServer
from newsletter.errors import ConfigError, SmtpUnreachable, TemporaryDeliveryError
from newsletter.mail.relays import LocalCoolDowns, RelayTransport, cool_down_seconds
from newsletter.mail.transport import ConnectionLost
from tests.conftest import Cli, clean_environ
from tests.test_admin_ui import admin, login, make_issue, start_send  # noqa: F401  (admin: a fixture)

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nHello.\r\n"


# --- NEWSLETTER_SMTP_URL -----------------------------------------------------------------------


def test_one_url_is_one_relay_as_before():
    (relay,) = parse_smtp_relays("smtps://ann:s%40cret@mail.example.net")
    assert relay == SmtpRelay(SmtpSettings("mail.example.net", 465, "ann", "s@cret", "tls"), 1)
    assert relay.name == "mail.example.net:465"
    settings = Settings.from_environ(clean_environ(NEWSLETTER_SMTP_URL="smtp://mail.example.net:2525"))
    assert settings.smtp == SmtpSettings("mail.example.net", 2525)
    assert settings.smtp_relays == (SmtpRelay(SmtpSettings("mail.example.net", 2525)),)
    assert settings.smtp_names == "mail.example.net:2525"


def test_several_relays_with_weights():
    relays = parse_smtp_relays("smtp://a.example:25?weight=3, smtps://user:pw@b.example:465?weight=1,smtp://c.example")
    assert [(r.name, r.weight, r.smtp.security, r.smtp.username, r.smtp.password) for r in relays] == [
        ("a.example:25", 3, "none", None, None),
        ("b.example:465", 1, "tls", "user", "pw"),
        ("c.example:25", 1, "none", None, None),
    ]
    settings = Settings.from_environ(clean_environ(NEWSLETTER_SMTP_URL="smtp://a.example:25?weight=3,smtp://b.example"))
    assert settings.smtp == relays[0].smtp  # the first relay, for whoever needs one server
    assert settings.smtp_names == "a.example:25, b.example:25"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "smtp://a.example:25,http://user:pw@b.example",
            "NEWSLETTER_SMTP_URL, relay 2 of 2: unsupported scheme 'http' in 'http://user:***@b.example'",
        ),
        ("smtp://a.example:25?weight=0,smtp://b", "NEWSLETTER_SMTP_URL, relay 1 of 2: weight must be a whole number"),
        ("smtp://a.example:25?weight=x", "NEWSLETTER_SMTP_URL: weight must be a whole number from 1 to 1000, not 'x'"),
        ("smtp://a.example:25,smtp://b?wieght=2", "NEWSLETTER_SMTP_URL, relay 2 of 2: unexpected query 'wieght=2'"),
        ("smtp://a.example:25,,smtp://b", "NEWSLETTER_SMTP_URL, relay 2 of 3: empty"),
        ("smtp://a.example:25,smtp://a.example", "relay a.example:25 is listed twice"),
        ("smtp://a.example:25,smtp://:pw@:25", "NEWSLETTER_SMTP_URL, relay 2 of 2: no host"),
    ],
)
def test_a_bad_relay_is_named_without_its_password(value, message):
    with pytest.raises(ConfigError) as caught:
        parse_smtp_relays(value)
    assert str(caught.value).startswith(message) or message in str(caught.value), str(caught.value)
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("smtp://bob:SECRET42@127.0.0.1:abc", "its port is not a number in 'smtp://bob:***@127.0.0.1:abc'"),
        ("http://bob:SECRET42@h:25", "unsupported scheme 'http' in 'http://bob:***@h:25'"),
        ("smtp://bob:SECRET42/x@h:25", "in 'smtp://bob:***@h:25'"),  # a slash in the password
        ("smtp://bob:SECRET42#x@h:25", "in 'smtp://bob:***@h:25'"),  # a hash in the password
        ("smtp://bob:SECRET42,x@h:25", "relay 1 of 2: its port is not a number in 'smtp://bob:***'"),  # a comma
    ],
)
def test_one_relay_with_a_malformed_url_is_named_without_its_password(value, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(clean_environ(NEWSLETTER_SMTP_URL=value))
    assert message in str(caught.value), str(caught.value)
    assert "SECRET42" not in str(caught.value)
    if "scheme" not in message:  # a malformed URL: its password's special characters are the usual cause
        assert "percent-encode @ : / ? # ," in str(caught.value)


@pytest.mark.parametrize("weight", ["\u00b2", "\u0663", "\uff13"])  # superscript two, Arabic-Indic and full-width three
def test_a_weight_is_written_in_ascii_digits(weight):
    with pytest.raises(ConfigError, match="weight must be a whole number from 1 to 1000"):
        parse_smtp_relays(f"smtp://a.example:25?weight={weight}")


def test_a_bad_relay_stops_the_cli_naming_it(tmp_path):
    env = clean_environ(
        NEWSLETTER_VAR_DIR=str(tmp_path / "var"), NEWSLETTER_SMTP_URL="smtp://a:25,smtps://u:secret@b:465?weight=-1"
    )
    result = Cli(env, tmp_path)("lists", "ls", check=False)
    assert result.returncode == 1
    assert "NEWSLETTER_SMTP_URL, relay 2 of 2: weight must be a whole number" in result.stderr, result.stderr
    assert "secret" not in result.stderr


# --- servers -----------------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[CaptureServer]]:
    started = [CaptureServer(port=0), CaptureServer(port=0)]
    for server in started:
        server.start()
    yield started
    for server in started:
        server.stop()


class Greeting421:
    """A real SMTP server that turns every client away at the greeting: ``421 4.3.2 ...`` and hang up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.turned_away = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.3.2 Too busy, try another server\r\n")
                self.turned_away += 1

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    """A local port nobody listens on (connections are refused)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def relay(port: int, weight: int = 1) -> SmtpRelay:
    return SmtpRelay(SmtpSettings("127.0.0.1", port), weight)


def received(*servers: CaptureServer) -> Counter[str]:
    return Counter(rcpt for server in servers for m in server.messages for rcpt in m.rcpt_tos)


# --- RelayTransport ----------------------------------------------------------------------------


def test_batches_are_spread_by_weight_over_one_connection_per_relay(servers):
    a, b = servers
    with RelayTransport([relay(a.port, 3), relay(b.port, 1)], timeout=5) as transport:
        chosen = []
        for batch in range(8):
            transport.start_batch()
            for i in range(5):
                transport.send("news@example.org", f"r{batch}-{i}@example.com", MESSAGE)
            chosen.append("a" if transport.current == f"127.0.0.1:{a.port}" else "b")
            assert transport.take_shares() == {transport.current: 5}
    assert chosen == ["a", "a", "b", "a"] * 2  # smooth weighted round-robin: 3 of 4, interleaved
    assert (len(a.messages), len(b.messages)) == (30, 10)
    assert (a.connections, b.connections) == (1, 1)  # each relay's connection reused across batches
    assert received(a, b) == {f"r{n}-{i}@example.com": 1 for n in range(8) for i in range(5)}


def test_a_refusing_relay_is_set_aside_and_its_message_goes_to_the_next(servers):
    a, _ = servers
    down = closed_port()
    cool_downs = LocalCoolDowns()
    with RelayTransport([relay(down, 5), relay(a.port, 1)], cool_downs, timeout=5) as transport:
        transport.start_batch()
        reply = transport.send("news@example.org", "ann@example.com", MESSAGE)  # tried on `down` first: weight 5
        assert reply.code == 250 and transport.current == f"127.0.0.1:{a.port}"
        cooling = cool_downs.cooling()[f"127.0.0.1:{down}"]
        assert "Connection refused" in cooling.error and cooling.until > time.time() + 25
        for batch in range(3):  # while it cools down, every batch goes to the other relay
            transport.start_batch()
            transport.send("news@example.org", f"b{batch}@example.com", MESSAGE)
            assert transport.current == f"127.0.0.1:{a.port}"
    assert received(a) == {"ann@example.com": 1, "b0@example.com": 1, "b1@example.com": 1, "b2@example.com": 1}


def test_a_relay_answering_421_at_the_greeting_is_set_aside(servers):
    a, _ = servers
    busy = Greeting421()
    try:
        cool_downs = LocalCoolDowns()
        with RelayTransport([relay(busy.port, 9), relay(a.port, 1)], cool_downs, timeout=5) as transport:
            transport.start_batch()
            assert transport.send("news@example.org", "ann@example.com", MESSAGE).code == 250
        assert busy.turned_away == 1
        assert "421 4.3.2 Too busy" in cool_downs.cooling()[f"127.0.0.1:{busy.port}"].error
        assert received(a) == {"ann@example.com": 1}
    finally:
        busy.close()


def test_a_421_closing_the_session_mid_transaction_fails_over(servers):
    a, b = servers
    a.replies["ann@example.com"] = "421 4.3.2 Closing, too many connections"
    cool_downs = LocalCoolDowns()
    with RelayTransport([relay(a.port, 1), relay(b.port, 1)], cool_downs, timeout=5) as transport:
        transport.start_batch()
        assert transport.send("news@example.org", "ann@example.com", MESSAGE).code == 250
        assert transport.take_shares() == {f"127.0.0.1:{b.port}": 1}
    assert received(a) == {} and received(b) == {"ann@example.com": 1}
    assert set(cool_downs.cooling()) == {f"127.0.0.1:{a.port}"}


def test_a_421_4_7_x_to_rcpt_is_the_domain_throttling_not_the_relay_failing(servers):
    """Gmail's "421 4.7.0 Try again later" to RCPT TO: the domain's pacing slows down, the relay stays in use."""
    a, b = servers
    a.replies["ann@gmail.example"] = "421 4.7.0 Try again later, closing connection"
    cool_downs = LocalCoolDowns()
    with RelayTransport([relay(a.port, 1), relay(b.port, 1)], cool_downs, timeout=5) as transport:
        transport.start_batch()
        with pytest.raises(TemporaryDeliveryError) as deferred:
            transport.send("news@example.org", "ann@gmail.example", MESSAGE)
        assert deferred.value.code == 421 and "(in reply to RCPT TO command)" in str(deferred.value)
        assert transport.current == f"127.0.0.1:{a.port}"
        assert transport.send("news@example.org", "bob@example.com", MESSAGE).code == 250  # same relay goes on
    assert not cool_downs.cooling()
    assert received(a, b) == {"bob@example.com": 1} and received(a) == {"bob@example.com": 1}


def test_a_connection_lost_before_the_whole_message_fails_over_but_after_it_does_not(servers):
    a, b = servers
    a.replies["trap@example.com"] = DISCONNECT  # hangs up at RCPT: the message never reached it
    a.data_replies["late@example.com"] = DISCONNECT  # hangs up after the whole message: it may have it
    cool_downs = LocalCoolDowns()
    with RelayTransport([relay(a.port, 1), relay(b.port, 1)], cool_downs, timeout=5) as transport:
        transport.start_batch()
        assert transport.send("news@example.org", "trap@example.com", MESSAGE).code == 250
        assert transport.current == f"127.0.0.1:{b.port}" and set(cool_downs.cooling()) == {f"127.0.0.1:{a.port}"}
    cool_downs.recovered(f"127.0.0.1:{a.port}")
    with RelayTransport([relay(a.port, 1), relay(b.port, 1)], cool_downs, timeout=5) as transport:
        transport.start_batch()  # a's turn first
        with pytest.raises(ConnectionLost) as lost:
            transport.send("news@example.org", "late@example.com", MESSAGE)
        assert lost.value.maybe_accepted and transport.current == f"127.0.0.1:{a.port}"
        assert not cool_downs.cooling()  # not set aside: the batch loop retries it later, as with one server
    assert received(a, b) == {"trap@example.com": 1}


def test_when_every_relay_cools_down_the_error_names_each(servers):
    down, busy = closed_port(), Greeting421()
    try:
        with RelayTransport([relay(down), relay(busy.port)], timeout=5) as transport:
            transport.start_batch()
            with pytest.raises(SmtpUnreachable) as caught:
                transport.send("news@example.org", "ann@example.com", MESSAGE)
            message = str(caught.value)
            assert message.startswith("every SMTP relay is cooling down: ")
            assert f"127.0.0.1:{down} until " in message and "(Connection refused)" in message
            assert f"127.0.0.1:{busy.port} until " in message and "421 4.3.2 Too busy" in message
            # The next batch does not knock again while they cool down.
            transport.start_batch()
            with pytest.raises(SmtpUnreachable):
                transport.send("news@example.org", "ann@example.com", MESSAGE)
        assert busy.turned_away == 1
    finally:
        busy.close()


def test_cool_downs_double_up_to_five_minutes():
    assert [cool_down_seconds(n) for n in range(1, 7)] == [30, 60, 120, 240, 300, 300]


# --- shared in Redis ---------------------------------------------------------------------------


def test_cool_downs_are_shared_through_redis_and_reset_on_success(servers, redis_url):
    a, b = servers
    client = redis.Redis.from_url(redis_url)
    names = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    relays = [relay(a.port), relay(b.port)]
    first = RelayTransport(relays, RedisCoolDowns(client, names), timeout=5)
    second = RelayTransport(relays, RedisCoolDowns(client, names), timeout=5)
    try:
        a.stop()  # relay a refuses from now on
        first.start_batch()
        first.send("news@example.org", "ann@example.com", MESSAGE)  # a refused, b took it
        state = client.hgetall(relay_key(names[0]))
        assert state[b"failures"] == b"1" and b"Connection refused" in state[b"error"]
        until = float(state[b"until"])
        assert 25 < until - time.time() <= 30.01  # written in ms
        # Another process sees a cooling down and never knocks: its batches go to b.
        for i in range(3):
            second.start_batch()
            second.send("news@example.org", f"x{i}@example.com", MESSAGE)
            assert second.current == names[1]
        # Setting it aside again while it cools down keeps the cool-down (one outage, many workers).
        assert RedisCoolDowns(client, names).set_aside(names[0], "again").until == pytest.approx(until, abs=0.01)
        # Once it expired, the next failure doubles it.
        client.hset(relay_key(names[0]), "until", f"{time.time() - 1:.3f}")
        cooling = RedisCoolDowns(client, names).set_aside(names[0], "refused again")
        assert 55 < cooling.until - time.time() <= 60.01
        assert client.hget(relay_key(names[0]), "failures") == b"2"
        # The relay answers again and accepts a message: its failures are forgotten.
        a.start()
        client.hset(relay_key(names[0]), "until", f"{time.time() - 1:.3f}")
        third = RelayTransport([SmtpRelay(SmtpSettings("127.0.0.1", a.port))], RedisCoolDowns(client, names[:1]))
        third.start_batch()
        third.send("news@example.org", "back@example.com", MESSAGE)
        assert client.exists(relay_key(names[0])) == 0
        third.close()
    finally:
        first.close()
        second.close()
        client.close()


def test_the_report_shows_shares_and_states(redis_url):
    client = redis.Redis.from_url(redis_url)
    relays = [relay(2525, 3), relay(2526, 1)]
    assert add_shares(client, "7.abc", {"127.0.0.1:2525": 30, "127.0.0.1:2526": 10})
    assert add_shares(client, "7.abc", {"127.0.0.1:2525": 3})
    RedisCoolDowns(client, ["127.0.0.1:2526"]).set_aside("127.0.0.1:2526", "cannot connect: Connection refused")
    report = relay_report(client, relays, "7.abc")
    assert report is not None
    first, second = report
    assert (first.sent, first.state, first.describe()) == (33, "ok", "33 messages (weight 3), ok")
    assert (second.sent, second.state) == (10, "cooling down")
    assert second.describe().startswith("10 messages (weight 1), cooling down until ")
    assert second.describe().endswith(" UTC: cannot connect: Connection refused")
    assert second.as_json()["cooling_until"] is not None and second.as_json()["relay"] == "127.0.0.1:2526"
    assert 0 < client.ttl("newsletter:relay-shares:7.abc") <= 7 * 86400
    assert relay_report(client, relays[:1], "7.abc") is None  # one relay: nothing to show
    # The send used 2526, which the configuration (read by `sends status` now) no longer lists: its share stays.
    later = relay_report(client, [relay(2525, 3), relay(2527, 1)], "7.abc")
    assert later is not None
    assert [(r.name, r.sent, r.state) for r in later] == [
        ("127.0.0.1:2525", 33, "ok"),
        ("127.0.0.1:2527", 0, "ok"),
        ("127.0.0.1:2526", 10, "not configured"),
    ]
    assert later[2].describe() == "10 messages (no longer configured)"
    down = redis.Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=1)
    unknown = relay_report(down, relays, "7.abc")
    assert unknown is not None and {r.state for r in unknown} == {"unknown"} and unknown[0].sent is None
    client.close()


# --- sends with real workers -------------------------------------------------------------------


def two_relays(room, other: CaptureServer, weights: tuple[int, int]) -> tuple[str, str]:
    a, b = f"127.0.0.1:{room.capture.port}", f"127.0.0.1:{other.port}"
    room.cli.env["NEWSLETTER_SMTP_URL"] = f"smtp://{a}?weight={weights[0]},smtp://{b}?weight={weights[1]}"
    return a, b


def test_a_send_is_spread_over_two_relays_by_weight(newsroom):
    room = newsroom
    with CaptureServer(port=0) as other:
        a, b = two_relays(room, other, (3, 1))
        room.cli.env["NEWSLETTER_BATCH_SIZE"] = "10"
        addresses = room.setup_list(200)
        issue_id = room.create_issue()
        room.start_worker(concurrency=2)
        send_id = room.send(issue_id)
        final = room.wait_status(send_id)
        assert (final["sent"], final["failed"]) == (200, 0)
        got_a, got_b = received(room.capture), received(other)
        assert got_a + got_b == {address: 1 for address in addresses}  # exactly one copy each
        assert sum(got_b.values()) > 0 and 2.0 <= sum(got_a.values()) / sum(got_b.values()) <= 5.0
        relays = {r["relay"]: r for r in final["relays"]}
        assert relays[a]["sent"] == sum(got_a.values()) and relays[b]["sent"] == sum(got_b.values())
        assert (relays[a]["weight"], relays[b]["weight"]) == (3, 1)
        assert relays[a]["state"] == relays[b]["state"] == "ok"
        text = room.cli("sends", "status", send_id).stdout
        assert f"relay {a}" in text and f"{sum(got_a.values())} messages (weight 3), ok" in text


def test_a_relay_stopped_mid_send_hands_its_work_to_the_other(newsroom):
    room = newsroom
    other = CaptureServer(port=0)
    other.start()
    try:
        a, b = two_relays(room, other, (1, 1))
        room.cli.env["NEWSLETTER_BATCH_SIZE"] = "10"
        room.cli.env["NEWSLETTER_SEND_RATE"] = "100"  # about 3 s: time to stop one relay half-way
        addresses = room.setup_list(300)
        issue_id = room.create_issue()
        room.start_worker(concurrency=2)
        stopped = threading.Event()

        def stop_b_half_way() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(room.capture.messages) + len(other.messages) < 100:
                time.sleep(0.005)
            other.stop()
            stopped.set()

        watcher = threading.Thread(target=stop_b_half_way, daemon=True)
        watcher.start()
        send_id = room.send(issue_id)
        final = room.wait_status(send_id)
        watcher.join(10)
        assert stopped.is_set()
        got_a, got_b = received(room.capture), received(other)
        assert got_a + got_b == {address: 1 for address in addresses}  # nobody lost, nobody twice
        assert 0 < sum(got_b.values()) < 300 and (final["sent"], final["failed"]) == (300, 0)
        relays = {r["relay"]: r for r in final["relays"]}
        assert relays[a]["sent"] == sum(got_a.values()) and relays[b]["sent"] == sum(got_b.values())
        assert relays[a]["state"] == "ok"
        assert relays[b]["state"] == "cooling down" and "Connection refused" in relays[b]["last_error"]
        text = room.cli("sends", "status", send_id).stdout
        assert f"relay {b}" in text and "cooling down until " in text
    finally:
        other.stop()


def test_when_every_relay_is_down_the_send_waits_and_says_why(newsroom):
    room = newsroom
    busy = Greeting421()
    try:
        a = f"127.0.0.1:{closed_port()}"
        b = f"127.0.0.1:{busy.port}"
        room.cli.env["NEWSLETTER_SMTP_URL"] = f"smtp://{a},smtp://{b}"
        room.setup_list(5)
        issue_id = room.create_issue()
        room.start_worker(concurrency=1)
        send_id = room.send(issue_id)
        deadline = time.monotonic() + 60
        status = room.status(send_id)
        while not status["problem"] and time.monotonic() < deadline:
            time.sleep(0.3)
            status = room.status(send_id)
        problem = status["problem"] or ""
        assert problem.startswith(f"The SMTP relays {a}, {b} cannot be reached (every SMTP relay is cooling down: ")
        assert "Connection refused" in problem and "421 4.3.2 Too busy" in problem
        assert (status["sent"], status["failed"], status["pending"]) == (0, 0, 5)
        assert {r["state"] for r in status["relays"]} == {"cooling down"}
    finally:
        busy.close()


def test_the_admin_send_page_shows_each_relays_share_and_state(admin):  # noqa: F811
    from newsletter.delivery.send_status import send_key
    from newsletter.store.models import Send

    a, b = f"127.0.0.1:{admin.capture.port}", f"127.0.0.1:{closed_port()}"
    client = admin.client(NEWSLETTER_SMTP_URL=f"smtp://{a}?weight=2,smtp://{b}")
    login(client, "ann")
    send_id = start_send(client, make_issue(admin))
    with admin.sessions() as session:
        key = send_key(session.get(Send, send_id))
    broker = redis.Redis.from_url(admin.environ["NEWSLETTER_BROKER_URL"])
    add_shares(broker, key, {a: 40, b: 12})
    RedisCoolDowns(broker, [b]).set_aside(b, f"cannot connect to SMTP server {b}: Connection refused")
    broker.close()
    progress = client.get(f"/admin/sends/{send_id}/progress").json()
    assert [(r["relay"], r["weight"], r["sent"], r["state"]) for r in progress["relays"]] == [
        (a, 2, 40, "ok"),
        (b, 1, 12, "cooling down"),
    ]
    assert progress["relays"][1]["line"].startswith("cooling down until ")
    page = html.unescape(client.get(f"/admin/sends/{send_id}").text)
    assert '<h2 id="relays-h">SMTP relays</h2>' in page
    assert f"<td>{a}</td><td>2</td><td>40</td><td>ok</td>" in page
    assert re.search(rf"<td>{b}</td><td>1</td><td>12</td><td>cooling down until \d\d:\d\d:\d\d UTC: ", page)
    # With one SMTP server there is nothing to compare: no relay table.
    single = admin.logged_in("ann")
    assert single.get(f"/admin/sends/{send_id}/progress").json()["relays"] is None
    assert "SMTP relays" not in single.get(f"/admin/sends/{send_id}").text
