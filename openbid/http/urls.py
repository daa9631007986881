"""URLs the fan-out client is asked to call, checked and made safe to send.

Notice URLs (`nurl`, `burl`, `lurl`) are chosen by DSPs: whatever they hold, what goes on the
wire is a valid request line (RFC 9112 3.2: no spaces, controls or non-ASCII in the target,
every `%` starting an escape) and a Host header (an IPv6 literal in brackets).
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import quote, urlsplit

MAX_URL_CHARS = 8192
# Characters a request target may hold as they are: unreserved, sub-delims, ":@/?" and `%`
# (escapes are kept; a `%` starting none is encoded first).
_TARGET_SAFE = "!$&'()*+,;=:@/?%~"
_NEEDS_ENCODING = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]|%(?![0-9A-Fa-f]{2})")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_NAME = re.compile(r"[a-z0-9_\-.]+")


class Target(NamedTuple):
    scheme: str
    host: str
    """What to connect to: a name or an address (IPv6 without brackets)."""
    port: int
    host_header: str
    """The Host header's value: name or bracketed IPv6 literal, with `:port` if given."""
    request_target: str
    """Path and query, percent-encoded where they must be."""


def parse_target(url: str) -> Target:
    """Checks an http(s) URL and splits it for sending; `ValueError` says what is wrong.

    >>> parse_target("http://[::1]:8080/win?x=1 2&y=\\x7f")
    Target(scheme='http', host='::1', port=8080, host_header='[::1]:8080', request_target='/win?x=1%202&y=%7F')
    >>> parse_target("https://DSP.example/bid?p=${AUCTION_PRICE}&q=50%").request_target
    '/bid?p=$%7BAUCTION_PRICE%7D&q=50%25'
    """
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("not an http(s) URL")
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    port = parts.port  # ValueError when out of range or not a number
    if ":" in host:
        ipaddress.IPv6Address(host.split("%")[0])  # ValueError when not an address
        host_header = f"[{host}]"
    else:
        host_header = host.encode("idna").decode("ascii")  # UnicodeError is a ValueError
        if not _HOST_NAME.fullmatch(host_header):
            raise ValueError(f"bad host name {host_header[:100]!r}")
    if port is not None:
        host_header += f":{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if _NEEDS_ENCODING.search(target):
        target = quote(_LONE_PERCENT.sub("%25", target), safe=_TARGET_SAFE)
    tls = parts.scheme == "https"
    return Target(parts.scheme, host, port or (443 if tls else 80), host_header, target)
