"""OpenRTB Native 1.2 markup request and response objects, field names exactly as the spec.

A native impression carries its `NativeRequest` as a JSON string in `Native.request`, and a
native bid its `NativeResponse` as a JSON string in `Bid.adm`; decode them with
`decode_native_request` / `decode_native_response`. Both accept the 1.0 wrapper
(`{"native": {...}}`) that some partners still send.

>>> asset = NativeAsset(id=1, required=1, title=NativeTitle(len=90))
>>> NativeRequest(assets=[asset]).assets[0].title.len
90
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from openbid.openrtb.base import NO_EXT, Flag, Int32, NonNegInt, OpenRTBObject


class NativeTitle(OpenRTBObject):
    """Title asset request: the maximum length of the title text."""

    len: NonNegInt
    ext: msgspec.Raw = NO_EXT


class NativeImage(OpenRTBObject):
    """Image asset request (icon, main image ...)."""

    type: Int32 | None = None
    w: NonNegInt | None = None
    wmin: NonNegInt | None = None
    h: NonNegInt | None = None
    hmin: NonNegInt | None = None
    mimes: list[str] | None = None
    ext: msgspec.Raw = NO_EXT


class NativeVideo(OpenRTBObject):
    """Video asset request (a VAST tag comes back)."""

    mimes: Annotated[list[str], Meta(min_length=1)]
    minduration: NonNegInt
    maxduration: NonNegInt
    protocols: list[Int32]
    ext: msgspec.Raw = NO_EXT


class NativeData(OpenRTBObject):
    """Data asset request (sponsored-by, description, rating, CTA text ...)."""

    type: Int32
    len: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class NativeAsset(OpenRTBObject):
    """One requested asset: exactly one of title, img, video, data."""

    id: NonNegInt
    required: Flag | None = None
    title: NativeTitle | None = None
    img: NativeImage | None = None
    video: NativeVideo | None = None
    data: NativeData | None = None
    ext: msgspec.Raw = NO_EXT


class NativeEventTracker(OpenRTBObject):
    """An event the buyer may track, and the methods the seller supports for it."""

    event: Int32
    methods: list[Int32]
    ext: msgspec.Raw = NO_EXT


class NativeRequest(OpenRTBObject, kw_only=True):
    """The Native 1.2 request: the layout context and the assets wanted."""

    ver: str | None = None
    context: Int32 | None = None
    contextsubtype: Int32 | None = None
    plcmttype: Int32 | None = None
    plcmtcnt: NonNegInt | None = None
    seq: NonNegInt | None = None
    assets: Annotated[list[NativeAsset], Meta(min_length=1)]
    aurlsupport: Flag | None = None
    durlsupport: Flag | None = None
    eventtrackers: list[NativeEventTracker] | None = None
    privacy: Flag | None = None
    layout: Int32 | None = None
    adunit: Int32 | None = None
    ext: msgspec.Raw = NO_EXT


class NativeLink(OpenRTBObject):
    """Where a click goes, and who to tell."""

    url: str
    clicktrackers: list[str] | None = None
    fallback: str | None = None
    ext: msgspec.Raw = NO_EXT


class NativeTitleResponse(OpenRTBObject):
    """Title asset of a native ad."""

    text: str
    len: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class NativeImageResponse(OpenRTBObject, kw_only=True):
    """Image asset of a native ad."""

    type: Int32 | None = None
    url: str
    w: NonNegInt | None = None
    h: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class NativeVideoResponse(OpenRTBObject):
    """Video asset of a native ad: a VAST document."""

    vasttag: str
    ext: msgspec.Raw = NO_EXT


class NativeDataResponse(OpenRTBObject, kw_only=True):
    """Data asset of a native ad."""

    type: Int32 | None = None
    len: NonNegInt | None = None
    label: str | None = None
    value: str
    ext: msgspec.Raw = NO_EXT


class NativeAssetResponse(OpenRTBObject):
    """One asset of a native ad: exactly one of title, img, video, data."""

    id: NonNegInt | None = None
    required: Flag | None = None
    title: NativeTitleResponse | None = None
    img: NativeImageResponse | None = None
    video: NativeVideoResponse | None = None
    data: NativeDataResponse | None = None
    link: NativeLink | None = None
    ext: msgspec.Raw = NO_EXT


class NativeEventTrackerResponse(OpenRTBObject):
    """One tracker the buyer wants fired: `url` for img, a script URL for js."""

    event: Int32
    method: Int32
    url: str | None = None
    customdata: msgspec.Raw = NO_EXT
    ext: msgspec.Raw = NO_EXT


class NativeResponse(OpenRTBObject, kw_only=True):
    """The Native 1.2 response: the assets (or where to fetch them) and the trackers."""

    ver: str | None = None
    assets: list[NativeAssetResponse] | None = None
    assetsurl: str | None = None
    dcourl: str | None = None
    link: NativeLink
    imptrackers: list[str] | None = None
    jstracker: str | None = None
    eventtrackers: list[NativeEventTrackerResponse] | None = None
    privacy: str | None = None
    ext: msgspec.Raw = NO_EXT
