"""Settings from the environment: defaults, parsing, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import DOCUMENTED, Settings, parse_smtp_url
from newsletter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def settings(tmp_path: Path, **values: str) -> Settings:
    return Settings.from_environ({"NEWSLETTER_VAR_DIR": str(tmp_path), **values})


def test_defaults(tmp_path):
    s = settings(tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path}/newsletter.db"
    assert s.broker_url is None
    assert (s.smtp.host, s.smtp.port, s.smtp.security) == ("127.0.0.1", 1025, "none")
    assert s.base_url == "http://localhost:8000"
    assert s.batch_size == 500 and s.send_rate == 0
    # The development secret key is generated once and kept, so links survive restarts.
    assert len(s.secret_key) >= 32
    assert settings(tmp_path).secret_key == s.secret_key


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, "none")),
        ("smtp+starttls://user%40x:p%3Ass@mail.example.com", ("mail.example.com", 587, "user@x", "p:ss", "starttls")),
        ("smtps://u:p@mail.example.com:2465", ("mail.example.com", 2465, "u", "p", "tls")),
    ],
)
def test_smtp_url_variants(url, expected):
    s = parse_smtp_url(url)
    assert (s.host, s.port, s.username, s.password, s.security) == expected


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("NEWSLETTER_SMTP_URL", "http://mail.example.com", "unsupported scheme 'http'"),
        ("NEWSLETTER_SMTP_URL", "smtp://mail.example.com:notaport", "NEWSLETTER_SMTP_URL"),
        ("NEWSLETTER_SMTP_URL", "smtp://", "no host"),
        ("NEWSLETTER_BASE_URL", "news.example.com", "absolute http(s) URL"),
        ("NEWSLETTER_BROKER_URL", "amqp://guest@localhost//", "Redis URL"),
        ("NEWSLETTER_DATABASE_URL", "mysql://root@localhost/db", "unsupported database 'mysql'"),
        ("NEWSLETTER_DATABASE_URL", "not a url", "not a database URL"),
        ("NEWSLETTER_SECRET_KEY", "short", "too short"),
        ("NEWSLETTER_BATCH_SIZE", "0", "at least 1"),
        ("NEWSLETTER_BATCH_SIZE", "many", "whole number"),
        ("NEWSLETTER_SEND_RATE", "-1", "must not be negative"),
        ("NEWSLETTER_STALL_SECONDS", "0", "must be more than 0"),
        ("NEWSLETTER_POSTAL_ADDRESS", "1 Street\nCity", "one line"),
        ("NEWSLETTER_TEMPLATE_DIR", "/no/such/folder", "not a folder"),
        ("NEWSLETTER_SMPT_URL", "smtp://x", "unknown setting"),
    ],
)
def test_bad_values_name_the_variable(tmp_path, name, value, fragment):
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, **{name: value})
    message = str(caught.value)
    assert message.startswith(name + ":")
    assert fragment in message
    assert "\n" not in message


def test_postgres_url_gets_the_psycopg_driver(tmp_path):
    s = settings(tmp_path, NEWSLETTER_DATABASE_URL="postgresql://u@db.example.com/news")
    assert s.database_url == "postgresql+psycopg://u@db.example.com/news"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/newsletter/newsletter.db",
        "sqlite:///relative/news.db",
        "sqlite+pysqlite:///x.db",
        "postgresql://u@db.example.com/news",
        "postgresql://u:secret@127.0.0.1:5432/news_1",
        "postgresql://db.example.com/news",
        "postgresql+psycopg://postgres@127.0.0.1:5432/newsletter_test_abc",
        "postgresql://u:p%40ss@db/news",  # not plain: SQLAlchemy's parser
        "postgresql://u@db/news?sslmode=require",
        "sqlite:///x.db?mode=ro",
    ],
)
def test_database_urls_read_without_sqlalchemy_agree_with_its_parser(tmp_path, url):
    """Plain URLs are checked without importing SQLAlchemy (newsletter.config._PLAIN_URL): the same answer."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        expected = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    else:
        expected = url
    assert settings(tmp_path, NEWSLETTER_DATABASE_URL=url).database_url == expected


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in DOCUMENTED:
        assert f"`{name}`" in readme, f"{name} is missing from README.md"
