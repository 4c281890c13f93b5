"""The composition root: the one place that builds the running parts from the settings.

The CLI, the Celery worker and the web app each make one :class:`Runtime` (from the
environment, or from the Settings they are given) and take what they need from it:

* ``settings``: read once (NEWSLETTER_SECRET_KEY checked unless ``check_secret_key`` is false);
* ``engine`` and ``sessions``: the database (``check_schema``: refuse a missing or old schema);
* ``broker``: Redis as NEWSLETTER_BROKER_URL names it, or the embedded Redis under
  NEWSLETTER_VAR_DIR when it is unset (started by whoever needs it first); its Redis clients;
* ``tasks``: a Celery client that queues tasks *by name* for the workers (the domain never
  imports the worker's module; see newsletter.delivery.send_queue);
* ``transport()``: a new SMTP transport; ``outbound``: the DKIM signer and envelope sender;
* ``signer``: the token signer (current and old secret keys); ``render_settings``;
* ``media_store``: where the media library's files live (a local folder, or an S3 bucket).

Everything is built on first use and kept. Importing this module is cheap: Celery, Redis,
SQLAlchemy, premailer and the rest are imported by the property that builds their part, so
a CLI command that needs none of them loads none of them.

It sits above the domain and the dev tools (it starts the embedded Redis) and below the
edges (newsletter.cli, newsletter.http, newsletter.worker), which alone import it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from newsletter.config import Settings
from newsletter.errors import ConfigError

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from newsletter.content.issues import RenderSettings
    from newsletter.content.media_stores import MediaStore
    from newsletter.mail.outbound import Outbound
    from newsletter.mail.transport import SmtpTransport
    from subscribers.tokens import TokenSigner

#: The Celery queue every task goes to (newsletter.delivery.send_health.QUEUE names it for readers).
QUEUE = "newsletter"

#: The Celery configuration the worker and every client share.
CELERY_CONFIG: dict[str, Any] = {
    "task_default_queue": QUEUE,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "task_ignore_result": True,
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {"visibility_timeout": 3600},
    "worker_hijack_root_logger": False,
    "task_serializer": "json",
    "accept_content": ["json"],
}


def celery_app(name: str = "newsletter") -> Celery:
    """A Celery app with the project's configuration and no broker yet (:meth:`Broker.celery_url` gives it one)."""
    from celery import Celery

    app = Celery(name)
    app.conf.update(CELERY_CONFIG)
    return app


class Broker:
    """Redis as the settings name it: NEWSLETTER_BROKER_URL, or the embedded Redis under
    ``NEWSLETTER_VAR_DIR/redis`` when it is unset, started on first use.

    :meth:`celery_url`, :meth:`redis_url` and :meth:`redis` raise ConfigError when the
    embedded Redis cannot be started.
    """

    def __init__(self, url: str | None, var_dir: Path) -> None:
        self.url = url
        self.var_dir = var_dir

    @property
    def name(self) -> str:
        """The broker as a person would name it: its URL without a password, or the embedded Redis's folder."""
        if not self.url:
            return f"(the embedded Redis under {self.var_dir / 'redis'})"
        url, parts = self.url, urlsplit(self.url)
        if parts.password:
            url = url.replace(f":{parts.password}@", ":***@", 1)
        return url

    def celery_url(self) -> str:
        """The URL for Celery (kombu): the configured one, or the embedded server's socket."""
        from newsletter.devtools import embedded_redis

        return embedded_redis.broker_url(self.url, self.var_dir)

    def redis_url(self) -> str:
        """The same server as a URL redis-py understands."""
        from newsletter.devtools import embedded_redis

        return embedded_redis.client_url(self.url, self.var_dir)

    def redis(self, *, timeout: float | None = None) -> redis.Redis:
        """A new Redis client (its own connection pool); ``timeout`` bounds connecting and each reply."""
        import redis

        return redis.Redis.from_url(self.redis_url(), socket_timeout=timeout, socket_connect_timeout=timeout)


class TaskQueue:
    """Queues Celery tasks by their registered names ("newsletter.deliver_batch", ...): whoever enqueues
    never imports newsletter.worker. It implements newsletter.delivery.send_queue.TaskQueue.

    ``app``: the Celery app to send with (the worker's own, so its connection pool is reused);
    by default a client app of its own on the broker, made on first use.
    """

    def __init__(self, broker: Broker, app: Celery | None = None) -> None:
        self.broker = broker
        self._app = app
        self._warming: threading.Thread | None = None
        # The web app's request threads may all want the app at once: one makes it (Celery's lazy
        # module cannot be imported by two threads at once), the others wait for it.
        self._making = threading.Lock()

    @property
    def app(self) -> Celery:
        """The Celery app (made on first use; waits for a :meth:`warm_up` under way). Raises ConfigError."""
        warming = self._warming
        if warming is not None:
            warming.join()  # outside the lock, which the warm-up takes
            self._warming = None
        if self._app is not None:
            return self._app
        with self._making:
            if self._app is None:
                self._app = self._client_app()
            return self._app

    def _client_app(self) -> Celery:
        app = celery_app("newsletter-client")
        app.conf.update(broker_url=self.broker.celery_url())
        return app

    def warm_up(self) -> None:
        """Make the Celery app and connect it to the broker in a background thread, while the caller
        does something that waits on another server (`newsletter send`: the snapshot, in the database):
        the first task then goes out at once instead of ~0.2 s of Celery's import and connection later.

        Best effort: whatever goes wrong is left for :meth:`send_tasks` to meet again and report.
        """
        if self._app is not None or self._warming is not None:
            return

        def warm() -> None:
            try:
                with self._making:
                    if self._app is None:
                        self._app = self._client_app()
                    app = self._app
            except Exception:  # send_tasks meets it again and reports it
                return
            with contextlib.suppress(Exception), app.producer_or_acquire() as producer:
                producer.channel  # noqa: B018 - connects (a refused connection fails at once)

        self._warming = threading.Thread(target=warm, name="broker-warm-up", daemon=True)
        self._warming.start()

    def send_tasks(self, task: str, calls: Iterable[Sequence[object]]) -> None:
        """Queue one ``task`` per tuple of arguments in ``calls``, over one connection.

        Raises OSError when the broker cannot be reached (kombu's OperationalError becomes a
        ConnectionError with its message), ConfigError when the embedded Redis cannot be started.
        """
        from kombu.exceptions import OperationalError

        app = self.app
        try:
            with app.producer_or_acquire() as producer:
                for args in calls:
                    app.send_task(task, tuple(args), producer=producer, queue=QUEUE)
        except OperationalError as exc:
            raise ConnectionError(str(exc)) from exc

    def redis(self) -> redis.Redis:
        """A new Redis client on the broker (the send counters live beside the queue); close it when done."""
        return self.broker.redis()


class Runtime:
    """The running parts of one process (a CLI command, a worker process, the web app), built on first use.

    ``settings`` given: used as they are; otherwise read from ``environ`` (default: os.environ)
    with ``check_secret_key`` (an empty, blank or short key is a ConfigError). ``check_schema``:
    ``sessions`` first checks that the database is reachable and its schema current (ConfigError
    otherwise, saying to run `newsletter db upgrade`), as every CLI command wants.
    """

    check_secret_key = True
    check_schema = False

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        sessions: sessionmaker[Session] | None = None,
    ) -> None:
        if settings is not None:
            self.__dict__["settings"] = settings
        if sessions is not None:
            self.__dict__["sessions"] = sessions
        self._environ = environ

    @cached_property
    def settings(self) -> Settings:
        environ = os.environ if self._environ is None else self._environ
        return Settings.from_environ(environ, check_secret_key=self.check_secret_key)

    # --- the database ---------------------------------------------------------------

    @cached_property
    def engine(self) -> Engine:
        from newsletter.store import db

        return db.make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from newsletter.store import db, dbapi

        if self.check_schema:
            from sqlalchemy.exc import OperationalError

            try:
                current = db.schema_is_current(self.engine)
            except OperationalError as exc:
                raise ConfigError(f"NEWSLETTER_DATABASE_URL: cannot connect: {exc.orig}") from None
            if not current:
                raise ConfigError(dbapi.SCHEMA_OUT_OF_DATE)
        return db.session_factory(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction: committed at the end, rolled back on an exception."""
        from newsletter.store import db

        with db.transaction(self.sessions) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only session (on SQLite it never waits behind a writer)."""
        from newsletter.store import db

        with db.reading(self.sessions) as session:
            yield session

    # --- the broker -----------------------------------------------------------------

    @cached_property
    def broker(self) -> Broker:
        return Broker(self.settings.broker_url, self.settings.var_dir)

    @cached_property
    def redis(self) -> redis.Redis:
        """One Redis client on the broker, kept for the life of the process."""
        return self.broker.redis()

    @cached_property
    def tasks(self) -> TaskQueue:
        """The Celery client that queues tasks for the workers."""
        return TaskQueue(self.broker)

    # --- mail -----------------------------------------------------------------------

    def transport(self, *, timeout: float = 30.0) -> SmtpTransport:
        """A new SMTP transport to NEWSLETTER_SMTP_* (not yet connected)."""
        from newsletter.mail.transport import SmtpTransport

        return SmtpTransport(self.settings.smtp, timeout=timeout)

    @property
    def smtp_name(self) -> str:
        """host:port of the SMTP server, or of each relay, comma-separated (no passwords)."""
        return self.settings.smtp_names

    @cached_property
    def outbound(self) -> Outbound:
        """The DKIM signer (its key read once) and the envelope sender. Raises ConfigError for an unusable key."""
        from newsletter.mail.outbound import Outbound

        return Outbound.from_settings(self.settings)

    # --- content and tokens ---------------------------------------------------------

    @cached_property
    def signer(self) -> TokenSigner:
        from subscribers.tokens import TokenSigner

        return TokenSigner(self.settings.secret_key, self.settings.old_secret_keys)

    @cached_property
    def render_settings(self) -> RenderSettings:
        from newsletter.content.issues import RenderSettings

        s = self.settings
        return RenderSettings.create(
            base_url=s.base_url, postal_address=s.postal_address, user_template_dir=s.template_dir
        )

    @cached_property
    def media_store(self) -> MediaStore:
        """Where the media library's files live: NEWSLETTER_MEDIA_S3_BUCKET, else ``$NEWSLETTER_VAR_DIR/media``.

        Raises ConfigError when a bucket is set but boto3 (the ``s3`` extra) is not installed.
        """
        from newsletter.content.media_stores import LocalMediaStore, S3MediaStore

        s3 = self.settings.media_s3
        if s3 is None:
            return LocalMediaStore(self.settings.var_dir / "media")
        import importlib.util

        if importlib.util.find_spec("boto3") is None:
            raise ConfigError(
                "NEWSLETTER_MEDIA_S3_BUCKET: set, but boto3 is not installed; install the s3 extra: "
                "pip install 'newsletter[s3]'"
            )
        return S3MediaStore(s3.bucket, endpoint=s3.endpoint, prefix=s3.prefix)
