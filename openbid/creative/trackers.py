"""HMAC-signed, expiring tracking URLs (impressions, clicks, video events), signed tokens
(click ids, view cookies) and keys derived from the same secret (advertisers' conversion keys).

A tracker's parameters (auction, bid, price, the landing URL of a click...) are signed with
the exchange's secret, so nobody can forge an impression, change a price, or turn our click
redirect into an open redirect: the redirect only ever goes to the URL that was signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import quote

import msgspec

from openbid.clock import current as current_clock
from openbid.clock import now as clock_now
from openbid.errors import OpenbidError

MARK_MARGIN_S = 86_400.0
"""Real seconds an idempotency mark outlives the URLs it guards (clock skew, retries)."""


class InvalidTracker(OpenbidError):
    """A tracking URL whose signature does not match, or that has expired."""


_MESSAGE = msgspec.json.Encoder()
_TOKEN_VALUES = msgspec.json.Decoder(list[str])
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _query(params: Mapping[str, str]) -> str:
    """A query string; values are percent-encoded only when they need it (most do not: one
    regex over all of them says so, and the pairs are joined as they are)."""
    if _PLAIN.fullmatch("".join(params.values())):
        return "&".join(f"{key}={value}" for key, value in params.items())
    return "&".join(
        f"{key}={value if _PLAIN.fullmatch(value) else quote(value, safe='')}"
        for key, value in params.items()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TrackerSigner:
    """Signs and verifies tracker parameters.

    >>> signer = TrackerSigner(b"0" * 32, ttl_s=3600, clock=lambda: 1_000_000.0)
    >>> query = signer.sign("click", {"bid": "b1", "url": "https://shop.example/p"})
    >>> from urllib.parse import parse_qsl
    >>> signer.verify("click", dict(parse_qsl(query)))["url"]
    'https://shop.example/p'
    >>> signer.verify("click", dict(parse_qsl(query.replace("shop", "evil"))))
    Traceback (most recent call last):
    ...
    openbid.creative.trackers.InvalidTracker: click tracker signature does not match
    """

    def __init__(
        self, secret: bytes, ttl_s: float = 86_400, clock: Callable[[], float] = clock_now
    ) -> None:
        if len(secret) < 16:
            raise ValueError("tracker secret must be at least 16 bytes")
        # Keyed once: each signature copies this state instead of looking the digest up by
        # name and keying it again (one in five of a signature's microseconds).
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self.ttl_s = ttl_s
        self._clock = clock

    def mark_ttl_s(self, minimum_s: float = 0.0) -> float:
        """Real seconds a once-per-bid-id mark (an impression, a win, a spend, a loss) must
        live so that no URL signed now can be replayed after its mark is gone: the
        signature's lifetime in real time (`ttl_s` is market time) plus `MARK_MARGIN_S`, and
        at least `minimum_s`.

        >>> TrackerSigner(b"0" * 32, ttl_s=10 * 86_400).mark_ttl_s(7 * 86_400) / 86_400
        11.0
        """
        return max(minimum_s, current_clock().real_seconds(self.ttl_s) + MARK_MARGIN_S)

    def _signature(self, kind: str, params: Mapping[str, str]) -> str:
        # JSON of the sorted pairs: unambiguous whatever the values hold (a DSP chooses some,
        # like the creative id), so no other parameter set can have the same message.
        mac = self._keyed.copy()
        mac.update(_MESSAGE.encode([kind, sorted(params.items())]))
        return _b64(mac.digest()[:16])

    def sign(self, kind: str, params: Mapping[str, str]) -> str:
        """The query string (`...&exp=...&sig=...`) of a tracker of `kind`."""
        signed = {k: v if type(v) is str else str(v) for k, v in params.items()}
        signed["exp"] = str(int(self._clock() + self.ttl_s))
        signed["sig"] = self._signature(kind, signed)
        return _query(signed)

    def verify(self, kind: str, query: Mapping[str, str]) -> dict[str, str]:
        """The signed parameters, or `InvalidTracker` if tampered with or expired."""
        params = dict(query)
        signature = params.pop("sig", "")
        if not signature.isascii() or not hmac.compare_digest(
            signature, self._signature(kind, params)
        ):
            raise InvalidTracker(f"{kind} tracker signature does not match")
        try:
            expires = int(params["exp"])
        except (KeyError, ValueError):
            raise InvalidTracker(f"{kind} tracker has no valid expiry") from None
        if expires < self._clock():
            raise InvalidTracker(f"{kind} tracker expired")
        return params

    def token(self, kind: str, values: Sequence[str]) -> str:
        """A compact signed token of `kind` holding `values` (URL- and cookie-safe: base64url
        of their JSON, a dot, 16 bytes of HMAC). It does not expire: whoever reads it decides
        how old is too old (an attribution window).

        >>> signer = TrackerSigner(b"0" * 32)
        >>> token = signer.token("clk", ["c1", "bid-1", "1700000000000"])
        >>> signer.open_token("clk", token)
        ['c1', 'bid-1', '1700000000000']
        >>> signer.open_token("view", token)
        Traceback (most recent call last):
        ...
        openbid.creative.trackers.InvalidTracker: view token signature does not match
        """
        payload = _b64(_MESSAGE.encode(list(values)))
        return f"{payload}.{self._token_mac(kind, payload)}"

    def open_token(self, kind: str, token: str) -> list[str]:
        """The values of a token of `kind`, or `InvalidTracker` if it is not one we signed."""
        payload, _, mac = token.partition(".")
        if not mac.isascii() or not hmac.compare_digest(mac, self._token_mac(kind, payload)):
            raise InvalidTracker(f"{kind} token signature does not match")
        try:
            return _TOKEN_VALUES.decode(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
        except (binascii.Error, ValueError, msgspec.DecodeError):  # signed by us: never happens
            raise InvalidTracker(f"{kind} token is malformed") from None

    def _token_mac(self, kind: str, payload: str) -> str:
        # ["token:<kind>", payload] can equal no tracker's [kind, [[key, value], ...]] message.
        mac = self._keyed.copy()
        mac.update(_MESSAGE.encode(["token:" + kind, payload]))
        return _b64(mac.digest()[:16])

    def derived_key(self, label: str) -> str:
        """A key derived from the secret for `label` (64 hex characters): HMAC-SHA256 of the
        label, so it reveals nothing of the secret nor of other labels' keys.

        >>> signer = TrackerSigner(b"0" * 32)
        >>> key = signer.derived_key("conversion:shop.example")
        >>> len(key), key == signer.derived_key("conversion:other.example")
        (64, False)
        """
        mac = self._keyed.copy()
        mac.update(b"derive\x00" + label.encode())
        return mac.hexdigest()
