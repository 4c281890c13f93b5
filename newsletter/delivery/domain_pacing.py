"""Pacing per receiving domain (``NEWSLETTER_DOMAIN_RATES``), held across all workers of all hosts in Redis.

Each paced domain has a token bucket in Redis (``newsletter:pace:DOMAIN``): one Lua script
refills and takes from the buckets of several domains at once, atomically, on Redis's clock
(so the hosts' clocks do not matter). A worker asks for the tokens of the next rows of its
batch in one round trip (:class:`PacedQueue`) and keeps them briefly; a row whose domain has
none left waits, set aside with the time it may go, while the rest of the batch goes on.

A ``421`` or ``4.7.x`` answer for a recipient slows that domain down by itself
(:meth:`DomainPacer.slow_down`): its effective rate is halved (at most once per
:data:`SLOW_DOWN_EVERY` seconds, never below :data:`FLOOR_FRACTION` of the configured rate nor
:data:`FLOOR_RATE`), shared by every worker; after
:data:`QUIET_SECONDS` without another one it doubles back, each quiet period, to the
configured rate. Domains being slowed are listed in ``newsletter:pace:slowed`` for
``sends status`` (:func:`slowed_domains`).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.config import ascii_domain
from newsletter.delivery.send_control import PREFIX, redis_errors_as_unavailable
from newsletter.errors import TemporaryDeliveryError

if TYPE_CHECKING:
    import redis


#: Seconds without a 421/4.7.x from a slowed domain after which its rate doubles (again, up to the configured one).
QUIET_SECONDS = 60.0
#: The lowest rate a back-off goes to, as a share of the configured rate: six halvings (50/s -> 0.78/s).
#: A domain that keeps answering 421 is still tried, at this pace, while each refused recipient is
#: retried on its own schedule; deeper would starve a send for hours on a server that refuses by rote.
FLOOR_FRACTION = 1 / 64
#: The lowest rate a back-off goes to in any case: one message a minute (or the configured rate, if lower).
FLOOR_RATE = 1 / 60
#: A burst of 421s (every worker's messages in flight) halves the rate once: at most once per this many seconds.
SLOW_DOWN_EVERY = 1.0
#: A domain's bucket holds this many seconds of its rate (at least one message): a burst's size.
BURST_SECONDS = 0.2
#: Tokens a worker took but has not used this long are dropped (so tokens taken for later rows cannot bunch up).
GRANT_SECONDS = 0.5
#: How many upcoming rows of a batch one round trip asks tokens for.
LOOKAHEAD = 32
#: A batch with only waiting rows left (most of its rows) sleeps until the first may go, if that is at most
#: this many seconds away; for a longer wait it gives the rows back, due then, and the worker goes on with other batches.
SLEEP_AT_MOST = 2.0

SLOWED_KEY = f"{PREFIX}:pace:slowed"


def pace_key(domain: str) -> str:
    """The hash of a domain's bucket and back-off state."""
    return f"{PREFIX}:pace:{domain}"


# Shared by both scripts: the current time (ARGV[1], or Redis's clock when empty) and a domain's
# effective rate: the configured one, or the slowed one doubled for each quiet period since.
_COMMON = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function effective(slow, since, rate, now, quiet)
  if not slow then return rate, nil, nil end
  local steps = math.min(64, math.floor((now - since) / quiet))
  if steps > 0 then
    slow = slow * 2 ^ steps
    since = since + steps * quiet
  end
  if slow >= rate then return rate, nil, nil end
  return slow, slow, since
end
local function save(key, slowed, domain, tokens, now, eff, slow, since, was_slow, rate, quiet, burst_seconds)
  if slow then
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now), 'slow', tostring(slow), 'since', tostring(since))
    local steps = math.ceil(math.log(rate / slow) / math.log(2)) + 1
    redis.call('PEXPIRE', key, math.ceil(steps * quiet * 1000))
  else
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
    if was_slow then
      redis.call('HDEL', key, 'slow', 'since', 'halved')
      redis.call('ZREM', slowed, domain)
    end
    redis.call('PEXPIRE', key, math.ceil((math.max(burst_seconds, 1 / eff) + 1) * 1000))
  end
end
"""

# KEYS: the slowed set, then one bucket per domain. ARGV: now ('' = Redis's clock), quiet seconds,
# burst seconds, then per domain: its name, its configured rate, the tokens wanted.
# Returns per domain: tokens granted, and microseconds until the next one when fewer than wanted.
_TAKE = (
    _COMMON
    + """
local now = clock(ARGV[1])
local quiet = tonumber(ARGV[2])
local burst_seconds = tonumber(ARGV[3])
local out = {}
for i = 2, #KEYS do
  local base = 4 + (i - 2) * 3
  local domain, rate, want = ARGV[base], tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'at', 'slow', 'since')
  local eff, slow, since = effective(tonumber(s[3]), tonumber(s[4]), rate, now, quiet)
  local burst = math.max(1, eff * burst_seconds)
  local tokens = tonumber(s[1]) or burst
  local at = tonumber(s[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * eff)
  local granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
  local wait = 0
  if granted < want then wait = math.ceil((1 - tokens) / eff * 1000000) end
  save(KEYS[i], KEYS[1], domain, tokens, now, eff, slow, since, s[3], rate, quiet, burst_seconds)
  out[#out + 1] = granted
  out[#out + 1] = wait
end
return out
"""
)

# KEYS: the slowed set, the domain's bucket. ARGV: now, quiet seconds, burst seconds, the domain,
# its configured rate, the floor (already min(rate, max(rate * fraction, floor rate))), the seconds
# between two halvings. Returns the new effective rate.
_SLOW_DOWN = (
    _COMMON
    + """
local now = clock(ARGV[1])
local quiet = tonumber(ARGV[2])
local burst_seconds = tonumber(ARGV[3])
local domain, rate = ARGV[4], tonumber(ARGV[5])
local floor = tonumber(ARGV[6])
local every = tonumber(ARGV[7])
local s = redis.call('HMGET', KEYS[2], 'tokens', 'at', 'slow', 'since', 'halved')
local eff, slow, since = effective(tonumber(s[3]), tonumber(s[4]), rate, now, quiet)
local tokens = tonumber(s[1]) or math.max(1, eff * burst_seconds)
local at = tonumber(s[2]) or now
tokens = math.min(math.max(1, eff * burst_seconds), tokens + math.max(0, now - at) * eff)
local halved = tonumber(s[5])
if not halved or now - halved >= every then
  eff = math.max(floor, eff / 2)
  redis.call('HSET', KEYS[2], 'halved', tostring(now))
end
tokens = math.min(tokens, math.max(1, eff * burst_seconds))
if eff < rate then
  slow, since = eff, now
  redis.call('ZADD', KEYS[1], now, domain)
  -- forget domains whose state lapsed long ago (their climb back is over)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 64 * quiet)
end
save(KEYS[2], KEYS[1], domain, tokens, now, eff, slow, since, s[3], rate, quiet, burst_seconds)
return tostring(eff)
"""
)


def domain_of(address: str) -> str:
    """The receiving domain of an address: the part after the last @, lower-cased, in its ASCII form."""
    domain = address.rpartition("@")[2].lower()
    if domain.isascii():
        return domain
    try:
        return ascii_domain(domain)
    except ValueError:
        return domain  # the transport refuses the address; its rate is the default one


def is_slow_down(exc: TemporaryDeliveryError) -> bool:
    """Whether a temporary error asks the sender to slow down: a 421 or an RFC 3463 4.7.x status."""
    if exc.code is None:
        return False  # the server could not be reached or the connection broke: nothing said about the domain
    if exc.code == 421:
        return True
    from newsletter.mail.transport import enhanced_status

    status = enhanced_status(str(exc))
    return status is not None and status.startswith("4.7.")


class DomainRates:
    """The configured rates: a domain's own, or the ``*`` one, or None (not paced)."""

    def __init__(self, rates: Iterable[tuple[str, float]]) -> None:
        self.rates = {domain: rate for domain, rate in rates if domain != "*"}
        self.default = dict(rates).get("*")

    def rate_for(self, domain: str) -> float | None:
        return self.rates.get(domain, self.default)


@dataclass(frozen=True)
class Grant:
    """What a domain's bucket gave: ``granted`` tokens, and the seconds until the next when fewer than wanted."""

    granted: int
    wait: float


@dataclass(frozen=True)
class SlowedDomain:
    """A domain being slowed down after a 421 or 4.7.x: its rate now, its configured rate, since when (Unix time)."""

    domain: str
    rate: float
    configured: float
    since: float

    def as_json(self) -> dict[str, object]:
        return {"domain": self.domain, "rate": self.rate, "configured": self.configured, "since": self.since}

    def describe(self) -> str:
        """``25/s of 50/s (slowed down after a 421 or 4.7.x at 22:01:05)``."""
        at = time.strftime("%H:%M:%S", time.localtime(self.since))
        return (
            f"{describe_rate(self.rate)} of {describe_rate(self.configured)} (slowed down after a 421 or 4.7.x at {at})"
        )


class DomainPacer:
    """The shared buckets of the paced domains. Each method raises ControlUnavailable when Redis cannot be reached.

    ``quiet_seconds`` (:data:`QUIET_SECONDS`) and the other constants can be given for tests.
    """

    def __init__(
        self,
        client: redis.Redis,
        rates: Iterable[tuple[str, float]],
        *,
        quiet_seconds: float = QUIET_SECONDS,
        burst_seconds: float = BURST_SECONDS,
        floor_rate: float = FLOOR_RATE,
        floor_fraction: float = FLOOR_FRACTION,
        slow_down_every: float = SLOW_DOWN_EVERY,
    ) -> None:
        self.redis = client
        self.rates = DomainRates(rates)
        self.quiet_seconds, self.burst_seconds = quiet_seconds, burst_seconds
        self.floor_rate, self.floor_fraction, self.slow_down_every = floor_rate, floor_fraction, slow_down_every
        self._take = client.register_script(_TAKE)
        self._slow_down = client.register_script(_SLOW_DOWN)

    def queue(self, domains: Sequence[str], order: Sequence[int]) -> PacedQueue:
        """A batch's rows (``order``: indexes into ``domains``, each row's domain) as they may go."""
        return PacedQueue(self, domains, order)

    @redis_errors_as_unavailable
    def take(self, wanted: Mapping[str, int], *, now: float | None = None) -> dict[str, Grant]:
        """Take up to ``wanted[domain]`` tokens from each paced domain's bucket, in one round trip.

        ``now`` (Unix time) is for tests; by default Redis's clock counts. Domains not paced are granted all.
        """
        paced = [(d, self.rates.rate_for(d), n) for d, n in wanted.items()]
        grants = {d: Grant(n, 0.0) for d, rate, n in paced if rate is None}
        asked = [(d, rate, n) for d, rate, n in paced if rate is not None and n > 0]
        if not asked:
            return grants
        args: list[str | float | int] = ["" if now is None else repr(now), self.quiet_seconds, self.burst_seconds]
        for domain, rate, want in asked:
            args += [domain, repr(rate), want]
        answer = self._take(keys=[SLOWED_KEY, *(pace_key(d) for d, _, _ in asked)], args=args)
        for i, (domain, _, _) in enumerate(asked):
            grants[domain] = Grant(int(answer[2 * i]), int(answer[2 * i + 1]) / 1e6)
        return grants

    @redis_errors_as_unavailable
    def slow_down(self, domain: str, *, now: float | None = None) -> float | None:
        """Halve the domain's effective rate after a 421 or 4.7.x (see the module); returns its rate now.

        A domain that is not paced is left as it is (None).
        """
        rate = self.rates.rate_for(domain)
        if rate is None:
            return None
        args: list[str | float] = [
            "" if now is None else repr(now),
            self.quiet_seconds,
            self.burst_seconds,
            domain,
            repr(rate),
            repr(self.floor(rate)),
            self.slow_down_every,
        ]
        return float(self._slow_down(keys=[SLOWED_KEY, pace_key(domain)], args=args))

    def floor(self, rate: float) -> float:
        """The lowest rate a back-off takes a domain configured at ``rate`` to."""
        return min(rate, max(rate * self.floor_fraction, self.floor_rate))

    def slowed(self, *, now: float | None = None) -> list[SlowedDomain]:
        """The domains being slowed down now (for ``sends status``)."""
        return slowed_domains(self.redis, self.rates, quiet_seconds=self.quiet_seconds, now=now)


def slowed_domains(
    client: redis.Redis, rates: DomainRates, *, quiet_seconds: float = QUIET_SECONDS, now: float | None = None
) -> list[SlowedDomain]:
    """The domains slowed down after a 421 or 4.7.x, with their rate now. Raises redis.RedisError."""
    if now is None:
        seconds, micros = client.time()
        now = seconds + micros / 1e6
    names = [d.decode() if isinstance(d, bytes) else str(d) for d in client.zrange(SLOWED_KEY, 0, -1)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hmget(pace_key(name), ["slow", "since"])
    found = []
    for name, (slow, since) in zip(names, pipe.execute(), strict=True):
        configured = rates.rate_for(name)
        if slow is None or since is None or configured is None:
            continue
        rate, last = float(slow), float(since)
        steps = min(64, int((now - last) // quiet_seconds))
        rate *= 2.0**steps
        if rate < configured:
            found.append(SlowedDomain(name, rate, configured, last))
    return found


def slowed_report(client: redis.Redis | None, rates: Iterable[tuple[str, float]]) -> list[SlowedDomain] | None:
    """The domains slowed down now for ``sends status``; None when Redis cannot say."""
    import redis

    if client is None:
        return None
    try:
        return slowed_domains(client, DomainRates(rates))
    except redis.RedisError:
        return None


def describe_rate(per_second: float) -> str:
    """A rate as a person reads it: ``50/s``, ``12/m``, ``3/h``."""
    for unit, seconds in (("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        value = per_second * seconds
        if value >= 1 or unit == "h":
            return f"{value:.3g}/{unit}"
    return ""  # pragma: no cover - the loop returns at "h"


class PacedQueue:
    """A batch's rows in the order they may go, each row's domain permitting.

    :meth:`next` gives the index of a row whose domain has a token for it now. A row whose
    domain has none waits, set aside with the time it may go, while the rows after it go on;
    it goes again as soon as it may, before newer rows. When only waiting rows are left,
    ``next`` gives None and :meth:`earliest` says when the first may go.
    One round trip asks tokens for every domain among the next :data:`LOOKAHEAD` rows at once.
    """

    def __init__(self, pacer: DomainPacer, domains: Sequence[str], order: Sequence[int]) -> None:
        self.pacer, self.domains, self.order = pacer, domains, order
        self.position = 0
        self.waiting: list[tuple[float, int]] = []  # (monotonic time it may go, row index), a heap
        self.tokens: dict[str, int] = {}  # tokens taken from Redis, not used yet
        self.good_until: dict[str, float] = {}  # when those tokens are dropped
        self.ask_after: dict[str, float] = {}  # a domain whose bucket is empty: when it has a token again
        self.set_aside = 0  # rows that had to wait, counted each time

    @property
    def done(self) -> bool:
        return self.position >= len(self.order) and not self.waiting

    @property
    def mostly_waiting(self) -> bool:
        """Whether at least half of the batch's rows are waiting."""
        return 2 * len(self.waiting) >= len(self.order)

    def earliest(self) -> float:
        """The monotonic time the first waiting row may go."""
        return self.waiting[0][0]

    def give_back(self) -> int:
        """Forget the waiting rows (given back to the store, due later); returns how many there were."""
        count, self.waiting = len(self.waiting), []
        return count

    def next(self) -> int | None:
        """The next row that may go now, its token taken; None when none may yet. Raises ControlUnavailable."""
        while True:
            now = time.monotonic()
            if self.waiting and self.waiting[0][0] <= now:
                index = heapq.heappop(self.waiting)[1]
            elif self.position < len(self.order):
                index = self.order[self.position]
                self.position += 1
            else:
                return None
            may_go = self._may_go(index, now)
            if may_go <= now:
                return index
            heapq.heappush(self.waiting, (may_go, index))
            self.set_aside += 1

    def slowed(self, domain: str) -> None:
        """The domain answered 421 or 4.7.x: drop its tokens (its bucket shrank) and ask again."""
        self.tokens.pop(domain, None)
        self.ask_after.pop(domain, None)

    def _may_go(self, index: int, now: float) -> float:
        """Take a token for the row's domain and return ``now``, or return when it may have one."""
        domain = self.domains[index]
        if self.pacer.rates.rate_for(domain) is None:
            return now  # not paced
        if self.tokens.get(domain, 0) > 0 and self.good_until[domain] > now:
            self.tokens[domain] -= 1
            return now
        after = self.ask_after.get(domain, 0.0)
        if after > now:
            return after
        self._ask(domain, now)
        if self.tokens.get(domain, 0) > 0:
            self.tokens[domain] -= 1
            return now
        return self.ask_after[domain]

    def _ask(self, domain: str, now: float) -> None:
        """Ask tokens for this row's domain and every other domain of the next rows that needs some: one round trip."""
        wanted = {domain: 1}
        for due, index in self.waiting:  # rows of this domain that waited and may go now
            if due <= now and self.domains[index] == domain and wanted[domain] < LOOKAHEAD:
                wanted[domain] += 1
        for index in self.order[self.position : self.position + LOOKAHEAD]:
            other = self.domains[index]
            if other in wanted:
                wanted[other] += 1
            elif self.pacer.rates.rate_for(other) is None:
                continue
            elif (self.tokens.get(other, 0) <= 0 or self.good_until[other] <= now) and self.ask_after.get(
                other, 0.0
            ) <= now:
                wanted[other] = 1
        grants = self.pacer.take(wanted)
        now = time.monotonic()
        for name, grant in grants.items():
            self.tokens[name] = grant.granted
            self.good_until[name] = now + GRANT_SECONDS
            if grant.granted < wanted[name]:
                self.ask_after[name] = now + grant.wait
            else:
                self.ask_after.pop(name, None)
