"""What the workers share in Redis about the SMTP relays: their cool-downs, and each send's share.

* ``newsletter:relay:HOST:PORT``: a hash per relay set aside: ``failures`` in a row, cooling
  down ``until`` (seconds since the epoch), the last ``error`` and when (``at``). Written when
  a worker finds the relay down (:meth:`RedisCoolDowns.set_aside`, one atomic script: a
  relay already cooling down keeps its cool-down, so one outage seen by many workers doubles
  it once), deleted when it accepts a message again. It lapses a day after its last failure.
* ``newsletter:relay-shares:SEND_KEY``: a hash per send, relay name to messages it accepted,
  added to once per batch (:func:`add_shares`); it expires with the send's other keys.

:class:`RedisCoolDowns` is the :class:`~newsletter.mail.relays.CoolDowns` of the worker's
:class:`~newsletter.mail.relays.RelayTransport`; :func:`relay_report` is what `sends status`
and the admin send page show for a send sent over several relays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsletter.config import SmtpRelay
from newsletter.delivery.send_control import PREFIX
from newsletter.mail.relays import COOL_DOWN_LIMIT, COOL_DOWN_SECONDS, Cooling, LocalCoolDowns

if TYPE_CHECKING:
    import redis

log = logging.getLogger("newsletter.delivery")

#: How long a send's shares are kept after its last batch (as its other keys: send_control).
SHARES_TTL = 7 * 86400
#: How long a relay's failure count is kept after its last failure.
RELAY_TTL = 86400


def relay_key(name: str) -> str:
    """The hash of a relay's cool-down (``name`` is host:port)."""
    return f"{PREFIX}:relay:{name}"


def shares_key(send_key: str) -> str:
    """The hash of a send's messages per relay."""
    return f"{PREFIX}:relay-shares:{send_key}"


_SET_ASIDE = """
local now = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'until', 'error')
local current = tonumber(state[1])
if current and current > now then
    return {tostring(current), state[2] or ''}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local seconds = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ math.min(failures - 1, 30))
local until_ = now + seconds
redis.call('HSET', KEYS[1], 'until', tostring(until_), 'error', ARGV[2], 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {tostring(until_), ARGV[2]}
"""


class RedisCoolDowns:
    """The relays' cool-downs in Redis, shared by every worker (a CoolDowns). Never raises: while Redis
    cannot be reached, this process's own cool-downs stand in."""

    def __init__(
        self,
        client: redis.Redis,
        names: Sequence[str],
        *,
        first: float = COOL_DOWN_SECONDS,
        limit: float = COOL_DOWN_LIMIT,
    ) -> None:
        self.client = client
        self.names = tuple(names)
        self.first, self.limit = first, limit
        self._script = client.register_script(_SET_ASIDE)
        self._local = LocalCoolDowns(first=first, limit=limit)

    def cooling(self) -> Mapping[str, Cooling]:
        import redis

        now = time.time()
        try:
            pipe = self.client.pipeline(transaction=False)
            for name in self.names:
                pipe.hmget(relay_key(name), "until", "error")
            rows = pipe.execute()
        except redis.RedisError as exc:
            log.warning("relay cool-downs not read (%s); using this process's own", exc)
            return self._local.cooling()
        found = dict(self._local.cooling())
        for name, (until, error) in zip(self.names, rows, strict=True):
            if until is not None and float(until) > now:
                found[name] = Cooling(float(until), _text(error or b""))
        return found

    def set_aside(self, name: str, error: str) -> Cooling:
        import redis

        local = self._local.set_aside(name, error)
        try:
            until, said = self._script(
                keys=[relay_key(name)], args=[f"{time.time():.3f}", error[:500], self.first, self.limit, RELAY_TTL]
            )
        except redis.RedisError as exc:
            log.warning("relay %s set aside in this process only: Redis unavailable (%s)", name, exc)
            return local
        return Cooling(float(until), _text(said))

    def recovered(self, name: str) -> None:
        import redis

        self._local.recovered(name)
        try:
            self.client.delete(relay_key(name))
        except redis.RedisError:
            pass  # the cool-down lapses by itself


def add_shares(client: redis.Redis, send_key: str, shares: Mapping[str, int]) -> bool:
    """Add a batch's messages per relay to the send's counts; False (and logged) when Redis is down."""
    import redis

    if not shares:
        return True
    key = shares_key(send_key)
    try:
        pipe = client.pipeline()
        for name, count in shares.items():
            pipe.hincrby(key, name, count)
        pipe.expire(key, SHARES_TTL)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("relay shares of send %s not counted: Redis unavailable (%s)", send_key, exc)
        return False
    return True


@dataclass(frozen=True)
class RelayState:
    """One relay as `sends status` shows it: its share of the send's messages and whether it is in use."""

    name: str  # host:port
    weight: int
    sent: int | None  # messages of this send it accepted; None when Redis could not say
    cooling_until: float | None = None  # seconds since the epoch; None: in use
    last_error: str | None = None
    unknown: str | None = None  # why the state is not known (Redis unavailable)

    @property
    def state(self) -> str:
        if self.unknown is not None:
            return "unknown"
        if not self.weight:
            return "not configured"
        return "ok" if self.cooling_until is None else "cooling down"

    def describe(self) -> str:
        """One line: ``1204 messages (weight 3), ok`` or ``..., cooling down until 22:10:03 UTC: Connection refused``;
        a relay the send used that NEWSLETTER_SMTP_URL no longer lists: ``339 messages (no longer configured)``."""
        sent = "? messages" if self.sent is None else f"{self.sent} message{'s' if self.sent != 1 else ''}"
        if not self.weight:
            return f"{sent} (no longer configured)"
        return f"{sent} (weight {self.weight}), {self.state_line()}"

    def state_line(self) -> str:
        """``ok``, ``cooling down until 22:10:03 UTC: Connection refused``, or ``unknown: Redis unavailable...``."""
        line = self.state
        if self.unknown is not None:
            return f"{line}: {self.unknown}"
        if self.cooling_until is not None:
            line += f" until {_clock(self.cooling_until)}"
        if self.last_error:
            line += f" (last error: {self.last_error})" if self.cooling_until is None else f": {self.last_error}"
        return line

    def as_json(self) -> dict[str, Any]:
        return {
            "relay": self.name,
            "weight": self.weight,
            "sent": self.sent,
            "state": self.state,
            "cooling_until": _iso(self.cooling_until),
            "last_error": self.last_error,
        }


def relay_report(
    client: redis.Redis | None,
    relays: Sequence[SmtpRelay],
    send_key: str | None,
    *,
    broker_error: str | None = None,
    now: float | None = None,
) -> list[RelayState] | None:
    """Each relay's share of the send (``send_key``; None: no share) and its state now.

    None with a single relay (nothing to compare). Never raises: without Redis (``client`` None,
    ``broker_error`` saying why, or a Redis error) each relay's state is "unknown"."""
    import redis

    if len(relays) < 2:
        return None
    now = time.time() if now is None else now
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(shares_key(send_key)) if send_key is not None else pipe.echo("")
            for relay in relays:
                pipe.hmget(relay_key(relay.name), "until", "error")
            shares_raw, *states = pipe.execute()
        except redis.RedisError as exc:
            broker_error = f"Redis unavailable: {exc}"
        else:
            shares = {_text(k): int(v) for k, v in shares_raw.items()} if isinstance(shares_raw, dict) else {}
            report = []
            for relay, (until, error) in zip(relays, states, strict=True):
                cooling = float(until) if until is not None and float(until) > now else None
                report.append(
                    RelayState(
                        relay.name,
                        relay.weight,
                        shares.get(relay.name, 0),
                        cooling,
                        _text(error) if error is not None else None,
                    )
                )
            configured = {relay.name for relay in relays}
            # Relays this send used that are no longer configured (weight 0): their share still counts.
            report += [RelayState(name, 0, sent) for name, sent in sorted(shares.items()) if name not in configured]
            return report
    why = broker_error or "Redis unavailable"
    return [RelayState(r.name, r.weight, None, unknown=why) for r in relays]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
