"""Publisher traffic: reproducible, realistic in shape, and readable back into its features."""

from collections import Counter, defaultdict

import msgspec
import numpy as np
import pytest
from ua_parser import parse

from openbid.sim.features import APP_BROWSER, COLUMN, USER_AGENTS
from openbid.sim.reading import FeatureReader, decode_request


@pytest.fixture(scope="module")
def batch(market):
    return market.generate(20_000, seed=11)


def test_the_same_seed_gives_the_same_requests(market, batch):
    again = market.generate(20_000, seed=11)
    assert again.bodies == batch.bodies
    np.testing.assert_array_equal(again.codes, batch.codes)
    other = market.generate(20_000, seed=12)
    assert other.request_ids != batch.request_ids
    assert not np.array_equal(other.codes, batch.codes)


def test_request_ids_are_unique_and_time_runs_forward(batch, market):
    assert len(set(batch.request_ids)) == len(batch)
    assert np.all(np.diff(batch.ts_ms) >= 0)
    span_ms = market.config.traffic.span_days * 86_400_000
    assert batch.ts_ms[0] >= market.start_s * 1000
    assert batch.ts_ms[-1] < market.start_s * 1000 + span_ms


def test_requests_are_openrtb_2_6(batch):
    for body in batch.bodies[:2000]:
        request = msgspec.json.decode(body)
        assert request["tmax"] == 150 and request["at"] == 1
        assert len(request["imp"]) == 1
        imp = request["imp"][0]
        assert sum(kind in imp for kind in ("banner", "video", "native")) == 1
        assert ("site" in request) != ("app" in request)
        assert request["device"]["geo"]["country"].isupper()
        assert len(request["device"]["geo"]["country"]) == 3
        assert request["regs"]["gdpr"] in (0, 1)
        if request["regs"]["gdpr"] == 1:
            assert request["user"]["consent"].startswith("C")


def test_every_request_reads_back_into_its_features(market, batch):
    reader = FeatureReader(market)
    for row, body in enumerate(batch.bodies):
        request = decode_request(body)
        assert reader.codes(request, request.imp[0]) == batch.codes[row].tolist()


def test_traffic_mix_follows_the_market(market, batch):
    traffic = market.config.traffic
    countries = Counter(batch.values("country"))
    total_share = sum(c.share for c in traffic.countries.values())
    usa_share = traffic.countries["USA"].share / total_share
    # Users, not requests, draw countries, so allow for the heavy users' weight.
    assert abs(countries["USA"] / len(batch) - usa_share) < 0.08
    assert countries.most_common(1)[0][0] == "USA"
    devices = Counter(batch.values("devicetype"))
    assert devices["phone"] > devices["desktop"] > devices["tablet"]
    formats = Counter(batch.values("format"))
    assert formats["banner"] > formats["video"] > 0 and formats["native"] > 0
    ctv_formats = {
        f
        for f, d in zip(batch.values("format"), batch.values("devicetype"), strict=True)
        if d == "ctv"
    }
    assert ctv_formats == {"video"}
    floors = batch.floor_cpm
    assert 0.2 < np.mean(floors == 0) < 0.45
    assert np.all(floors >= 0)


def test_sites_and_users_are_zipf_with_repeat_visits(market, batch):
    sites = Counter(batch.site.tolist())
    top_share = sum(count for _, count in sites.most_common(10)) / len(batch)
    assert top_share > 0.1
    users = Counter(batch.user.tolist())
    assert len(users) < len(batch) * 0.9
    assert users.most_common(1)[0][1] >= 20
    # A user keeps country, device and id on every visit.
    seen = defaultdict(set)
    for row in np.flatnonzero(batch.user == users.most_common(1)[0][0]):
        codes = batch.codes[row]
        seen["country"].add(codes[COLUMN["country"]])
        seen["devicetype"].add(codes[COLUMN["devicetype"]])
        seen["user_id"].add(codes[COLUMN["user_id"]])
    assert all(len(values) == 1 for values in seen.values())


def test_traffic_follows_the_hour_of_day(market):
    batch = market.generate(50_000, seed=3)
    hours = np.bincount((batch.ts_ms // 3_600_000) % 24, minlength=24)
    weights = np.asarray(market.config.traffic.hourly_weights)
    peak, trough = int(np.argmax(weights)), int(np.argmin(weights))
    assert hours[peak] > 1.8 * hours[trough]


def test_a_window_can_be_generated_at_any_time(market):
    start_s = 1_800_000_000.0
    batch = market.generate(500, seed=1, start_s=start_s, span_s=10.0)
    assert batch.ts_ms.min() >= start_s * 1000
    assert batch.ts_ms.max() < (start_s + 10.0) * 1000
    part = batch[100:200]
    assert len(part) == 100 and part.request_ids[0] == batch.request_ids[100]
    assert part.bodies[0] == batch.bodies[100]


@pytest.mark.parametrize(("key", "agent"), sorted(USER_AGENTS.items()))
def test_user_agents_parse_to_their_os_and_browser(key, agent):
    os_name, browser, device = key
    parsed = parse(agent)
    os_family = (parsed.os.family if parsed.os else "").lower()
    expected_os = {"macos": "mac os x", "tvos": "ios", "roku": "other"}.get(os_name, os_name)
    if os_name not in ("roku", "tvos"):
        assert os_family.startswith(expected_os), (agent, os_family)
    if browser != APP_BROWSER:
        family = parsed.user_agent.family.lower()
        expected = {"safari": "safari", "samsung": "samsung internet", "edge": "edge"}.get(
            browser, browser
        )
        assert expected in family, (agent, family)
