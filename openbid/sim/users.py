"""The market's users as browsers: they see the ads an exchange wins for them, click some
through the exchange's click tracker, and convert later, reported to its `/conv`.

For each ad an exchange answers with (an OpenRTB bid: markup, `burl`, `adomain`), `SimUsers`:

1. renders it with probability `render_rate` (a seeded draw): the impression tracker
   (`burl`) is fetched with the user's cookies for the exchange, and the cookies it sets
   (the view cookie of post-view attribution) are kept, as a browser would;
2. draws what the user does (`truth.user_outcome`: the oracle's click and conversion
   probabilities, the same draws as `truth.impressions`) and writes it to the truth log;
3. on a click, after its delay, fetches the click URL the markup carries (our click
   tracker, found as a browser would: the anchor, the native link, the VAST click-through)
   and reads the click id (`obclid`) off the redirect to the landing page, as the
   advertiser's page would;
4. on a conversion, after its delay (minutes to days of market time), reports it as the
   advertiser would: its page's pixel (`GET /conv`, with the user's cookies) or a
   server-to-server postback (`POST /conv`), signed with the advertiser's key, sometimes
   twice.

Delays are market time: pending clicks and conversions wait in one heap, checked every
`TICK_S` of real time against the one clock, bounded by `max_pending` (past it a new one is
dropped and counted). Cookie jars are kept for the `max_jars` users seen last.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import html
import itertools
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import msgspec

from openbid.clock import now as clock_now
from openbid.http.client import FanoutClient, UpstreamError
from openbid.sim.draws import STREAM_RENDER, uniform
from openbid.sim.features import COLUMN
from openbid.sim.generator import RequestBatch
from openbid.sim.market import Market
from openbid.sim.truth import USER_SALT, UserOutcome, user_outcome
from openbid.sim.truthlog import TruthLog

log = logging.getLogger(__name__)

TICK_S = 0.05
"""Real seconds between two looks at the heap of pending clicks and conversions."""
_HREF = re.compile(r"""\bhref\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
_CLICK_THROUGH = re.compile(
    r"<ClickThrough\b[^>]*>\s*(?:<!\[CDATA\[)?\s*(.*?)\s*(?:\]\]>)?\s*</ClickThrough>", re.DOTALL
)
_json = msgspec.json.Encoder()


def click_url(adm: str) -> str:
    """The URL a click on the ad goes to, found as a browser or player finds it: a VAST
    `<ClickThrough>`, a Native `link.url`, else the first anchor of the HTML ("" if none).

    >>> click_url('<div><a href="https://ex.example/t/click?a=1&amp;b=2">ad</a></div>')
    'https://ex.example/t/click?a=1&b=2'
    >>> click_url('{"link": {"url": "https://ex.example/t/click?x=1"}}')
    'https://ex.example/t/click?x=1'
    """
    text = adm.strip()
    if text.startswith("<VAST") or text.startswith("<?xml"):
        match = _CLICK_THROUGH.search(text)
        return html.unescape(match.group(1)) if match else ""
    if text.startswith("{"):
        try:
            document = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return ""
        native = document.get("native", document) if isinstance(document, dict) else None
        link = native.get("link") if isinstance(native, dict) else None
        url = link.get("url") if isinstance(link, dict) else None
        return url if isinstance(url, str) else ""
    match = _HREF.search(text)
    return html.unescape(match.group(2)) if match else ""


def sign_conversion(key: str, message: bytes) -> str:
    """An advertiser's signature of a conversion report: hex HMAC-SHA256 under its key, as
    the exchange documents it (written here anew: the market knows the exchange only by HTTP)."""
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class _Seen(msgspec.Struct):
    """One impression a user saw, and what it will lead to."""

    user: int
    advertiser: str
    conversion_id: str
    outcome: UserOutcome
    click_url: str
    seen_s: float
    obclid: str = ""


class UserStats:
    """What the users did, for the demo's table and for tests."""

    def __init__(self) -> None:
        self.seen = 0
        self.rendered = 0
        self.clicks = 0
        self.click_failures = 0
        self.conversions: Counter[str] = Counter()
        """Conversions reported, by what the exchange answered (click, view, unattributed,
        duplicate, or an error)."""
        self.dropped = 0
        """Clicks and conversions not played: the heap was full."""
        self.errors: Counter[str] = Counter()


class SimUsers:
    """The users of `market`, browsing ads the exchange at `exchange_url` answers with.

    `conversion_keys(advertiser)` gives an advertiser's conversion key (the exchange
    operator hands it out); `truth` keeps the ground truth of every impression seen.
    """

    def __init__(
        self,
        market: Market,
        exchange_url: str,
        conversion_keys: Callable[[str], str],
        *,
        client: FanoutClient | None = None,
        truth: TruthLog | None = None,
        render_rate: float = 0.9,
        max_pending: int = 100_000,
        max_jars: int = 100_000,
        timeout_s: float = 5.0,
        max_in_flight: int = 256,
    ) -> None:
        self.market = market
        self.exchange_url = exchange_url.rstrip("/")
        self.conversion_keys = conversion_keys
        self.client = client or FanoutClient()
        self.truth = truth
        self.render_rate = render_rate
        self.max_pending = max_pending
        self.max_jars = max_jars
        self.timeout_s = timeout_s
        self.stats = UserStats()
        self._heap: list[tuple[float, int, str, _Seen]] = []
        self._order = itertools.count()
        self._jars: OrderedDict[int, dict[str, str]] = OrderedDict()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> int:
        """Clicks and conversions waiting for their time."""
        return len(self._heap)

    @property
    def idle(self) -> bool:
        """Nothing waits for its time and nothing is under way."""
        return not self._heap and not self._tasks

    # --- seeing an ad
    async def saw(
        self, batch: RequestBatch, row: int, bid: Mapping[str, Any], auction_id: str
    ) -> None:
        """The ad of `bid` (a bid of the exchange's answer to the request at `row` of `batch`)
        reaches its page: rendered or not, then seen, clicked, converted."""
        market = self.market
        key = int(batch.keys[row])
        self.stats.seen += 1
        if uniform(key, USER_SALT, STREAM_RENDER) >= self.render_rate:
            return
        user = int(batch.user[row])
        burl = bid.get("burl")
        if isinstance(burl, str) and burl:
            await self._fetch_impression(user, burl)
        adomain = bid.get("adomain") or []
        advertiser = adomain[0] if adomain and isinstance(adomain[0], str) else ""
        vocabulary = market.vocab["advertiser"]
        if advertiser not in vocabulary:  # not an ad of this market: no truth to draw from
            self.stats.errors["foreign_advertiser"] += 1
            return
        self.stats.rendered += 1
        codes = batch.codes[row]
        outcome = user_outcome(market, codes.tolist(), vocabulary.code(advertiser), key)
        now_s = clock_now()
        seen = _Seen(
            user,
            advertiser,
            f"o{key:016x}",
            outcome,
            click_url(str(bid.get("adm") or "")),
            now_s,
        )
        if self.truth is not None:
            self._record_truth(batch, row, bid, auction_id, seen)
        if outcome.clicked:
            self._schedule(now_s + outcome.click_delay_s, "click", seen)
        elif outcome.view_converted:
            self._schedule(now_s + outcome.conversion_delay_s, "convert", seen)

    async def _fetch_impression(self, user: int, burl: str) -> None:
        try:
            reply = await self.client.get(
                burl, timeout_s=self.timeout_s, headers=self._cookie_header(user)
            )
        except UpstreamError as error:
            self.stats.errors[f"impression_{error.kind}"] += 1
            return
        for name, value in reply.raw_headers:
            if name.lower() == b"set-cookie":
                self._keep_cookie(user, value.decode("latin-1"))

    def _record_truth(
        self, batch: RequestBatch, row: int, bid: Mapping[str, Any], auction_id: str, seen: _Seen
    ) -> None:
        assert self.truth is not None
        outcome = seen.outcome
        user_id_sent = int(batch.codes[row, COLUMN["user_id"]]) == self.market.vocab[
            "user_id"
        ].code("yes")
        self.truth.append(
            {
                "ts_micros": int(seen.seen_s * 1_000_000),
                "request_id": batch.request_ids[row],
                "auction_id": auction_id,
                "bid_id": str(bid.get("id", "")),
                "creative_id": str(bid.get("crid", "")),
                "advertiser": seen.advertiser,
                "user_id": self.market.user_id(seen.user),
                "user_id_sent": user_id_sent,
                "click_probability": outcome.click_probability,
                "click_draw": outcome.click_draw,
                "clicked": outcome.clicked,
                "click_delay_s": outcome.click_delay_s,
                "conversion_probability": outcome.conversion_probability,
                "conversion_draw": outcome.conversion_draw,
                "converted": outcome.converted,
                "view_conversion_probability": outcome.view_conversion_probability,
                "view_conversion_draw": outcome.view_conversion_draw,
                "view_converted": outcome.view_converted,
                "conversion_delay_s": outcome.conversion_delay_s,
                "postback": outcome.postback,
                "value_micros": outcome.value_micros,
            }
        )
        if self.truth.full():
            table = self.truth.take()
            if table is not None:
                task = asyncio.ensure_future(asyncio.to_thread(self.truth.write, table))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)

    # --- cookies
    def _cookie_header(self, user: int) -> bytes:
        jar = self._jars.get(user)
        if not jar:
            return b""
        self._jars.move_to_end(user)
        cookies = "; ".join(f"{name}={value}" for name, value in jar.items())
        return f"cookie: {cookies}\r\n".encode("latin-1")

    def _keep_cookie(self, user: int, header: str) -> None:
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if not name.strip():
            return
        jar = self._jars.get(user)
        if jar is None:
            jar = self._jars[user] = {}
            while len(self._jars) > self.max_jars:
                self._jars.popitem(last=False)
        else:
            self._jars.move_to_end(user)
        jar[name.strip()] = value.strip()

    # --- later, on the clock
    def _schedule(self, due_s: float, action: str, seen: _Seen) -> None:
        if len(self._heap) >= self.max_pending:
            self.stats.dropped += 1
            return
        heapq.heappush(self._heap, (due_s, next(self._order), action, seen))

    async def run(self) -> None:
        """Plays the pending clicks and conversions as the clock reaches them (until
        cancelled)."""
        while True:
            self.play_due()
            await asyncio.sleep(TICK_S)

    def play_due(self) -> int:
        """Starts every pending action whose time has come; how many."""
        now_s = clock_now()
        started = 0
        while self._heap and self._heap[0][0] <= now_s:
            due_s, _, action, seen = heapq.heappop(self._heap)
            task = asyncio.ensure_future(self._play(action, seen, due_s))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _play(self, action: str, seen: _Seen, due_s: float) -> None:
        async with self._slots:
            try:
                if action == "click":
                    await self._click(seen, due_s)
                else:
                    await self._convert(seen)
            except Exception:  # one user's failure must not stop the others
                log.exception("simulated user action failed", extra={"action": action})
                self.stats.errors[action] += 1

    async def _click(self, seen: _Seen, due_s: float) -> None:
        if not seen.click_url:
            self.stats.click_failures += 1
            return
        try:
            reply = await self.client.get(
                seen.click_url, timeout_s=self.timeout_s, headers=self._cookie_header(seen.user)
            )
        except UpstreamError as error:
            self.stats.click_failures += 1
            self.stats.errors[f"click_{error.kind}"] += 1
            return
        location = reply.headers.get("location", "")
        if reply.status != 302 or not location:
            self.stats.click_failures += 1
            self.stats.errors[f"click_http_{reply.status}"] += 1
            return
        self.stats.clicks += 1
        # The landing page (the advertiser's) keeps the click id for its conversion report.
        seen.obclid = (parse_qs(urlsplit(location).query).get("obclid") or [""])[0]
        if seen.outcome.converted:
            self._schedule(due_s + seen.outcome.conversion_delay_s, "convert", seen)

    async def _convert(self, seen: _Seen) -> None:
        outcome = seen.outcome
        key = self.conversion_keys(seen.advertiser)
        value = f"{outcome.value_micros / 1_000_000:.2f}"
        for _ in range(2 if outcome.duplicate else 1):
            if outcome.postback:
                status = await self._postback(seen, key, value)
            else:
                status = await self._pixel(seen, key, value)
            self.stats.conversions[status] += 1

    async def _pixel(self, seen: _Seen, key: str, value: str) -> str:
        params = [("adv", seen.advertiser), ("cid", seen.conversion_id), ("value", value)]
        if seen.obclid:
            params.append(("obclid", seen.obclid))
        query = urlencode(params)
        url = f"{self.exchange_url}/conv?{query}&sig={sign_conversion(key, query.encode())}"
        try:
            reply = await self.client.get(
                url, timeout_s=self.timeout_s, headers=self._cookie_header(seen.user)
            )
        except UpstreamError as error:
            return f"error_{error.kind}"
        if reply.status != 200:
            return f"http_{reply.status}"
        return reply.headers.get("x-openbid-conversion", "unknown")

    async def _postback(self, seen: _Seen, key: str, value: str) -> str:
        report = {
            "advertiser": seen.advertiser,
            "conversion_id": seen.conversion_id,
            "value": value,
            "currency": "USD",
            "obclid": seen.obclid,
        }
        body = _json.encode(report)
        header = f"x-openbid-signature: sha256={sign_conversion(key, body)}\r\n".encode()
        try:
            reply = await self.client.post(
                f"{self.exchange_url}/conv", body, timeout_s=self.timeout_s, headers=header
            )
        except UpstreamError as error:
            return f"error_{error.kind}"
        if reply.status != 200:
            return f"http_{reply.status}"
        status = msgspec.json.decode(reply.body).get("status", "unknown")
        return str(status)

    async def close(self) -> None:
        """Writes the truth log's last rows and waits for the actions under way."""
        if self.truth is not None:
            await asyncio.to_thread(self.truth.flush)
        if self._writes:
            await asyncio.wait(set(self._writes))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout_s)
