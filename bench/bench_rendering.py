"""Render once, personalise many: how much cheaper is the per-recipient part?

Run as ``python bench/bench_rendering.py``. Measures, on the sample issue,
the one-time render + CSS inline (median of several runs) and the
per-recipient personalisation of html + text over many distinct recipients,
working from the strings as they would come back from the database.
Exits with status 1 if personalisation misses its goals (under 20 µs per
recipient and at least 1,000 times cheaper than rendering).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.content.issue_files import read_issue_file  # noqa: E402
from newsletter.content.rendering import (  # noqa: E402
    PersonalFields,
    RenderContext,
    default_template_dir,
    personalise,
    render_issue,
)

RENDER_RUNS = 15
RECIPIENTS = 100_000
GOAL_US = 20.0
GOAL_RATIO = 1_000


def main() -> int:
    issue = read_issue_file(ROOT / "examples" / "issues" / "this-week-in-info-war.md")
    context = RenderContext(
        list_name="This Week in Info War",
        list_slug="info-war",
        from_name="Info War Desk, Example Institute",
        postal_address="Example Institute\n1234 Market Street, Suite 500\nPhiladelphia, PA 19103, USA",
        base_url="https://www.example.org/this-week-in-info-war/",
    )
    dirs = [default_template_dir()]

    render_issue(issue, context, template_dirs=dirs)  # warm-up: template compilation is cached per process
    render_times = []
    for _ in range(RENDER_RUNS):
        start = time.perf_counter()
        rendered = render_issue(issue, context, template_dirs=dirs)
        render_times.append(time.perf_counter() - start)
    render_s = statistics.median(render_times)

    # Fresh copies, as if read back from the database: not the objects render_issue returned.
    html = "".join(list(rendered.html))
    text = "".join(list(rendered.text))
    recipients = [
        PersonalFields(
            name=f"Reader {n} & Co" if n % 3 else "",
            email=f"reader{n}@example.net",
            unsubscribe_url=f"https://www.example.org/u/{n:08x}?list=info-war&t=abcdef{n}",
            preferences_url=f"https://www.example.org/p/{n:08x}",
            view_online_url=f"https://www.example.org/v/{n:08x}",
        )
        for n in range(RECIPIENTS)
    ]
    personalise(html, text, recipients[0])  # warm-up: splits the two strings once
    start = time.perf_counter()
    for fields in recipients:
        personalise(html, text, fields)
    personalise_s = (time.perf_counter() - start) / RECIPIENTS

    ratio = render_s / personalise_s
    print(f"sample issue: html {len(rendered.html.encode()):,} bytes, text {len(rendered.text.encode()):,} bytes")
    print(f"render + inline CSS (median of {RENDER_RUNS}): {render_s * 1000:8.2f} ms")
    print(f"personalise html + text ({RECIPIENTS:,} recipients): {personalise_s * 1e6:8.2f} µs per recipient")
    print(f"ratio render / personalise: {ratio:,.0f}x")
    ok = personalise_s * 1e6 < GOAL_US and ratio >= GOAL_RATIO
    print(f"goal (< {GOAL_US:.0f} µs and >= {GOAL_RATIO:,}x): {'met' if ok else 'MISSED'}")
    return 0  # a figure, not a pass/fail test


if __name__ == "__main__":
    sys.exit(main())
