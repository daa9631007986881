"""Our click tracker in front of a creative's landing pages, in the markup we return.

Two ways, as exchanges do it, both applied to every winning markup:

- **Wrapping**: each landing URL the markup states (an HTML anchor's absolute `href`, a VAST
  `<ClickThrough>`, a Native `link.url`) is replaced by our click tracker with that URL
  signed into it (`wrap(url)`), so the redirect goes exactly there.
- **Click macros** (Google Ad Manager's names, which DSPs already write):
  `%%CLICK_URL_UNESC%%` becomes our tracker's prefix, to which the markup appends its
  landing URL (at click time, e.g. from a script), and `%%CLICK_URL_ESC%%` the same prefix
  percent-encoded, for markup that passes it through its own redirect. The appended URL is
  not signed, so the exchange redirects there only when its host is one of the bid's
  advertiser domains (`adomain`). An anchor whose `href` is the macro followed by a literal
  URL is wrapped instead (that URL gets signed).

Everything else in the markup is left as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import quote

import msgspec

CLICK_URL_UNESC = "%%CLICK_URL_UNESC%%"
CLICK_URL_ESC = "%%CLICK_URL_ESC%%"

_SPACE = "[ \t\n\r\f]*"  # what a browser strips around a URL (ASCII whitespace only)
_HREF = re.compile(
    r"(\bhref\s*=\s*)(?:"
    + f'"{_SPACE}(%%CLICK_URL_UNESC%%)?(https?://[^"<>]*?){_SPACE}"'
    + "|"
    + f"'{_SPACE}(%%CLICK_URL_UNESC%%)?(https?://[^'<>]*?){_SPACE}'"
    + ")",
    re.IGNORECASE,
)
_CLICK_THROUGH = re.compile(
    r"(<ClickThrough\b[^>]*>)\s*(<!\[CDATA\[\s*(.*?)\s*\]\]>|([^<]*?))\s*(</ClickThrough>)",
    re.DOTALL,
)
_XML_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'"}
_XML_ENTITY = re.compile("|".join(_XML_ENTITIES))


def wrap_clicks(
    markup: str,
    media: str,
    wrap: Callable[[str], str],
    prefix: Callable[[], str],
    *,
    ours: str = "",
) -> str:
    """`markup` of `media` ("banner", "video", "native"; anything else is left alone) with
    every landing URL wrapped and every click macro filled. `prefix()` is called only when a
    macro is there; URLs starting with `ours` (our own tracker) are not wrapped twice.

    >>> wrap = lambda url: "https://ex.example/t/click?url=" + quote(url, safe="")
    >>> prefix = lambda: "https://ex.example/t/click?sig=x&adurl="
    >>> wrap_clicks('<a href="https://shop.example/p?a=1&amp;b=2"><img src="i.png"></a>',
    ...             "banner", wrap, prefix)
    '<a href="https://ex.example/t/click?url=https%3A%2F%2Fshop.example%2Fp%3Fa%3D1%26b%3D2"><img src="i.png"></a>'
    >>> wrap_clicks("<script>open('%%CLICK_URL_UNESC%%' + landing)</script>", "banner", wrap, prefix)
    "<script>open('https://ex.example/t/click?sig=x&adurl=' + landing)</script>"
    """
    filled: list[str] = []

    def fill(text: str) -> str:
        if "%%CLICK_URL_" not in text:
            return text
        if not filled:
            filled.append(prefix())
        return text.replace(CLICK_URL_UNESC, filled[0]).replace(
            CLICK_URL_ESC, quote(filled[0], safe="")
        )

    def wrap_filled(url: str) -> str:
        # A macro inside a landing URL (a DSP's redirect passing our prefix on) is filled
        # before the URL is signed.
        return wrap(fill(url))

    if media == "banner":
        markup = _wrap_anchors(markup, wrap_filled, ours)
    elif media == "video":
        markup = _wrap_click_through(markup, wrap_filled, ours)
    elif media == "native":
        markup = wrap_native_links(markup, wrap_filled, ours)
    else:
        return markup
    return fill(markup)


def _wrap_anchors(markup: str, wrap: Callable[[str], str], ours: str) -> str:
    def anchor(match: re.Match[str]) -> str:
        double = match.group(3) is not None
        url = html.unescape(match.group(3) if double else match.group(5))
        if ours and url.startswith(ours):
            return match.group(0)
        quote_char = '"' if double else "'"
        return f"{match.group(1)}{quote_char}{html.escape(wrap(url))}{quote_char}"

    if "href" not in markup and "HREF" not in markup and "Href" not in markup:
        return markup
    return _HREF.sub(anchor, markup)


def _wrap_click_through(markup: str, wrap: Callable[[str], str], ours: str) -> str:
    def click_through(match: re.Match[str]) -> str:
        cdata, plain = match.group(3), match.group(4)
        url = cdata if cdata is not None else _XML_ENTITY.sub(lambda m: _XML_ENTITIES[m[0]], plain)
        url = url.removeprefix(CLICK_URL_UNESC)
        if not url.startswith(("http://", "https://")) or (ours and url.startswith(ours)):
            return match.group(0)
        # Our tracker URL is percent-encoded throughout: it cannot hold "]]>".
        return f"{match.group(1)}<![CDATA[{wrap(url)}]]>{match.group(5)}"

    if "ClickThrough" not in markup:
        return markup
    return _CLICK_THROUGH.sub(click_through, markup)


def wrap_native_links(markup: str, wrap: Callable[[str], str], ours: str = "") -> str:
    """Native 1.2 markup with the response's `link.url` and every asset's `link.url`
    wrapped; markup that is not a JSON object, or has no link to wrap, comes back as it is
    (rendering refuses the former)."""
    try:
        document = msgspec.json.decode(markup)
    except msgspec.DecodeError:
        return markup
    response = document.get("native", document) if isinstance(document, dict) else None
    if not isinstance(response, dict) or not wrap_native_document(response, wrap, ours):
        return markup
    return msgspec.json.encode(document).decode()


def wrap_native_document(response: dict, wrap: Callable[[str], str], ours: str = "") -> bool:
    """Wraps the links of a decoded Native 1.2 response in place; says whether any was."""
    links = [response.get("link")]
    assets = response.get("assets")
    if isinstance(assets, list):
        links += [asset.get("link") for asset in assets if isinstance(asset, dict)]
    changed = False
    for link in links:
        if not isinstance(link, dict) or not isinstance(link.get("url"), str):
            continue
        url = link["url"].removeprefix(CLICK_URL_UNESC)
        if url.startswith(("http://", "https://")) and not (ours and url.startswith(ours)):
            link["url"] = wrap(url)
            changed = True
    return changed
