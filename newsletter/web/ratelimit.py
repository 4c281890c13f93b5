"""Limits on the public subscribe form, counted in Redis so every web process shares them.

Two fixed-window counters (INCR, with EXPIRE set when a window opens):

* per client IP address (an IPv6 client per /64, the block one host usually holds):
  ``NEWSLETTER_SUBSCRIBE_LIMIT`` form posts per hour (default 10); past it the form
  answers 429 and stores nothing. Honeypot hits and invalid posts count too.
* per email address: at most ``CONFIRMATIONS_PER_ADDRESS`` confirmation emails per
  ``ADDRESS_WINDOW`` seconds, whichever IPs asked, so nobody can flood one mailbox
  through the form from many machines. Past it the form answers as usual (no address
  probing) and no email is sent. Addresses are hashed in the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from functools import cached_property

import redis

IP_WINDOW = 3600
CONFIRMATIONS_PER_ADDRESS = 3
ADDRESS_WINDOW = 86400
PREFIX = "newsletter:web"

_COUNT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('TTL', KEYS[1])}
"""


class TooManyRequests(Exception):
    """The client posted the form too often; ``retry_after`` seconds until it may again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; try again in {retry_after} s")
        self.retry_after = retry_after


class Unavailable(Exception):
    """A service the request needs (Redis, the broker) cannot be reached."""


class SubscribeLimiter:
    """Raises Unavailable when Redis cannot be reached: the form then fails closed."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        *,
        per_ip: int,
        ip_window: int = IP_WINDOW,
        per_address: int = CONFIRMATIONS_PER_ADDRESS,
        address_window: int = ADDRESS_WINDOW,
    ) -> None:
        self._connect = connect
        self.per_ip, self.ip_window = per_ip, ip_window
        self.per_address, self.address_window = per_address, address_window

    @cached_property
    def _script(self):  # type: ignore[no-untyped-def]
        return self._connect().register_script(_COUNT)

    def check_ip(self, ip: str | None) -> None:
        """Count one form post from ``ip``; raises TooManyRequests past the limit (0: no limit)."""
        if self.per_ip <= 0:
            return
        count, ttl = self._count(f"{PREFIX}:subscribe-ip:{ip_key(ip)}", self.ip_window)
        if count > self.per_ip:
            raise TooManyRequests(max(int(ttl), 1))

    def allow_confirmation(self, email: str) -> bool:
        """Count one confirmation email to ``email`` (normalised); False past the limit."""
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        count, _ = self._count(f"{PREFIX}:confirm-address:{digest}", self.address_window)
        return count <= self.per_address

    def _count(self, key: str, window: int) -> tuple[int, int]:
        try:
            count, ttl = self._script(keys=[key], args=[window])
        except redis.RedisError as exc:
            raise Unavailable(f"Redis unavailable: {exc}") from None
        return int(count), int(ttl)


def ip_key(ip: str | None) -> str:
    """The unit of the per-IP limit: an IPv4 address, or an IPv6 address's /64."""
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


LOGIN_WINDOW = 900
FAILED_LOGINS_PER_IP = 30
FAILED_LOGINS_PER_USER = 10


class LoginLimiter:
    """Failed admin logins, counted per client IP and per username over 15 minutes.

    Past either limit every login from that IP, or for that username, is refused with 429
    until the window ends, right password or not: a password cannot be guessed online.
    """

    def __init__(self, connect: Callable[[], redis.Redis], *, per_ip: int = FAILED_LOGINS_PER_IP,
                 per_user: int = FAILED_LOGINS_PER_USER, window: int = LOGIN_WINDOW) -> None:
        self._connect = connect
        self.per_ip, self.per_user, self.window = per_ip, per_user, window

    @cached_property
    def _client(self) -> redis.Redis:
        return self._connect()

    def _keys(self, ip: str | None, username: str) -> tuple[str, str]:
        user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        return f"{PREFIX}:login-ip:{ip_key(ip)}", f"{PREFIX}:login-user:{user}"

    def check(self, ip: str | None, username: str) -> None:
        """Raises TooManyRequests when this IP or username failed too often lately; Unavailable without Redis."""
        ip_counter, user_counter = self._keys(ip, username)
        try:
            pipe = self._client.pipeline()
            pipe.get(ip_counter).ttl(ip_counter).get(user_counter).ttl(user_counter)
            ip_count, ip_ttl, user_count, user_ttl = pipe.execute()
        except redis.RedisError as exc:
            raise Unavailable(f"Redis unavailable: {exc}") from None
        if int(ip_count or 0) >= self.per_ip:
            raise TooManyRequests(max(int(ip_ttl), 1))
        if int(user_count or 0) >= self.per_user:
            raise TooManyRequests(max(int(user_ttl), 1))

    def failed(self, ip: str | None, username: str) -> None:
        try:
            script = self._client.register_script(_COUNT)
            for key in self._keys(ip, username):
                script(keys=[key], args=[self.window])
        except redis.RedisError as exc:
            raise Unavailable(f"Redis unavailable: {exc}") from None
