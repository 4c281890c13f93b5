"""What operators watch: /metrics in Prometheus's format and JSON log lines carrying the send's id."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from newsletter.config import Settings
from newsletter.http.app import create_app

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_and_json_logs_after_a_real_send(newsroom_any_db):
    room = newsroom_any_db
    room.capture.replies.update({"gone@example.com": "550 5.1.1 User unknown"})
    room.setup_list(30)
    room.cli("subscribers", "add", "weekly", "gone@example.com", "--confirmed")
    issue_id = room.create_issue()
    worker = room.start_worker(concurrency=1, NEWSLETTER_LOG_FORMAT="json")
    send_id = room.send(issue_id)
    room.wait_status(send_id)

    token = "metrics-token-for-the-test-0123456789"
    app = create_app(Settings.from_environ({**room.cli.env, "NEWSLETTER_METRICS_TOKEN": token}))
    with TestClient(app) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("newsletter_messages_sent_total", (("list", "weekly"),))] == 30
    assert samples[("newsletter_messages_failed_total", (("list", "weekly"),))] == 1
    assert samples[("newsletter_deliveries", (("list", "weekly"), ("status", "sent")))] == 30
    assert samples[("newsletter_sends", (("status", "finished"),))] == 1
    assert samples[("newsletter_send_duration_seconds_count", (("list", "weekly"),))] == 1
    assert samples[("newsletter_send_duration_seconds_bucket", (("le", "+Inf"), ("list", "weekly")))] == 1
    assert samples[("newsletter_subscriptions", (("list", "weekly"), ("status", "confirmed")))] == 31
    assert samples[("newsletter_bounce_events_total", (("kind", "hard"),))] == 0
    assert samples[("newsletter_queue_depth", ())] == 0
    assert samples[("newsletter_broker_up", ())] == 1

    records = []
    for line in worker.log.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, "the worker wrote no JSON log lines"
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    batches = [r for r in records if r.get("send_id") == int(send_id) and "batch" in r]
    assert batches and all(r["logger"] == "newsletter.worker" for r in batches)
    assert sum(1 for r in records if r.get("delivery_id") is not None and r.get("send_id") == int(send_id)) >= 1
