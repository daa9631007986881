"""A house creative as the markup of a bid (`adm`): banner HTML, VAST 4, Native 1.2 JSON.

The exchange frames it like any DSP's markup (our trackers, our click tracker in front of
the landing page); an exchange that calls our bidder gets the same markup.

>>> from openbid.campaigns.model import Creative
>>> banner = Creative(id="c", advertiser_id="a", kind="banner", sizes=((300, 250),),
...     landing_url="https://shop.example/", markup="https://cdn.example/ad.png")
>>> creative_markup(banner, 300, 250)
'<a href="https://shop.example/" target="_blank"><img src="https://cdn.example/ad.png" width="300" height="250" alt=""></a>'
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET

import msgspec

from openbid.campaigns.model import Creative

_NATIVE_TITLE, _NATIVE_IMAGE, _NATIVE_ICON, _NATIVE_DESCRIPTION, _NATIVE_CTA, _NATIVE_SPONSOR = (
    1, 2, 3, 4, 5, 6,
)  # fmt: skip


def creative_markup(creative: Creative, w: int = 0, h: int = 0) -> str:
    """The creative's markup for a slot of `w` x `h` (banner), a player (video) or a native
    placement."""
    if creative.kind == "banner":
        markup = creative.markup.strip()
        if markup.startswith(("http://", "https://")) and "<" not in markup:
            size = f' width="{w}" height="{h}"' if w and h else ""
            return (
                f'<a href="{html.escape(creative.landing_url)}" target="_blank">'
                f'<img src="{html.escape(markup)}"{size} alt=""></a>'
            )
        return markup
    if creative.kind == "video":
        if creative.markup.strip():
            return creative.markup.strip()
        root = ET.Element("VAST", version="4.0")
        wrapper = ET.SubElement(ET.SubElement(root, "Ad", id=creative.id), "Wrapper")
        ET.SubElement(wrapper, "AdSystem").text = "openbid"
        ET.SubElement(wrapper, "VASTAdTagURI").text = creative.vast_url
        return ET.tostring(root, encoding="unicode")
    return native_markup(creative)


def native_markup(creative: Creative) -> str:
    """A Native 1.2 response (`{"native": {...}}`): title, main image, icon, description,
    call to action and sponsor as assets, the landing page as the link."""
    ad = creative.native
    assets: list[dict] = []
    if ad is not None:
        assets.append({"id": _NATIVE_TITLE, "title": {"text": ad.title}})
        if ad.image_url:
            image = {"url": ad.image_url, "w": ad.image_w or None, "h": ad.image_h or None}
            assets.append({"id": _NATIVE_IMAGE, "img": {k: v for k, v in image.items() if v}})
        if ad.icon_url:
            assets.append({"id": _NATIVE_ICON, "img": {"url": ad.icon_url}})
        for asset_id, text in (
            (_NATIVE_DESCRIPTION, ad.description),
            (_NATIVE_CTA, ad.call_to_action),
            (_NATIVE_SPONSOR, ad.sponsored_by),
        ):
            if text:
                assets.append({"id": asset_id, "data": {"value": text}})
    document = {"native": {"ver": "1.2", "assets": assets, "link": {"url": creative.landing_url}}}
    return msgspec.json.encode(document).decode()
