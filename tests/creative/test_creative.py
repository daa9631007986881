"""Signed trackers, macros and rendering of banner, video and native winners."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from openbid.creative import (
    AuctionMacros,
    InvalidTracker,
    RenderError,
    TrackerSigner,
    render_banner,
    render_native,
    render_video,
    substitute_macros,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "openrtb"


class Clock:
    now = 1_800_000_000.0

    def __call__(self):
        return self.now


def test_tracker_round_trip_and_tampering():
    signer = TrackerSigner(b"k" * 32, ttl_s=60, clock=Clock())
    params = {"auc": "a1", "bid": "b1", "price": "1510000"}
    query = dict(parse_qsl(signer.sign("imp", params)))
    assert signer.verify("imp", query) == {**params, "exp": str(int(Clock.now + 60))}
    for key, value in [("price", "9999999"), ("bid", "b2"), ("exp", "9999999999"), ("sig", "x")]:
        with pytest.raises(InvalidTracker, match="signature does not match"):
            signer.verify("imp", {**query, key: value})
    with pytest.raises(InvalidTracker):
        signer.verify("click", query)  # a signature is bound to its kind
    with pytest.raises(InvalidTracker):
        TrackerSigner(b"j" * 32, clock=Clock()).verify("imp", query)


def test_tracker_expires():
    clock = Clock()
    signer = TrackerSigner(b"k" * 32, ttl_s=60, clock=clock)
    query = dict(parse_qsl(signer.sign("click", {"url": "https://a.example"})))
    clock.now += 61
    with pytest.raises(InvalidTracker, match="expired"):
        signer.verify("click", query)


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TrackerSigner(b"short")


def test_macros():
    macros = AuctionMacros(
        "auc-1",
        "bid-9",
        "2",
        seat_id="seat-a",
        ad_id="ad-3",
        price_micros=2_000_000,
        min_to_win_micros=1_250_000,
        loss_reason=102,
    )
    text = (
        "p=${AUCTION_PRICE}&id=${AUCTION_ID}&b=${AUCTION_BID_ID}&i=${AUCTION_IMP_ID}"
        "&s=${AUCTION_SEAT_ID}&ad=${AUCTION_AD_ID}&c=${AUCTION_CURRENCY}"
        "&m=${AUCTION_MIN_TO_WIN}&l=${AUCTION_LOSS}&u=${AUCTION_UNKNOWN}&k=${OTHER}"
    )
    assert substitute_macros(text, macros) == (
        "p=2&id=auc-1&b=bid-9&i=2&s=seat-a&ad=ad-3&c=USD&m=1.25&l=102&u=&k=${OTHER}"
    )


def test_banner_with_markup_and_with_image_url():
    page = render_banner("<div id='ad'>hi</div>", "https://ex/imp?a=1&b=2", width=300, height=250)
    assert "<div id='ad'>hi</div>" in page
    assert 'src="https://ex/imp?a=1&amp;b=2"' in page
    assert "width:300px;height:250px" in page
    image = render_banner("https://cdn.example/ad.png", "https://ex/imp", width=728, height=90)
    assert '<img src="https://cdn.example/ad.png" width="728" height="90"' in image


def _spec_response(name):
    return json.loads((SHARED / "2.6" / "bid-response" / name).read_text())


INLINE_VAST = """<?xml version="1.0" encoding="utf-8"?>
<VAST version="4.0"><Ad id="12345"><InLine>
<AdSystem version="1.0">Sample</AdSystem><AdTitle>Sample VAST</AdTitle>
<Impression>https://dsp.example/imp</Impression>
<Creatives><Creative sequence="1" id="1"><Linear><Duration>00:00:30</Duration>
<MediaFiles><MediaFile delivery="progressive" width="640" height="480" type="video/mp4">
<![CDATA[https://cdn.example/video.mp4]]></MediaFile></MediaFiles></Linear></Creative>
</Creatives></InLine></Ad></VAST>"""


def test_video_inline_vast_gets_our_trackers():
    vast = render_video(INLINE_VAST, "https://ex/imp?s=1", "https://ex/err?s=1")
    root = ET.fromstring(vast)
    impressions = [node.text for node in root.iter("Impression")]
    assert impressions == ["https://ex/imp?s=1", "https://dsp.example/imp"]
    assert [node.text for node in root.iter("Error")] == ["https://ex/err?s=1"]
    assert root.find("Ad/InLine/Creatives/Creative/Linear/Duration").text == "00:00:30"


def test_the_specs_own_vast_example_is_malformed_and_refused():
    # The OpenRTB 2.6 example has stray spaces in tags ("< /VAST>"): no parser accepts it.
    response = _spec_response("vast-xml-document-returned-inline.json")
    with pytest.raises(RenderError, match="not valid VAST XML"):
        render_video(response["seatbid"][0]["bid"][0]["adm"], "https://ex/imp", "https://ex/e")


def test_video_without_markup_becomes_a_vast4_wrapper():
    vast = render_video("", "https://ex/imp", "https://ex/err", vast_url="https://dsp/vast?id=1")
    root = ET.fromstring(vast)
    assert root.get("version") == "4.0"
    wrapper = root.find("Ad/Wrapper")
    assert wrapper.find("VASTAdTagURI").text == "https://dsp/vast?id=1"
    assert wrapper.find("Impression").text == "https://ex/imp"


@pytest.mark.parametrize(
    ("adm", "message"),
    [
        ("<VAST><Ad>", "not valid VAST XML"),
        ("<html/>", "expected <VAST>"),
        ("<VAST version='4.0'/>", "has no <Ad>"),
    ],
)
def test_bad_video_markup_is_a_render_error(adm, message):
    with pytest.raises(RenderError, match=message):
        render_video(adm, "https://ex/imp", "https://ex/err")
    with pytest.raises(RenderError, match="neither VAST markup"):
        render_video("", "https://ex/imp", "https://ex/err")


def test_native_response_from_the_spec_gets_our_event_tracker():
    adm = (SHARED / "native1.2" / "response-clickout.json").read_text()
    rendered = json.loads(render_native(adm, "https://ex/imp"))
    native = rendered.get("native", rendered)
    assert {"event": 1, "method": 1, "url": "https://ex/imp"} in native["eventtrackers"]
    with pytest.raises(RenderError, match="not JSON"):
        render_native("{nope", "https://ex/imp")


def test_native_links_go_through_the_click_tracker():
    adm = (SHARED / "native1.2" / "response-clickout.json").read_text()
    rendered = json.loads(
        render_native(adm, "https://ex/imp", click_url=lambda url: "https://ex/click?u=" + url)
    )
    native = rendered.get("native", rendered)
    assert native["link"]["url"] == "https://ex/click?u=http://i.am.a/URL"


def test_a_signed_value_holding_separators_cannot_be_re_split_into_other_parameters():
    # A DSP chooses the creative id; with values joined by a separator and not escaped, a
    # crid holding that separator re-split into a higher price and an expiry in year 5138.
    from urllib.parse import parse_qsl, urlencode

    from openbid.creative.trackers import InvalidTracker, TrackerSigner

    signer = TrackerSigner(b"s" * 32, ttl_s=3600, clock=lambda: 1_000_000.0)
    crid = "cr1\x1fexp=99999999999\x1fprice=99000000\x1fzz="
    genuine = dict(parse_qsl(signer.sign("imp", {"crid": crid, "price": "1000000"})))
    forged = {
        "crid": "cr1",
        "exp": "99999999999",
        "price": "99000000",
        "zz": f"\x1fexp={genuine['exp']}\x1fprice=1000000",
        "sig": genuine["sig"],
    }
    with pytest.raises(InvalidTracker):
        signer.verify("imp", dict(parse_qsl(urlencode(forged))))
    assert signer.verify("imp", genuine)["crid"] == crid


def test_a_non_ascii_signature_is_an_invalid_tracker_not_a_crash():
    from openbid.creative.trackers import InvalidTracker, TrackerSigner

    signer = TrackerSigner(b"s" * 32)
    with pytest.raises(InvalidTracker):
        signer.verify("imp", {"bid": "x", "exp": "1", "sig": "\u00e9"})
