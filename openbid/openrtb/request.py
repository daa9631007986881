"""OpenRTB 2.6 bid request objects (spec section 3.2), field names exactly as the spec.

Optional fields default to `None` (absent on the wire); `ext` to an empty `msgspec.Raw`.
Enumerated fields are plain `int` (see `openbid.openrtb.enums` for why). Deprecated fields
that real traffic still sends (`Video.placement`, `User.yob`, the hashed device ids ...) are
modelled so they decode on the fast path and pass through.

>>> req = BidRequest(id="r1", imp=[Imp(id="1", banner=Banner(w=300, h=250))])
>>> req.imp[0].banner
Banner(w=300, h=250)
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from openbid.openrtb.base import (
    NO_EXT,
    Currency,
    Flag,
    Int32,
    Latitude,
    Longitude,
    MaxExtendedSeconds,
    NonNegFloat,
    NonNegInt,
    OpenRTBObject,
    PodSeq,
    RequiredStr,
    SellerId,
    SlotInPod,
    StartDelaySeconds,
    TimestampMs,
    UtcOffsetMinutes,
)


class Metric(OpenRTBObject):
    """3.2.5: a quantifiable, often historical, data point about an impression."""

    type: RequiredStr
    value: float
    vendor: str | None = None
    ext: msgspec.Raw = NO_EXT


class Format(OpenRTBObject):
    """3.2.10: an allowed size (w, h) or Flex Ad parameters (wratio, hratio, wmin)."""

    w: NonNegInt | None = None
    h: NonNegInt | None = None
    wratio: NonNegInt | None = None
    hratio: NonNegInt | None = None
    wmin: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class Banner(OpenRTBObject):
    """3.2.6: a display impression (also a companion ad of a video or audio impression)."""

    format: list[Format] | None = None
    w: NonNegInt | None = None
    h: NonNegInt | None = None
    btype: list[Int32] | None = None
    battr: list[Int32] | None = None
    pos: Int32 | None = None
    mimes: list[str] | None = None
    topframe: Flag | None = None
    expdir: list[Int32] | None = None
    api: list[Int32] | None = None
    id: str | None = None
    vcm: Flag | None = None
    ext: msgspec.Raw = NO_EXT


class DurFloors(OpenRTBObject):
    """3.2.35: a floor price for creatives whose duration falls in [mindur, maxdur]."""

    mindur: NonNegInt | None = None
    maxdur: NonNegInt | None = None
    bidfloor: NonNegFloat | None = None
    ext: msgspec.Raw = NO_EXT


class Video(OpenRTBObject):
    """3.2.7: a video impression (VAST)."""

    mimes: Annotated[list[str], Meta(min_length=1)]
    minduration: NonNegInt | None = None
    maxduration: NonNegInt | None = None
    startdelay: StartDelaySeconds | None = None
    maxseq: NonNegInt | None = None
    poddur: NonNegInt | None = None
    protocols: list[Int32] | None = None
    w: NonNegInt | None = None
    h: NonNegInt | None = None
    podid: str | None = None
    podseq: PodSeq | None = None
    rqddurs: list[NonNegInt] | None = None
    placement: Int32 | None = None
    plcmt: Int32 | None = None
    linearity: Int32 | None = None
    skip: Flag | None = None
    skipmin: NonNegInt | None = None
    skipafter: NonNegInt | None = None
    sequence: NonNegInt | None = None
    slotinpod: SlotInPod | None = None
    mincpmpersec: NonNegFloat | None = None
    battr: list[Int32] | None = None
    maxextended: MaxExtendedSeconds | None = None
    minbitrate: NonNegInt | None = None
    maxbitrate: NonNegInt | None = None
    boxingallowed: Flag | None = None
    playbackmethod: list[Int32] | None = None
    playbackend: Int32 | None = None
    delivery: list[Int32] | None = None
    pos: Int32 | None = None
    companionad: list[Banner] | None = None
    api: list[Int32] | None = None
    companiontype: list[Int32] | None = None
    poddedupe: list[Int32] | None = None
    durfloors: list[DurFloors] | None = None
    ext: msgspec.Raw = NO_EXT


class Audio(OpenRTBObject):
    """3.2.8: an audio impression (DAAST / VAST)."""

    mimes: Annotated[list[str], Meta(min_length=1)]
    minduration: NonNegInt | None = None
    maxduration: NonNegInt | None = None
    poddur: NonNegInt | None = None
    protocols: list[Int32] | None = None
    startdelay: StartDelaySeconds | None = None
    rqddurs: list[NonNegInt] | None = None
    podid: str | None = None
    podseq: PodSeq | None = None
    sequence: NonNegInt | None = None
    slotinpod: SlotInPod | None = None
    mincpmpersec: NonNegFloat | None = None
    battr: list[Int32] | None = None
    maxextended: MaxExtendedSeconds | None = None
    minbitrate: NonNegInt | None = None
    maxbitrate: NonNegInt | None = None
    delivery: list[Int32] | None = None
    companionad: list[Banner] | None = None
    api: list[Int32] | None = None
    companiontype: list[Int32] | None = None
    maxseq: NonNegInt | None = None
    feed: Int32 | None = None
    stitched: Flag | None = None
    nvol: Int32 | None = None
    durfloors: list[DurFloors] | None = None
    ext: msgspec.Raw = NO_EXT


class Native(OpenRTBObject):
    """3.2.9: a native impression; `request` is a Native 1.x request as a JSON string."""

    request: RequiredStr
    ver: str | None = None
    api: list[Int32] | None = None
    battr: list[Int32] | None = None
    ext: msgspec.Raw = NO_EXT


class Deal(OpenRTBObject):
    """3.2.12: a deal struck between a buyer and a seller."""

    id: RequiredStr
    bidfloor: NonNegFloat | None = None
    bidfloorcur: Currency | None = None
    at: Int32 | None = None
    wseat: list[str] | None = None
    wadomain: list[str] | None = None
    guar: Flag | None = None
    mincpmpersec: NonNegFloat | None = None
    durfloors: list[DurFloors] | None = None
    ext: msgspec.Raw = NO_EXT


class Pmp(OpenRTBObject):
    """3.2.11: the private marketplace deals in effect for an impression."""

    private_auction: Flag | None = None
    deals: list[Deal] | None = None
    ext: msgspec.Raw = NO_EXT


class Qty(OpenRTBObject):
    """3.2.31: how many billable events (e.g. DOOH impressions) one win stands for."""

    multiplier: NonNegFloat
    sourcetype: Int32 | None = None
    vendor: str | None = None
    ext: msgspec.Raw = NO_EXT


class RefSettings(OpenRTBObject):
    """3.2.34: how often and on what trigger an ad slot refreshes."""

    reftype: Int32 | None = None
    minint: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class Refresh(OpenRTBObject):
    """3.2.33: details about an ad slot that refreshes automatically."""

    refsettings: list[RefSettings] | None = None
    count: NonNegInt | None = None
    ext: msgspec.Raw = NO_EXT


class Imp(OpenRTBObject):
    """3.2.4: one ad placement being auctioned."""

    id: RequiredStr
    metric: list[Metric] | None = None
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    displaymanager: str | None = None
    displaymanagerver: str | None = None
    instl: Flag | None = None
    tagid: str | None = None
    bidfloor: NonNegFloat | None = None
    bidfloorcur: Currency | None = None
    clickbrowser: Flag | None = None
    secure: Flag | None = None
    iframebuster: list[str] | None = None
    rwdd: Flag | None = None
    ssai: Annotated[int, Meta(ge=0, le=3)] | None = None
    exp: NonNegInt | None = None
    qty: Qty | None = None
    dt: TimestampMs | None = None
    refresh: Refresh | None = None
    ext: msgspec.Raw = NO_EXT


class Publisher(OpenRTBObject):
    """3.2.15: the entity that supplies the inventory and is paid for it."""

    id: str | None = None
    name: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    domain: str | None = None
    ext: msgspec.Raw = NO_EXT


class Producer(OpenRTBObject):
    """3.2.17: the producer of the content."""

    id: str | None = None
    name: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    domain: str | None = None
    ext: msgspec.Raw = NO_EXT


class Segment(OpenRTBObject):
    """3.2.22: one unit of data about the user or the content."""

    id: str | None = None
    name: str | None = None
    value: str | None = None
    ext: msgspec.Raw = NO_EXT


class Data(OpenRTBObject):
    """3.2.21: data about the user or the content from one data provider."""

    id: str | None = None
    name: str | None = None
    segment: list[Segment] | None = None
    cids: list[str] | None = None
    ext: msgspec.Raw = NO_EXT


class Network(OpenRTBObject):
    """3.2.23: the network the content is on (e.g. a TV network)."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None
    ext: msgspec.Raw = NO_EXT


class Channel(OpenRTBObject):
    """3.2.24: the channel the content is on (e.g. a local TV station)."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None
    ext: msgspec.Raw = NO_EXT


class Content(OpenRTBObject):
    """3.2.16: the content in which the impression appears."""

    id: str | None = None
    episode: NonNegInt | None = None
    title: str | None = None
    series: str | None = None
    season: str | None = None
    artist: str | None = None
    genre: str | None = None
    gtax: Int32 | None = None
    genres: list[str] | None = None
    album: str | None = None
    isrc: str | None = None
    producer: Producer | None = None
    url: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    prodq: Int32 | None = None
    context: Int32 | None = None
    contentrating: str | None = None
    userrating: str | None = None
    qagmediarating: Int32 | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None
    livestream: Flag | None = None
    sourcerelationship: Flag | None = None
    len: NonNegInt | None = None
    language: str | None = None
    langb: str | None = None
    embeddable: Flag | None = None
    data: list[Data] | None = None
    network: Network | None = None
    channel: Channel | None = None
    realtime: Flag | None = None
    firstbroadcast: Flag | None = None
    ext: msgspec.Raw = NO_EXT


class Site(OpenRTBObject):
    """3.2.13: the publisher's website."""

    id: str | None = None
    name: str | None = None
    domain: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    page: str | None = None
    ref: str | None = None
    search: str | None = None
    mobile: Flag | None = None
    privacypolicy: Flag | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None
    inventorypartnerdomain: str | None = None
    ext: msgspec.Raw = NO_EXT


class App(OpenRTBObject):
    """3.2.14: the publisher's non-browser application."""

    id: str | None = None
    name: str | None = None
    bundle: str | None = None
    domain: str | None = None
    storeurl: str | None = None
    cattax: Int32 | None = None
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    ver: str | None = None
    privacypolicy: Flag | None = None
    paid: Flag | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None
    inventorypartnerdomain: str | None = None
    ext: msgspec.Raw = NO_EXT


class DOOH(OpenRTBObject):
    """3.2.32: a Digital Out-Of-Home screen or group of screens."""

    id: str | None = None
    name: str | None = None
    venuetype: list[str] | None = None
    venuetypetax: Int32 | None = None
    publisher: Publisher | None = None
    domain: str | None = None
    keywords: str | None = None
    content: Content | None = None
    ext: msgspec.Raw = NO_EXT


class Geo(OpenRTBObject):
    """3.2.19: a geographic location (of the device, or the user's home base)."""

    lat: Latitude | None = None
    lon: Longitude | None = None
    type: Int32 | None = None
    accuracy: NonNegInt | None = None
    lastfix: NonNegInt | None = None
    ipservice: Int32 | None = None
    country: str | None = None
    region: str | None = None
    regionfips104: str | None = None
    metro: str | None = None
    city: str | None = None
    zip: str | None = None
    utcoffset: UtcOffsetMinutes | None = None
    ext: msgspec.Raw = NO_EXT


class BrandVersion(OpenRTBObject):
    """3.2.30: a browser or platform and its version components."""

    brand: str
    version: list[str] | None = None
    ext: msgspec.Raw = NO_EXT


class UserAgent(OpenRTBObject):
    """3.2.29: the structured user agent (from User-Agent Client Hints)."""

    browsers: list[BrandVersion] | None = None
    platform: BrandVersion | None = None
    mobile: Flag | None = None
    architecture: str | None = None
    bitness: str | None = None
    model: str | None = None
    source: Int32 | None = None
    ext: msgspec.Raw = NO_EXT


class Device(OpenRTBObject):
    """3.2.18: the device through which the user sees the ad."""

    geo: Geo | None = None
    dnt: Flag | None = None
    lmt: Flag | None = None
    ua: str | None = None
    sua: UserAgent | None = None
    ip: str | None = None
    ipv6: str | None = None
    devicetype: Int32 | None = None
    make: str | None = None
    model: str | None = None
    os: str | None = None
    osv: str | None = None
    hwv: str | None = None
    h: NonNegInt | None = None
    w: NonNegInt | None = None
    ppi: NonNegInt | None = None
    pxratio: NonNegFloat | None = None
    js: Flag | None = None
    geofetch: Flag | None = None
    flashver: str | None = None
    language: str | None = None
    langb: str | None = None
    carrier: str | None = None
    mccmnc: str | None = None
    connectiontype: Int32 | None = None
    ifa: str | None = None
    didsha1: str | None = None
    didmd5: str | None = None
    dpidsha1: str | None = None
    dpidmd5: str | None = None
    macsha1: str | None = None
    macmd5: str | None = None
    ext: msgspec.Raw = NO_EXT


class UID(OpenRTBObject):
    """3.2.28: one user identifier from an extended-id source."""

    id: str | None = None
    atype: Int32 | None = None
    ext: msgspec.Raw = NO_EXT


class EID(OpenRTBObject):
    """3.2.27: the user ids of one third-party identity provider."""

    inserter: str | None = None
    source: str | None = None
    matcher: str | None = None
    mm: Int32 | None = None
    uids: list[UID] | None = None
    ext: msgspec.Raw = NO_EXT


class User(OpenRTBObject):
    """3.2.20: the human user of the device (the audience)."""

    id: str | None = None
    buyeruid: str | None = None
    yob: Int32 | None = None
    gender: str | None = None
    keywords: str | None = None
    kwarray: list[str] | None = None
    customdata: str | None = None
    geo: Geo | None = None
    data: list[Data] | None = None
    consent: str | None = None
    eids: list[EID] | None = None
    ext: msgspec.Raw = NO_EXT


class SupplyChainNode(OpenRTBObject):
    """3.2.26: one participant of the supply chain."""

    asi: RequiredStr
    sid: SellerId
    rid: str | None = None
    name: str | None = None
    domain: str | None = None
    hp: Flag | None = None
    ext: msgspec.Raw = NO_EXT


class SupplyChain(OpenRTBObject):
    """3.2.25: every entity in the flow of payment for the inventory."""

    complete: Flag
    nodes: Annotated[list[SupplyChainNode], Meta(min_length=1)]
    ver: RequiredStr
    ext: msgspec.Raw = NO_EXT


class Source(OpenRTBObject):
    """3.2.2: the entity upstream of the exchange that sourced the request."""

    fd: Flag | None = None
    tid: str | None = None
    pchain: str | None = None
    schain: SupplyChain | None = None
    ext: msgspec.Raw = NO_EXT


class Regs(OpenRTBObject):
    """3.2.3: regulations in force for the request (parsed by `openbid.privacy`)."""

    coppa: Flag | None = None
    gdpr: Flag | None = None
    us_privacy: str | None = None
    gpp: str | None = None
    gpp_sid: list[Int32] | None = None
    ext: msgspec.Raw = NO_EXT


class BidRequest(OpenRTBObject):
    """3.2.1: the top-level bid request."""

    id: RequiredStr
    imp: Annotated[list[Imp], Meta(min_length=1)]
    site: Site | None = None
    app: App | None = None
    dooh: DOOH | None = None
    device: Device | None = None
    user: User | None = None
    test: Flag | None = None
    at: Int32 | None = None
    tmax: NonNegInt | None = None
    wseat: list[str] | None = None
    bseat: list[str] | None = None
    allimps: Flag | None = None
    cur: list[Currency] | None = None
    wlang: list[str] | None = None
    wlangb: list[str] | None = None
    acat: list[str] | None = None
    bcat: list[str] | None = None
    cattax: Int32 | None = None
    badv: list[str] | None = None
    bapp: list[str] | None = None
    source: Source | None = None
    regs: Regs | None = None
    ext: msgspec.Raw = NO_EXT
