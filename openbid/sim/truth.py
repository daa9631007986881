"""Ground truth: what each DSP and user would do, as pure functions of the request features.

The DSP servers decide with these functions and benchmarks use them as the oracle, so the
oracle's probabilities are exactly what the market draws from. A DSP bids on an impression
when its bid draw falls under `sigmoid(logit)` and its price draw clears the floor; the
true bid probability is therefore `sigmoid(logit) * P(price >= floor)`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from openbid.sim.draws import (
    STREAM_ADVERTISER,
    STREAM_BID,
    STREAM_CLICK,
    STREAM_CLICK_DELAY,
    STREAM_CONVERSION,
    STREAM_CONVERSION_DELAY,
    STREAM_DUPLICATE,
    STREAM_FAULT,
    STREAM_LATENCY,
    STREAM_PRICE,
    STREAM_REPORT,
    STREAM_VALUE,
    STREAM_VIEW_CONVERSION,
    name_hash,
    uniform,
    uniforms,
)
from openbid.sim.features import ALL_FEATURES, COLUMN, REQUEST_FEATURES, RequestFeatures
from openbid.sim.model import (
    FAULT_KINDS,
    CompiledDsp,
    loglogistic_quantile,
    loglogistic_quantiles,
    loglogistic_survival,
    loglogistic_survivals,
    sigmoid,
    sigmoids,
)

if TYPE_CHECKING:
    from openbid.sim.config import Delay
    from openbid.sim.generator import RequestBatch
    from openbid.sim.market import Market

USER_SALT = name_hash("users")
"""Salt of the users' click and conversion draws."""
_FORMAT = COLUMN["format"]


def encode_features(market: Market, features: RequestFeatures) -> list[int]:
    """The codes of readable features, in `REQUEST_FEATURES` order."""
    return [market.vocab[name].code(getattr(features, name)) for name in REQUEST_FEATURES]


def _dsp(market: Market, dsp: str | CompiledDsp) -> CompiledDsp:
    return dsp if isinstance(dsp, CompiledDsp) else market.dsp(dsp)


def bid_probability_of_codes(dsp: CompiledDsp, codes: Sequence[int], floor_cpm: float) -> float:
    """The true probability that `dsp` bids on one coded impression."""
    median = float(dsp.median_price_cpm[codes[_FORMAT]])
    clears = loglogistic_survival(floor_cpm, median, dsp.config.price.shape)
    return sigmoid(dsp.bid_model.logit(codes)) * clears


def true_bid_probability(
    market: Market, features: RequestFeatures, dsp: str | CompiledDsp
) -> float:
    """The true probability that a DSP bids on an impression with these features.

    >>> from openbid.sim import Market
    >>> market = Market.load("default")
    >>> features = market.generate(1, seed=3).features(0)
    >>> 0.0 <= true_bid_probability(market, features, "atlas") <= 1.0
    True
    """
    return bid_probability_of_codes(
        _dsp(market, dsp), encode_features(market, features), features.floor_cpm
    )


def bid_probabilities(market: Market, batch: RequestBatch) -> np.ndarray:
    """True bid probabilities of every (request, DSP) of a batch: shape (requests, DSPs)."""
    result = np.empty((len(batch), len(market.dsps)))
    for dsp in market.dsps:
        median = dsp.median_price_cpm[batch.codes[:, _FORMAT]]
        clears = loglogistic_survivals(batch.floor_cpm, median, dsp.config.price.shape)
        result[:, dsp.index] = sigmoids(dsp.bid_model.logits(batch.codes)) * clears
    return result


class DspDecision(msgspec.Struct, frozen=True):
    """What a DSP does with one impression: the draws and their consequences."""

    probability: float
    bid: bool
    price_cpm: float
    """The drawn price (meaningful when `bid`)."""
    latency_ms: float
    fault: str
    """One of `FAULT_KINDS`; faults apply whether or not the DSP bids."""
    advertiser: int
    """Code of the advertiser whose ad the bid carries."""


def decide(dsp: CompiledDsp, codes: Sequence[int], floor_cpm: float, key: int) -> DspDecision:
    """A DSP's decision on one coded impression, from the draws of its key (`draw_key`)."""
    config = dsp.config
    median = float(dsp.median_price_cpm[codes[_FORMAT]])
    shape = config.price.shape
    willing = sigmoid(dsp.bid_model.logit(codes))
    probability = willing * loglogistic_survival(floor_cpm, median, shape)
    price_cpm = loglogistic_quantile(uniform(key, dsp.salt, STREAM_PRICE), median, shape)
    bid = uniform(key, dsp.salt, STREAM_BID) < willing and price_cpm >= floor_cpm
    latency = config.latency
    latency_ms = min(
        loglogistic_quantile(
            uniform(key, dsp.salt, STREAM_LATENCY), latency.median_ms, latency.shape
        ),
        latency.max_ms,
    )
    fault_u = uniform(key, dsp.salt, STREAM_FAULT)
    fault = 0
    if fault_u < dsp.fault_cdf[-1]:
        fault = bisect.bisect_right(dsp.fault_cdf, fault_u) + 1
    pick = int(uniform(key, dsp.salt, STREAM_ADVERTISER) * len(dsp.advertisers))
    return DspDecision(
        probability, bid, price_cpm, latency_ms, FAULT_KINDS[fault], int(dsp.advertisers[pick])
    )


class DspOutcomes(msgspec.Struct, frozen=True):
    """What every DSP does with every request of a batch; arrays of shape (requests, DSPs)."""

    probability: np.ndarray
    """The true bid probability (the oracle)."""
    bid: np.ndarray
    """Whether the DSP bids (before latency and faults decide whether the bid arrives)."""
    price_micros: np.ndarray
    """The bid price, CPM in micros (0 where no bid)."""
    latency_ms: np.ndarray
    fault: np.ndarray
    """Index into `FAULT_KINDS` (0 = no fault)."""
    advertiser: np.ndarray

    def delivered(self, tmax_ms: float) -> np.ndarray:
        """Bids an exchange receives in time: a bid, no fault, latency within `tmax_ms`."""
        return self.bid & (self.fault == 0) & (self.latency_ms <= tmax_ms)


def dsp_outcomes(market: Market, batch: RequestBatch) -> DspOutcomes:
    """Every DSP's decision on every request of a batch, without any HTTP."""
    shape = (len(batch), len(market.dsps))
    probability = np.empty(shape)
    bid = np.empty(shape, dtype=bool)
    price_micros = np.zeros(shape, dtype=np.int64)
    latency_ms = np.empty(shape)
    fault = np.zeros(shape, dtype=np.int8)
    advertiser = np.empty(shape, dtype=np.int64)
    keys = batch.keys
    for dsp in market.dsps:
        j = dsp.index
        config = dsp.config
        median = dsp.median_price_cpm[batch.codes[:, _FORMAT]]
        willing = sigmoids(dsp.bid_model.logits(batch.codes))
        probability[:, j] = willing * loglogistic_survivals(
            batch.floor_cpm, median, config.price.shape
        )
        price_cpm = loglogistic_quantiles(
            uniforms(keys, dsp.salt, STREAM_PRICE), median, config.price.shape
        )
        bid[:, j] = (uniforms(keys, dsp.salt, STREAM_BID) < willing) & (
            price_cpm >= batch.floor_cpm
        )
        price_micros[:, j] = np.where(bid[:, j], np.round(price_cpm * 1e6), 0).astype(np.int64)
        latency_ms[:, j] = np.minimum(
            loglogistic_quantiles(
                uniforms(keys, dsp.salt, STREAM_LATENCY),
                config.latency.median_ms,
                config.latency.shape,
            ),
            config.latency.max_ms,
        )
        fault_u = uniforms(keys, dsp.salt, STREAM_FAULT)
        edges = np.asarray(dsp.fault_cdf)
        fault[:, j] = np.where(
            fault_u < edges[-1], np.searchsorted(edges, fault_u, side="right") + 1, 0
        )
        pick = (uniforms(keys, dsp.salt, STREAM_ADVERTISER) * len(dsp.advertisers)).astype(np.int64)
        advertiser[:, j] = dsp.advertisers[pick]
    return DspOutcomes(probability, bid, price_micros, latency_ms, fault, advertiser)


def _ad_codes(market: Market, codes: np.ndarray, advertiser: np.ndarray) -> np.ndarray:
    full = np.empty((codes.shape[0], len(ALL_FEATURES)), dtype=np.int64)
    full[:, : len(REQUEST_FEATURES)] = codes
    full[:, COLUMN["advertiser"]] = advertiser
    full[:, COLUMN["ad_category"]] = market.advertiser_category[advertiser]
    return full


def click_probability(market: Market, features: RequestFeatures, advertiser: str) -> float:
    """The true probability that the user clicks the ad of `advertiser` (a domain) shown on
    an impression with these features.

    >>> from openbid.sim import Market
    >>> market = Market.load("default")
    >>> features = market.generate(1, seed=3).features(0)
    >>> 0.0 < click_probability(market, features, "shoes-online.example") < 0.05
    True
    """
    code = market.vocab["advertiser"].code(advertiser)
    codes = encode_features(market, features)
    codes += [code, int(market.advertiser_category[code])]
    return sigmoid(market.click_model.logit(codes))


def click_probabilities(market: Market, codes: np.ndarray, advertiser: np.ndarray) -> np.ndarray:
    """True click probabilities of impressions: request codes (rows) and advertiser codes."""
    return sigmoids(market.click_model.logits(_ad_codes(market, codes, advertiser)))


def conversion_probabilities(
    market: Market, codes: np.ndarray, advertiser: np.ndarray
) -> np.ndarray:
    """True probabilities of a conversion given a click."""
    return sigmoids(market.conversion_model.logits(_ad_codes(market, codes, advertiser)))


class Impressions(msgspec.Struct, frozen=True):
    """Auctions of a batch that filled: who won, at what price, and what the user did."""

    row: np.ndarray
    """Row of the request in its batch."""
    dsp: np.ndarray
    advertiser: np.ndarray
    price_micros: np.ndarray
    """The winning bid, CPM in micros (first price)."""
    click_probability: np.ndarray
    clicked: np.ndarray
    conversion_probability: np.ndarray
    """Given a click."""
    converted: np.ndarray
    """Converted after clicking."""
    view_conversion_probability: np.ndarray
    """Given no click (`users.conversion.view_through` times `conversion_probability`)."""
    view_converted: np.ndarray
    """Converted after seeing the ad, without clicking it."""


def impressions(
    market: Market, batch: RequestBatch, outcomes: DspOutcomes, tmax_ms: float | None = None
) -> Impressions:
    """The highest bid that arrives in time wins each request; the user then may click and
    convert (draws keyed by request, so they are reproducible)."""
    tmax_ms = market.config.traffic.tmax_ms if tmax_ms is None else tmax_ms
    delivered = outcomes.delivered(tmax_ms)
    prices = np.where(delivered, outcomes.price_micros, -1)
    winner = prices.argmax(axis=1)
    rows = np.flatnonzero(prices.max(axis=1) >= 0)
    dsp = winner[rows]
    advertiser = outcomes.advertiser[rows, dsp]
    codes = batch.codes[rows]
    keys = batch.keys[rows]
    p_click = click_probabilities(market, codes, advertiser)
    clicked = uniforms(keys, USER_SALT, STREAM_CLICK) < p_click
    p_conversion = conversion_probabilities(market, codes, advertiser)
    converted = clicked & (uniforms(keys, USER_SALT, STREAM_CONVERSION) < p_conversion)
    p_view = market.config.users.conversion.view_through * p_conversion
    view_converted = ~clicked & (uniforms(keys, USER_SALT, STREAM_VIEW_CONVERSION) < p_view)
    return Impressions(
        rows,
        dsp,
        advertiser,
        outcomes.price_micros[rows, dsp],
        p_click,
        clicked,
        p_conversion,
        converted,
        p_view,
        view_converted,
    )


class UserOutcome(msgspec.Struct, frozen=True):
    """What the user of one impression does with the ad once seen: the true probabilities,
    the draws (uniforms in [0, 1)) and what follows from them. The draws are those of
    `impressions()`, so both agree on who clicks and converts."""

    click_probability: float
    click_draw: float
    clicked: bool
    click_delay_s: float
    """Market seconds from seeing the ad to clicking it (meaningful when `clicked`)."""
    conversion_probability: float
    """Given a click."""
    conversion_draw: float
    converted: bool
    """Converts after the click."""
    view_conversion_probability: float
    """Given no click."""
    view_conversion_draw: float
    view_converted: bool
    """Converts without having clicked (post-view)."""
    conversion_delay_s: float
    """Market seconds from the click (post-view: from seeing the ad) to the conversion."""
    postback: bool
    """The advertiser reports it server to server (post-click only), else by its pixel."""
    value_micros: int
    """The order's value, USD micros."""
    duplicate: bool
    """The report is sent twice."""


def _delay(u: float, delay: Delay) -> float:
    return min(loglogistic_quantile(u, delay.median_s, delay.shape), delay.max_s)


def user_outcome(market: Market, codes: Sequence[int], advertiser: int, key: int) -> UserOutcome:
    """The user's behaviour on one impression: request codes (`REQUEST_FEATURES` order), the
    ad's advertiser code, the impression's draw key.

    >>> from openbid.sim import Market
    >>> market = Market.load("default")
    >>> batch = market.generate(1, seed=3)
    >>> code = market.vocab["advertiser"].code("shoes-online.example")
    >>> outcome = user_outcome(market, batch.codes[0].tolist(), code, int(batch.keys[0]))
    >>> outcome.click_probability == click_probability(market, batch.features(0), "shoes-online.example")
    True
    """
    users = market.config.users
    conversion = users.conversion
    full = [*codes, advertiser, int(market.advertiser_category[advertiser])]
    p_click = sigmoid(market.click_model.logit(full))
    p_conversion = sigmoid(market.conversion_model.logit(full))
    p_view = conversion.view_through * p_conversion
    click_u = uniform(key, USER_SALT, STREAM_CLICK)
    conversion_u = uniform(key, USER_SALT, STREAM_CONVERSION)
    view_u = uniform(key, USER_SALT, STREAM_VIEW_CONVERSION)
    clicked = click_u < p_click
    value_usd = loglogistic_quantile(
        uniform(key, USER_SALT, STREAM_VALUE), conversion.value_median_usd, conversion.value_shape
    )
    return UserOutcome(
        p_click,
        click_u,
        clicked,
        _delay(uniform(key, USER_SALT, STREAM_CLICK_DELAY), users.click.delay),
        p_conversion,
        conversion_u,
        clicked and conversion_u < p_conversion,
        p_view,
        view_u,
        not clicked and view_u < p_view,
        _delay(uniform(key, USER_SALT, STREAM_CONVERSION_DELAY), conversion.delay),
        clicked and uniform(key, USER_SALT, STREAM_REPORT) < conversion.postback_share,
        round(min(value_usd, 1e6) * 1e6),
        uniform(key, USER_SALT, STREAM_DUPLICATE) < conversion.duplicate_share,
    )
