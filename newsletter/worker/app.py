"""The Celery app the worker runs, and what each worker process keeps between tasks.

The app's configuration comes from the composition root (``newsletter.runtime.celery_app``),
and so does each process's state: :class:`WorkerState` wraps one ``Runtime`` (settings,
database, Redis, the SMTP transport, the token signer) with what only a worker needs (send
control, rate limit, the compiled messages of the sends it works on). The tasks live in
newsletter.worker.tasks and newsletter.worker.scheduler_tasks; both import this module, never
each other's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from newsletter.config import Settings
from newsletter.delivery import send_health, sending
from newsletter.delivery.batch_loop import DeliveryPolicy
from newsletter.delivery.domain_pacing import DomainPacer
from newsletter.delivery.editions import SendEditions
from newsletter.delivery.send_control import RateLimiter, SendControl
from newsletter.delivery.send_queue import DELIVER_BATCH, REQUEST_CONFIRMATIONS
from newsletter.mail.messages import CompiledMessage
from newsletter.runtime import QUEUE, Runtime, TaskQueue, celery_app

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker

    from newsletter.content.issues import RenderSettings
    from newsletter.delivery.automation_editions import AutomationEditions
    from newsletter.mail.outbound import Outbound
    from newsletter.mail.relays import RelayTransport
    from newsletter.mail.transport import SmtpTransport
    from newsletter.store.models import Send
    from subscribers.tokens import TokenSigner

__all__ = ["QUEUE", "WorkerState", "app", "configure", "enqueue", "enqueue_confirmation_run", "policy_from", "state"]

app = celery_app()


def configure(settings: Settings) -> Celery:
    """Point the app at the configured broker, or at the embedded Redis (started if needed)."""
    app.conf.update(broker_url=Runtime(settings).broker.celery_url())
    return app


def policy_from(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.max_attempts,
        retry_delay=settings.retry_delay,
        send_rate=settings.send_rate,
        pause_error_rate=settings.pause_error_rate,
    )


@dataclass
class WorkerState:
    """Everything one worker process keeps between tasks: its runtime and what only a worker needs."""

    runtime: Runtime
    pid: int

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.runtime.sessions

    @property
    def render_settings(self) -> RenderSettings:
        return self.runtime.render_settings

    @property
    def signer(self) -> TokenSigner:
        return self.runtime.signer

    @property
    def outbound(self) -> Outbound:
        """The DKIM signer (its key read once per process) and the envelope sender of every message."""
        return self.runtime.outbound

    @cached_property
    def transport(self) -> SmtpTransport | RelayTransport:
        """One SMTP transport per process, its connection reused for every batch; with several relays
        (NEWSLETTER_SMTP_URL), one over them all, a connection per relay, cool-downs shared in Redis."""
        relays = self.settings.smtp_relays
        if len(relays) == 1:
            return self.runtime.transport()
        from newsletter.delivery.relay_state import RedisCoolDowns
        from newsletter.mail.relays import RelayTransport

        return RelayTransport(relays, RedisCoolDowns(self.control.redis, [r.name for r in relays]))

    def start_batch(self) -> None:
        """A batch starts: over several relays, the transport picks the batch's relay by weight."""
        from newsletter.mail.relays import RelayTransport

        transport = self.transport
        if isinstance(transport, RelayTransport):
            transport.start_batch()

    def end_batch(self, send_id: int) -> None:
        """A batch ended: over several relays, add each one's messages to the send's shares in Redis."""
        from newsletter.mail.relays import RelayTransport

        transport = self.transport
        if not isinstance(transport, RelayTransport):
            return
        shares = transport.take_shares()
        if shares:
            from newsletter.delivery.relay_state import add_shares

            add_shares(self.control.redis, self.editions.edition(send_id).key, shares)

    def end_automation_batch(self) -> None:
        """A batch of automated emails ended: over several relays, its messages are no send's share."""
        from newsletter.mail.relays import RelayTransport

        transport = self.transport
        if isinstance(transport, RelayTransport):
            transport.take_shares()

    @cached_property
    def automation_editions(self) -> AutomationEditions:
        """Each automated email's message, rendered and compiled once per process and version."""
        from newsletter.delivery.automation_editions import AutomationEditions

        return AutomationEditions(self.sessions, self.signer, self.render_settings, self.outbound)

    @cached_property
    def control(self) -> SendControl:
        return SendControl(self.runtime.redis)

    @cached_property
    def queue(self) -> TaskQueue:
        """Queues tasks through this process's own Celery app (its connection pool)."""
        return TaskQueue(self.runtime.broker, app)

    @cached_property
    def limiter(self) -> RateLimiter | None:
        return RateLimiter(self.control, self.settings.send_rate) if self.settings.send_rate > 0 else None

    @cached_property
    def pacer(self) -> DomainPacer | None:
        """The rates per receiving domain (NEWSLETTER_DOMAIN_RATES), held in Redis; None when unset."""
        rates = self.settings.domain_rates
        return DomainPacer(self.control.redis, rates) if rates else None

    @cached_property
    def smtp_trouble(self) -> send_health.TroubleReporter:
        """Tells readers (`sends status`, the admin UI) why the SMTP server could not be reached."""
        return send_health.TroubleReporter(self.control.redis, self.runtime.smtp_name)

    @cached_property
    def recipients(self) -> sending.RecipientLinks:
        return sending.RecipientLinks(self.signer, self.render_settings.links)

    @cached_property
    def editions(self) -> SendEditions:
        """Each send's message, compiled once per process (the last few kept), and its recipients' copies."""
        return SendEditions(self.sessions, self.signer, self.render_settings.links, self.outbound)

    def message_for(self, session: Session, send: Send) -> CompiledMessage:
        """The send's compiled message, as the batches get it (bench/bench_send.py builds copies with it)."""
        return self.editions.edition_of(session, send).message


_state: WorkerState | None = None


def state() -> WorkerState:
    """This process's state, built from the environment once per process (anew in each forked one)."""
    global _state
    if _state is None or _state.pid != os.getpid():
        _state = WorkerState(Runtime(), os.getpid())
    return _state


def current_state() -> WorkerState | None:
    """This process's state if it was built, else None (for shutdown hooks)."""
    return _state if _state is not None and _state.pid == os.getpid() else None


def enqueue(send_id: int, batches: list[sending.Batch]) -> None:
    """Queue one task per batch (small messages: three ids each)."""
    state().queue.send_tasks(DELIVER_BATCH, [(send_id, first_id, last_id) for first_id, last_id in batches])


def enqueue_confirmation_run(run_id: int, batches: list[tuple[int, int]]) -> None:
    """Queue one task per batch of a request to confirm."""
    state().queue.send_tasks(REQUEST_CONFIRMATIONS, [(run_id, first_id, last_id) for first_id, last_id in batches])
