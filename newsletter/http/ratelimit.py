"""Limits on the public subscribe form and on admin logins, counted in Redis so every web process shares them.

Every limit is a fixed-window counter changed by one Lua script, so counting an attempt and
deciding on it is one atomic step: requests arriving together cannot all read "under the
limit" before any of them is counted. The client address is ``client_ip`` (the TCP peer, or
X-Forwarded-For only from NEWSLETTER_TRUSTED_PROXIES); an IPv6 client counts per /64, the
block one host usually holds.

Subscribe form (INCR, with EXPIRE set in the same script when a window opens):

* per client address: ``NEWSLETTER_SUBSCRIBE_LIMIT`` form posts per hour (default 10); past it
  the form answers 429 and stores nothing. Honeypot hits and invalid posts count too.
* per email address: at most ``CONFIRMATIONS_PER_ADDRESS`` confirmation emails per
  ``ADDRESS_WINDOW`` seconds, whichever IPs asked, so nobody can flood one mailbox
  through the form from many machines. Past it the form answers as usual (no address
  probing) and no email is sent. Addresses are hashed in the key.

Admin logins (LoginLimiter): each attempt *reserves* a failure before the password is checked
(refused attempts are never checked, so N parallel guesses get at most the limit of checks);
a successful login gives its reservation back. Failures are counted over ``LOGIN_WINDOW``
(15 minutes):

* per client address, whatever account: ``FAILED_LOGINS_PER_IP`` (30), so one machine cannot
  spray guesses across usernames;
* per account, from every address: ``FAILED_LOGINS_PER_USER`` (10). This limit judges only
  addresses the account has not logged in from lately. Past it the account cannot be
  logged into from a new address until the window ends, right password or not;
* an address the account logged in from successfully within ``KNOWN_ADDRESS_DAYS`` (30 days,
  remembered in Redis per account and address) is judged instead by its own
  per-(account, address) counter, ``FAILED_LOGINS_PER_KNOWN_ADDRESS`` (10), which only that
  address feeds. So an attacker elsewhere who exhausts the account's limit does not lock the
  real admin out of their usual address, and is limited at their own.

Usernames (trimmed, lower-cased) are hashed in the keys. Without Redis, logins and the form
answer 503 rather than run unlimited.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import redis
from redis.commands.core import Script

IP_WINDOW = 3600
CONFIRMATIONS_PER_ADDRESS = 3
ADDRESS_WINDOW = 86400
PREFIX = "newsletter:web"

log = logging.getLogger("newsletter.web")

#: Count one event in KEYS[1]'s window of ARGV[1] seconds; the count and the seconds left, in one step.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
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
    def _script(self) -> Script:
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
FAILED_LOGINS_PER_KNOWN_ADDRESS = 10
KNOWN_ADDRESS_DAYS = 30

#: Reserve one failed login, or refuse. KEYS: the address's counter, the account's counter, the
#: account's known-address mark, the (account, address) counter. ARGV: window, and the limits per
#: address, per account, per (account, known address). Returns {allowed 1/0, retry_after, known 1/0}.
_RESERVE_LOGIN = """
local window = tonumber(ARGV[1])
local known = redis.call('EXISTS', KEYS[3]) == 1
local function full(key, limit)
  local n = tonumber(redis.call('GET', key) or '0')
  if n < limit then return nil end
  local ttl = redis.call('TTL', key)
  if ttl < 0 then redis.call('EXPIRE', key, window); ttl = window end
  return math.max(ttl, 1)
end
local wait = full(KEYS[1], tonumber(ARGV[2]))
if not wait then
  if known then wait = full(KEYS[4], tonumber(ARGV[4])) else wait = full(KEYS[2], tonumber(ARGV[3])) end
end
if wait then return {0, wait, known and 1 or 0} end
local function count(key)
  redis.call('INCR', key)
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, window) end
end
count(KEYS[1])
count(KEYS[2])
if known then count(KEYS[4]) end
return {1, 0, known and 1 or 0}
"""

#: A login succeeded: give back its reservation (ARGV[1]: whether it was counted per (account,
#: address)) and remember the address for the account for ARGV[2] seconds.
_RELEASE_LOGIN = """
local function give_back(key)
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
give_back(KEYS[1])
give_back(KEYS[2])
if ARGV[1] == '1' then give_back(KEYS[4]) end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class LoginAttempt:
    """One login attempt, counted as a failure until ``LoginLimiter.succeeded`` gives it back."""

    keys: tuple[str, str, str, str]  # address counter, account counter, known-address mark, (account, address) counter
    known_address: bool  # the account logged in from this address lately: judged per (account, address)


class LoginLimiter:
    """Failed admin logins, per client address and per account (see the module's docstring).

    ``reserve`` before checking the password; ``succeeded`` after a right one. Past a limit every
    login it judges is refused with 429 until the window ends, right password or not: a password
    cannot be guessed online, and an attacker cannot lock the admin out of their usual address.
    """

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        *,
        per_ip: int = FAILED_LOGINS_PER_IP,
        per_user: int = FAILED_LOGINS_PER_USER,
        per_known_address: int = FAILED_LOGINS_PER_KNOWN_ADDRESS,
        window: int = LOGIN_WINDOW,
        known_days: float = KNOWN_ADDRESS_DAYS,
    ) -> None:
        self._connect = connect
        self.per_ip, self.per_user, self.per_known_address = per_ip, per_user, per_known_address
        self.window, self.known_seconds = window, int(known_days * 86400)

    @cached_property
    def _client(self) -> redis.Redis:
        return self._connect()

    @cached_property
    def _reserve(self) -> Script:
        return self._client.register_script(_RESERVE_LOGIN)

    @cached_property
    def _release(self) -> Script:
        return self._client.register_script(_RELEASE_LOGIN)

    @staticmethod
    def _keys(ip: str | None, username: str) -> tuple[str, str, str, str]:
        user = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        address = ip_key(ip)
        return (
            f"{PREFIX}:login-ip:{address}",
            f"{PREFIX}:login-user:{user}",
            f"{PREFIX}:login-known:{user}:{address}",
            f"{PREFIX}:login-user-ip:{user}:{address}",
        )

    def reserve(self, ip: str | None, username: str) -> LoginAttempt:
        """Count this attempt as a failure, atomically with checking the limits.

        Raises TooManyRequests (nothing counted, the password must not be checked) past a limit,
        Unavailable without Redis.
        """
        keys = self._keys(ip, username)
        try:
            allowed, retry_after, known = self._reserve(
                keys=list(keys), args=[self.window, self.per_ip, self.per_user, self.per_known_address]
            )
        except redis.RedisError as exc:
            raise Unavailable(f"Redis unavailable: {exc}") from None
        if not int(allowed):
            raise TooManyRequests(max(int(retry_after), 1))
        return LoginAttempt(keys, bool(int(known)))

    def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: the attempt is not a failure, and its address is known to the account."""
        try:
            self._release(keys=list(attempt.keys), args=["1" if attempt.known_address else "0", self.known_seconds])
        except redis.RedisError as exc:  # the login stands; only the bookkeeping is lost
            log.warning("could not record a successful login in Redis: %s", exc)
