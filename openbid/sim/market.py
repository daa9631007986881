"""A compiled market: vocabularies, the site and user populations, and every hidden rule.

`Market.load("default")` reads a market file and compiles it: sites and apps with their
publishers, categories and floors; users with their country, device and consent; each DSP's
bid model, prices, latencies and faults; the users' click and conversion models. All of it
is a deterministic function of the file (its `seed` included).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from openbid.sim import truth
from openbid.sim.config import (
    ConsentVariant,
    Dsp,
    MarketConfig,
    MarketError,
    Weighted,
    load_market_config,
)
from openbid.sim.draws import hashed_normals, hashed_uniforms, name_hash
from openbid.sim.features import (
    AD_FEATURES,
    ALL_FEATURES,
    APP_BROWSER,
    COLUMN,
    CONNECTION_CODES,
    DEVICE_TYPES,
    FLOOR_BUCKETS,
    FORMATS,
    HOUR_BUCKETS,
    INVENTORIES,
    OS_NAMES,
    USER_AGENTS,
    WEEKDAYS,
)
from openbid.sim.generator import RequestBatch, generate
from openbid.sim.model import CompiledDsp, LogitModel, Vocabulary
from openbid.sim.tcf import TcfConsent, encode_tc_string

CONSENT_NONE = "none"
"""The consent value of traffic outside GDPR."""
GDPR_BID_PURPOSES = frozenset({1, 2, 3, 4})
"""Purposes a DSP needs consent for under GDPR (store, basic ads, personalised profile/ads)."""
_CATEGORY_WORDS = {
    "IAB1": "arts",
    "IAB2": "autos",
    "IAB3": "business",
    "IAB5": "learn",
    "IAB7": "health",
    "IAB8": "food",
    "IAB9": "hobby",
    "IAB12": "news",
    "IAB13": "money",
    "IAB15": "science",
    "IAB17": "sports",
    "IAB18": "style",
    "IAB19": "tech",
    "IAB20": "travel",
    "IAB9-30": "games",
}


def _cdf(shares: list[float]) -> np.ndarray:
    total = float(sum(shares))
    if total <= 0:
        raise ValueError("shares sum to zero")
    return np.cumsum(np.asarray(shares, dtype=np.float64)) / total


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _zipf_cdf(count: int, exponent: float) -> np.ndarray:
    return _cdf(list(np.arange(1, count + 1, dtype=np.float64) ** -exponent))


class Market:
    """A compiled market. Build it with `Market.load(name_or_path)` or `Market(config)`."""

    def __init__(self, config: MarketConfig, *, buyer_vendor_ids: Iterable[int] = ()) -> None:
        self.config = config
        self.buyer_vendor_ids = frozenset(buyer_vendor_ids)
        """TCF vendor ids of buyers other than the DSPs (openbid's house demand) that the
        sites' consent platform lists: users consent to them as to the DSPs."""
        self.name = config.name
        self.seed = config.seed
        traffic = config.traffic
        try:
            self.start_s = datetime.fromisoformat(traffic.start).astimezone(UTC).timestamp()
        except ValueError:
            raise MarketError(
                f"market.traffic.start: not an ISO 8601 time: {traffic.start}"
            ) from None
        self._check_traffic()
        self.consent_strings = self._consent_strings()
        self.vocab = self._vocabularies()
        self._compile_sites()
        self._compile_users()
        self._compile_traffic()
        names = [dsp.name for dsp in config.dsps]
        if len(set(names)) != len(names):
            raise MarketError("market.dsps: DSP names must be unique")
        self.dsps = [self._compile_dsp(i, dsp) for i, dsp in enumerate(config.dsps)]
        self.dsp_index = {dsp.name: dsp.index for dsp in self.dsps}
        self.click_model = self._compile_model(config.users.click, "market.users.click")
        self.conversion_model = self._compile_model(
            config.users.conversion, "market.users.conversion"
        )

    @classmethod
    def load(
        cls, name_or_path: str | Path = "default", *, buyer_vendor_ids: Iterable[int] = ()
    ) -> Market:
        """Reads, validates and compiles a market file (a shipped name or a path);
        `buyer_vendor_ids`: more vendors the consent platform lists (`Market.__init__`)."""
        return cls(load_market_config(name_or_path), buyer_vendor_ids=buyer_vendor_ids)

    def __repr__(self) -> str:
        return f"Market({self.name!r}, dsps={[d.name for d in self.dsps]})"

    # ---- the market at work --------------------------------------------------------------

    def generate(
        self, count: int, seed: int, start_s: float | None = None, span_s: float | None = None
    ) -> RequestBatch:
        """`count` requests in time order over `[start_s, start_s + span_s)` (by default the
        market's `traffic.start` and `span_days`); the same arguments give the same batch.

        >>> market = Market.load("default")
        >>> batch = market.generate(1000, seed=1)
        >>> batch.request_ids[:2] == market.generate(1000, seed=1).request_ids[:2]
        True
        >>> batch.request(0)["imp"][0]["id"], len(batch.bodies)
        ('1', 1000)
        """
        return generate(self, count, seed, start_s, span_s)

    def bid_probabilities(self, batch: RequestBatch) -> np.ndarray:
        """The oracle: true bid probability of every (request, DSP), shape (requests, DSPs)."""
        return truth.bid_probabilities(self, batch)

    def dsp_outcomes(self, batch: RequestBatch) -> truth.DspOutcomes:
        """Every DSP's decision (probability, bid, price, latency, fault) on every request."""
        return truth.dsp_outcomes(self, batch)

    def impressions(
        self, batch: RequestBatch, outcomes: truth.DspOutcomes, tmax_ms: float | None = None
    ) -> truth.Impressions:
        """Auctions won, with each user's true click probability and realised click."""
        return truth.impressions(self, batch, outcomes, tmax_ms)

    # ---- vocabularies -------------------------------------------------------------------

    def _check_traffic(self) -> None:
        traffic = self.config.traffic
        for device_name, device in traffic.devices.items():
            key = f"market.traffic.devices.{device_name}"
            for os_name in device.os:
                if os_name not in OS_NAMES:
                    raise MarketError(f"{key}.os.{os_name}: unknown OS (known: {_known(OS_NAMES)})")
                if device.app_share > 0 and (os_name, APP_BROWSER, device_name) not in USER_AGENTS:
                    raise MarketError(f"{key}.os.{os_name}: no app user agent for {device_name}")
                if device.app_share < 1:
                    browsers = traffic.browsers.get(os_name)
                    if not browsers:
                        raise MarketError(
                            f"market.traffic.browsers.{os_name}: missing (web visits on {device_name})"
                        )
                    for browser in browsers:
                        if (os_name, browser, device_name) not in USER_AGENTS:
                            raise MarketError(
                                f"market.traffic.browsers.{os_name}.{browser}: "
                                f"no user agent for {device_name}"
                            )
            for connection in device.connection:
                if connection not in CONNECTION_CODES:
                    raise MarketError(
                        f"{key}.connection.{connection}: unknown connection type "
                        f"(known: {_known(CONNECTION_CODES)})"
                    )
            if device.app_share < 1 and not device.banner_sizes:
                raise MarketError(f"{key}.banner_sizes: required for web visits")
            for size in [*device.banner_sizes, *traffic.video_sizes]:
                if _parse_size(size) is None:
                    raise MarketError(f"{key}: size {size!r} is not WxH")
        for code, country in traffic.countries.items():
            if len(code) != 3 or not code.isupper():
                raise MarketError(f"market.traffic.countries.{code}: expected ISO 3166-1 alpha-3")
            if country.gdpr and not traffic.consent:
                raise MarketError("market.traffic.consent: required when a country has gdpr")

    def _consent_strings(self) -> dict[str, str]:
        """One TC string per consent variant. Like a real CMP, the variants decide over
        every vendor the sites list: the DSPs and the other buyers (`buyer_vendor_ids`):
        `all` consents to each, `half` to those with an even id, `none` to none, so a buyer
        gets consent from the users of the variants that include it, never from all."""
        when = datetime.fromtimestamp(self.start_s - 30 * 86400, UTC)
        dsp_vendors = frozenset(dsp.vendor_id for dsp in self.config.dsps)
        all_vendors = dsp_vendors | self.buyer_vendor_ids
        strings = {}
        for name, variant in self.config.traffic.consent.items():
            vendors = self._variant_vendors(variant, all_vendors)
            consent = TcfConsent(
                created=when,
                last_updated=when,
                purpose_consents=frozenset(variant.purposes),
                vendor_consents=vendors,
                special_feature_optins=frozenset({1}) if variant.purposes else frozenset(),
                max_vendor_id=max(all_vendors),
            )
            strings[name] = encode_tc_string(consent)
        if len(set(strings.values())) != len(strings):
            raise MarketError("market.traffic.consent: two variants give the same TC string")
        return strings

    @staticmethod
    def _variant_vendors(variant: ConsentVariant, all_vendors: frozenset[int]) -> frozenset[int]:
        if variant.vendors == "all":
            return all_vendors
        if variant.vendors == "half":
            return frozenset(v for v in all_vendors if v % 2 == 0)
        return frozenset()

    def _vocabularies(self) -> dict[str, Vocabulary]:
        traffic = self.config.traffic
        countries = traffic.countries
        os_values = [os for device in traffic.devices.values() for os in device.os]
        browsers = [b for mix in traffic.browsers.values() for b in mix] + [APP_BROWSER]
        connections = [c for device in traffic.devices.values() for c in device.connection]
        sizes = [s for d in traffic.devices.values() for s in d.banner_sizes]
        sizes += [*traffic.video_sizes, "native"]
        regions = [
            f"{code}-{region}" for code, country in countries.items() for region in country.regions
        ] + [f"{code}-*" for code, country in countries.items() if not country.regions]
        values = {
            "publisher": [f"p{i}" for i in range(traffic.publishers)],
            "site": [f"s{i}" for i in range(traffic.sites)]
            + [f"a{i}" for i in range(traffic.apps)],
            "category": list(traffic.categories),
            "inventory": list(INVENTORIES),
            "format": list(FORMATS),
            "size": sizes,
            "devicetype": list(DEVICE_TYPES),
            "os": os_values,
            "browser": browsers,
            "connection": connections,
            "country": list(countries),
            "region": regions,
            "hour": [str(h) for h in range(24)],
            "hour_bucket": list(HOUR_BUCKETS),
            "weekday": list(WEEKDAYS),
            "floor_bucket": list(FLOOR_BUCKETS),
            "consent": [CONSENT_NONE, *traffic.consent],
            "user_id": ["yes", "no"],
            "advertiser": [a.domain for d in self.config.dsps for a in d.advertisers],
            "ad_category": [a.category for d in self.config.dsps for a in d.advertisers],
        }
        return {name: Vocabulary(name, values[name]) for name in ALL_FEATURES}

    def codes_of(self, feature: str, values: list[str]) -> list[int]:
        vocabulary = self.vocab[feature]
        return [vocabulary.code(v) for v in values]

    # ---- populations --------------------------------------------------------------------

    def _compile_sites(self) -> None:
        traffic = self.config.traffic
        count = traffic.sites + traffic.apps
        seed = self.seed
        publisher_cdf = _zipf_cdf(traffic.publishers, 1.0)
        self.site_publisher = _pick(publisher_cdf, hashed_uniforms(seed, "site/publisher", count))
        categories = list(traffic.categories)
        category_cdf = _cdf(list(traffic.categories.values()))
        picked = _pick(category_cdf, hashed_uniforms(seed, "site/category", count))
        self.site_category = np.asarray(self.codes_of("category", categories))[picked]
        self.site_inventory = np.where(np.arange(count) < traffic.sites, 0, 1)
        floors = traffic.floors
        zero = hashed_uniforms(seed, "site/zero_floor", count) < floors.zero_share
        level = floors.median_cpm * np.exp(
            floors.spread * hashed_normals(seed, "site/floor", count)
        )
        self.site_floor_cpm = np.where(zero, 0.0, level)
        words = [_CATEGORY_WORDS.get(c.split("-")[0], "media") for c in categories]
        self.site_word = [words[i] for i in picked]

    def site_domain(self, site: int) -> str:
        """The domain of a web site, or the bundle of an app."""
        if site < self.config.traffic.sites:
            return f"{self.site_word[site]}{site}.example.com"
        return f"com.example.{self.site_word[site]}{site - self.config.traffic.sites}"

    def _compile_users(self) -> None:
        traffic = self.config.traffic
        count = traffic.users
        seed = self.seed
        countries = list(traffic.countries)
        picked = _pick(
            _cdf([c.share for c in traffic.countries.values()]),
            hashed_uniforms(seed, "user/country", count),
        )
        self.user_country = np.asarray(self.codes_of("country", countries))[picked]
        region_u = hashed_uniforms(seed, "user/region", count)
        consent_u = hashed_uniforms(seed, "user/consent", count)
        self.user_region = np.zeros(count, dtype=np.int64)
        self.user_consent = np.full(count, self.vocab["consent"].code(CONSENT_NONE))
        variants = list(traffic.consent)
        consent_cdf = _cdf([v.share for v in traffic.consent.values()]) if variants else None
        for code, country in traffic.countries.items():
            rows = self.user_country == self.vocab["country"].code(code)
            if country.regions:
                names = [f"{code}-{r}" for r in country.regions]
                cdf = _cdf(list(country.regions.values()))
                self.user_region[rows] = np.asarray(self.codes_of("region", names))[
                    _pick(cdf, region_u[rows])
                ]
            else:
                self.user_region[rows] = self.vocab["region"].code(f"{code}-*")
            if country.gdpr and consent_cdf is not None:
                self.user_consent[rows] = np.asarray(self.codes_of("consent", variants))[
                    _pick(consent_cdf, consent_u[rows])
                ]
        devices = list(traffic.devices)
        picked = _pick(
            _cdf([d.share for d in traffic.devices.values()]),
            hashed_uniforms(seed, "user/device", count),
        )
        self.user_devicetype = np.asarray(self.codes_of("devicetype", devices))[picked]
        os_u = hashed_uniforms(seed, "user/os", count)
        browser_u = hashed_uniforms(seed, "user/browser", count)
        connection_u = hashed_uniforms(seed, "user/connection", count)
        self.user_os = np.zeros(count, dtype=np.int64)
        self.user_browser = np.full(count, self.vocab["browser"].code(APP_BROWSER))
        self.user_connection = np.zeros(count, dtype=np.int64)
        for name, device in traffic.devices.items():
            rows = self.user_devicetype == self.vocab["devicetype"].code(name)
            os_names = list(device.os)
            os_codes = np.asarray(self.codes_of("os", os_names))[
                _pick(_cdf(list(device.os.values())), os_u[rows])
            ]
            self.user_os[rows] = os_codes
            connections = list(device.connection)
            self.user_connection[rows] = np.asarray(self.codes_of("connection", connections))[
                _pick(_cdf(list(device.connection.values())), connection_u[rows])
            ]
        for os_name, browsers in traffic.browsers.items():
            rows = self.user_os == self.vocab["os"].code(os_name)
            self.user_browser[rows] = np.asarray(self.codes_of("browser", list(browsers)))[
                _pick(_cdf(list(browsers.values())), browser_u[rows])
            ]
        self.user_has_id = hashed_uniforms(seed, "user/has_id", count) < traffic.user_id_share

    def user_id(self, user: int) -> str:
        """The stable id of a user (the same on every visit)."""
        return f"{name_hash(f'{self.seed}/user/{user}'):016x}{name_hash(f'{user}/user'):016x}"

    def _compile_traffic(self) -> None:
        traffic = self.config.traffic
        self.user_cdf = _zipf_cdf(traffic.users, traffic.user_zipf_s)
        self.site_cdf = _zipf_cdf(traffic.sites, traffic.site_zipf_s)
        self.app_cdf = _zipf_cdf(traffic.apps, traffic.site_zipf_s)
        devices = self.vocab["devicetype"]
        self.device_app_share = np.zeros(len(devices))
        self.device_video_share = np.zeros(len(devices))
        self.device_native_share = np.zeros(len(devices))
        self.device_banner_sizes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for name, device in traffic.devices.items():
            code = devices.code(name)
            self.device_app_share[code] = device.app_share
            self.device_video_share[code] = device.video_share
            self.device_native_share[code] = device.native_share
            if device.banner_sizes:
                self.device_banner_sizes[code] = (
                    np.asarray(self.codes_of("size", list(device.banner_sizes))),
                    _cdf(list(device.banner_sizes.values())),
                )
        self.video_sizes = (
            np.asarray(self.codes_of("size", list(traffic.video_sizes))),
            _cdf(list(traffic.video_sizes.values())),
        )
        self.size_wh = [_parse_size(v) or (0, 0) for v in self.vocab["size"].values]

    # ---- models -------------------------------------------------------------------------

    def _compile_model(
        self, spec: Weighted, key: str, extra: list[tuple[int, np.ndarray]] | None = None
    ) -> LogitModel:
        tables: dict[int, np.ndarray] = {}
        for feature, weights in spec.weights.items():
            vocabulary = self._feature(feature, f"{key}.weights.{feature}")
            table = tables.setdefault(COLUMN[feature], np.zeros(len(vocabulary)))
            for value, weight in weights.items():
                if value not in vocabulary:
                    raise MarketError(
                        f"{key}.weights.{feature}.{value}: unknown {feature} "
                        f"(known: {_known(vocabulary.values[:-1])})"
                    )
                table[vocabulary.code(value)] += _finite(weight, f"{key}.weights.{feature}.{value}")
        for column, table in extra or []:
            tables[column] = tables.get(column, np.zeros(len(table))) + table
        pairs = []
        for i, interaction in enumerate(spec.interactions):
            where = f"{key}.interactions[{i}]"
            first, second = interaction.features
            va = self._feature(first, f"{where}.features")
            vb = self._feature(second, f"{where}.features")
            table = np.zeros((len(va), len(vb)))
            for pair, weight in interaction.weights.items():
                parts = pair.split(",")
                if len(parts) != 2 or parts[0] not in va or parts[1] not in vb:
                    raise MarketError(
                        f"{where}.weights.{pair}: expected '<{first}>,<{second}>' with known values"
                    )
                table[va.code(parts[0]), vb.code(parts[1])] += _finite(weight, where)
            pairs.append((COLUMN[first], COLUMN[second], table))
        for i, latent in enumerate(getattr(spec, "latent", [])):
            where = f"{key}.latent[{i}]"
            first, second = latent.features
            va = self._feature(first, f"{where}.features")
            vb = self._feature(second, f"{where}.features")
            salt = f"{key}/latent/{i}"
            left = hashed_normals(self.seed, salt + "/a", len(va) * latent.rank)
            right = hashed_normals(self.seed, salt + "/b", len(vb) * latent.rank)
            product = left.reshape(len(va), latent.rank) @ right.reshape(len(vb), latent.rank).T
            table = product * (latent.scale / np.sqrt(latent.rank))
            table[-1, :] = 0.0
            table[:, -1] = 0.0
            pairs.append((COLUMN[first], COLUMN[second], table))
        return LogitModel(spec.base_logit, sorted(tables.items()), pairs)

    def _feature(self, feature: str, key: str) -> Vocabulary:
        if feature not in self.vocab:
            raise MarketError(f"{key}: unknown feature {feature} (known: {_known(ALL_FEATURES)})")
        return self.vocab[feature]

    def _compile_dsp(self, index: int, dsp: Dsp) -> CompiledDsp:
        key = f"market.dsps[{index}]"
        if any(feature in AD_FEATURES for feature in dsp.bid_model.weights):
            raise MarketError(f"{key}.bid_model.weights: a bid model sees request features only")
        gates = []
        for feature, allowed in (
            ("country", dsp.gates.countries),
            ("format", dsp.gates.formats),
            ("category", dsp.gates.categories),
            ("devicetype", dsp.gates.devicetypes),
            ("hour", [str(h) for h in dsp.gates.hours]),
        ):
            if not allowed:
                continue
            vocabulary = self.vocab[feature]
            for value in allowed:
                if value not in vocabulary:
                    raise MarketError(f"{key}.gates: unknown {feature} {value}")
            table = np.full(len(vocabulary), -np.inf)
            table[self.codes_of(feature, list(allowed))] = 0.0
            gates.append((COLUMN[feature], table))
        consent = self.vocab["consent"]
        consent_gate = np.zeros(len(consent))
        if dsp.gates.requires_consent:
            consent_gate[consent.unknown] = -np.inf
            for name, variant in self.config.traffic.consent.items():
                vendors = self._variant_vendors(variant, frozenset({dsp.vendor_id}))
                if not (set(variant.purposes) >= GDPR_BID_PURPOSES and dsp.vendor_id in vendors):
                    consent_gate[consent.code(name)] = -np.inf
        gates.append((COLUMN["consent"], consent_gate))
        if dsp.bid_model.site_effect_sd > 0:
            sites = self.vocab["site"]
            effect = dsp.bid_model.site_effect_sd * hashed_normals(
                self.seed, f"dsp/{dsp.name}/site", len(sites)
            )
            effect[-1] = 0.0
            gates.append((COLUMN["site"], effect))
        bid_model = self._compile_model(dsp.bid_model, f"{key}.bid_model", gates)
        formats = self.vocab["format"]
        median = np.full(len(formats), dsp.price.median_cpm)
        for name, multiplier in dsp.price.format_multipliers.items():
            if name not in formats:
                raise MarketError(f"{key}.price.format_multipliers.{name}: unknown format")
            median[formats.code(name)] *= multiplier
        faults = dsp.faults
        rates = [
            faults.timeout,
            faults.http_5xx,
            faults.malformed_json,
            faults.slow_body,
            faults.connection_reset,
        ]
        if sum(rates) > 1:
            raise MarketError(f"{key}.faults: rates sum to more than 1")
        for a, advertiser in enumerate(dsp.advertisers):
            if not advertiser.domain:
                raise MarketError(f"{key}.advertisers[{a}].domain: empty")
        return CompiledDsp(
            index=index,
            name=dsp.name,
            config=dsp,
            salt=name_hash(dsp.name),
            bid_model=bid_model,
            median_price_cpm=median,
            advertisers=np.asarray(
                self.codes_of("advertiser", [a.domain for a in dsp.advertisers])
            ),
            fault_cdf=tuple(np.cumsum(rates).tolist()),
        )

    def dsp(self, name: str) -> CompiledDsp:
        """A DSP by name."""
        try:
            return self.dsps[self.dsp_index[name]]
        except KeyError:
            raise MarketError(
                f"no DSP {name!r} in market {self.name} (DSPs: {_known(self.dsp_index)})"
            ) from None

    @cached_property
    def advertiser_category(self) -> np.ndarray:
        """The `ad_category` code of each `advertiser` code."""
        table = np.full(len(self.vocab["advertiser"]), self.vocab["ad_category"].unknown)
        for dsp in self.config.dsps:
            for advertiser in dsp.advertisers:
                table[self.vocab["advertiser"].code(advertiser.domain)] = self.vocab[
                    "ad_category"
                ].code(advertiser.category)
        return table


def _parse_size(size: str) -> tuple[int, int] | None:
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()):
        return None
    return int(width), int(height)


def _finite(weight: float, key: str) -> float:
    if not np.isfinite(weight):
        raise MarketError(f"{key}: weights must be finite (use gates to forbid)")
    return weight


def _known(values) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:12]))
    return shown + (", ..." if len(values) > 12 else "")
