"""Hand work to the Celery workers: the one place the CLI, the API, the admin UI and the web pages enqueue.

Tasks are queued by their registered names (``newsletter.deliver_batch``, ...) through a small
:class:`TaskQueue` interface that the composition root implements (``newsletter.runtime.TaskQueue``,
a Celery client on the configured broker): the domain never imports the worker's module, Celery
or the embedded Redis. The worker registers its tasks under the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from newsletter.delivery.sending import Batch
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    import redis

#: The names the worker registers its tasks under (newsletter.worker.tasks); they never change,
#: since queued messages carry them across upgrades.
DELIVER_BATCH = "newsletter.deliver_batch"
REQUEST_CONFIRMATIONS = "newsletter.request_confirmations"
SEND_CONFIRMATION = "newsletter.send_confirmation"
SEND_PREFERENCES_LINK = "newsletter.send_preferences_link"
AUTOMATION_BATCH = "newsletter.automation_batch"


class TaskQueue(Protocol):
    """What enqueueing needs from the broker (built by newsletter.runtime)."""

    def send_tasks(self, task: str, calls: Iterable[Sequence[object]]) -> None:
        """Queue one ``task`` per tuple of arguments. Raises OSError when the broker cannot be reached."""
        ...

    def redis(self) -> redis.Redis:
        """A client on the broker's Redis (the send counters live beside the queue)."""
        ...


class QueueUnavailable(NewsletterError):
    """The broker could not be reached; the send is stored and can be resumed later."""


def queue_batches(queue: TaskQueue, send_id: int, batches: list[Batch]) -> None:
    """Queue one task per batch. Raises QueueUnavailable, naming the command that recovers."""
    _queue(
        lambda: queue.send_tasks(DELIVER_BATCH, [(send_id, first_id, last_id) for first_id, last_id in batches]),
        batches,
        f"send {send_id} is stored but its batches could not be queued",
        f"a running worker queues them by itself once the broker is reachable again "
        f"(`newsletter sends status {send_id}` says what it waits for)",
    )


def _queue(enqueue: Callable[[], None], batches: list[Batch], stored: str, recovery: str) -> None:
    """Hand batches to the broker with ``enqueue()``. A broker that cannot be reached raises
    QueueUnavailable: what is ``stored``, the broker's error, and the ``recovery``."""
    if not batches:
        return
    try:
        enqueue()
    except OSError as exc:
        raise QueueUnavailable(f"{stored} ({exc}); {recovery}") from None


def reset_error_counts(queue: TaskQueue, key: str) -> None:
    """Forget a send's attempt and failure counts (before resuming one paused for errors)."""
    from newsletter.delivery.send_control import SendControl

    client = queue.redis()
    try:
        SendControl(client).reset_counts(key)
    finally:
        client.close()


def queue_resumed(queue: TaskQueue, send_id: int, send_key: str, batches: list[Batch]) -> None:
    """Queue a resumed send's batches, after forgetting its error counts: a send paused for errors
    would otherwise pause again at once. Raises QueueUnavailable (the broker, which also keeps the counts,
    cannot be reached)."""
    if not batches:
        return
    import redis

    try:
        reset_error_counts(queue, send_key)
    except redis.RedisError as exc:
        raise QueueUnavailable(
            f"send {send_id} is resumed but could not be queued ({exc}); a running worker queues it by itself "
            f"once the broker is reachable again (`newsletter sends status {send_id}` says what it waits for)"
        ) from None
    queue_batches(queue, send_id, batches)


def queue_confirmation_run(queue: TaskQueue, run_id: int, batches: list[Batch]) -> None:
    """Queue a request to confirm's batches. Raises QueueUnavailable: the run is stored, and a worker's
    reconciler queues it by itself once the broker is reachable again."""
    _queue(
        lambda: queue.send_tasks(REQUEST_CONFIRMATIONS, [(run_id, first_id, last_id) for first_id, last_id in batches]),
        batches,
        f"the request to confirm is stored (run {run_id}) but could not be queued",
        "a running worker queues it by itself once the broker is reachable",
    )


def queue_confirmation_email(queue: TaskQueue, subscription_id: int, requested_at: int) -> None:
    """Queue one confirmation email. Raises OSError (the broker cannot be reached)."""
    queue.send_tasks(SEND_CONFIRMATION, [(subscription_id, requested_at)])


def queue_preferences_link(queue: TaskQueue, subscriber_id: int, list_id: int) -> None:
    """Queue one email with a fresh preferences link. Raises OSError (the broker cannot be reached)."""
    queue.send_tasks(SEND_PREFERENCES_LINK, [(subscriber_id, list_id)])


def queue_automation_batches(queue: TaskQueue, batches: Sequence[tuple[int, int, int]]) -> None:
    """Queue one task per batch of automated emails: (automation id, first row id, last row id). Raises
    OSError (the broker cannot be reached): the rows are stored, and a worker's reconciler queues them
    once it is reachable again."""
    if batches:
        queue.send_tasks(AUTOMATION_BATCH, batches)
