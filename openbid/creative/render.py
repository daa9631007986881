"""Renders a winning bid for the page or player: banner HTML, VAST 4, native 1.2 JSON.

Each format carries our own signed impression tracker; video also gets our error tracker.
Markup from a DSP is placed as it is (macros substituted, landing URLs behind our click
tracker: `openbid.creative.clicks`): we frame it, we do not rewrite it otherwise.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from collections.abc import Callable

import msgspec

from openbid.creative.clicks import wrap_native_document
from openbid.errors import OpenbidError


class RenderError(OpenbidError):
    """The winning markup cannot be rendered in the requested format."""


def render_banner(adm: str, impression_url: str, *, width: int = 0, height: int = 0) -> str:
    """A complete HTML document: the markup (or an image when `adm` is an image URL), then
    our impression pixel.

    >>> page = render_banner("<a href='x'>ad</a>", "https://ex.example/imp?x=1", width=300, height=250)
    >>> "<a href='x'>ad</a>" in page and 'src="https://ex.example/imp?x=1"' in page
    True
    """
    stripped = adm.strip()
    if stripped.startswith(("http://", "https://")) and "<" not in stripped:
        body = f'<img src="{html.escape(stripped)}" width="{width}" height="{height}" alt="">'
    else:
        body = adm
    size = f"width:{width}px;height:{height}px;" if width and height else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        "<style>html,body{margin:0;padding:0;overflow:hidden}</style></head>"
        f'<body><div style="{size}">{body}</div>'
        f'<img src="{html.escape(impression_url)}" width="1" height="1" '
        'style="position:absolute;left:-9999px" alt=""></body></html>'
    )


def render_video(
    adm: str, impression_url: str, error_url: str, *, vast_url: str = "", ad_id: str = "1"
) -> str:
    """VAST 4 with our trackers: inline VAST gets our `<Impression>` and `<Error>` added to
    every ad; with no markup, a Wrapper pointing at `vast_url` (the DSP's nurl) carries them.
    """
    if adm.strip():
        try:
            root = ET.fromstring(adm.strip())
        except ET.ParseError as exc:
            raise RenderError(f"video markup is not valid VAST XML: {exc}") from None
        if root.tag != "VAST":
            raise RenderError(f"video markup root is <{root.tag}>, expected <VAST>")
        ads = [
            node for ad in root.findall("Ad") for node in ad if node.tag in ("InLine", "Wrapper")
        ]
        if not ads:
            raise RenderError("VAST has no <Ad> with <InLine> or <Wrapper>")
        for node in ads:
            _add_trackers(node, impression_url, error_url)
        return ET.tostring(root, encoding="unicode", xml_declaration=False)
    if not vast_url:
        raise RenderError("video bid has neither VAST markup nor a URL serving it")
    root = ET.Element("VAST", version="4.0")
    wrapper = ET.SubElement(ET.SubElement(root, "Ad", id=ad_id), "Wrapper")
    ET.SubElement(wrapper, "AdSystem").text = "openbid"
    _add_trackers(wrapper, impression_url, error_url)
    ET.SubElement(wrapper, "VASTAdTagURI").text = vast_url
    return ET.tostring(root, encoding="unicode")


def _add_trackers(node: ET.Element, impression_url: str, error_url: str) -> None:
    position = next(
        (i + 1 for i, child in enumerate(node) if child.tag in ("AdSystem", "AdTitle")), 0
    )
    error = ET.Element("Error")
    error.text = error_url
    impression = ET.Element("Impression", id="openbid")
    impression.text = impression_url
    node.insert(position, impression)
    node.insert(position, error)


def render_native(
    adm: str, impression_url: str, click_url: Callable[[str], str] | None = None
) -> bytes:
    """The Native 1.2 response with our impression tracker added (event 1, image method),
    and, with `click_url`, every link's `url` sent through our click tracker first."""
    try:
        document = msgspec.json.decode(adm.encode() if isinstance(adm, str) else adm)
    except msgspec.DecodeError as exc:
        raise RenderError(f"native markup is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RenderError("native markup must be a JSON object")
    response = document.get("native", document)
    if not isinstance(response, dict):
        raise RenderError("native markup's 'native' must be an object")
    trackers = response.setdefault("eventtrackers", [])
    if not isinstance(trackers, list):
        raise RenderError("native markup's 'eventtrackers' must be an array")
    trackers.append({"event": 1, "method": 1, "url": impression_url})
    if click_url is not None:
        wrap_native_document(response, click_url)
    return msgspec.json.encode(document)
