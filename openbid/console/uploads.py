"""Checks of an uploaded creative file, each refusal naming the field: an image (PNG, JPEG,
GIF, WebP: its type sniffed from its bytes, never from the name or the declared type; its
size in pixels read from its header), an HTML banner, or a VAST document.

>>> png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + (300).to_bytes(4, "big") + (250).to_bytes(4, "big")
>>> image_info(png)
('image/png', 300, 250)
>>> image_info(b"GIF89a" + (728).to_bytes(2, "little") + (90).to_bytes(2, "little"))
('image/gif', 728, 90)
"""

from __future__ import annotations

import html.parser
import struct
import xml.etree.ElementTree as ET

from openbid.console.errors import ApiError

MAX_IMAGE_BYTES = 300 * 1024
"""The IAB's guideline for a display ad's initial load is 150 KB; twice that at most."""
MAX_HTML_BYTES = 200 * 1024
MAX_VAST_BYTES = 500 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
VIDEO_TYPES = (
    "video/mp4",
    "video/webm",
    "video/ogg",
    "application/x-mpegurl",
    "application/dash+xml",
)


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, field, message)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in a JPEG's first start-of-frame marker."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_info(data: bytes) -> tuple[str, int, int] | None:
    """(content type, width, height) of a PNG, JPEG, GIF or WebP image; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return "image/png", width, height
    if data.startswith((b"GIF87a", b"GIF89a")) and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "image/gif", width, height
    if data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
        return ("image/jpeg", *size) if size else None
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        size = _webp_size(data)
        return ("image/webp", *size) if size else None
    return None


def check_image(data: bytes, declared_sizes: list[tuple[int, int]]) -> tuple[str, int, int]:
    """The image's (type, width, height); refused when it is not an image we serve, too
    large, or not of a size the creative declares."""
    if len(data) > MAX_IMAGE_BYTES:
        raise _refuse("file", f"the image is {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,}")
    info = image_info(data)
    if info is None:
        raise _refuse("file", "not a PNG, JPEG, GIF or WebP image")
    content_type, width, height = info
    if not (0 < width <= 10_000 and 0 < height <= 10_000):
        raise _refuse("file", f"the image's size {width}x{height} is not one an ad has")
    if declared_sizes and (width, height) not in declared_sizes:
        listed = ", ".join(f"{w}x{h}" for w, h in declared_sizes)
        raise _refuse("sizes", f"the image is {width}x{height}, not {listed}")
    return content_type, width, height


class _HtmlCheck(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements = 0
        self.insecure: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements += 1
        for name, value in attrs:
            if name in ("src", "href", "action") and (value or "").strip().lower().startswith(
                "http:"
            ):
                self.insecure.append(f"<{tag} {name}>")


def check_html(data: bytes) -> str:
    """The banner's HTML as text; refused when too large, not UTF-8, without any element,
    or loading anything over plain http (publishers' https pages block mixed content)."""
    if len(data) > MAX_HTML_BYTES:
        raise _refuse("file", f"the HTML is {len(data):,} bytes; at most {MAX_HTML_BYTES:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("file", f"the HTML is not UTF-8 (byte {exc.start})") from None
    checker = _HtmlCheck()
    checker.feed(text)
    checker.close()
    if checker.elements == 0:
        raise _refuse("file", "no HTML element in the file")
    if checker.insecure:
        raise _refuse(
            "file", f"loads over plain http: {', '.join(checker.insecure[:3])} (use https)"
        )
    return text


def check_vast(data: bytes) -> tuple[str, int]:
    """The VAST document as text and the duration of its first linear ad in seconds;
    refused unless it is VAST 2-4 XML with an inline linear ad whose media files have
    a type and an https URL, or a wrapper with its ad tag URI."""
    if len(data) > MAX_VAST_BYTES:
        raise _refuse("file", f"the VAST is {len(data):,} bytes; at most {MAX_VAST_BYTES:,}")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise _refuse("file", "VAST must not declare a DOCTYPE or entities")
    try:
        text = data.decode("utf-8")
        root = ET.fromstring(text)
    except (UnicodeDecodeError, ET.ParseError) as exc:
        raise _refuse("file", f"not XML: {exc}") from None
    if root.tag != "VAST":
        raise _refuse("file", f"the root element is <{root.tag}>, not <VAST>")
    version = root.get("version", "")
    if version.split(".")[0] not in ("2", "3", "4"):
        raise _refuse("file", f"VAST version {version!r}: expected 2, 3 or 4")
    ads = root.findall("Ad")
    if not ads:
        raise _refuse("file", "no <Ad> in the VAST")
    ad = ads[0]
    if ad.find("Wrapper") is not None:
        uri = (ad.findtext("Wrapper/VASTAdTagURI") or "").strip()
        if not uri.startswith("https://"):
            raise _refuse("file", "the wrapper's <VASTAdTagURI> must be an https URL")
        return text, 0
    linear = ad.find("InLine/Creatives/Creative/Linear")
    if linear is None:
        raise _refuse("file", "no <InLine> linear creative in the first <Ad>")
    duration_s = _duration_s(linear.findtext("Duration") or "")
    if duration_s is None:
        raise _refuse("duration_s", "the <Duration> is not HH:MM:SS")
    media = linear.findall("MediaFiles/MediaFile")
    if not media:
        raise _refuse("file", "no <MediaFile> in the linear creative")
    for index, file in enumerate(media):
        kind = (file.get("type") or "").lower()
        if kind not in VIDEO_TYPES:
            raise _refuse(
                "file", f"MediaFile {index}: type {kind!r} is not one of {', '.join(VIDEO_TYPES)}"
            )
        if not (file.text or "").strip().startswith("https://"):
            raise _refuse("file", f"MediaFile {index}: its URL must be https")
    return text, duration_s


def _duration_s(text: str) -> int | None:
    """`00:00:30` or `00:00:30.000` in whole seconds."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        return None
    try:
        hours, minutes = int(parts[0]), int(parts[1])
        seconds = float(parts[2])
    except ValueError:
        return None
    if hours < 0 or not 0 <= minutes < 60 or not 0 <= seconds < 60:
        return None
    return hours * 3600 + minutes * 60 + round(seconds)
