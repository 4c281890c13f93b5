"""What the SMTP servers (smtp-capture, inbound) share: aiosmtpd serving on a socket bound beforehand.

Binding first makes a busy port fail at once (aiosmtpd's Controller would wait out its
ready_timeout) and makes port 0 work (the Controller probes the port it was given).
"""

from __future__ import annotations

import socket
from typing import Any

from aiosmtpd.controller import Controller


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port ("" means every address). Raises OSError."""
    sock: socket.socket | None = None
    address: tuple[Any, ...]  # (host, port), or IPv6's (host, port, flowinfo, scope_id)
    try:
        dualstack = not host and socket.has_dualstack_ipv6()
        if dualstack:
            family, address = socket.AF_INET6, ("::", port)
        else:
            family, _, _, _, address = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        # proto=IPPROTO_TCP, not socket.create_server()'s 0: asyncio only sets TCP_NODELAY on
        # accepted sockets whose proto says TCP, and without it Nagle holds back the 2nd and
        # 3rd reply to a pipelined MAIL/RCPT/DATA until the client's delayed ACK (~40 ms).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dualstack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(128)
        return sock
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise OSError(exc.errno, f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}") from None


class BoundController(Controller):
    """aiosmtpd's Controller serving on ``sock`` (from :func:`listen`); the socket is closed if it cannot start."""

    def __init__(self, sock: socket.socket, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sock = sock

    def start(self) -> None:
        try:
            super().start()
        except BaseException:
            self._sock.close()
            self.stop(no_assert=True)
            raise

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)
