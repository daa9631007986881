"""A seeded event log of users with interests, for the audience tests, `--simulate` and the
lookalike's lift: each user has one interest among five categories, visits sites mostly of
that interest (won auctions with the page's features, our impressions), sometimes clicks,
and converts for the travel advertiser far more often when travel is the interest. Devices
and countries lean by interest too, so the request features carry the signal a lookalike
model should find. Written through the real `EventLog`; the events are also returned, for
tests that recompute membership by brute force.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openbid.events import AuctionEvent, ClickEvent, ConversionEvent, EventLog, ImpressionEvent

T0_MICROS = 1_800_000_000_000_000
"""2027-01-15T08:00Z: a fixed start, so runs are reproducible."""
HOUR_MICROS = 3_600_000_000
INTERESTS: dict[str, str] = {
    "sport": "IAB17",
    "news": "IAB12",
    "auto": "IAB2",
    "travel": "IAB20",
    "food": "IAB8",
}
SITES_PER_INTEREST = 4
TRAVEL_ADVERTISER = "trips.example"
OS_BY_INTEREST = {"sport": "Android", "news": "iOS", "auto": "Android", "travel": "iOS", "food": "Windows"}  # fmt: skip
COUNTRIES = ("GBR", "DEU", "FRA", "ESP", "USA")


@dataclass(slots=True)
class SyntheticLog:
    """What was written: the users' interests, converters, and every event in order."""

    directory: Path
    start_micros: int
    end_micros: int
    interest: dict[str, str]
    converters: set[str] = field(default_factory=set)
    events: list = field(default_factory=list)


def site_of(interest: str, k: int) -> str:
    return f"{interest}-{k}.example"


def write_synthetic_log(
    directory: str | Path,
    *,
    users: int = 1000,
    hours: int = 72,
    visits_per_user: float = 10.0,
    seed: int = 0,
    start_micros: int = T0_MICROS,
    user_prefix: str = "u",
    on_interest: float = 0.7,
    event_tag: str = "",
) -> SyntheticLog:
    """Writes `users` users' behaviour over `hours` hours from `start_micros` to the event
    log at `directory` (appending: call again with a later start and another `event_tag`,
    which keeps event ids apart, for more of the same users)."""
    tag = event_tag or user_prefix
    names = list(INTERESTS)
    picks = np.random.default_rng(seed).integers(len(names), size=users)  # same users, same tastes
    interest = {f"{user_prefix}{i}": names[int(k)] for i, k in enumerate(picks)}
    rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
    out = SyntheticLog(Path(directory), start_micros, start_micros + hours * HOUR_MICROS, interest)
    schedule = []
    for user, liked in interest.items():
        for _ in range(int(rng.poisson(visits_per_user))):
            ts = start_micros + int(rng.integers(hours * HOUR_MICROS))
            schedule.append((ts, user, liked))
    schedule.sort()
    with EventLog(directory, roll_interval_s=3600.0) as log:
        for n, (ts, user, liked) in enumerate(schedule):
            topic = liked if rng.random() < on_interest else names[int(rng.integers(len(names)))]
            site = site_of(topic, int(rng.integers(SITES_PER_INTEREST)))
            category = INTERESTS[topic]
            leaning = rng.random() < 0.6
            features = {
                "site_id": site,
                "domain": site,
                "categories": f"{category},{category}-{int(rng.integers(1, 9))}",
                "os": OS_BY_INTEREST[liked] if leaning else ("iOS", "Android")[n % 2],
                "country": COUNTRIES[names.index(liked)] if leaning else COUNTRIES[n % 5],
                "device_type": ("phone", "desktop", "tablet")[int(rng.integers(3))],
            }
            auction_id, bid_id = f"{tag}a{n}", f"{tag}b{n}"
            campaign = f"c-{topic}"
            advertiser = TRAVEL_ADVERTISER if topic == "travel" else f"{topic}.shop.example"
            events = [
                AuctionEvent(
                    ts,
                    auction_id,
                    f"r{n}",
                    publisher_id=f"pub-{topic}",
                    features=features,
                    outcome="won",
                    winner_dsp="dsp1",
                    winner_bid_id=bid_id,
                ),  # fmt: skip
                ImpressionEvent(
                    ts + 1_000_000,
                    auction_id,
                    bid_id,
                    dsp="dsp1",
                    creative_id=f"cr-{topic}",
                    campaign_id=campaign,
                    user_id=user,
                    advertiser=advertiser,
                ),  # fmt: skip
            ]
            if rng.random() < (0.08 if topic == liked else 0.02):
                events.append(
                    ClickEvent(
                        ts + 5_000_000,
                        auction_id,
                        bid_id,
                        creative_id=f"cr-{topic}",
                        campaign_id=campaign,
                        user_id=user,
                        click_id=f"k{tag}{n}",
                        advertiser=advertiser,
                    )  # fmt: skip
                )
            if topic == "travel" and rng.random() < (0.25 if liked == "travel" else 0.02):
                out.converters.add(user)
                events.append(
                    ConversionEvent(
                        ts + 600_000_000,
                        auction_id,
                        f"cv{tag}{n}",
                        bid_id=bid_id,
                        campaign_id=campaign,
                        user_id=user,
                        value_micros=50_000_000,
                        advertiser=TRAVEL_ADVERTISER,
                    )  # fmt: skip
                )
            for event in events:
                log.emit(event)
            out.events.extend(events)
    return out
