"""Prometheus figures, read from the database and the broker when scraped.

Nothing is counted in process memory: any web process answers with the same figures,
whichever worker did the sending. A scrape costs a few grouped queries on indexed
columns; their answer is reused for a few seconds so eager scrapers cost no more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from newsletter.store.models import BounceEvent, Delivery, MailingList, Send, Subscription
from newsletter.store.states import BounceKind, DeliveryStatus, SendStatus

DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class _Figures:
    deliveries: Sequence[tuple[str, str, int]]  # list, delivery status, count
    sends: Sequence[tuple[str, int]]  # send status, count
    durations: Sequence[tuple[str, datetime | None, datetime | None]]  # list, started, finished (both set)
    subscribers: Sequence[tuple[str, str, int]]  # list, subscription status, count
    bounces: Sequence[tuple[str, int]]  # bounce kind, count


def _figures(session: Session) -> _Figures:
    deliveries = session.execute(
        select(MailingList.slug, Delivery.status, func.count())
        .select_from(Delivery)
        .join(Send, Send.id == Delivery.send_id)
        .join(MailingList, MailingList.id == Send.list_id)
        .group_by(MailingList.slug, Delivery.status)
    ).all()
    sends = session.execute(select(Send.status, func.count()).group_by(Send.status)).all()
    durations = session.execute(
        select(MailingList.slug, Send.started_at, Send.finished_at)
        .join(MailingList, MailingList.id == Send.list_id)
        .where(Send.status == SendStatus.FINISHED, Send.started_at.is_not(None), Send.finished_at.is_not(None))
    ).all()
    subscribers = session.execute(
        select(MailingList.slug, Subscription.status, func.count())
        .join(MailingList, MailingList.id == Subscription.list_id)
        .group_by(MailingList.slug, Subscription.status)
    ).all()
    bounces = session.execute(select(BounceEvent.kind, func.count()).group_by(BounceEvent.kind)).all()
    return _Figures(deliveries, sends, durations, subscribers, bounces)


class NewsletterCollector(Collector):
    """Collects the service's figures; ``queue_depth`` returns the broker queue's length (raises when down)."""

    def __init__(self, sessions: sessionmaker[Session], queue_depth: Callable[[], int]) -> None:
        self.sessions = sessions
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self._cached: tuple[float, _Figures] | None = None

    def _read(self) -> _Figures:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            with self.sessions() as session:
                figures = _figures(session)
            self._cached = (time.monotonic(), figures)
            return figures

    def collect(self) -> Iterator[Metric]:
        f = self._read()
        yield from _delivery_metrics(f.deliveries)
        yield _sends_gauge(f.sends)
        yield _duration_histogram(f.durations)
        yield _subscriptions_gauge(f.subscribers)
        yield _bounces_counter(f.bounces)
        yield from self._broker_metrics()

    def _broker_metrics(self) -> Iterator[Metric]:
        """The queue's depth when the broker answers, and whether it did."""
        up = GaugeMetricFamily("newsletter_broker_up", "1 when the broker (Redis) answered this scrape.")
        try:
            depth = self.queue_depth()
        except Exception:
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            queue = GaugeMetricFamily("newsletter_queue_depth", "Tasks waiting in the broker's newsletter queue.")
            queue.add_metric([], depth)
            yield queue
        yield up


def _delivery_metrics(rows: Sequence[tuple[str, str, int]]) -> tuple[Metric, Metric, Metric]:
    """Messages sent and failed for good by list (counters), and delivery log rows by list and status."""
    sent = CounterMetricFamily(
        "newsletter_messages_sent", "Messages the SMTP server accepted, by list.", labels=["list"]
    )
    failed = CounterMetricFamily(
        "newsletter_messages_failed", "Deliveries that failed for good, by list.", labels=["list"]
    )
    by_status = GaugeMetricFamily(
        "newsletter_deliveries", "Delivery log rows by list and status.", labels=["list", "status"]
    )
    sent_by_list: dict[str, int] = {}
    failed_by_list: dict[str, int] = {}
    for slug, status, count in rows:
        by_status.add_metric([slug, status], count)
        if status in (DeliveryStatus.SENT, DeliveryStatus.BOUNCED):  # a bounced message was sent first
            sent_by_list[slug] = sent_by_list.get(slug, 0) + count
        elif status == DeliveryStatus.FAILED:
            failed_by_list[slug] = failed_by_list.get(slug, 0) + count
    for slug, count in sorted(sent_by_list.items()):
        sent.add_metric([slug], count)
    for slug, count in sorted(failed_by_list.items()):
        failed.add_metric([slug], count)
    return sent, failed, by_status


def _sends_gauge(rows: Sequence[tuple[str, int]]) -> GaugeMetricFamily:
    sends = GaugeMetricFamily("newsletter_sends", "Sends by status.", labels=["status"])
    for status, count in rows:
        sends.add_metric([status], count)
    return sends


def _subscriptions_gauge(rows: Sequence[tuple[str, str, int]]) -> GaugeMetricFamily:
    subscribers = GaugeMetricFamily(
        "newsletter_subscriptions", "Subscriptions by list and status.", labels=["list", "status"]
    )
    for slug, status, count in rows:
        subscribers.add_metric([slug, status], count)
    return subscribers


def _bounces_counter(rows: Sequence[tuple[str, int]]) -> CounterMetricFamily:
    """Every kind is listed, 0 for a kind never received."""
    bounces = CounterMetricFamily(
        "newsletter_bounce_events",
        "Bounces, delay warnings, complaints and mailed unsubscribes received.",
        labels=["kind"],
    )
    counts = dict(rows)
    for kind in BounceKind:
        bounces.add_metric([kind], counts.get(kind, 0))
    return bounces


def _duration_histogram(rows: Sequence[tuple[str, datetime | None, datetime | None]]) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily(
        "newsletter_send_duration_seconds", "Time from a send's start to its finish, by list.", labels=["list"]
    )
    per_list: dict[str, list[float]] = {}
    for slug, started, finished in rows:
        if started is not None and finished is not None:  # the query takes only sends with both
            per_list.setdefault(slug, []).append((finished - started).total_seconds())
    for slug, values in sorted(per_list.items()):
        buckets = [(str(b), sum(1 for v in values if v <= b)) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", len(values)))
        histogram.add_metric([slug], buckets, sum(values))
    return histogram
