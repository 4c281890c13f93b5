"""Telling machines from people: privacy proxies that fetch every image, and scanners that follow every link.

No request's address or user agent is stored: they are read here, once, to classify the
event, and dropped.

- **Opens.** Apple Mail Privacy Protection fetches every image of a message when it reaches
  the device, through Apple's proxies, with the user agent ``Mozilla/5.0`` and nothing more;
  Yahoo's and a few others' prefetchers name themselves. An open from such a user agent, or
  from an address in the published ranges of a privacy proxy (``NEWSLETTER_PRIVACY_PROXY_RANGES``:
  a file with one network per line, first column, as Apple's ``egress-ip-ranges.csv``), is a
  machine open. Gmail's image proxy fetches when the reader opens the message: a human open.
- **Clicks.** A ``HEAD`` request, a user agent of a security gateway, link previewer, crawler or
  HTTP library, or no user agent at all, is a machine click; so is a burst, several links of one
  message followed within :data:`BURST_SECONDS` (a reader does not follow two links of an issue
  within two seconds; a scanner follows them all): :mod:`newsletter.engagement.events` marks the
  whole burst.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from functools import lru_cache
from pathlib import Path

__all__ = ["BURST_SECONDS", "ProxyRanges", "is_machine_click", "is_machine_open", "proxy_ranges"]

BURST_SECONDS = 2.0

# Security gateways and scanners (Barracuda, Mimecast, Proofpoint, Symantec/Broadcom, Trend Micro,
# Sophos, Cisco IronPort, Forcepoint, FireEye, Zscaler, Microsoft's protocol discovery), previewers
# and crawlers, and the HTTP libraries a scanner is written with.
_SCANNER = re.compile(
    r"barracuda|mimecast|proofpoint|symantec|messagelabs|broadcom|trend ?micro|sophos|ironport|cisco"
    r"|forcepoint|fireeye|zscaler|mcafee|fortinet|checkpoint|paloalto|office protocol discovery"
    r"|microsoft office|ms-office|safelinks|bot\b|bot/|crawler|spider|preview|scanner|monitor|headless"
    r"|python|curl/|wget/|go-http-client|okhttp|java/|libwww|httpclient|axios|node-fetch|ruby|perl|php"
    r"|facebookexternalhit|slack|whatsapp|telegram|discord|skype",
    re.IGNORECASE,
)
# Image prefetchers that fetch on delivery, not when a person opens the message.
_PREFETCHER = re.compile(r"yahoomailproxy|yahoo! slurp|outlook-ios-prefetch", re.IGNORECASE)
# Apple Mail Privacy Protection's proxies send exactly this, nothing more.
_APPLE_PROXY_AGENT = "Mozilla/5.0"


def is_machine_open(user_agent: str | None, client_ip: str | None, ranges: ProxyRanges | None = None) -> bool:
    """Whether an image fetch came from a privacy proxy or a prefetcher rather than a person opening the email."""
    agent = (user_agent or "").strip()
    if not agent or agent == _APPLE_PROXY_AGENT:
        return True
    if _PREFETCHER.search(agent) or _SCANNER.search(agent):
        return True
    return bool(ranges is not None and client_ip and ranges.contains(client_ip))


def is_machine_click(method: str, user_agent: str | None) -> bool:
    """Whether a request for a tracked link is a machine's on its face (a burst is told apart later)."""
    if method.upper() == "HEAD":
        return True
    agent = (user_agent or "").strip()
    return not agent or bool(_SCANNER.search(agent))


class ProxyRanges:
    """Networks of privacy proxies, looked up by bisection (Apple's list has hundreds of thousands)."""

    def __init__(self, networks: list[str]) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in networks:
            network = ipaddress.ip_network(text, strict=False)
            spans[network.version].append((int(network.network_address), int(network.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, found in spans.items():
            merged: list[tuple[int, int]] = []
            for start, end in sorted(found):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            self._starts[version] = [s for s, _ in merged]
            self._ends[version] = [e for _, e in merged]

    def __len__(self) -> int:
        return sum(len(s) for s in self._starts.values())

    def contains(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        starts, ends = self._starts[ip.version], self._ends[ip.version]
        i = bisect.bisect_right(starts, int(ip)) - 1
        return i >= 0 and int(ip) <= ends[i]

    @classmethod
    def from_file(cls, path: Path) -> ProxyRanges:
        """Read one network per line (the first comma-separated column; # starts a comment).

        Raises ValueError naming the file and line of a network that does not parse.
        """
        networks = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                first = line.split("#", 1)[0].split(",", 1)[0].strip()
                if not first:
                    continue
                try:
                    ipaddress.ip_network(first, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{path}, line {number}: {exc}") from None
                networks.append(first)
        return cls(networks)


@lru_cache(maxsize=4)
def proxy_ranges(path: str) -> ProxyRanges:
    """The ranges in ``path``, read once per process."""
    return ProxyRanges.from_file(Path(path))
