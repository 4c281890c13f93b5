"""Hand a send's batches to the Celery workers: the one place the CLI, API and admin UI enqueue."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from newsletter.config import Settings
from newsletter.delivery.sending import Batch
from newsletter.errors import NewsletterError


class QueueUnavailable(NewsletterError):
    """The broker could not be reached; the send is stored and can be resumed later."""


def queue_batches(settings: Settings, send_id: int, batches: list[Batch]) -> None:
    """Queue one task per batch. Raises QueueUnavailable, naming the command that recovers."""
    _queue(
        settings,
        lambda tasks: tasks.enqueue(send_id, batches),
        batches,
        f"send {send_id} is stored but its batches could not be queued",
        f"a running worker queues them by itself once the broker is reachable again "
        f"(`newsletter sends status {send_id}` says what it waits for)",
    )


def _queue(
    settings: Settings, enqueue: Callable[[ModuleType], None], batches: list[Batch], stored: str, recovery: str
) -> None:
    """Hand batches to the broker with ``enqueue(tasks)``. A broker that cannot be reached raises
    QueueUnavailable: what is ``stored``, the broker's error, and the ``recovery``."""
    if not batches:
        return
    from kombu.exceptions import OperationalError

    from newsletter.worker import tasks

    try:
        tasks.configure(settings)
        enqueue(tasks)
    except (OperationalError, OSError) as exc:
        raise QueueUnavailable(f"{stored} ({exc}); {recovery}") from None


def reset_error_counts(settings: Settings, key: str) -> None:
    """Forget a send's attempt and failure counts (before resuming one paused for errors)."""
    import redis

    from newsletter.delivery.send_control import SendControl
    from newsletter.devtools import embedded_redis

    client = redis.Redis.from_url(embedded_redis.client_url(settings.broker_url, settings.var_dir))
    try:
        SendControl(client).reset_counts(key)
    finally:
        client.close()


def queue_resumed(settings: Settings, send_id: int, send_key: str, batches: list[Batch]) -> None:
    """Queue a resumed send's batches, after forgetting its error counts: a send paused for errors
    would otherwise pause again at once. Raises QueueUnavailable (the broker, which also keeps the counts,
    cannot be reached)."""
    if not batches:
        return
    import redis

    try:
        reset_error_counts(settings, send_key)
    except redis.RedisError as exc:
        raise QueueUnavailable(
            f"send {send_id} is resumed but could not be queued ({exc}); a running worker queues it by itself "
            f"once the broker is reachable again (`newsletter sends status {send_id}` says what it waits for)"
        ) from None
    queue_batches(settings, send_id, batches)


def queue_confirmation_run(settings: Settings, run_id: int, batches: list[Batch]) -> None:
    """Queue a request to confirm's batches. Raises QueueUnavailable: the run is stored, and a worker's
    reconciler queues it by itself once the broker is reachable again."""
    _queue(
        settings,
        lambda tasks: tasks.enqueue_confirmation_run(run_id, batches),
        batches,
        f"the request to confirm is stored (run {run_id}) but could not be queued",
        "a running worker queues it by itself once the broker is reachable",
    )
