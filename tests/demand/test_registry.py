"""The demand registry keeps per-partner state across reloads and honours QPS caps."""

from openbid.demand import DemandRegistry, QpsLimiter
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
