"""The competitive landscape of the simulated market: the other bidders a buyer meets in each
auction, the price it must beat, what it pays (first or second price) and what the exchange
tells it when it loses, with the true win probability of any bid (the oracle of shading).

D, the highest competing bid of a request, is the larger of two sources:

- the market's simulated DSPs (`openbid.sim.truth`): their delivered bids (in time, no fault);
- the **open market**, many other buyers summarised per request: their number is Poisson
  with mean `bidders[format] x hour_bidders[hour]`, and each bids a log-logistic price
  (log-normal-ish, with a heavier tail) around a median of `median_cpm[format] x
  hour_prices[hour] x device_prices[device] x exp(site_sd x z_site) x (placement CTR
  factor)^click_coupling`: video costs more than banner, evenings more than nights, some
  sites more than others, and inventory whose users click more is bid up (buyers there
  value clicks too). Buyers below the floor do not bid.

D has a closed-form distribution per request (`win_probability`), P(D <= x) = exp(-lambda x
P(open price > x)) x prod over DSPs (1 - P(DSP bids and delivers above x)), which is also
what the sampled D follows. Every draw is a hash of the request's key (`openbid.sim.draws`),
so the same batch meets the same competition every time, and the oracle's true click and
conversion probabilities come from `openbid.sim.truth`.

>>> from openbid.sim import Market
>>> market = Market.load("default")
>>> batch = market.generate(2000, seed=4)
>>> landscape = Landscape(market)
>>> competition = landscape.competition(batch)
>>> result = landscape.settle(competition, np.full(2000, 3_000_000))
>>> bool(0.2 < result.won.mean() < 0.95), bool(np.all(result.price_micros[result.won] == 3_000_000))
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from openbid.sim.draws import hashed_normals, name_hash, uniforms
from openbid.sim.features import COLUMN
from openbid.sim.generator import RequestBatch
from openbid.sim.market import Market
from openbid.sim.model import loglogistic_quantiles, loglogistic_survivals
from openbid.sim.truth import (
    DspOutcomes,
    click_probabilities,
    conversion_probabilities,
)

_SALT = name_hash("landscape")
_STREAM_OPEN = 1
_STREAM_LOSS_NOTICE = 2
MICROS = 1_000_000

# Prices by UTC hour follow the buyers' evenings (the US 00-04, Europe 18-22), cheapest in
# the early-morning hours of both; the number of buyers follows them less steeply.
_HOUR_PRICES = [1.25, 1.3, 1.25, 1.1, 0.95, 0.8, 0.7, 0.65, 0.7, 0.8, 0.85, 0.9,
                0.95, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.25, 1.2, 1.15, 1.2]  # fmt: skip
_HOUR_BIDDERS = [1.15, 1.2, 1.15, 1.05, 0.95, 0.85, 0.8, 0.75, 0.8, 0.85, 0.9, 0.95,
                 0.95, 1.0, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2, 1.2, 1.15, 1.1, 1.1]  # fmt: skip


class LandscapeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The open market and the exchange's rules; defaults are a plausible open exchange."""

    auction: Literal["first", "second"] = "first"
    bidders: dict[str, float] = msgspec.field(
        default_factory=lambda: {"banner": 3.0, "video": 2.0, "native": 2.0}
    )
    """Mean number of open-market buyers per request, by format (before the floor)."""
    median_cpm: dict[str, float] = msgspec.field(
        default_factory=lambda: {"banner": 0.8, "video": 5.0, "native": 1.3}
    )
    shape: float = 2.5
    """Log-logistic shape of one buyer's price (larger: less spread)."""
    hour_prices: list[float] = msgspec.field(default_factory=lambda: list(_HOUR_PRICES))
    hour_bidders: list[float] = msgspec.field(default_factory=lambda: list(_HOUR_BIDDERS))
    device_prices: dict[str, float] = msgspec.field(
        default_factory=lambda: {"phone": 1.0, "tablet": 1.1, "desktop": 1.2, "ctv": 1.5}
    )
    site_sd: float = 0.35
    """Spread (log scale) of a site's price level around its segment's."""
    click_coupling: float = 0.8
    """Price elasticity to the placement's click rate (ad-independent part of the click model)."""
    include_dsps: bool = True
    """Whether the market's simulated DSPs compete too."""
    loss_price_share: float = 0.5
    """Share of first-price losses whose notice carries the clearing price."""
    min_price_micros: int = 10_000
    """What a second-price win costs when nobody else bid and there is no floor."""

    def __post_init__(self) -> None:
        if len(self.hour_prices) != 24 or len(self.hour_bidders) != 24:
            raise ValueError("landscape.hour_prices, hour_bidders: need 24 values (UTC hours)")
        if not self.shape > 0 or self.site_sd < 0 or not 0 <= self.loss_price_share <= 1:
            raise ValueError("landscape: shape > 0, site_sd >= 0, loss_price_share in [0, 1]")


@dataclass(frozen=True)
class Competition:
    """What each request of a batch holds for a buyer: D and everything its law needs."""

    competing_micros: np.ndarray
    """D, the highest competing CPM bid in micros (0: nobody else bid)."""
    floor_micros: np.ndarray
    open_median_micros: np.ndarray
    open_bidders: np.ndarray
    """Mean number of open-market buyers (lambda)."""
    dsp_delivers: np.ndarray
    """(requests, DSPs): P(the DSP is willing, answers in time, without a fault)."""
    dsp_median_micros: np.ndarray
    loss_notice_draw: np.ndarray


@dataclass(frozen=True)
class Settlement:
    """Outcomes of one bid per request."""

    won: np.ndarray
    price_micros: np.ndarray
    """CPM paid where won (0 elsewhere); an impression costs price / 1000."""
    loss_price_micros: np.ndarray
    """The clearing price a loss notice carried (0: not told, or not a loss)."""


class Landscape:
    """The competition of a market under `config`."""

    def __init__(self, market: Market, config: LandscapeConfig | None = None) -> None:
        self.market = market
        self.config = config or LandscapeConfig()
        config = self.config
        vocab = market.vocab
        self._format_bidders = self._table("format", config.bidders)
        self._format_median = self._table("format", config.median_cpm)
        self._device_prices = self._table("devicetype", config.device_prices, default=1.0)
        hours = vocab["hour"]
        self._hour_prices = np.ones(len(hours))
        self._hour_bidders = np.ones(len(hours))
        for hour in range(24):
            self._hour_prices[hours.code(str(hour))] = config.hour_prices[hour]
            self._hour_bidders[hours.code(str(hour))] = config.hour_bidders[hour]
        sites = vocab["site"]
        level = hashed_normals(market.seed, "landscape/site", len(sites))
        self._site_level = np.exp(config.site_sd * level)
        self._site_level[sites.unknown] = 1.0
        self._base_logit = market.config.users.click.base_logit

    @property
    def first_price(self) -> bool:
        return self.config.auction == "first"

    def _table(self, feature: str, values: dict[str, float], default: float = 0.0) -> np.ndarray:
        vocabulary = self.market.vocab[feature]
        table = np.full(len(vocabulary), default)
        for name, value in values.items():
            if name not in vocabulary:
                raise ValueError(f"landscape.{feature}: unknown value {name!r}")
            table[vocabulary.code(name)] = value
        return table

    def placement_click_factor(self, batch: RequestBatch) -> np.ndarray:
        """exp(request-only click logit - base logit): how clicky a placement and user are,
        whatever the ad (the click model with the ad features unknown)."""
        unknown = np.full(len(batch), self.market.vocab["advertiser"].unknown)
        p = click_probabilities(self.market, batch.codes, unknown)
        logit = np.log(p) - np.log1p(-p)
        return np.exp(np.clip(logit - self._base_logit, -4.0, 4.0))

    def competition(self, batch: RequestBatch, outcomes: DspOutcomes | None = None) -> Competition:
        """D for every request of a batch (the DSPs' outcomes are computed if not given)."""
        config = self.config
        market = self.market
        codes = batch.codes
        n = len(batch)
        floor = np.rint(batch.floor_cpm * MICROS)
        fmt = codes[:, COLUMN["format"]]
        hour = codes[:, COLUMN["hour"]]
        median = (
            self._format_median[fmt]
            * self._hour_prices[hour]
            * self._device_prices[codes[:, COLUMN["devicetype"]]]
            * self._site_level[codes[:, COLUMN["site"]]]
            * self.placement_click_factor(batch) ** config.click_coupling
            * MICROS
        )
        bidders = self._format_bidders[fmt] * self._hour_bidders[hour]
        # The largest of a Poisson(lambda) number of prices: P(max <= x) = exp(-lambda S(x)),
        # with mass exp(-lambda) on "nobody"; inverted from one uniform.
        u = uniforms(batch.keys, _SALT, _STREAM_OPEN)
        with np.errstate(divide="ignore"):
            survival = np.where(bidders > 0, -np.log(np.maximum(u, 1e-300)) / bidders, np.inf)
        someone = survival < 1.0
        quantile = np.where(someone, 1.0 - survival, 0.5)
        open_max = np.where(someone, loglogistic_quantiles(quantile, median, config.shape), 0.0)
        open_max = np.where(open_max >= floor, open_max, 0.0)
        competing = open_max
        delivers = np.zeros((n, 0))
        dsp_median = np.zeros((n, 0))
        if config.include_dsps and market.dsps:
            outcomes = outcomes or market.dsp_outcomes(batch)
            tmax = market.config.traffic.tmax_ms
            delivered = outcomes.delivered(tmax)
            dsp_best = np.where(delivered, outcomes.price_micros, 0).max(axis=1)
            competing = np.maximum(competing, dsp_best)
            delivers = np.empty((n, len(market.dsps)))
            dsp_median = np.empty((n, len(market.dsps)))
            for dsp in market.dsps:
                latency = dsp.config.latency
                in_time = 1.0
                if latency.max_ms > tmax:
                    in_time = 1.0 - float(
                        loglogistic_survivals(np.array([tmax]), latency.median_ms, latency.shape)[0]
                    )
                no_fault = 1.0 - dsp.fault_cdf[-1]
                median_micros = dsp.median_price_cpm[fmt] * MICROS
                # The oracle's bid probability is willing x P(price >= floor); the willingness
                # is what is needed here (the floor is applied per bid in `win_probability`).
                clears = loglogistic_survivals(floor, median_micros, dsp.config.price.shape)
                probability = outcomes.probability[:, dsp.index]
                willing = np.divide(probability, clears, out=np.zeros(n), where=clears > 0)
                delivers[:, dsp.index] = np.minimum(willing, 1.0) * in_time * no_fault
                dsp_median[:, dsp.index] = median_micros
        return Competition(
            competing_micros=np.rint(competing).astype(np.int64),
            floor_micros=floor.astype(np.int64),
            open_median_micros=median,
            open_bidders=bidders,
            dsp_delivers=delivers,
            dsp_median_micros=dsp_median,
            loss_notice_draw=uniforms(batch.keys, _SALT, _STREAM_LOSS_NOTICE),
        )

    def settle(self, competition: Competition, bid_micros, rows=None) -> Settlement:
        """Our bid (CPM micros; 0 = no bid) against the competition of each request (or of
        `rows` of it): won, the price paid, and the loss notice's price."""
        take = slice(None) if rows is None else rows
        bid = np.asarray(bid_micros, dtype=np.int64)
        competing = competition.competing_micros[take]
        floor = competition.floor_micros[take]
        won = (bid > 0) & (bid >= floor) & (bid > competing)
        if self.first_price:
            price = np.where(won, bid, 0)
            told = (
                ~won & (bid > 0) & (competing > 0)
                & (competition.loss_notice_draw[take] < self.config.loss_price_share)
            )  # fmt: skip
            loss_price = np.where(told, competing, 0)
        else:
            second = np.maximum(np.maximum(competing, floor), self.config.min_price_micros)
            price = np.where(won, np.minimum(second, bid), 0)
            loss_price = np.zeros_like(bid)
        return Settlement(won, price.astype(np.int64), loss_price.astype(np.int64))

    def win_probability(self, competition: Competition, bid_micros, rows=None) -> np.ndarray:
        """The true P(win) of bids: one per request, or a matrix (requests, bids) of several
        bids per request. Zero below the floor."""
        take = slice(None) if rows is None else rows
        bid = np.asarray(bid_micros, dtype=np.float64)
        matrix = bid.ndim == 2
        b = bid if matrix else bid[:, None]
        floor = competition.floor_micros[take][:, None]
        median = competition.open_median_micros[take][:, None]
        bidders = competition.open_bidders[take][:, None]
        open_above = loglogistic_survivals(b, median, self.config.shape)
        probability = np.exp(-bidders * open_above)
        delivers = competition.dsp_delivers[take]
        dsp_median = competition.dsp_median_micros[take]
        for j, dsp in enumerate(self.market.dsps[: delivers.shape[1]]):
            # A DSP's price must clear the floor to be a bid; above x it beats ours.
            shape = dsp.config.price.shape
            above = loglogistic_survivals(np.maximum(b, floor), dsp_median[:, j : j + 1], shape)
            probability *= 1.0 - delivers[:, j : j + 1] * above
        probability = np.where((b >= floor) & (b > 0), probability, 0.0)
        return probability if matrix else probability[:, 0]

    def best_first_price_bids(
        self, competition: Competition, value_micros, rows=None, steps: int = 50
    ) -> np.ndarray:
        """The oracle's shading: for each request, the bid maximising (value - bid) x its
        true P(win | bid), searched over `steps` fractions of the value (and the floor); 0
        where the value does not reach the floor."""
        take = slice(None) if rows is None else rows
        value = np.asarray(value_micros, dtype=np.float64)
        floor = competition.floor_micros[take].astype(np.float64)
        ratios = np.linspace(0.02, 1.0, steps)
        candidates = np.maximum(value[:, None] * ratios[None, :], floor[:, None])
        surplus = (value[:, None] - candidates) * self.win_probability(
            competition, candidates, rows
        )
        best = candidates[np.arange(len(value)), surplus.argmax(axis=1)]
        return np.where((value > 0) & (value >= floor), np.rint(best), 0).astype(np.int64)

    def click_probability(self, batch: RequestBatch, advertiser: str) -> np.ndarray:
        """The oracle: the true click probability of `advertiser`'s ad on every request."""
        code = self.market.vocab["advertiser"].code(advertiser)
        return click_probabilities(self.market, batch.codes, np.full(len(batch), code))

    def conversion_probability(self, batch: RequestBatch, advertiser: str) -> np.ndarray:
        """The oracle: the true probability of a conversion given a click."""
        code = self.market.vocab["advertiser"].code(advertiser)
        return conversion_probabilities(self.market, batch.codes, np.full(len(batch), code))
