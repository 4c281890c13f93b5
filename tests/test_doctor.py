"""`newsletter doctor`: passes on a correctly configured install, names each gap on a bare one."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import Settings, SmtpRelay, SmtpSettings
from newsletter.devtools.smtp_capture import CaptureServer
from newsletter.mail import doctor
from newsletter.mail.dkim_keys import generate_private_key, write_private_key, zone_line
from newsletter.mail.doctor import ListSender, aligned, organisational_domain, run_checks
from tests.conftest import Cli, clean_environ
from tests.test_relays import Greeting421, closed_port
from tests.test_transport import certificate  # noqa: F401  (a fixture)
from tests.test_web_journey import free_port, start_web

SECRET = "doctor-test-secret-key-0123456789"


@pytest.fixture
def relays() -> Iterator[list[CaptureServer]]:
    """Two real SMTP servers to check."""
    servers = [CaptureServer(port=0), CaptureServer(port=0)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def configured_env(cli: Cli, tmp_path: Path) -> tuple[dict[str, str], str]:
    """Everything set the way the README says; returns the environment and the DKIM record (zone-file line)."""
    keygen = cli("dkim", "keygen", "--domain", "example.org", "--selector", "nl1", "--out", str(tmp_path / "dkim.pem"))
    record = next(line for line in keygen.stdout.splitlines() if " IN TXT " in line)
    env = {
        **cli.env,
        "NEWSLETTER_DKIM_DOMAIN": "example.org",
        "NEWSLETTER_DKIM_SELECTOR": "nl1",
        "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(tmp_path / "dkim.pem"),
        "NEWSLETTER_RETURN_PATH": "bounces@mail.example.org",
        "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street, Example City",
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_SECRET_KEY": SECRET,
    }
    return env, record


def test_doctor_passes_on_a_correctly_configured_install(cli, tmp_path, relays):
    env, record = configured_env(cli, tmp_path)
    a, b = relays
    env["NEWSLETTER_SMTP_URL"] = f"smtp://127.0.0.1:{a.port}?weight=3,smtp://127.0.0.1:{b.port}"
    configured = Cli(env=env, cwd=cli.cwd)
    configured("lists", "create", "weekly", "--name", "Weekly", "--from-email", "news@example.org")
    configured("lists", "create", "daily", "--name", "Daily", "--from-email", "daily@news.example.org")
    result = configured("doctor", "--dns-record", record)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and lines[-1] == "Every required check passes."
    statuses = {
        line.split(None, 1)[1].split(": ", 1)[0]: line.split()[0]
        for line in lines
        if re.match(r"(ok|missing|warn|info) ", line)
    }
    assert statuses == {
        "DKIM signing": "ok",
        "DKIM key": "ok",
        "DKIM DNS record": "ok",
        "DMARC alignment": "ok",
        "Return path": "ok",
        "Postal address": "ok",
        "Base URL": "ok",
        "Secret key": "ok",
        "One-click unsubscribe": "ok",
        "Unsubscribe endpoint": "info",
        f"SMTP relay 127.0.0.1:{a.port}": "ok",
        f"SMTP relay 127.0.0.1:{b.port}": "ok",
    }
    assert (
        f"ok       SMTP relay 127.0.0.1:{a.port}: connected, EHLO accepted, plain text (no STARTTLS offered), "
        "no login; weight 3"
    ) in lines
    assert (a.connections, b.connections) == (1, 1) and not a.messages  # connected, sent nothing
    assert "ok       DMARC alignment: From domain news.example.org (daily) aligns with d=example.org" in lines
    assert "ok       DKIM key: " + str(tmp_path / "dkim.pem") + ": 2048-bit RSA, mode 0600" in lines
    # The records to publish: the DKIM key, SPF for the envelope domain, DMARC for each From domain.
    assert "    " + record in lines
    assert any(re.fullmatch(r'    mail\.example\.org\. IN TXT "v=spf1 .* ~all"', line) for line in lines)
    for domain in ("example.org", "news.example.org"):
        assert (
            f'    _dmarc.{domain}. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r"'
            in lines
        )
    # The record given as its bare value works too.
    value = "".join(re.findall(r'"([^"]*)"', record))
    assert configured("doctor", "--dns-record", value).returncode == 0


def test_doctor_names_each_gap_on_a_bare_install(cli, tmp_path):
    port = closed_port()
    cli.env["NEWSLETTER_SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    result = cli("doctor", check=False)
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    gaps = ["DKIM signing", "Return path", "Postal address", "Base URL", "Secret key", "One-click unsubscribe"]
    gaps.append(f"SMTP relay 127.0.0.1:{port}")
    assert lines[-1] == f"{len(gaps)} gap(s): {', '.join(gaps)}"
    for gap in gaps:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"missing  {gap}: "))
        assert lines[index + 1].strip().startswith("-> "), gap  # and what to do about it
    assert "newsletter dkim keygen" in result.stdout and "NEWSLETTER_POSTAL_ADDRESS" in result.stdout
    assert "info     Lists: no lists yet" in result.stdout
    # Not even a database: that is named too.
    empty = Cli(
        env=clean_environ(
            NEWSLETTER_VAR_DIR=str(tmp_path / "elsewhere"), NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{port}"
        ),
        cwd=tmp_path,
    )
    bare = empty("doctor", check=False)
    assert bare.returncode == 1 and "missing  Lists: cannot read the lists:" in bare.stdout
    assert bare.stdout.splitlines()[-1].startswith("8 gap(s): DKIM signing, Lists, ")
    assert f"missing  SMTP relay 127.0.0.1:{port}: 127.0.0.1:{port} cannot be used: Connection refused" in bare.stdout


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    environ = {
        "NEWSLETTER_VAR_DIR": str(tmp_path / "var"),
        "NEWSLETTER_RETURN_PATH": "bounces@example.org",
        "NEWSLETTER_POSTAL_ADDRESS": "1 Example Street",
        "NEWSLETTER_BASE_URL": "https://news.example.org",
        "NEWSLETTER_SECRET_KEY": SECRET,
        **extra,
    }
    return Settings.from_environ(environ)


def dkim_env(path: Path, bits: int = 2048, *, mode: int = 0o600) -> dict[str, str]:
    key = generate_private_key(bits)
    write_private_key(path, key)
    os.chmod(path, mode)
    return {
        "NEWSLETTER_DKIM_DOMAIN": "example.org",
        "NEWSLETTER_DKIM_SELECTOR": "nl1",
        "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(path),
    }


def statuses(report: doctor.Report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for check in report.checks:
        found.setdefault(check.name, []).append(check.status)
    return found


LISTS = [ListSender("weekly", "news@example.org")]


def test_misalignment_wrong_records_and_weak_or_unreadable_keys(tmp_path):
    settings = settings_for(tmp_path, **dkim_env(tmp_path / "good.pem"))
    assert not run_checks(settings, secret_key_set=True, lists=LISTS).gaps

    other = run_checks(settings, secret_key_set=True, lists=[*LISTS, ListSender("partner", "hello@partner.net")])
    (gap,) = other.gaps
    assert gap.name == "DMARC alignment" and "partner.net (partner)" in gap.detail and "d=example.org" in gap.detail
    assert statuses(other)["Return path"] == ["warn"]  # SPF cannot align for partner.net either

    wrong = zone_line("nl1", "example.org", generate_private_key(1024))
    (gap,) = run_checks(settings, secret_key_set=True, lists=LISTS, dns_record=wrong).gaps
    assert gap.name == "DKIM DNS record" and "does not match" in gap.detail
    (gap,) = run_checks(settings, secret_key_set=True, lists=LISTS, dns_record="v=DKIM1; k=rsa").gaps
    assert gap.name == "DKIM DNS record" and "no public key" in gap.detail

    weak = run_checks(settings_for(tmp_path, **dkim_env(tmp_path / "weak.pem", 1024)), secret_key_set=True, lists=LISTS)
    assert not weak.gaps and statuses(weak)["DKIM key"] == ["warn"] and "under 2048 bits" in weak.checks[1].detail
    loose = run_checks(
        settings_for(tmp_path, **dkim_env(tmp_path / "loose.pem", mode=0o644)), secret_key_set=True, lists=LISTS
    )
    assert not loose.gaps and "readable by other users" in loose.checks[1].detail and "chmod 600" in loose.checks[1].fix

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    broken = settings_for(
        tmp_path, **{**dkim_env(tmp_path / "unused.pem"), "NEWSLETTER_DKIM_PRIVATE_KEY_FILE": str(garbage)}
    )
    (gap,) = run_checks(broken, secret_key_set=True, lists=LISTS).gaps
    assert gap.name == "DKIM key" and "not a PEM private key" in gap.detail

    unset = run_checks(settings_for(tmp_path, **dkim_env(tmp_path / "k.pem")), secret_key_set=False, lists=LISTS)
    assert [g.name for g in unset.gaps] == ["Secret key"] and "secret_key" in unset.gaps[0].detail


def test_dmarc_relaxed_alignment():
    assert aligned("example.org", "example.org") and aligned("news.example.org", "example.org")
    assert aligned("news.example.org", "bounces.example.org")  # same organisational domain
    assert (
        aligned("news.example.co.uk", "mail.example.co.uk")
        and organisational_domain("a.b.example.co.uk") == "example.co.uk"
    )
    assert not aligned("example.co.uk", "other.co.uk") and not aligned("example.org", "example.com")
    assert not aligned("example.org", "notexample.org")


def test_check_web_posts_a_one_click_unsubscribe_to_the_running_app(cli):
    port = free_port()
    env = {**cli.env, "NEWSLETTER_BASE_URL": f"http://127.0.0.1:{port}", "NEWSLETTER_SECRET_KEY": SECRET}
    web = start_web(env, cli.cwd, port)
    try:
        result = Cli(env=env, cwd=cli.cwd)("doctor", "--check-web", check=False)
    finally:
        web.stop()
    assert (
        f"ok       Unsubscribe endpoint: POST http://127.0.0.1:{port}/unsubscribe/doctor-check.invalid-token "
        "answered 400"
    ) in result.stdout
    down = doctor.check_one_click(f"http://127.0.0.1:{port}", timeout=5)
    assert down.gap and "no answer" in down.detail


@pytest.mark.parametrize(
    "host, mechanism",
    [
        ("smtp.relay.example", "a:smtp.relay.example"),
        ("93.184.216.34", "ip4:93.184.216.34"),
        ("127.0.0.1", "ip4:YOUR.SERVER.PUBLIC.IP"),
        ("localhost", "ip4:YOUR.SERVER.PUBLIC.IP"),
    ],
)
def test_the_spf_hint_names_the_relay(tmp_path, host, mechanism):
    settings = settings_for(tmp_path, NEWSLETTER_SMTP_URL=f"smtp://{host}:25")
    records = dict(run_checks(settings, secret_key_set=True, lists=LISTS).records)
    spf = [r for what, r in records.items() if what.startswith("SPF")]
    assert spf == [f'example.org. IN TXT "v=spf1 {mechanism} ~all"']


def test_each_relay_is_checked_by_name_never_showing_a_password(tmp_path, certificate):  # noqa: F811
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    secure = CaptureServer(port=0, tls_context=server_context, credentials=("mailer", "s3cret"))
    plain = CaptureServer(port=0, credentials=("mailer", "s3cret"), tls_context=None)
    busy, down = Greeting421(), closed_port()
    secure.start()
    plain.start()
    try:
        checks = {
            name: doctor.check_relay(
                SmtpRelay(SmtpSettings("127.0.0.1", port, user, pw, security)), ssl_context=trusting
            )
            for name, port, user, pw, security in [
                ("secure", secure.port, "mailer", "s3cret", "starttls"),
                ("wrong password", secure.port, "mailer", "wrong-pw", "starttls"),
                ("plain", plain.port, "mailer", "s3cret", "none"),
                ("busy", busy.port, None, None, "none"),
                ("down", down, None, None, "none"),
            ]
        }
    finally:
        secure.stop()
        plain.stop()
        busy.close()
    assert checks["secure"].name == f"SMTP relay 127.0.0.1:{secure.port}"
    assert (checks["secure"].status, checks["secure"].detail) == (
        "ok",
        "connected, EHLO accepted, STARTTLS, certificate verified, logged in as mailer; weight 1",
    )
    assert checks["wrong password"].gap and "login as mailer failed: 535" in checks["wrong password"].detail
    assert checks["plain"].status == "warn" and "plain text" in checks["plain"].fix
    assert checks["busy"].gap and "421 4.3.2 Too busy" in checks["busy"].detail
    assert checks["down"].gap and checks["down"].detail == f"127.0.0.1:{down} cannot be used: Connection refused"
    for check in checks.values():
        assert "s3cret" not in f"{check.detail} {check.fix}" and "wrong-pw" not in f"{check.detail} {check.fix}"
    # run_checks puts them with the others; one failing relay is a gap.
    settings = settings_for(tmp_path, NEWSLETTER_SMTP_URL=f"smtp://127.0.0.1:{down},smtp://127.0.0.1:{closed_port()}")
    report = run_checks(settings, secret_key_set=True, lists=LISTS, smtp_checks=doctor.check_relays(settings))
    assert [c.name for c in report.gaps if c.name.startswith("SMTP relay")] == [
        f"SMTP relay {r.name}" for r in settings.smtp_relays
    ]
