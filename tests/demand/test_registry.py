"""The demand registry keeps per-partner state across reloads, honours QPS caps, and
exports and logs every change of a partner's circuit breaker."""

import logging

from openbid.demand import DemandRegistry, QpsLimiter
from openbid.demand.breaker import CircuitBreaker, CircuitState
from openbid.demand.registry import CIRCUIT_STATE
from openbid.domain import DemandPartner


def test_reload_keeps_breaker_state_and_drops_disabled_partners():
    registry = DemandRegistry(
        [DemandPartner("b", "http://b"), DemandPartner("a", "http://a", qps_cap=10)],
        failure_threshold=1,
    )
    assert [s.partner.id for s in registry.states] == ["a", "b"]
    registry.by_id["a"].breaker.record_failure(0.0)
    registry.reload(
        [DemandPartner("a", "http://a2", qps_cap=10), DemandPartner("b", "http://b", enabled=False)]
    )
    assert [s.partner.id for s in registry.states] == ["a"]
    assert registry.by_id["a"].partner.endpoint == "http://a2"
    assert not registry.by_id["a"].breaker.allow(1.0)


def test_qps_limiter_refills_at_its_rate():
    limiter = QpsLimiter(100)
    granted = sum(limiter.allow(0.0) for _ in range(500))
    assert granted == 100
    granted_later = sum(limiter.allow(0.5) for _ in range(500))
    assert granted_later == 50


def test_partners_with_an_impossible_bid_adjustment_are_refused_not_called(caplog):
    partners = [
        DemandPartner("ok", "http://ok.example/bid", bid_adjustment=0.85),
        DemandPartner("zero", "http://zero.example/bid", bid_adjustment=0.0),
        DemandPartner("boost", "http://boost.example/bid", bid_adjustment=1.5),
        DemandPartner("nan", "http://nan.example/bid", bid_adjustment=float("nan")),
    ]
    registry = DemandRegistry(partners)
    assert [state.partner.id for state in registry.states] == ["ok"]
    refused = {r.dsp for r in caplog.records if r.getMessage().startswith("demand partner refused")}
    assert refused == {"zero", "boost", "nan"}


def test_a_lowered_qps_cap_takes_effect_on_reload():
    registry = DemandRegistry([DemandPartner("d", "http://d.example/bid", qps_cap=1000)])
    registry.reload([DemandPartner("d", "http://d.example/bid", qps_cap=10)])
    limiter = registry.by_id["d"].limiter
    assert sum(limiter.allow(0.0) for _ in range(100)) == 10


def test_the_circuit_gauge_follows_every_transition_of_the_breaker():
    registry = DemandRegistry(
        [DemandPartner("gauged", "http://g.example/bid")], failure_threshold=2, cooldown_s=10.0
    )
    breaker = registry.by_id["gauged"].breaker
    gauge = CIRCUIT_STATE.labels("gauged")
    seen = [gauge.value]
    breaker.record_failure(0.0, "reset")
    seen.append(gauge.value)
    breaker.record_failure(0.0, "reset")
    seen.append(gauge.value)
    assert breaker.allow(10.0)  # the probe goes
    seen.append(gauge.value)
    breaker.record_failure(10.0, "timeout")  # and fails
    seen.append(gauge.value)
    assert breaker.allow(20.0)
    breaker.record_success()
    seen.append(gauge.value)
    assert seen == [0, 0, 2, 1, 2, 0]


def test_a_breaker_opening_is_logged_once_as_a_warning_and_its_closing_as_info(caplog):
    registry = DemandRegistry(
        [DemandPartner("flaky", "http://f.example/bid")], failure_threshold=1, cooldown_s=1.0
    )
    breaker = registry.by_id["flaky"].breaker
    with caplog.at_level(logging.DEBUG, logger="openbid.demand.registry"):
        breaker.record_failure(0.0, "HTTP 503")
        for now in (1.0, 2.0, 3.0):  # probes that fail: the same outage
            assert breaker.allow(now)
            breaker.record_failure(now, "reset")
        assert breaker.allow(4.0)
        breaker.record_success()
    logged = [
        (r.levelname, r.getMessage().split(":")[0], r.dsp, r.reason)
        for r in caplog.records
        if r.levelno >= logging.INFO
    ]
    assert logged == [
        ("WARNING", "circuit breaker opened", "flaky", "a failure, the last: HTTP 503"),
        ("INFO", "circuit breaker closed again", "flaky", "a call succeeded"),
    ]


def test_a_neutral_outcome_neither_opens_nor_closes_but_frees_the_probe():
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0)
    for _ in range(5):
        breaker.record_neutral()
    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure(0.0)
    breaker.record_neutral()
    breaker.record_failure(0.0)  # neutral outcomes between do not reset the count
    assert breaker.state is CircuitState.OPEN
    assert breaker.allow(10.0) and not breaker.allow(10.0)
    breaker.record_neutral()
    assert breaker.state is CircuitState.HALF_OPEN and breaker.allow(10.0)
