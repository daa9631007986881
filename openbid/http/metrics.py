"""What the HTTP server counts and logs about the limits it enforces.

Counters only move on rare paths (a refused request, a shed connection, a failed accept),
never per request; warnings are rate-limited so that a flood cannot flood the log too.
"""

from __future__ import annotations

import logging
import time

from openbid.obs import loop_counter

log = logging.getLogger("openbid.http.server")

CONNECTIONS_DROPPED = loop_counter(
    "openbid_http_connections_dropped",
    "Connections the HTTP server closed or refused to stay within its limits, by reason "
    "(idle_at_cap: oldest idle ones shed at max_connections; refused_at_cap: a new one "
    "refused with none idle to shed; idle_out_of_fds: shed when accept ran out of file "
    "descriptors; write_stalled: a client that read none of its responses for a whole "
    "idle timeout)",
    ("reason",),
)
ACCEPT_ERRORS = loop_counter(
    "openbid_http_accept_errors",
    "accept() failures of the HTTP server by error (EMFILE/ENFILE: out of file descriptors)",
    ("error",),
)
REQUESTS_REFUSED = loop_counter(
    "openbid_http_requests_refused",
    "Requests the HTTP layer answered with an error before any handler, by status "
    "(400 malformed or smuggling-prone framing, 408 too slow, 413, 414, 431, 501, 505, ...)",
    ("status",),
)


class RateLimitedLog:
    """Logs a warning per `key` at most once per `interval_s`, with how many times it
    happened since the last line (`occurrences`)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, message: str, **fields: object) -> None:
        now = time.monotonic()
        logged_at, count = self._last.get(key, (-1e18, 0))
        count += 1
        if now - logged_at < self.interval_s:
            self._last[key] = (logged_at, count)
            return
        self._last[key] = (now, 0)
        log.warning(message, extra={**fields, "occurrences": count})


WARNINGS = RateLimitedLog()
