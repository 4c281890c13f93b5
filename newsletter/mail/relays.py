"""Several SMTP relays behind one transport: batches spread by weight, a failing relay set aside.

:class:`RelayTransport` is a transport like :class:`~newsletter.mail.transport.SmtpTransport`
(``send``, ``connect``, ``close``) that holds one ``SmtpTransport`` per relay of
NEWSLETTER_SMTP_URL, each with its own reused connection, opened on first use.

* **Spread by weight.** :meth:`RelayTransport.start_batch` picks the relay for the next batch
  with smooth weighted round-robin (as nginx does): with weights 3 and 1, three batches in
  four go to the first, interleaved, and the same in every process, so the whole worker
  fleet's share follows the weights too. Every message of the batch then goes to that relay:
  no choice, no lookup per message. :meth:`take_shares` says how many messages each relay
  accepted since the batch started (the worker adds them to the send's counts in Redis).
* **Set aside.** A relay that refuses the connection, times out, fails TLS or login, answers
  421 (at the greeting, to HELO, or to any command: it is closing the session; but not a
  ``421 4.7.x`` in reply to RCPT TO, which is the recipient's domain asking us to slow down and
  goes to the batch loop's per-domain pacing, see :func:`is_domain_throttle`), or drops the
  connection before it had the whole message, is *set aside*: it cools down (30 s, doubling
  on each failure in a row up to 5 min, forgotten on the first message it accepts again), and
  the message goes at once to the next relay. No recipient attempt is spent and no message
  is lost: none of those left the message with the failing relay. A connection lost after the
  whole message was sent is not failed over (the relay may have accepted it, and another
  copy could arrive twice): it is raised as :class:`~newsletter.mail.transport.ConnectionLost`,
  which the batch loop treats as it always has.
* **Shared cool-downs.** The cool-downs live behind :class:`CoolDowns` (Redis in the worker:
  ``newsletter.delivery.relay_state``), read once per batch, so every worker process on every
  host stops using a relay one of them found down. Only when every relay is cooling down does
  :meth:`send` raise :class:`~newsletter.errors.SmtpUnreachable` naming each relay, until when
  and why; the batch then waits as it does for a single unreachable server.

Like SmtpTransport it is not thread-safe: one per worker process.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol

from newsletter.config import SmtpRelay
from newsletter.errors import SmtpUnreachable, TemporaryDeliveryError
from newsletter.mail.transport import RCPT_STAGE, ConnectionLost, SmtpReply, SmtpTransport, enhanced_status, reply_stage

log = logging.getLogger(__name__)

__all__ = [
    "COOL_DOWN_LIMIT",
    "COOL_DOWN_SECONDS",
    "CoolDowns",
    "Cooling",
    "LocalCoolDowns",
    "RelayTransport",
    "cool_down_seconds",
]

#: The first cool-down of a relay set aside, in seconds; each failure in a row doubles it ...
COOL_DOWN_SECONDS = 30.0
#: ... up to this.
COOL_DOWN_LIMIT = 300.0


def is_domain_throttle(exc: TemporaryDeliveryError) -> bool:
    """A ``421 4.7.x`` in reply to ``RCPT TO``: the recipient's domain throttles us, the relay is fine.

    Gmail and Yahoo answer so when a sender bursts; setting the relay aside would only move the
    burst to the next relay, so the per-domain pacing hears it instead (NEWSLETTER_DOMAIN_RATES).
    """
    message = str(exc)
    status = enhanced_status(message)
    return reply_stage(message) == RCPT_STAGE and status is not None and status.startswith("4.7.")


def cool_down_seconds(failures: int, *, first: float = COOL_DOWN_SECONDS, limit: float = COOL_DOWN_LIMIT) -> float:
    """How long a relay cools down after its ``failures``-th failure in a row (1, 2, ...): 30, 60, 120, 240, 300 s."""
    return min(limit, first * 2.0 ** min(max(0, failures - 1), 30))


@dataclass(frozen=True)
class Cooling:
    """A relay set aside: until when (seconds since the epoch) and the error that set it aside."""

    until: float
    error: str


class CoolDowns(Protocol):
    """Where the relays' cool-downs are kept, shared by every process that sends. No method raises:
    a store that cannot be reached answers from what this process knows."""

    def cooling(self) -> Mapping[str, Cooling]:
        """The relays (by name, ``host:port``) cooling down now."""
        ...

    def set_aside(self, name: str, error: str) -> Cooling:
        """Set the relay aside after a failure; the cool-down doubles with each failure in a row.

        A relay already cooling down keeps its cool-down (several processes may notice one outage)."""
        ...

    def recovered(self, name: str) -> None:
        """The relay accepted a message: forget its failures."""
        ...


class LocalCoolDowns:
    """Cool-downs kept in this process only (a CoolDowns): for one process, or when nothing is shared."""

    def __init__(self, *, first: float = COOL_DOWN_SECONDS, limit: float = COOL_DOWN_LIMIT) -> None:
        self.first, self.limit = first, limit
        self._failures: dict[str, int] = {}
        self._cooling: dict[str, Cooling] = {}

    def cooling(self) -> Mapping[str, Cooling]:
        now = time.time()
        return {name: c for name, c in self._cooling.items() if c.until > now}

    def set_aside(self, name: str, error: str) -> Cooling:
        now = time.time()
        current = self._cooling.get(name)
        if current is not None and current.until > now:
            return current
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        cooling = self._cooling[name] = Cooling(
            now + cool_down_seconds(failures, first=self.first, limit=self.limit), error
        )
        return cooling

    def recovered(self, name: str) -> None:
        self._failures.pop(name, None)
        self._cooling.pop(name, None)


class RelayTransport:
    """One transport over several SMTP relays; see the module docstring.

    ``cool_downs``: where cool-downs are shared (default: this process only). The other
    arguments are passed to each relay's SmtpTransport. Raises ValueError for no relays.
    """

    def __init__(
        self,
        relays: Sequence[SmtpRelay],
        cool_downs: CoolDowns | None = None,
        *,
        local_hostname: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
    ) -> None:
        if not relays:
            raise ValueError("RelayTransport needs at least one relay")
        self.relays = tuple(relays)
        self.cool_downs: CoolDowns = cool_downs if cool_downs is not None else LocalCoolDowns()
        self._transports = {
            r.name: SmtpTransport(
                r.smtp, local_hostname=local_hostname, timeout=timeout, ssl_context=ssl_context, pipelining=pipelining
            )
            for r in self.relays
        }
        self._total_weight = sum(r.weight for r in self.relays)
        self._credit = dict.fromkeys(self._transports, 0)  # smooth weighted round-robin
        self._aside: dict[str, Cooling] = {}  # as this process knows it: read per batch, added to on failures
        self._current: SmtpRelay | None = None
        self._stale = True  # the shared cool-downs are read before the next choice
        self._proven: dict[str, int] = {}  # per relay: the connection (its number) that has had a message accepted
        #: Messages each relay accepted since the batch started (see take_shares).
        self.shares: Counter[str] = Counter()

    # -- the batch -------------------------------------------------------------------

    def start_batch(self) -> None:
        """A batch starts: its first message reads the shared cool-downs (once) and picks its relay by
        weight (a batch that sends nothing takes no turn). Raises nothing."""
        self.shares.clear()
        self._current = None
        self._stale = True

    def take_shares(self) -> dict[str, int]:
        """Messages each relay accepted since the batch started (or the last call); resets the counts."""
        shares, self.shares = dict(self.shares), Counter()
        return shares

    @property
    def current(self) -> str | None:
        """The name of the relay the next message goes to, if one is chosen."""
        return None if self._current is None else self._current.name

    # -- the Transport ---------------------------------------------------------------

    def send(self, envelope_from: str, recipient: str, data: bytes) -> SmtpReply:
        """Hand one message to this batch's relay, or, if it fails as a relay, at once to the next one.

        Raises what SmtpTransport.send raises, but SmtpUnreachable only when every relay is
        cooling down (the message names each one, until when and why), and ConnectionLost only
        when the message may have been accepted (``maybe_accepted``).
        """
        while True:
            relay = self._current if self._current is not None else self._choose()
            transport = self._transports[relay.name]
            try:
                reply = transport.send(envelope_from, recipient, data)
            except SmtpUnreachable as exc:
                self._set_aside(relay, exc)
            except ConnectionLost as exc:
                if exc.maybe_accepted:
                    raise
                self._set_aside(relay, exc)
            except TemporaryDeliveryError as exc:
                if exc.code != 421 or is_domain_throttle(exc):
                    raise
                self._set_aside(relay, exc)  # "421 closing": the relay is going away, the message was not taken
            else:
                self.shares[relay.name] += 1
                if self._proven.get(relay.name) != transport.connections_opened:
                    self._proven[relay.name] = transport.connections_opened
                    self.cool_downs.recovered(relay.name)  # once per connection, not per message
                return reply

    def connect(self) -> None:
        """Connect to the relay the next message goes to, setting aside those that fail.

        Raises SmtpUnreachable when every relay is cooling down."""
        while True:
            relay = self._current if self._current is not None else self._choose()
            try:
                self._transports[relay.name].connect()
                return
            except SmtpUnreachable as exc:
                self._set_aside(relay, exc)

    def close(self) -> None:
        """Close every relay's connection. Raises nothing."""
        for transport in self._transports.values():
            transport.close()

    def __enter__(self) -> RelayTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- choosing --------------------------------------------------------------------

    def _available(self) -> list[SmtpRelay]:
        now = time.time()
        return [r for r in self.relays if r.name not in self._aside or self._aside[r.name].until <= now]

    def _next_relay(self) -> SmtpRelay | None:
        """Smooth weighted round-robin over the relays not cooling down; None when all are."""
        available = self._available()
        if not available:
            return None
        total = sum(r.weight for r in available)
        for relay in available:
            self._credit[relay.name] += relay.weight
        chosen = max(available, key=lambda r: self._credit[r.name])
        self._credit[chosen.name] -= total
        return chosen

    def _choose(self) -> SmtpRelay:
        if self._stale:
            self._stale = False
            self._aside = dict(self.cool_downs.cooling())
        relay = self._current = self._next_relay()
        if relay is None:
            raise SmtpUnreachable(self._all_cooling())
        return relay

    def _set_aside(self, relay: SmtpRelay, exc: Exception) -> None:
        self._transports[relay.name].close()
        cooling = self.cool_downs.set_aside(relay.name, str(exc))
        if cooling.until <= time.time():  # a store whose clock is behind: never retry at once
            cooling = Cooling(time.time() + COOL_DOWN_SECONDS, cooling.error)
        self._aside[relay.name] = cooling
        self._current = None
        log.warning(
            "SMTP relay %s set aside until %s: %s",
            relay.name,
            _clock(cooling.until),
            exc,
            extra={"relay": relay.name},
        )

    def _all_cooling(self) -> str:
        parts = []
        for relay in self.relays:
            cooling = self._aside.get(relay.name)
            if cooling is not None:
                error = cooling.error.removeprefix(f"cannot connect to SMTP server {relay.name}: ")
                parts.append(f"{relay.name} until {_clock(cooling.until)} ({error})")
        return "every SMTP relay is cooling down: " + "; ".join(parts)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")
