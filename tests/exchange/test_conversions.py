"""Attribution of a conversion (a pure function): the click it carries within the post-click
window, else the impression its browser saw within the post-view window, else none, with the
reason; never another advertiser's touch."""

from hypothesis import given
from hypothesis import strategies as st

from openbid.exchange.conversions import attribute

HOUR = 3_600_000_000
CLICK_WINDOW = 30 * 24 * HOUR
VIEW_WINDOW = 24 * HOUR


def click(ts: int, advertiser: str = "shop.example") -> list[str]:
    return ["c1", "auc-c", "bid-c", "dsp-c", advertiser, "user-c", str(ts)]


def view(ts: int, advertiser: str = "shop.example") -> list[str]:
    return ["auc-v", "bid-v", "dsp-v", advertiser, "user-v", str(ts)]


def attributed(at: int, clicked=None, viewed=None, invalid=False):
    return attribute(
        at,
        "shop.example",
        clicked,
        viewed,
        click_window_micros=CLICK_WINDOW,
        view_window_micros=VIEW_WINDOW,
        click_invalid=invalid,
    )


def test_a_click_in_its_window_wins_over_a_view():
    found = attributed(10 * HOUR, click(0), view(9 * HOUR))
    assert (found.kind, found.click_id, found.bid_id, found.user_id) == (
        "click",
        "c1",
        "bid-c",
        "user-c",
    )
    assert found.touch_ts_micros == 0 and found.auction_id == "auc-c" and found.dsp == "dsp-c"


def test_a_late_click_leaves_the_view_in_its_window():
    found = attributed(CLICK_WINDOW + HOUR, click(0), view(CLICK_WINDOW))
    assert (found.kind, found.bid_id, found.touch_ts_micros) == ("view", "bid-v", CLICK_WINDOW)


def test_after_its_window_a_conversion_is_unattributed_but_keeps_its_touch():
    found = attributed(CLICK_WINDOW + 1, click(0))
    assert (found.kind, found.reason, found.click_id, found.bid_id) == (
        "none",
        "click_window",
        "c1",
        "bid-c",
    )
    late_view = attributed(VIEW_WINDOW + 1, None, view(0))
    assert (late_view.kind, late_view.reason, late_view.bid_id) == ("none", "view_window", "bid-v")


def test_no_touch_another_advertisers_touch_and_a_bad_click_id():
    assert attributed(5, None, None).reason == "no_touch"
    assert attributed(5, None, None, invalid=True).reason == "invalid_click_id"
    other = attributed(5, click(0, "other.example"), view(0, "other.example"))
    assert (other.kind, other.reason) == ("none", "other_advertiser")
    assert attributed(5, ["too", "short"], None).reason == "no_touch"


def test_a_conversion_long_before_its_touch_is_not_attributed_to_it():
    found = attributed(0, click(HOUR))
    assert (found.kind, found.reason) == ("none", "before_touch")
    assert attributed(HOUR - 1_000_000, click(HOUR)).kind == "click"  # clock skew: accepted


@given(
    at=st.integers(0, 10 * CLICK_WINDOW),
    click_ts=st.none() | st.integers(0, 10 * CLICK_WINDOW),
    view_ts=st.none() | st.integers(0, 10 * CLICK_WINDOW),
    click_advertiser=st.sampled_from(["shop.example", "other.example"]),
    view_advertiser=st.sampled_from(["shop.example", "other.example"]),
)
def test_attribution_never_leaves_a_window_nor_the_advertiser(
    at, click_ts, view_ts, click_advertiser, view_advertiser
):
    clicked = None if click_ts is None else click(click_ts, click_advertiser)
    viewed = None if view_ts is None else view(view_ts, view_advertiser)
    found = attributed(at, clicked, viewed)
    skew = 300_000_000
    click_ok = clicked is not None and click_advertiser == "shop.example"
    click_ok = click_ok and -skew <= at - click_ts <= CLICK_WINDOW
    view_ok = viewed is not None and view_advertiser == "shop.example"
    view_ok = view_ok and -skew <= at - view_ts <= VIEW_WINDOW
    assert found.kind == ("click" if click_ok else "view" if view_ok else "none")
    if found.kind == "none":
        assert found.reason
    else:
        assert found.reason == ""
