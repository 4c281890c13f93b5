"""`newsletter doctor`: the configuration against the bulk-sender rules, and what to do about each gap."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import typer
from sqlalchemy import select

from newsletter.cli.runtime import out, runtime
from newsletter.errors import ConfigError

if TYPE_CHECKING:  # the doctor's checks load only when the command runs
    from newsletter.mail import doctor as checks


def doctor(
    dns_record: str | None = typer.Option(
        None,
        "--dns-record",
        help="The DKIM TXT record as published (its value, or the zone-file line), to compare with the key.",
    ),
    check_web: bool = typer.Option(
        False,
        "--check-web",
        help="POST a one-click unsubscribe with an invalid token to NEWSLETTER_BASE_URL: the app must answer.",
    ),
) -> None:
    """Check DKIM, alignment, return path, postal address, https, secret key, unsubscribe, SMTP relays; exit 1 naming gaps.

    Each SMTP relay of NEWSLETTER_SMTP_URL is connected to as a worker would (EHLO, TLS, AUTH).
    No DNS records are looked up: the DKIM, SPF and DMARC records to publish are printed.
    """
    from newsletter.mail import doctor as checks

    runtime.check_secret_key = False  # a weak key is reported below, not a reason to stop here
    settings = runtime.settings
    lists, problem = _lists()
    report = checks.run_checks(
        settings,
        secret_key_set="NEWSLETTER_SECRET_KEY" in os.environ,
        lists=lists,
        database_problem=problem,
        dns_record=dns_record,
        web_check=checks.check_one_click(settings.base_url) if check_web else None,
        smtp_checks=checks.check_relays(settings),
    )
    for check in report.checks:
        out.print(f"{check.status:<8} {check.name}: {check.detail}")
        if check.fix and check.status != checks.OK:
            out.print(f"{'':<8}   -> {check.fix}")
    out.print()
    out.print("Records to publish in DNS (no lookups were made; compare them with what you have):")
    for what, record in report.records:
        out.print(f"  {what}:")
        out.print(f"    {record}")
    out.print()
    if report.gaps:
        out.print(f"{len(report.gaps)} gap(s): {', '.join(c.name for c in report.gaps)}")
        raise typer.Exit(1)
    warnings = [c.name for c in report.checks if c.status == checks.WARN]
    out.print("Every required check passes." + (f" Advice: {', '.join(warnings)}." if warnings else ""))


def _lists() -> tuple[list[checks.ListSender] | None, str | None]:
    from newsletter.mail import doctor as checks
    from newsletter.store.models import MailingList

    try:
        with runtime.transaction() as session:
            rows = session.execute(select(MailingList.slug, MailingList.from_email).order_by(MailingList.slug)).all()
    except ConfigError as exc:
        return None, str(exc)
    return [checks.ListSender(slug, from_email) for slug, from_email in rows], None
