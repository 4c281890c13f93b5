"""What the workers of a send share in Redis: the sent-journal, the rate limit, error counts.

The database is the send log; Redis holds what must be fast and shared:

* the **journal**: a worker writes each accepted message here the moment the SMTP server
  accepts it, before the next one, and moves the batch into the database every second or
  so. A worker killed between two database writes leaves its sends here; whoever takes the
  rows over records them as sent instead of sending them again. So a killed worker
  duplicates at most the one message that was in flight.
* the **rate limit**: one token bucket for all workers together.
* **error counts** per send, for pausing a send whose error rate says something is wrong,
  with the time outcomes were last counted (``send_health`` reads it as the send's last progress).
* the **SMTP trouble** a worker last saw for a send (written by ``send_health``), cleared by
  the first flush that counts a message the server accepted.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from newsletter.delivery.stops import StopKind, StopReason
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    import redis  # imported where used: reading a send's status needs no Redis client

PREFIX = "newsletter"
P = ParamSpec("P")
R = TypeVar("R")


def stats_key(send_key: str) -> str:
    """The hash of a send's attempt and error counts and the time they were last counted."""
    return f"{PREFIX}:stats:{send_key}"


def trouble_key(send_key: str) -> str:
    """The hash of the SMTP trouble a worker last saw while sending (see ``send_health``)."""
    return f"{PREFIX}:smtp-trouble:{send_key}"


class ControlUnavailable(NewsletterError):
    """Redis could not be reached; callers fall back to the database or try again later."""

    @property
    def stop_reason(self) -> StopReason:
        """Why a batch stops on this error: the broker is down ("Redis unavailable: ...")."""
        return StopReason(StopKind.BROKER_DOWN, str(self))


def redis_errors_as_unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """``method`` raising ControlUnavailable ("Redis unavailable: ...") where Redis raised an error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            import redis  # here, not on every call: the journal's write is made once per message

            if isinstance(exc, redis.RedisError):
                raise ControlUnavailable(f"Redis unavailable: {exc}") from None
            raise

    return wrapper


_TAKE_TOKENS = """
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local burst = math.max(1, rate)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 60)
return granted
"""


@dataclass(frozen=True)
class JournalEntry:
    message_id: str
    code: int
    reply: str
    sent_at: float


class SendControl:
    """Every method raises ControlUnavailable when Redis cannot be reached."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._take_tokens = client.register_script(_TAKE_TOKENS)

    # --- journal -------------------------------------------------------------------
    # ``send_key`` names one send for good (its id and creation time), so the journal of a
    # send in another database sharing this Redis can never be taken for this one's.
    def journal_writer(self, send_key: str) -> JournalWriter:
        return JournalWriter(self.redis, f"{PREFIX}:journal:{send_key}")

    @redis_errors_as_unavailable
    def journaled(self, send_key: str, delivery_ids: list[int]) -> dict[int, JournalEntry]:
        if not delivery_ids:
            return {}
        values = self.redis.hmget(f"{PREFIX}:journal:{send_key}", [str(i) for i in delivery_ids])
        found = {}
        for delivery_id, value in zip(delivery_ids, values, strict=True):
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else value
                sent_at, code, message_id, reply = text.split("\x1f", 3)
                found[delivery_id] = JournalEntry(message_id, int(code), reply, float(sent_at))
        return found

    @redis_errors_as_unavailable
    def forget(self, send_key: str, delivery_ids: Iterable[int]) -> None:
        """Drop entries now recorded in the database; the journal itself lapses a week after its last use."""
        ids = [str(i) for i in delivery_ids]
        if ids:
            key = f"{PREFIX}:journal:{send_key}"
            pipe = self.redis.pipeline()
            pipe.hdel(key, *ids)
            pipe.expire(key, 7 * 86400)
            pipe.execute()

    # --- rate limit ----------------------------------------------------------------
    @redis_errors_as_unavailable
    def take_tokens(self, rate: float, want: int) -> int:
        """Take up to ``want`` send tokens from the shared bucket; returns how many were granted."""
        return int(self._take_tokens(keys=[f"{PREFIX}:rate"], args=[rate, want, f"{time.time():.6f}"]))

    # --- error counts --------------------------------------------------------------
    @redis_errors_as_unavailable
    def count_attempts(self, send_key: str, attempted: int, errors: int) -> tuple[int, int]:
        """Add to the send's counts and note the time; returns the totals (attempted, errors).

        Some attempt succeeded when ``errors < attempted``: the send's SMTP trouble, if any, is over.
        """
        key = stats_key(send_key)
        pipe = self.redis.pipeline()
        pipe.hincrby(key, "attempted", attempted)
        pipe.hincrby(key, "errors", errors)
        pipe.hset(key, "at", f"{time.time():.3f}")
        pipe.expire(key, 7 * 86400)
        if errors < attempted:
            pipe.delete(trouble_key(send_key))
        total_attempted, total_errors = pipe.execute()[:2]
        return int(total_attempted), int(total_errors)

    @redis_errors_as_unavailable
    def reset_counts(self, send_key: str) -> None:
        """Forget the send's counts, noting now as its last progress (it is being resumed)."""
        key = stats_key(send_key)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.hset(key, "at", f"{time.time():.3f}")
        pipe.expire(key, 7 * 86400)
        pipe.execute()

    # --- coordination --------------------------------------------------------------
    @redis_errors_as_unavailable
    def try_lock(self, name: str, seconds: float) -> bool:
        return bool(self.redis.set(f"{PREFIX}:lock:{name}", "1", nx=True, px=int(seconds * 1000)))


class JournalWriter:
    """Writes journal entries without waiting a round trip for each.

    Each HSET is written to Redis before the next message goes to the SMTP server (so a
    crash still loses at most the message in flight), but its reply is read only before
    the next HSET or at :meth:`drain`, overlapping Redis's round trip with the SMTP one.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._pool = client.connection_pool
        self._key = key
        encoded = key.encode()
        self._prefix = b"*4\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (len(encoded), encoded)
        self._conn: Any = None
        self._unread = False

    @redis_errors_as_unavailable
    def write(self, delivery_id: int, message_id: str, code: int, reply: str) -> None:
        self.drain()
        if self._conn is None:
            self._conn = self._pool.get_connection()
        entry = f"{time.time():.3f}\x1f{code}\x1f{message_id}\x1f{reply}".encode()
        field = b"%d" % delivery_id
        try:
            # The command packed here rather than by redis-py's general packer: a third of the
            # write's cost in the worker, once per message.
            self._conn.send_packed_command(
                [b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n" % (self._prefix, len(field), field, len(entry), entry)], False
            )
        except Exception:  # the connection is in an unknown state: never reuse it
            self._discard()
            raise
        self._unread = True

    @redis_errors_as_unavailable
    def drain(self) -> None:
        """Read the outstanding reply: after this, every entry written is in Redis."""
        if self._unread:
            self._unread = False
            try:
                self._conn.read_response()
            except Exception:  # the connection is in an unknown state: never reuse it
                self._discard()
                raise

    def close(self) -> None:
        try:
            self.drain()
        except ControlUnavailable:
            pass
        if self._conn is not None:
            self._pool.release(self._conn)
            self._conn = None

    def _discard(self) -> None:
        self._unread = False
        if self._conn is not None:
            self._conn.disconnect()
            self._pool.release(self._conn)
            self._conn = None


class RateLimiter:
    """Per-process front of the shared bucket: takes tokens in small chunks to save round trips."""

    def __init__(self, control: SendControl, rate: float) -> None:
        self.control = control
        self.rate = rate
        self._chunk = max(1, int(rate / 20))
        self._local = 0

    def wait(self) -> None:
        if self.rate <= 0:
            return
        while self._local == 0:
            self._local = self.control.take_tokens(self.rate, self._chunk)
            if self._local == 0:
                time.sleep(min(0.05, 1 / self.rate))
        self._local -= 1
