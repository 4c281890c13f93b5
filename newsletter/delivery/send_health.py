"""Why a send is not moving, in one sentence a person can act on.

A send that makes no progress has one of a few causes, and each has a different remedy:

* no worker is running (start one), or workers run but none takes this send's work
  (they are busy elsewhere or stuck);
* the SMTP server cannot be reached (the workers try again on their own; fix the server
  or ``NEWSLETTER_SMTP_URL``);
* the send paused itself because too many deliveries failed (fix the cause, resume);
* the broker (Redis) cannot be reached (the send continues once it is back).

The database says what a send has left to do; Redis says who is alive to do it:

* every worker's main process publishes a **heartbeat** (a key with a short TTL, renewed
  every few seconds, named in a set of workers), so "no worker" is told from "slow";
* a worker that cannot reach the SMTP server writes the **SMTP trouble** it saw for the
  send (host:port, the error, when, the next try); the first flush that records an
  accepted message clears it (``send_control.count_attempts``);
* each flush notes the time (``send_control``): the send's last progress.

:func:`send_problem` is a pure function of those facts; :class:`SendHealth` gathers them
for one edge (a CLI command, a web request) from the settings it is given.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from newsletter.config import Settings
from newsletter.delivery import send_status
from newsletter.delivery.batch_loop import DeliveryPolicy, hide_addresses
from newsletter.delivery.send_control import PREFIX, stats_key, trouble_key
from newsletter.delivery.send_status import Query, SendFields, session_query
from newsletter.errors import NewsletterError
from newsletter.store.states import SendStatus

if TYPE_CHECKING:
    import redis  # imported where used: a send that is not sending has its status told without Redis
    from redis.typing import EncodableT
    from sqlalchemy.orm import Session  # imported where used: `sends status` reads without SQLAlchemy

#: The Celery queue (``tasks.QUEUE``), named here so that readers need not import Celery.
QUEUE = "newsletter"
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL = 15  # three missed beats: the worker is gone
WORKERS_KEY = f"{PREFIX}:workers"
TROUBLE_TTL = 7 * 86400
#: How long a worker's claim on rows lasts.
CLAIM_SECONDS = DeliveryPolicy.claim_seconds
AUTO_PAUSE = "paused automatically"
#: A worker that sends records its progress every second or so; this long without any, while it
#: holds rows, is a hang, whatever a (short, test) NEWSLETTER_STALL_SECONDS says.
HELD_QUIET_SECONDS = 5.0


# --- heartbeats ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerBeat:
    """One live worker (its main process), as it last said."""

    name: str  # host:pid
    host: str
    pid: int
    smtp: str  # host:port of the SMTP server it sends to
    started: float
    at: float


def _worker_key(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def publish_heartbeat(client: redis.Redis, beat: WorkerBeat) -> None:
    """Say this worker is alive for the next HEARTBEAT_TTL seconds. Raises redis.RedisError."""
    pipe = client.pipeline()
    pipe.sadd(WORKERS_KEY, beat.name)
    pipe.set(_worker_key(beat.name), json.dumps(asdict(beat)), ex=HEARTBEAT_TTL)
    pipe.execute()


def withdraw_heartbeat(client: redis.Redis, name: str) -> None:
    """A worker stopping cleanly says so at once. Raises redis.RedisError."""
    pipe = client.pipeline()
    pipe.srem(WORKERS_KEY, name)
    pipe.delete(_worker_key(name))
    pipe.execute()


def live_workers(client: redis.Redis) -> list[WorkerBeat]:
    """The workers whose heartbeat has not lapsed (forgetting the names of those gone). Raises redis.RedisError."""
    names = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in client.smembers(WORKERS_KEY))
    if not names:
        return []
    values = client.mget([_worker_key(n) for n in names])
    gone = [n for n, v in zip(names, values, strict=True) if v is None]
    if gone:
        client.srem(WORKERS_KEY, *gone)
    beats = []
    for value in values:
        if value is not None:
            try:
                beats.append(WorkerBeat(**json.loads(value)))
            except (TypeError, ValueError):
                continue  # not a beat this version can read
    return beats


# --- SMTP trouble --------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTrouble:
    """What a worker saw when it could not reach the SMTP server for a send."""

    where: str  # host:port
    error: str
    at: float  # the latest failed try
    next_try: float | None
    since: float | None = None  # the first failed try of this outage


def record_smtp_trouble(
    client: redis.Redis, send_key: str, *, where: str, error: str, retry_in: float | None, now: float | None = None
) -> None:
    """Note that the SMTP server could not be reached for this send. Raises redis.RedisError."""
    now = time.time() if now is None else now
    mapping: dict[EncodableT, EncodableT] = {
        "where": where,
        "error": error[:500],
        "at": f"{now:.3f}",
        "next_try": f"{now + retry_in:.3f}" if retry_in is not None else "",
    }
    key = trouble_key(send_key)
    pipe = client.pipeline()
    pipe.hset(key, mapping=mapping)
    pipe.hsetnx(key, "since", f"{now:.3f}")
    pipe.expire(key, TROUBLE_TTL)
    pipe.execute()


def smtp_trouble(client: redis.Redis, send_key: str) -> SmtpTrouble | None:
    """The SMTP trouble last seen for the send, or None when the last try went through. Raises redis.RedisError."""
    return _trouble(client.hgetall(trouble_key(send_key)))


def _trouble(raw: Mapping[bytes | str, bytes | str]) -> SmtpTrouble | None:
    if not raw:
        return None
    values = {_text(k): _text(v) for k, v in raw.items()}
    try:
        return SmtpTrouble(
            values.get("where", "?"),
            values.get("error", ""),
            float(values["at"]),
            float(values["next_try"]) if values.get("next_try") else None,
            float(values["since"]) if values.get("since") else None,
        )
    except (KeyError, ValueError):
        return None


class TroubleReporter:
    """The worker's ``on_smtp_trouble`` hook: writes what it saw, never raises (it runs on an error path)."""

    def __init__(self, client: redis.Redis, where: str) -> None:
        self.client, self.where = client, where

    def __call__(self, send_key: str, error: str, retry_in: float) -> None:
        import redis

        try:
            record_smtp_trouble(self.client, send_key, where=self.where, error=error, retry_in=retry_in)
        except redis.RedisError:
            pass  # Redis is down as well: readers then report the broker instead


# --- the facts -----------------------------------------------------------------------


@dataclass(frozen=True)
class SendState:
    """What the database says about a send's remaining work (times in seconds since the epoch)."""

    id: int
    status: str
    status_reason: str | None = None
    started_at: float | None = None
    scheduled_at: float | None = None
    waiting: bool = False  # some pending rows are due and no worker holds them
    waiting_since: float | None = None  # when they became due (a retry time), if later than the last progress
    held_until: float | None = None  # the latest expiry of a worker's claim on its rows
    last_replies: tuple[str, ...] = ()  # the SMTP server's latest distinct replies (a send paused for errors)


@dataclass(frozen=True)
class Health:
    """What Redis says: the broker, live workers, the send's last progress and SMTP trouble."""

    broker: str
    broker_error: str | None = None
    workers: tuple[WorkerBeat, ...] = ()
    last_progress: float | None = None
    trouble: SmtpTrouble | None = None
    queued: int = 0  # tasks waiting in the queue


def send_state(session: Session, send: SendFields, *, now: datetime | None = None, replies: int = 3) -> SendState:
    """Read the send's remaining work: a few indexed queries, none over the sent rows."""
    return read_send_state(session_query(session), send, now=now, replies=replies)


def read_send_state(query: Query, send: SendFields, *, now: datetime | None = None, replies: int = 3) -> SendState:
    """:func:`send_state` through any :data:`~newsletter.delivery.send_status.Query` (a bare DB-API connection's)."""
    now = now or datetime.now(UTC)
    state = SendState(send.id, send.status, send.status_reason, _ts(send.started_at), _ts(send.scheduled_at))
    if send.status == SendStatus.PAUSED and (send.status_reason or "").startswith(AUTO_PAUSE):
        return replace(state, last_replies=read_last_replies(query, send.id, replies))
    if send.status != SendStatus.SENDING:
        return state
    params = {"send_id": send.id, "now": now}
    held_until = send_status.moment(_first(query(send_status.HELD_UNTIL, params)))
    fresh = _first(query(send_status.FRESH, params))
    waiting, since = fresh is not None, None
    if not waiting:
        due_retry = send_status.moment(_first(query(send_status.DUE_RETRY, params)))
        waiting, since = due_retry is not None, _ts(due_retry)
    return replace(state, waiting=waiting, waiting_since=since, held_until=_ts(held_until))


def last_replies(session: Session, send_id: int, limit: int = 3) -> tuple[str, ...]:
    """The SMTP server's latest distinct replies to the send's failed or retried deliveries."""
    return read_last_replies(session_query(session), send_id, limit)


def read_last_replies(query: Query, send_id: int, limit: int = 3) -> tuple[str, ...]:
    found: list[str] = []
    for (reply,) in query(send_status.REPLIES, {"send_id": send_id}):
        if reply is None:  # the query takes set replies only
            continue
        if reply.startswith("gave up after "):
            reply = reply.split(": ", 1)[-1]
        reply = _one_line(hide_addresses(reply))  # editors see it; the delivery log (admins) names the recipient
        if reply and reply not in found:
            found.append(reply)
            if len(found) == limit:
                break
    return tuple(found)


def _first(rows: Sequence[Sequence[Any]]) -> Any:
    return rows[0][0] if rows else None


def read_health(client: redis.Redis, send_key: str | None, *, broker: str) -> Health:
    """Ask Redis; a Redis that does not answer becomes ``broker_error``."""
    import redis

    try:
        workers = tuple(live_workers(client))
        if send_key is None:
            return Health(broker, workers=workers, queued=int(client.llen(QUEUE)))
        pipe = client.pipeline()
        pipe.hget(stats_key(send_key), "at")
        pipe.hgetall(trouble_key(send_key))
        pipe.llen(QUEUE)
        at, trouble, queued = pipe.execute()
    except redis.RedisError as exc:
        return Health(broker, broker_error=_redis_error(exc))
    return Health(
        broker, workers=workers, last_progress=float(at) if at else None, trouble=_trouble(trouble), queued=int(queued)
    )


# --- the sentence --------------------------------------------------------------------


def send_problem(
    send: SendState, health: Health | None, *, now: float, stall_seconds: float, smtp: str = "the SMTP server"
) -> str | None:
    """Why the send is not moving, as one sentence saying what to do; None while it moves (or is done).

    ``health`` may be None for a send that needs no Redis facts (paused, finished, cancelled);
    ``smtp`` names the server the workers send to (host:port).
    """
    if send.status == SendStatus.PAUSED:
        return _paused_for_errors(send) if (send.status_reason or "").startswith(AUTO_PAUSE) else None
    if send.status == SendStatus.SCHEDULED:
        if send.scheduled_at is None or now - send.scheduled_at < stall_seconds or health is None:
            return None
        if health.broker_error:
            return _broker_down(health)
        return f"It was due to start at {_clock(send.scheduled_at)} but has not started: " + (
            "no worker is running; start `newsletter worker`, and `newsletter scheduler` if it is not running."
            if not health.workers
            else "check that `newsletter scheduler` is running (it starts due sends; a worker runs them)."
        )
    if send.status != SendStatus.SENDING or health is None:
        return None
    if health.broker_error:
        return _broker_down(health)
    stalled = stalled_for(send, health, now)
    trouble = health.trouble
    if trouble is not None and (trouble.next_try is None or now < trouble.next_try + stall_seconds):
        return _smtp_down(trouble, now)
    quiet = held_without_progress(send, health, now)
    if quiet is not None and quiet >= max(stall_seconds, HELD_QUIET_SECONDS):
        return (
            f"A worker holds this send's next messages but none has gone out for {_duration(quiet)}: {smtp} may not "
            "be answering (the worker gives up after its timeout and tries again), or NEWSLETTER_SEND_RATE is very "
            "low; check the worker's log."
        )
    if stalled is not None and health.workers:
        # A worker that has just started gets its chance before it is said to leave the work alone.
        stalled = min(stalled, now - min(beat.started for beat in health.workers))
    if stalled is None or stalled < stall_seconds:
        return None
    if not health.workers:
        return (
            f"No worker has taken this send's work for {_duration(stalled)} and none is running: start one with "
            "`newsletter worker` (using the same NEWSLETTER_BROKER_URL and NEWSLETTER_DATABASE_URL); "
            "the send continues by itself then."
        )
    count = len(health.workers)
    busy = f"{health.queued} task(s) are waiting in the queue" if health.queued else "the queue is empty"
    return (
        f"{count} worker{'s are' if count != 1 else ' is'} running but none has taken this send's work for "
        f"{_duration(stalled)} ({busy}): they may be busy with other sends or stuck; check their logs, "
        "or start another with `newsletter worker`."
    )


def held_without_progress(send: SendState, health: Health, now: float) -> float | None:
    """Seconds a live worker has held (claimed) the send's rows with no message out; None when none holds them.

    A worker that hangs on a silent SMTP server keeps its claim until it times out: that is
    not progress, and not a send nobody took either."""
    if not health.workers or send.held_until is None or send.held_until < now:
        return None
    moments = [send.started_at, health.last_progress, min(beat.started for beat in health.workers)]
    return max(0.0, now - max(m for m in moments if m is not None))


def stalled_for(send: SendState, health: Health, now: float) -> float | None:
    """Seconds the send's due work has waited with no worker touching it; None when nothing waits."""
    if not send.waiting or (send.held_until is not None and send.held_until >= now):
        return None
    moments = [send.started_at, health.last_progress, send.waiting_since]
    if send.held_until is not None:
        moments.append(send.held_until - CLAIM_SECONDS)  # when the last claim was taken or renewed
    since = max((m for m in moments if m is not None), default=now)
    return max(0.0, now - since)


def _broker_down(health: Health) -> str:
    return (
        f"The broker {health.broker} cannot be reached ({health.broker_error}), so no worker can take this send's "
        "work: check that it is running; the send continues by itself once it is back."
    )


def _smtp_down(trouble: SmtpTrouble, now: float) -> str:
    error = trouble.error.removeprefix(f"cannot connect to SMTP server {trouble.where}: ")
    if trouble.next_try is None:
        when = "the workers keep trying"
    elif trouble.next_try > now:
        when = f"the next try is at {_clock(trouble.next_try)} (in {_duration(trouble.next_try - now)})"
    else:
        when = "the next try is due now"
    server = "relays" if "," in trouble.where else "server"  # several relays: every one is cooling down
    return (
        f"The SMTP {server} {trouble.where} cannot be reached ({error}) since {_clock(trouble.since or trouble.at)}; {when}, and the "
        "send continues by itself once the server answers: check that it is running and that NEWSLETTER_SMTP_URL is right."
    )


_COUNTS = re.compile(r"(\d+) of (\d+) attempts failed")


def _paused_for_errors(send: SendState) -> str:
    counts = _COUNTS.search(send.status_reason or "")
    how_many = f" ({counts.group(1)} of {counts.group(2)} attempts failed)" if counts else ""
    replies = "; ".join(f'"{r}"' for r in send.last_replies) or "none recorded"
    return (
        f"The send paused itself because too many deliveries failed{how_many}; the SMTP server's last replies: "
        f"{replies}. Fix the cause, then resume it (`newsletter sends resume {send.id}`, or Resume on its admin page)."
    )


# --- for the edges -------------------------------------------------------------------


class Broker(Protocol):
    """How SendHealth reaches the broker (newsletter.runtime.Broker, built by the composition root)."""

    @property
    def name(self) -> str:
        """The broker as a person would name it (no password)."""
        ...

    def redis(self, *, timeout: float | None = None) -> redis.Redis:
        """A new client. Raises NewsletterError when the broker cannot be set up (the embedded Redis would not start)."""
        ...


class SendHealth:
    """Finds sends' problems for one edge (a CLI command, a web request), from the settings and broker it is given.

    Redis is asked only for sends that are sending (or overdue scheduled ones); close() when done.
    ``shared`` holds a client (its connection pool) kept across edge calls, e.g. the web app's for
    every request and every progress poll; without it each SendHealth connects anew.
    """

    def __init__(
        self, settings: Settings, broker: Broker, *, timeout: float = 2.0, shared: list[redis.Redis] | None = None
    ) -> None:
        self.settings = settings
        self.stall_seconds = settings.stall_seconds
        self.timeout = timeout
        self._shared = shared
        self._client: redis.Redis | None = shared[0] if shared else None
        self._broker_link = broker
        self._broker = broker.name
        self._unreachable: str | None = None

    def problem(self, session: Session, send: SendFields) -> str | None:
        """The send's problem now, or None."""
        return self.read_problem(session_query(session), send)

    def read_problem(self, query: Query, send: SendFields) -> str | None:
        """:meth:`problem` through any :data:`~newsletter.delivery.send_status.Query` (a bare DB-API connection's)."""
        now = datetime.now(UTC)
        state = read_send_state(query, send, now=now)
        relays = self.settings.smtp_names
        smtp = f"the SMTP {'relays' if ',' in relays else 'server'} {relays}"
        return send_problem(state, self._health(send), now=now.timestamp(), stall_seconds=self.stall_seconds, smtp=smtp)

    def _health(self, send: SendFields) -> Health | None:
        if send.status == SendStatus.SENDING:
            return self.health(send_status.send_key(send))
        if send.status == SendStatus.SCHEDULED and send.scheduled_at is not None:
            if time.time() - send.scheduled_at.timestamp() >= self.stall_seconds:
                return self.health(None)
        return None

    def health(self, send_key: str | None) -> Health:
        client = self.client()
        if client is None or self._unreachable:
            return Health(self._broker, broker_error=self._unreachable)
        health = read_health(client, send_key, broker=self._broker)
        if health.broker_error:
            self._unreachable = health.broker_error  # one wait for a timeout per edge call, not one per send
        return health

    @property
    def broker_error(self) -> str | None:
        """Why the broker could not be reached in this edge call, if it could not."""
        return self._unreachable

    def client(self) -> redis.Redis | None:
        if self._client is None and self._unreachable is None:
            try:
                self._client = self._broker_link.redis(timeout=self.timeout)
            except NewsletterError as exc:  # the embedded Redis would not start
                self._unreachable = str(exc).removeprefix("NEWSLETTER_BROKER_URL: ")
                return None
            if self._shared is not None:
                self._shared.append(self._client)
        return self._client

    def close(self) -> None:
        if self._client is not None and self._shared is None:
            self._client.close()
            self._client = None

    def __enter__(self) -> SendHealth:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- small helpers -------------------------------------------------------------------


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _clock(ts: float) -> str:
    """A UTC time of day, with the date when it is not today."""
    moment = datetime.fromtimestamp(ts, UTC)
    today = datetime.now(UTC).date()
    return moment.strftime("%H:%M:%S UTC" if moment.date() == today else "%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redis_error(exc: redis.RedisError) -> str:
    text = str(exc).strip() or type(exc).__name__
    # redis-py says "Error 111 connecting to 127.0.0.1:6399. Connection refused.": keep the reason.
    match = re.search(r"connecting to \S+?\.? (.+?)\.?$", text)
    return _one_line(match.group(1) if match else text, 160)


__all__ = [
    "Health",
    "SendHealth",
    "SendState",
    "SmtpTrouble",
    "TroubleReporter",
    "WorkerBeat",
    "last_replies",
    "live_workers",
    "publish_heartbeat",
    "read_health",
    "read_last_replies",
    "read_send_state",
    "record_smtp_trouble",
    "send_problem",
    "send_state",
    "smtp_trouble",
    "stalled_for",
    "withdraw_heartbeat",
]
