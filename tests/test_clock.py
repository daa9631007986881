"""The one clock: market time runs `speed` times faster, and the parts that read the time of
day (event timestamps, tracker expiry) follow whichever clock the process has."""

import time

import pytest

from openbid import clock
from openbid.creative import TrackerSigner
from openbid.creative.trackers import InvalidTracker
from openbid.errors import ConfigError
from openbid.events import now_micros


@pytest.fixture
def market_clock():
    market = clock.MarketClock(speed=3600.0, start_s=1_700_000_000.0)
    previous = clock.set_clock(market)
    yield market
    clock.set_clock(previous)


def test_market_clock_runs_speed_times_faster_than_real_time():
    market = clock.MarketClock(speed=60.0, start_s=0.0, real_start_s=100.0)
    assert market.at_real(100.0) == 0.0
    assert market.at_real(130.0) == 1800.0  # 30 real seconds: half a market hour
    assert market.real_seconds(3600.0) == 60.0


def test_market_clock_spec_rebuilds_the_same_time_in_another_process():
    market = clock.MarketClock(speed=24.0, start_s=5_000.0, real_start_s=time.time() - 10)
    copy = clock.Clock.from_spec(market.spec())
    assert abs(copy.now() - market.now()) < 1.0
    assert type(clock.Clock.from_spec("real")) is clock.Clock


@pytest.mark.parametrize("spec", ["market:0:1:1", "market:x:1:1", "weekly", "market:-2:0:0"])
def test_a_bad_clock_spec_is_refused_with_a_message(spec):
    with pytest.raises(ConfigError, match="clock"):
        clock.Clock.from_spec(spec)


def test_event_timestamps_come_from_the_process_clock(market_clock):
    stamped = now_micros() / 1e6
    assert abs(stamped - market_clock.now()) < 5.0
    assert abs(stamped - time.time()) > 1e6  # the market started in 2023, not now


def test_trackers_expire_on_market_time(market_clock):
    signer = TrackerSigner(b"k" * 32, ttl_s=2.0)  # two market seconds: under 1 ms real
    params = dict(p.split("=") for p in signer.sign("imp", {"bid": "b"}).split("&"))
    time.sleep(0.01)  # 36 market seconds
    with pytest.raises(InvalidTracker, match="expired"):
        signer.verify("imp", params)
