"""Our click tracker in front of landing pages: anchors, VAST click-throughs, native links
and click macros; signed click ids and view tokens; derived keys."""

import html
import json
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.creative import InvalidTracker, TrackerSigner, render_native
from openbid.creative.clicks import CLICK_URL_ESC, CLICK_URL_UNESC, wrap_clicks

OURS = "https://ex.example/t/click?"


def wrap(url: str) -> str:
    return OURS + "url=" + quote(url, safe="")


def prefix() -> str:
    return OURS + "sig=s&adurl="


def unwrap(url: str) -> str:
    assert url.startswith(OURS), url
    return dict(parse_qsl(urlsplit(url).query))["url"]


def test_banner_anchors_are_wrapped_and_the_rest_is_left_as_it_is():
    markup = (
        '<div><a href="https://shop.example/p?a=1&amp;b=2" target="_blank">one</a>'
        "<a href='%%CLICK_URL_UNESC%%https://www.shop.example/q'>two</a>"
        '<a href="/relative">three</a><A HREF="HTTPS://shop.example/upper">four</A>'
        '<img src="https://cdn.example/i.png"></div>'
    )
    out = wrap_clicks(markup, "banner", wrap, prefix)
    hrefs = [html.unescape(h) for _, h in re.findall(r"""href=(["'])(.*?)\1""", out, re.I)]
    assert [unwrap(hrefs[0]), unwrap(hrefs[1])] == [
        "https://shop.example/p?a=1&b=2",  # the HTML entity decoded before signing
        "https://www.shop.example/q",  # the macro before a literal URL: that URL is signed
    ]
    assert hrefs[2] == "/relative"  # not an absolute URL: nothing to redirect to
    assert unwrap(hrefs[3]) == "HTTPS://shop.example/upper"
    assert 'src="https://cdn.example/i.png"' in out and CLICK_URL_UNESC not in out


def test_click_macros_are_filled_with_the_prefix_escaped_or_not():
    markup = (
        "<script>var c = '%%CLICK_URL_UNESC%%';</script>"
        '<a href="https://dsp.example/r?to=%%CLICK_URL_ESC%%https%3A%2F%2Fshop.example">x</a>'
    )
    calls = []

    def counting_prefix() -> str:
        calls.append(1)
        return prefix()

    out = wrap_clicks(markup, "banner", wrap, counting_prefix)
    assert f"var c = '{prefix()}'" in out
    assert CLICK_URL_ESC not in out and CLICK_URL_UNESC not in out
    # The anchor itself (the DSP's own redirect) is wrapped, and it carries our prefix,
    # percent-encoded, for its redirect to pass on.
    href = html.unescape(out.split('href="')[1].split('"')[0])
    assert unwrap(href) == "https://dsp.example/r?to=" + quote(prefix(), safe="") + (
        "https%3A%2F%2Fshop.example"
    )
    assert calls == [1]  # the prefix is signed once, and only when a macro is there
    wrap_clicks("<a href='https://shop.example'>x</a>", "banner", wrap, counting_prefix)
    assert calls == [1]


def test_urls_already_behind_our_tracker_are_not_wrapped_twice():
    markup = f'<a href="{OURS}url=x">ad</a>'
    assert wrap_clicks(markup, "banner", wrap, prefix, ours=OURS) == markup


def test_vast_click_through_is_wrapped_in_cdata():
    vast = (
        '<VAST version="4.0"><Ad><InLine><Creatives><Creative><Linear><VideoClicks>'
        "<ClickThrough id='c'><![CDATA[ https://shop.example/v?a=1&b=2 ]]></ClickThrough>"
        "<ClickTracking>https://dsp.example/ct</ClickTracking>"
        "</VideoClicks></Linear></Creative><Creative><Linear><VideoClicks>"
        "<ClickThrough>https://shop.example/w?a=1&amp;b=2</ClickThrough>"
        "</VideoClicks></Linear></Creative></Creatives></InLine></Ad></VAST>"
    )
    out = wrap_clicks(vast, "video", wrap, prefix)
    throughs = [part.split("]]>")[0] for part in out.split("<![CDATA[")[1:]]
    assert [unwrap(url) for url in throughs] == [
        "https://shop.example/v?a=1&b=2",
        "https://shop.example/w?a=1&b=2",
    ]
    assert "<ClickThrough id='c'>" in out
    assert "<ClickTracking>https://dsp.example/ct</ClickTracking>" in out  # not a landing page


def test_native_links_are_wrapped_and_markup_without_links_is_untouched():
    adm = json.dumps(
        {
            "native": {
                "link": {"url": "%%CLICK_URL_UNESC%%https://shop.example/n"},
                "assets": [{"id": 1, "link": {"url": "https://shop.example/a"}}, {"id": 2}],
            }
        }
    )
    out = json.loads(wrap_clicks(adm, "native", wrap, prefix))["native"]
    assert unwrap(out["link"]["url"]) == "https://shop.example/n"
    assert unwrap(out["assets"][0]["link"]["url"]) == "https://shop.example/a"
    plain = '{"assets": [ {"id": 1} ]}'
    assert wrap_clicks(plain, "native", wrap, prefix) is plain
    assert wrap_clicks("{not json", "native", wrap, prefix) == "{not json"
    rendered = json.loads(render_native(adm, "https://ex.example/imp", wrap))
    assert unwrap(rendered["native"]["link"]["url"]) == "https://shop.example/n"


def test_other_media_are_left_alone():
    assert wrap_clicks("%%CLICK_URL_UNESC%%", "audio", wrap, prefix) == "%%CLICK_URL_UNESC%%"


_url_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(
    before=_url_text,
    path=_url_text,
    quote_char=st.sampled_from(['"', "'"]),
    with_macro=st.booleans(),
)
def test_every_absolute_anchor_ends_up_behind_our_tracker(before, path, quote_char, with_macro):
    """Whatever surrounds it, an anchor with an absolute http(s) URL leaves wrapped, and the
    URL signed is the one the browser would have followed (entities decoded)."""
    landing = "https://shop.example/" + path.replace(quote_char, "").replace("<", "").replace(
        ">", ""
    ).replace(" ", "").replace("&", "").replace("\n", "").replace("\t", "").replace(
        "\r", ""
    ).replace("\x0c", "")
    macro = CLICK_URL_UNESC if with_macro else ""
    markup = f"{before.replace('href', '')}<a href={quote_char}{macro}{landing}{quote_char}>x</a>"
    out = wrap_clicks(markup, "banner", wrap, prefix)
    href = re.findall(r"""href=(["'])(.*?)\1""", out)[-1][1]
    assert unwrap(html.unescape(href)) == landing


def test_click_ids_and_view_tokens_are_signed_and_bound_to_their_kind():
    signer = TrackerSigner(b"k" * 32)
    token = signer.token("clk", ["c1", "auc", "bid", "dsp", "shop.example", "u1", "17"])
    assert signer.open_token("clk", token) == [
        "c1",
        "auc",
        "bid",
        "dsp",
        "shop.example",
        "u1",
        "17",
    ]
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    payload, mac = token.split(".")
    with pytest.raises(InvalidTracker):
        signer.open_token("view", token)
    with pytest.raises(InvalidTracker):
        TrackerSigner(b"j" * 32).open_token("clk", token)
    forged = signer.token("clk", ["c1", "auc", "bid", "dsp", "evil.example", "u1", "17"])
    with pytest.raises(InvalidTracker):
        signer.open_token("clk", forged.split(".")[0] + "." + mac)
    with pytest.raises(InvalidTracker):
        signer.open_token("clk", payload)
    # A tracker's signature and a token's are never interchangeable.
    query = dict(parse_qsl(signer.sign("clk", {"a": "b"})))
    with pytest.raises(InvalidTracker):
        signer.open_token("clk", "e30." + query["sig"])
    assert unquote(token) == token


def test_derived_keys_depend_on_secret_and_label():
    one, other = TrackerSigner(b"k" * 32), TrackerSigner(b"j" * 32)
    key = one.derived_key("conversion:shop.example")
    assert key == one.derived_key("conversion:shop.example")
    assert key != other.derived_key("conversion:shop.example")
    assert key != one.derived_key("conversion:shoes.example")
    assert len(key) == 64 and int(key, 16) >= 0
