"""Pacing per receiving domain (NEWSLETTER_DOMAIN_RATES): the Lua buckets against the real Redis, the
batch's queue, and whole sends through a real worker into a real capture SMTP server."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis

from newsletter.config import Settings, parse_domain_rates
from newsletter.delivery.domain_pacing import (
    FLOOR_FRACTION,
    FLOOR_RATE,
    SLOWED_KEY,
    DomainPacer,
    describe_rate,
    domain_of,
    is_slow_down,
    pace_key,
)
from newsletter.errors import ConfigError, TemporaryDeliveryError
from tests.conftest import Cli
from tests.sendkit import Newsroom

T0 = 1_800_000_000.0  # a fixed "now" (Unix time) for the bucket arithmetic


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


# --- the setting ----------------------------------------------------------------------------


def test_rates_are_read_per_second_with_domains_in_their_ascii_form():
    assert parse_domain_rates("gmail.com=50/s, Yahoo.COM=30/m ,*=7200/h,bücher.de=2/S") == (
        ("gmail.com", 50.0),
        ("yahoo.com", 0.5),
        ("*", 2.0),
        ("xn--bcher-kva.de", 2.0),
    )
    assert parse_domain_rates("") == ()


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("gmail.com=50", "'gmail.com=50' is not DOMAIN=NUMBER/s, /m or /h"),
        ("gmail.com=50/s,yahoo.com", "'yahoo.com' is not DOMAIN=NUMBER/s"),
        ("gmail.com=fast/s", "'gmail.com=fast/s' is not DOMAIN=NUMBER/s"),
        ("gmail.com=5/d", "'gmail.com=5/d' is not DOMAIN=NUMBER/s"),
        ("=5/s", "'=5/s' is not DOMAIN=NUMBER/s"),
        ("gmail..com=5/s", "'gmail..com' is not a domain name"),
        ("gmail.com=0/s", "'gmail.com=0/s': the rate must be more than 0"),
        ("gmail.com=5/s,GMAIL.com=6/s", "gmail.com is given twice"),
        ("gmail.com=\u0663/s", "is not DOMAIN=NUMBER/s"),  # an Arabic-Indic three: digits are ASCII digits
    ],
)
def test_a_malformed_value_is_a_config_error_naming_the_bad_part(tmp_path: Path, value: str, named: str):
    with pytest.raises(ConfigError) as error:
        Settings.from_environ({"NEWSLETTER_VAR_DIR": str(tmp_path), "NEWSLETTER_DOMAIN_RATES": value})
    assert str(error.value).startswith("NEWSLETTER_DOMAIN_RATES: ")
    assert named in str(error.value)


def test_settings_carry_the_rates_and_unset_means_no_pacing(tmp_path: Path):
    env = {"NEWSLETTER_VAR_DIR": str(tmp_path)}
    assert Settings.from_environ(env).domain_rates == ()
    paced = Settings.from_environ({**env, "NEWSLETTER_DOMAIN_RATES": "gmail.com=50/s,*=500/s"})
    assert paced.domain_rates == (("gmail.com", 50.0), ("*", 500.0))


def test_domains_are_the_lowercased_part_after_the_last_at_in_ascii_form():
    assert domain_of("Ann@GMail.COM") == "gmail.com"
    assert domain_of('"a@b"@Bücher.de') == "xn--bcher-kva.de"


def test_a_421_or_a_4_7_status_asks_to_slow_down_other_temporary_errors_do_not():
    assert is_slow_down(TemporaryDeliveryError("421 4.7.0 Try again later (in reply to RCPT TO command)", code=421))
    assert is_slow_down(TemporaryDeliveryError("450 4.7.1 Rate limited (in reply to RCPT TO command)", code=450))
    assert not is_slow_down(TemporaryDeliveryError("452 4.2.2 Mailbox full (in reply to RCPT TO command)", code=452))
    assert not is_slow_down(TemporaryDeliveryError("connection lost", code=None))


def test_rates_are_described_in_the_unit_a_person_reads():
    assert describe_rate(50) == "50/s"
    assert describe_rate(0.5) == "30/m"
    assert describe_rate(FLOOR_RATE) == "1/m"
    assert describe_rate(1 / 7200) == "0.5/h"


# --- the buckets in Redis -------------------------------------------------------------------


def test_a_bucket_grants_its_burst_then_its_rate_and_says_how_long_to_wait(client: redis.Redis):
    pacer = DomainPacer(client, [("slow.example", 10.0)], burst_seconds=0.2)  # a burst of 2
    first = pacer.take({"slow.example": 5}, now=T0)["slow.example"]
    assert first.granted == 2 and first.wait == pytest.approx(0.1, abs=1e-5)
    early = pacer.take({"slow.example": 5}, now=T0 + 0.05)["slow.example"]
    assert early.granted == 0 and early.wait == pytest.approx(0.05, abs=1e-5)
    later = pacer.take({"slow.example": 5}, now=T0 + 0.35)["slow.example"]  # 3.5 tokens refilled, capped at 2
    assert later.granted == 2
    enough = pacer.take({"slow.example": 1}, now=T0 + 0.5)["slow.example"]
    assert (enough.granted, enough.wait) == (1, 0.0)


def test_one_round_trip_answers_for_several_domains_each_its_own_bucket(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 10.0), ("*", 5.0)], burst_seconds=1.0)
    grants = pacer.take({"gmail.com": 20, "a.example": 20, "b.example": 3}, now=T0)
    assert {d: g.granted for d, g in grants.items()} == {"gmail.com": 10, "a.example": 5, "b.example": 3}
    assert grants["b.example"].wait == 0.0
    assert client.exists(pace_key("a.example"), pace_key("b.example"), pace_key("gmail.com")) == 3


def test_domains_without_a_rate_and_no_default_are_not_paced(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 1.0)])
    grants = pacer.take({"other.example": 1000, "gmail.com": 3}, now=T0)
    assert grants["other.example"].granted == 1000
    assert grants["gmail.com"].granted == 1
    assert not client.exists(pace_key("other.example"))


def test_buckets_run_on_the_redis_clock_when_no_time_is_given(client: redis.Redis):
    pacer = DomainPacer(client, [("slow.example", 1.0)])
    assert pacer.take({"slow.example": 3})["slow.example"].granted == 1
    again = pacer.take({"slow.example": 3})["slow.example"]
    assert again.granted == 0 and 0 < again.wait <= 1.0


def test_workers_taking_at_once_never_get_more_than_the_bucket_holds(redis_url: str):
    """Eight clients, each on its own connection, at the same instant: the script is atomic."""
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        pacer = DomainPacer(redis.Redis.from_url(redis_url), [("slow.example", 25.0)], burst_seconds=1.0)
        mine = sum(pacer.take({"slow.example": 2}, now=T0)["slow.example"].granted for _ in range(20))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25


def test_a_421_halves_the_rate_once_per_burst_down_to_the_floor(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 8.0)], quiet_seconds=60.0)
    assert pacer.slow_down("gmail.com", now=T0) == 4.0
    assert pacer.slow_down("gmail.com", now=T0 + 0.5) == 4.0  # the same burst of 421s: halved once
    assert pacer.slow_down("gmail.com", now=T0 + 1.0) == 2.0
    for i in range(20):
        rate = pacer.slow_down("gmail.com", now=T0 + 2.0 + i)
    assert rate == pytest.approx(8.0 * FLOOR_FRACTION)  # six halvings at most: a refusing domain is still tried
    (slowed,) = pacer.slowed(now=T0 + 30)
    assert (slowed.domain, slowed.configured) == ("gmail.com", 8.0) and slowed.rate == pytest.approx(0.125)


def test_a_slow_domain_backs_off_to_one_a_minute_at_least(client: redis.Redis):
    pacer = DomainPacer(client, [("small.example", 0.5), ("tiny.example", 1 / 120)])
    for i in range(20):
        rate = pacer.slow_down("small.example", now=T0 + i)
    assert rate == pytest.approx(FLOOR_RATE)  # 0.5/s / 64 would be below one a minute
    assert pacer.slow_down("tiny.example", now=T0) == pytest.approx(1 / 120)  # configured below the floor: kept


def test_a_slowed_bucket_grants_at_the_slowed_rate(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 10.0)], burst_seconds=1.0, quiet_seconds=60.0)
    assert pacer.take({"gmail.com": 10}, now=T0)["gmail.com"].granted == 10
    pacer.slow_down("gmail.com", now=T0)  # 5/s: the bucket shrinks to 5
    assert pacer.take({"gmail.com": 100}, now=T0 + 10)["gmail.com"].granted == 5
    grant = pacer.take({"gmail.com": 100}, now=T0 + 10.4)["gmail.com"]
    assert grant.granted == 2 and grant.wait == pytest.approx(0.2, abs=1e-5)


def test_after_a_quiet_period_the_rate_doubles_back_to_the_configured_one(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 40.0)], quiet_seconds=60.0, burst_seconds=1.0)
    for i in range(3):
        pacer.slow_down("gmail.com", now=T0 + 2 * i)  # 20, 10, 5/s; the last 421 at T0 + 4
    assert [s.rate for s in pacer.slowed(now=T0 + 63)] == [5.0]
    assert [s.rate for s in pacer.slowed(now=T0 + 64)] == [10.0]
    assert pacer.take({"gmail.com": 100}, now=T0 + 64)["gmail.com"].granted == 10  # the burst of 10/s
    assert [s.rate for s in pacer.slowed(now=T0 + 124)] == [20.0]
    assert pacer.slow_down("gmail.com", now=T0 + 130) == 10.0  # another 421: halved from 20, quiet period anew
    assert [s.rate for s in pacer.slowed(now=T0 + 189)] == [10.0]
    assert pacer.take({"gmail.com": 100}, now=T0 + 250)["gmail.com"].granted == 40  # 40/s again
    assert pacer.slowed(now=T0 + 250) == []
    assert client.zcard(SLOWED_KEY) == 0 and client.hget(pace_key("gmail.com"), "slow") is None


def test_a_domain_without_a_rate_is_not_slowed_down(client: redis.Redis):
    pacer = DomainPacer(client, [("gmail.com", 10.0)])
    assert pacer.slow_down("other.example", now=T0) is None
    assert pacer.slowed(now=T0) == []


# --- a batch's queue ------------------------------------------------------------------------


def test_rows_of_a_domain_without_a_token_wait_while_the_others_go_on(client: redis.Redis):
    pacer = DomainPacer(client, [("slow.example", 1 / 60)])  # one a minute: a burst of one
    domains = ["slow.example", "a.example", "slow.example", "b.example", "slow.example", "c.example"]
    queue = pacer.queue(domains, list(range(len(domains))))
    went = []
    while (index := queue.next()) is not None:
        went.append(index)
    assert went == [0, 1, 3, 5]
    assert not queue.done and queue.set_aside == 2
    assert queue.give_back() == 2 and queue.done


def test_one_round_trip_takes_tokens_for_the_next_rows(client: redis.Redis):
    pacer = DomainPacer(client, [("*", 1000.0)])
    domains = [f"d{i % 4}.example" for i in range(12)]
    queue = pacer.queue(domains, list(range(12)))
    assert [queue.next() for _ in range(12)] == list(range(12))
    assert queue.next() is None and queue.done
    assert all(int(client.hget(pace_key(f"d{i}.example"), "tokens") or 0) < 1000 for i in range(4))
    assert sum(queue.tokens.values()) == 0  # every token taken was used by a row


# --- whole sends ----------------------------------------------------------------------------


def _import(room: Newsroom, addresses: list[str], slug: str = "weekly") -> None:
    room.cli("lists", "create", slug, "--name", "Weekly", "--from-email", "news@example.org", "--from-name", "Weekly")
    path = room.tmp / f"{slug}.csv"
    path.write_text("email,name\n" + "".join(f"{a},Reader {i}\n" for i, a in enumerate(addresses)))
    room.cli("subscribers", "import", slug, str(path), "--confirmed")


def test_a_slow_domain_goes_at_its_rate_without_holding_back_the_others(newsroom: Newsroom):
    slow = [f"reader{i:03d}@slow.example" for i in range(60)]
    others = [f"reader{i:03d}@{d}" for i in range(120) for d in ("fast.example", "other.example")]
    # every fifth recipient is at the slow domain, in every batch
    addresses = [a for group in zip(*(iter(others),) * 4, slow, strict=True) for a in group]
    _import(newsroom, addresses)
    newsroom.start_worker(concurrency=2, NEWSLETTER_DOMAIN_RATES="slow.example=10/s")
    send_id = newsroom.send(newsroom.create_issue())
    newsroom.wait_status(send_id, timeout=180)

    assert newsroom.received() == Counter(addresses)  # everyone got exactly one copy
    arrivals = sorted((m.received_at.timestamp(), m.rcpt_tos[0]) for m in newsroom.capture.messages)
    slow_times = [t for t, rcpt in arrivals if rcpt.endswith("@slow.example")]
    per_second = Counter(int(t) for t in slow_times)
    # 10/s, a bucket of 2 (0.2 s), and a token taken just before a second's end used just after it
    assert max(per_second.values()) <= 10 + 2 + 2, sorted(per_second.items())
    other_times = [t for t, rcpt in arrivals if not rcpt.endswith("@slow.example")]
    # The others were not held back behind the slow domain: they were all in while it still had mail to go.
    # (At 10/s its 60 take at least 5.8 s; the others take as long as this machine needs for 240 messages.)
    assert max(other_times) < slow_times[-1]
    assert sum(t > max(other_times) for t in slow_times) >= 5


class _SlowDownFirst(dict[str, str]):
    """The capture server's replies: 421 4.7.0 at RCPT for the first ``times`` recipients at ``domain``."""

    def __init__(self, domain: str, times: int) -> None:
        super().__init__()
        self.domain, self.left = domain, times
        self.lock = threading.Lock()

    def get(self, address: str, default: str | None = None) -> str | None:  # type: ignore[override]  # replies' lookup
        if not address.lower().endswith("@" + self.domain):
            return default
        with self.lock:
            if self.left <= 0:
                return default
            self.left -= 1
        return "421 4.7.0 Too many messages, slow down"


def test_a_domain_answering_421_is_slowed_down_and_everyone_still_gets_one_copy(newsroom: Newsroom, redis_url: str):
    busy = [f"reader{i:03d}@busy.example" for i in range(40)]
    others = [f"reader{i:03d}@calm.example" for i in range(80)]
    addresses = [a for group in zip(*(iter(others),) * 2, busy, strict=True) for a in group]
    _import(newsroom, addresses)
    replies = _SlowDownFirst("busy.example", times=4)
    newsroom.capture.replies = replies
    newsroom.start_worker(concurrency=2, NEWSLETTER_DOMAIN_RATES="busy.example=40/s,*=1000/s")
    send_id = newsroom.send(newsroom.create_issue())
    status = newsroom.wait_status(send_id, timeout=180)

    assert replies.left == 0  # the server did say 421 four times
    assert newsroom.received() == Counter(addresses)  # and yet everyone got exactly one copy
    assert status["failed"] == 0 and status["sent"] == len(addresses)
    pacer = DomainPacer(redis.Redis.from_url(redis_url), [("busy.example", 40.0), ("*", 1000.0)])
    slowed = {s.domain: s.rate for s in pacer.slowed()}
    assert set(slowed) == {"busy.example"}  # the busy domain alone, not calm.example
    assert slowed["busy.example"] <= 20.0
    log = "\n".join(w.log.read_text() for w in newsroom.workers)
    assert "busy.example answered 421 4.7.0 Too many messages, slow down" in log
    assert "its rate is now" in log


def test_sends_status_names_the_domains_slowed_down(newsroom: Newsroom, redis_url: str):
    _import(newsroom, ["ann@gmail.com", "bob@calm.example"])
    send_id = newsroom.send(newsroom.create_issue())  # no worker runs: the send stays sending
    rates = "gmail.com=50/s,*=500/s"
    cli = Cli(env={**newsroom.cli.env, "NEWSLETTER_DOMAIN_RATES": rates}, cwd=newsroom.cli.cwd)
    assert "slowed_domains" in json.loads(cli("sends", "status", send_id, "--json").stdout)
    assert json.loads(cli("sends", "status", send_id, "--json").stdout)["slowed_domains"] == []

    DomainPacer(redis.Redis.from_url(redis_url), parse_domain_rates(rates)).slow_down("gmail.com")
    data = json.loads(cli("sends", "status", send_id, "--json").stdout)
    assert data["status"] == "sending"
    assert [(d["domain"], d["rate"], d["configured"]) for d in data["slowed_domains"]] == [("gmail.com", 25.0, 50.0)]
    text = cli("sends", "status", send_id).stdout
    assert "slowed gmail.com" in text and "25/s of 50/s" in text
    assert "slowed_domains" not in newsroom.status(send_id)  # without NEWSLETTER_DOMAIN_RATES: nothing is paced


def test_a_domain_throttling_hard_is_paced_and_does_not_pause_the_send(newsroom: Newsroom):
    """Every first try at busy.example is answered 421 4.7.0: a quarter of all attempts, past the 20 % pause
    threshold, yet the send is not paused for errors: a throttling domain is paced, not a sign the send is broken."""
    busy = [f"reader{i:03d}@busy.example" for i in range(40)]
    others = [f"reader{i:03d}@calm.example" for i in range(80)]
    addresses = [a for group in zip(*(iter(others),) * 2, busy, strict=True) for a in group]
    _import(newsroom, addresses)
    replies = _SlowDownFirst("busy.example", times=len(busy))
    newsroom.capture.replies = replies
    newsroom.start_worker(concurrency=2, NEWSLETTER_DOMAIN_RATES="busy.example=160/s,*=1000/s")
    send_id = newsroom.send(newsroom.create_issue())
    status = newsroom.wait_status(send_id, timeout=180)

    assert replies.left == 0  # 40 of the 160 attempts were refused with 421 4.7.0
    assert status["status"] == "finished" and "paused" not in (status.get("status_reason") or "")
    assert newsroom.received() == Counter(addresses)
    assert status["failed"] == 0 and status["sent"] == len(addresses)
