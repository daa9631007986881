"""Publisher traffic: seeded batches of OpenRTB 2.6 bid requests with their features as columns.

A batch is drawn in numpy (who visits, where, on which device, when), so its feature codes
exist before any JSON does; the request bodies are built from them on first use. Simulated
time follows the market's hourly and weekday seasonality and is carried in each request as
`ext.sim.ts_ms`, so a DSP reads the same hour the generator drew.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from openbid.sim.draws import draw_key, hashed_keys
from openbid.sim.features import (
    APP_BROWSER,
    COLUMN,
    CONNECTION_CODES,
    DEVICE_TYPE_CODES,
    FLOOR_BUCKET_EDGES_CPM,
    FLOOR_FORMAT_MULTIPLIER,
    OS_NAMES,
    REQUEST_FEATURES,
    USER_AGENTS,
    RequestFeatures,
)

if TYPE_CHECKING:
    from openbid.sim.market import Market

IMP_ID = "1"
"""Generated requests carry one impression, with this id."""
NATIVE_REQUEST = msgspec.json.encode(
    {
        "ver": "1.2",
        "context": 1,
        "plcmttype": 1,
        "assets": [
            {"id": 1, "required": 1, "title": {"len": 90}},
            {"id": 2, "required": 1, "img": {"type": 3, "wmin": 300, "hmin": 250}},
            {"id": 3, "required": 0, "data": {"type": 2, "len": 140}},
        ],
    }
).decode()
_VIDEO = {
    "mimes": ["video/mp4", "video/webm"],
    "minduration": 5,
    "maxduration": 30,
    "protocols": [2, 3, 5, 6, 7, 8],
    "linearity": 1,
    "startdelay": 0,
}
_encoder = msgspec.json.Encoder()


class RequestBatch:
    """Generated requests: ids, draw keys and feature columns; bodies built on first use.

    `codes[i, COLUMN[feature]]` is the code of a request feature in `market.vocab[feature]`;
    `floor_cpm`, `ts_ms` (simulated time), `user` and `site` are per-request arrays.
    """

    def __init__(
        self,
        market: Market,
        request_ids: list[str],
        codes: np.ndarray,
        floor_cpm: np.ndarray,
        ts_ms: np.ndarray,
        user: np.ndarray,
        site: np.ndarray,
    ) -> None:
        self.market = market
        self.request_ids = request_ids
        self.codes = codes
        self.floor_cpm = floor_cpm
        self.ts_ms = ts_ms
        self.user = user
        self.site = site
        self.keys = np.fromiter(
            (draw_key(market.seed, rid, IMP_ID) for rid in request_ids),
            dtype=np.uint64,
            count=len(request_ids),
        )

    def __len__(self) -> int:
        return len(self.request_ids)

    def __getitem__(self, rows: slice) -> RequestBatch:
        """A slice of the batch (a training or a test window)."""
        part = RequestBatch.__new__(RequestBatch)
        part.market = self.market
        part.request_ids = self.request_ids[rows]
        part.codes = self.codes[rows]
        part.floor_cpm = self.floor_cpm[rows]
        part.ts_ms = self.ts_ms[rows]
        part.user = self.user[rows]
        part.site = self.site[rows]
        part.keys = self.keys[rows]
        return part

    def column(self, feature: str) -> np.ndarray:
        """The codes of one request feature."""
        return self.codes[:, COLUMN[feature]]

    def values(self, feature: str) -> list[str]:
        """The values of one request feature, as strings."""
        names = self.market.vocab[feature].values
        return [names[code] for code in self.column(feature).tolist()]

    def features(self, row: int) -> RequestFeatures:
        """The readable features of one request."""
        vocab = self.market.vocab
        values = {
            name: vocab[name].values[int(code)]
            for name, code in zip(REQUEST_FEATURES, self.codes[row], strict=True)
        }
        return RequestFeatures(**values, floor_cpm=float(self.floor_cpm[row]))

    def request(self, row: int) -> dict[str, Any]:
        """The OpenRTB 2.6 bid request of one row, as plain data."""
        return _build_request(self.market, self, row)

    @cached_property
    def bodies(self) -> list[bytes]:
        """Every request as JSON bytes."""
        market = self.market
        return [_encoder.encode(_build_request(market, self, row)) for row in range(len(self))]


def _seasonal_times(market: Market, u_sorted: np.ndarray, start_s: float, span_s: float):
    """Timestamps for sorted uniforms: the inverse CDF of the hourly/weekday intensity."""
    traffic = market.config.traffic
    first_hour = np.floor(start_s / 3600.0)
    last_hour = np.ceil((start_s + span_s) / 3600.0)
    hour_starts = np.arange(first_hour, max(last_hour, first_hour + 1)) * 3600.0
    slot_start = np.maximum(hour_starts, start_s)
    slot_end = np.minimum(hour_starts + 3600.0, start_s + span_s)
    duration = np.maximum(slot_end - slot_start, 0.0)
    hour_of_day = ((hour_starts // 3600) % 24).astype(np.int64)
    weekday = (((hour_starts // 86400) + 3) % 7).astype(np.int64)
    weight = (
        duration
        * np.asarray(traffic.hourly_weights)[hour_of_day]
        * np.asarray(traffic.weekday_weights)[weekday]
    )
    if weight.sum() <= 0:
        weight = duration
    cdf = np.cumsum(weight) / weight.sum()
    slot = np.minimum(np.searchsorted(cdf, u_sorted, side="right"), len(cdf) - 1)
    low = np.where(slot > 0, cdf[slot - 1], 0.0)
    width = np.maximum(cdf[slot] - low, 1e-300)
    fraction = np.clip((u_sorted - low) / width, 0.0, 1.0)
    return slot_start[slot] + fraction * duration[slot]


def generate(
    market: Market,
    count: int,
    seed: int,
    start_s: float | None = None,
    span_s: float | None = None,
) -> RequestBatch:
    """`count` requests drawn with `seed`, in time order over `[start_s, start_s + span_s)`.

    The same market, count, seed and window always give the same batch.
    """
    traffic = market.config.traffic
    start_s = market.start_s if start_s is None else start_s
    span_s = traffic.span_days * 86400.0 if span_s is None else span_s
    rng = np.random.default_rng([market.seed, seed])
    vocab = market.vocab
    codes = np.zeros((count, len(REQUEST_FEATURES)), dtype=np.int64)

    user = np.minimum(
        np.searchsorted(market.user_cdf, rng.random(count), side="right"), traffic.users - 1
    )
    devicetype = market.user_devicetype[user]
    is_app = rng.random(count) < market.device_app_share[devicetype]
    web_site = np.searchsorted(market.site_cdf, rng.random(count), side="right")
    app_site = traffic.sites + np.searchsorted(market.app_cdf, rng.random(count), side="right")
    site = np.where(
        is_app,
        np.minimum(app_site, traffic.sites + traffic.apps - 1),
        np.minimum(web_site, traffic.sites - 1),
    )

    format_u = rng.random(count)
    video_share = market.device_video_share[devicetype]
    native_share = market.device_native_share[devicetype]
    formats = vocab["format"]
    format_code = np.where(
        format_u < video_share,
        formats.code("video"),
        np.where(
            format_u < video_share + native_share, formats.code("native"), formats.code("banner")
        ),
    )
    size_u = rng.random(count)
    size = np.full(count, vocab["size"].code("native"))
    video_rows = format_code == formats.code("video")
    size[video_rows] = market.video_sizes[0][
        np.minimum(
            np.searchsorted(market.video_sizes[1], size_u[video_rows], side="right"),
            len(market.video_sizes[1]) - 1,
        )
    ]
    banner_rows = format_code == formats.code("banner")
    for device_code, (size_codes, cdf) in market.device_banner_sizes.items():
        rows = banner_rows & (devicetype == device_code)
        size[rows] = size_codes[
            np.minimum(np.searchsorted(cdf, size_u[rows], side="right"), len(cdf) - 1)
        ]
    # A banner on a device that lists no banner sizes (an app-only CTV) is shown as video.
    stray = banner_rows & (size == vocab["size"].code("native"))
    format_code[stray] = formats.code("video")
    size[stray] = market.video_sizes[0][0]

    ts_s = _seasonal_times(market, np.sort(rng.random(count)), start_s, span_s)
    ts_ms = np.floor(ts_s * 1000.0).astype(np.int64)
    hour = (ts_ms // 3_600_000) % 24
    weekday = ((ts_ms // 86_400_000) + 3) % 7

    format_multiplier = np.asarray(
        [FLOOR_FORMAT_MULTIPLIER.get(name, 1.0) for name in formats.values], dtype=np.float64
    )[format_code]
    jitter = np.exp(0.25 * rng.standard_normal(count))
    floor_cpm = np.round(market.site_floor_cpm[site] * format_multiplier * jitter, 2)
    floor_cpm = np.where(market.site_floor_cpm[site] > 0, np.maximum(floor_cpm, 0.01), 0.0)
    floor_bucket = np.where(
        floor_cpm > 0,
        np.searchsorted(np.asarray(FLOOR_BUCKET_EDGES_CPM[1:]), floor_cpm, side="left") + 1,
        0,
    )

    codes[:, COLUMN["publisher"]] = market.site_publisher[site]
    codes[:, COLUMN["site"]] = site
    codes[:, COLUMN["category"]] = market.site_category[site]
    codes[:, COLUMN["inventory"]] = is_app.astype(np.int64)
    codes[:, COLUMN["format"]] = format_code
    codes[:, COLUMN["size"]] = size
    codes[:, COLUMN["devicetype"]] = devicetype
    codes[:, COLUMN["os"]] = market.user_os[user]
    codes[:, COLUMN["browser"]] = np.where(
        is_app, vocab["browser"].code(APP_BROWSER), market.user_browser[user]
    )
    codes[:, COLUMN["connection"]] = market.user_connection[user]
    codes[:, COLUMN["country"]] = market.user_country[user]
    codes[:, COLUMN["region"]] = market.user_region[user]
    codes[:, COLUMN["hour"]] = hour
    codes[:, COLUMN["hour_bucket"]] = hour // 6
    codes[:, COLUMN["weekday"]] = weekday
    codes[:, COLUMN["floor_bucket"]] = floor_bucket
    codes[:, COLUMN["consent"]] = market.user_consent[user]
    codes[:, COLUMN["user_id"]] = np.where(market.user_has_id[user], 0, 1)

    id_keys = hashed_keys(market.seed, f"requests/{seed}/{start_s!r}/{span_s!r}", count)
    request_ids = [format(key, "016x") for key in id_keys.tolist()]
    return RequestBatch(market, request_ids, codes, floor_cpm, ts_ms, user, site)


def _build_request(market: Market, batch: RequestBatch, row: int) -> dict[str, Any]:
    vocab = market.vocab
    codes = batch.codes[row].tolist()
    value = {name: vocab[name].values[codes[i]] for i, name in enumerate(REQUEST_FEATURES)}
    request_id = batch.request_ids[row]
    site_index = int(batch.site[row])
    user_index = int(batch.user[row])
    floor_cpm = float(batch.floor_cpm[row])
    imp: dict[str, Any] = {"id": IMP_ID, "tagid": f"{value['site']}-{value['format']}", "secure": 1}
    if floor_cpm > 0:
        imp["bidfloor"] = floor_cpm
        imp["bidfloorcur"] = "USD"
    width, height = market.size_wh[codes[COLUMN["size"]]]
    if value["format"] == "banner":
        imp["banner"] = {"w": width, "h": height, "format": [{"w": width, "h": height}]}
    elif value["format"] == "video":
        imp["video"] = {
            **_VIDEO,
            "w": width,
            "h": height,
            "plcmt": 1 if value["devicetype"] == "ctv" else 2,
        }
    else:
        imp["native"] = {"request": NATIVE_REQUEST, "ver": "1.2"}
    domain = market.site_domain(site_index)
    publisher = {"id": value["publisher"]}
    gdpr = value["consent"] != "none"
    device: dict[str, Any] = {
        "ua": USER_AGENTS[(value["os"], value["browser"], value["devicetype"])],
        "ip": _user_ip(user_index, codes[COLUMN["country"]]),
        "devicetype": DEVICE_TYPE_CODES[value["devicetype"]],
        "os": OS_NAMES[value["os"]],
        "connectiontype": CONNECTION_CODES[value["connection"]],
        "geo": {"country": value["country"], "type": 2},
        "language": "en",
    }
    region = value["region"].split("-", 1)[1]
    if region != "*":
        device["geo"]["region"] = region
    user: dict[str, Any] = {}
    has_id = value["user_id"] == "yes"
    request: dict[str, Any] = {
        "id": request_id,
        "imp": [imp],
    }
    if value["inventory"] == "app":
        request["app"] = {
            "id": value["site"],
            "bundle": domain,
            "name": domain.rsplit(".", 1)[1],
            "cat": [value["category"]],
            "publisher": publisher,
        }
        if has_id:
            device["ifa"] = _ifa(market.user_id(user_index))
        device["lmt"] = 0 if has_id else 1
    else:
        request["site"] = {
            "id": value["site"],
            "domain": domain,
            "page": f"https://{domain}/{value['category'].lower()}/{request_id[:6]}",
            "cat": [value["category"]],
            "publisher": publisher,
        }
        device["js"] = 1
        if has_id:
            user["id"] = market.user_id(user_index)
    if gdpr:
        consent_string = market.consent_strings.get(value["consent"])
        if consent_string is not None:
            user["consent"] = consent_string
    request["device"] = device
    if user:
        request["user"] = user
    request["at"] = 1
    request["tmax"] = market.config.traffic.tmax_ms
    request["cur"] = ["USD"]
    request["source"] = {"tid": request_id}
    request["regs"] = {"gdpr": 1 if gdpr else 0}
    request["ext"] = {"sim": {"ts_ms": int(batch.ts_ms[row])}}
    return request


def _ifa(user_id: str) -> str:
    return f"{user_id[:8]}-{user_id[8:12]}-4{user_id[13:16]}-a{user_id[17:20]}-{user_id[20:32]}"


def _user_ip(user: int, country_code: int) -> str:
    # Synthetic addresses, stable per user; the first octet groups users by country so a
    # test geo database can map them, but they are not real allocations.
    return f"{11 + (country_code * 7) % 180}.{(user >> 16) & 255}.{(user >> 8) & 255}.{user & 255}"
