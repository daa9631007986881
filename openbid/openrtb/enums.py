"""AdCOM 1.0 enumerations (and the Native 1.2 ones) used by OpenRTB 2.6, as `IntEnum`s.

The struct fields that carry these values are typed `int`, not the enum: AdCOM reserves
values of 500 and above for vendor-specific codes, and lists grow between spec revisions, so
a decoder that turned every value into an enum member would refuse real traffic. Validation
(see `openbid.openrtb.validate`) accepts a list's defined values and, where AdCOM allows it,
anything >= `VENDOR_SPECIFIC_MIN`. An `IntEnum` member compares equal to its int, so code
reads `device.devicetype == DeviceType.PHONE`.

>>> DeviceType.CONNECTED_TV == 3
True
>>> ApiFramework(7).name
'OMID_1'
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AdPosition",
    "AgentType",
    "ApiFramework",
    "AuctionType",
    "AutoRefreshTrigger",
    "BannerAdType",
    "CompanionType",
    "ConnectionType",
    "ContentContext",
    "CreativeAttribute",
    "DeliveryMethod",
    "DeviceType",
    "EventTrackingMethod",
    "EventType",
    "ExpandableDirection",
    "FeedType",
    "IDMatchMethod",
    "Linearity",
    "LocationService",
    "LocationType",
    "LossReason",
    "MarkupType",
    "MediaRating",
    "MultiplierSourceType",
    "NativeContextSubtype",
    "NativeContextType",
    "NativeDataAssetType",
    "NativeImageAssetType",
    "NativePlacementType",
    "NoBidReason",
    "PlaybackCessationMode",
    "PlaybackMethod",
    "PodSequence",
    "ProductionQuality",
    "Protocol",
    "ServerSideAdInsertion",
    "SlotPositionInPod",
    "StartDelay",
    "UserAgentSource",
    "VENDOR_SPECIFIC_MIN",
    "VideoPlacement",
    "VideoPlcmt",
    "VolumeNormalizationMode",
]

VENDOR_SPECIFIC_MIN = 500
"""AdCOM lists reserve this value and above for exchange- or vendor-specific codes."""


class AuctionType(IntEnum):
    """`BidRequest.at` and `Deal.at`; 3 is valid for deals only."""

    FIRST_PRICE = 1
    SECOND_PRICE_PLUS = 2
    FIXED_DEAL_PRICE = 3


class DeviceType(IntEnum):
    """AdCOM List: Device Types (`Device.devicetype`)."""

    MOBILE_TABLET = 1
    PERSONAL_COMPUTER = 2
    CONNECTED_TV = 3
    PHONE = 4
    TABLET = 5
    CONNECTED_DEVICE = 6
    SET_TOP_BOX = 7
    OOH_DEVICE = 8


class ConnectionType(IntEnum):
    """AdCOM List: Connection Types (`Device.connectiontype`)."""

    UNKNOWN = 0
    ETHERNET = 1
    WIFI = 2
    CELLULAR_UNKNOWN = 3
    CELLULAR_2G = 4
    CELLULAR_3G = 5
    CELLULAR_4G = 6
    CELLULAR_5G = 7


class AdPosition(IntEnum):
    """AdCOM List: Placement Positions (`pos`)."""

    UNKNOWN = 0
    ABOVE_THE_FOLD = 1
    LOCKED = 2  # deprecated: "may or may not be initially visible"
    BELOW_THE_FOLD = 3
    HEADER = 4
    FOOTER = 5
    SIDEBAR = 6
    FULLSCREEN = 7


class BannerAdType(IntEnum):
    """OpenRTB List: Banner Ad Types (`Banner.btype`)."""

    XHTML_TEXT = 1
    XHTML_BANNER = 2
    JAVASCRIPT = 3
    IFRAME = 4


class CreativeAttribute(IntEnum):
    """AdCOM List: Creative Attributes (`battr`, `Bid.attr`)."""

    AUDIO_AUTO_PLAY = 1
    AUDIO_USER_INITIATED = 2
    EXPANDABLE_AUTOMATIC = 3
    EXPANDABLE_CLICK = 4
    EXPANDABLE_ROLLOVER = 5
    IN_BANNER_VIDEO_AUTO_PLAY = 6
    IN_BANNER_VIDEO_USER_INITIATED = 7
    POP = 8
    PROVOCATIVE = 9
    SHAKY_FLASHING = 10
    SURVEYS = 11
    TEXT_ONLY = 12
    USER_INTERACTIVE = 13
    WINDOWS_DIALOG = 14
    HAS_AUDIO_TOGGLE = 15
    HAS_SKIP_BUTTON = 16
    ADOBE_FLASH = 17


class ExpandableDirection(IntEnum):
    """AdCOM List: Expandable Directions (`Banner.expdir`)."""

    LEFT = 1
    RIGHT = 2
    UP = 3
    DOWN = 4
    FULL_SCREEN = 5
    RESIZE_MINIMIZE = 6


class ApiFramework(IntEnum):
    """AdCOM List: API Frameworks (`api`, `Bid.apis`)."""

    VPAID_1 = 1
    VPAID_2 = 2
    MRAID_1 = 3
    ORMMA = 4
    MRAID_2 = 5
    MRAID_3 = 6
    OMID_1 = 7
    SIMID_1_0 = 8
    SIMID_1_1 = 9


class Protocol(IntEnum):
    """AdCOM List: Creative Subtypes - Audio/Video (`protocols`, `Bid.protocol`)."""

    VAST_1_0 = 1
    VAST_2_0 = 2
    VAST_3_0 = 3
    VAST_1_0_WRAPPER = 4
    VAST_2_0_WRAPPER = 5
    VAST_3_0_WRAPPER = 6
    VAST_4_0 = 7
    VAST_4_0_WRAPPER = 8
    DAAST_1_0 = 9
    DAAST_1_0_WRAPPER = 10
    VAST_4_1 = 11
    VAST_4_1_WRAPPER = 12
    VAST_4_2 = 13
    VAST_4_2_WRAPPER = 14
    VAST_4_3 = 15
    VAST_4_3_WRAPPER = 16


class VideoPlcmt(IntEnum):
    """AdCOM List: Plcmt Subtypes - Video (`Video.plcmt`, new in 2.6)."""

    INSTREAM = 1
    ACCOMPANYING_CONTENT = 2
    INTERSTITIAL = 3
    NO_CONTENT_STANDALONE = 4


class VideoPlacement(IntEnum):
    """OpenRTB 2.5 List: Video Placement Types (`Video.placement`, deprecated by `plcmt`)."""

    IN_STREAM = 1
    IN_BANNER = 2
    IN_ARTICLE = 3
    IN_FEED = 4
    INTERSTITIAL_SLIDER_FLOATING = 5


class Linearity(IntEnum):
    """AdCOM List: Linearity Modes (`Video.linearity`)."""

    LINEAR = 1
    NON_LINEAR = 2


class PlaybackMethod(IntEnum):
    """AdCOM List: Playback Methods (`Video.playbackmethod`)."""

    PAGE_LOAD_SOUND_ON = 1
    PAGE_LOAD_SOUND_OFF = 2
    CLICK_SOUND_ON = 3
    MOUSE_OVER_SOUND_ON = 4
    ENTERING_VIEWPORT_SOUND_ON = 5
    ENTERING_VIEWPORT_SOUND_OFF = 6
    CONTINUOUS = 7


class PlaybackCessationMode(IntEnum):
    """AdCOM List: Playback Cessation Modes (`Video.playbackend`)."""

    ON_COMPLETION_OR_USER = 1
    ON_LEAVING_VIEWPORT_OR_USER = 2
    FLOATING_UNTIL_COMPLETION_OR_USER = 3


class DeliveryMethod(IntEnum):
    """AdCOM List: Delivery Methods (`delivery`)."""

    STREAMING = 1
    PROGRESSIVE = 2
    DOWNLOAD = 3


class CompanionType(IntEnum):
    """AdCOM List: Companion Types (`companiontype`)."""

    STATIC = 1
    HTML = 2
    IFRAME = 3


class StartDelay(IntEnum):
    """AdCOM List: Start Delay Modes (`startdelay`); a value > 0 is a mid-roll's delay in s."""

    GENERIC_POST_ROLL = -2
    GENERIC_MID_ROLL = -1
    PRE_ROLL = 0


class PodSequence(IntEnum):
    """AdCOM List: Pod Sequence (`podseq`)."""

    LAST = -1
    ANY = 0
    FIRST = 1


class SlotPositionInPod(IntEnum):
    """AdCOM List: Slot Position in Pod (`slotinpod`)."""

    LAST = -1
    ANY = 0
    FIRST = 1
    FIRST_OR_LAST = 2


class ServerSideAdInsertion(IntEnum):
    """`Imp.ssai`: where ad stitching and tracking happen."""

    UNKNOWN = 0
    ALL_CLIENT_SIDE = 1
    ASSETS_STITCHED_SERVER_SIDE = 2
    ALL_SERVER_SIDE = 3


class FeedType(IntEnum):
    """AdCOM List: Feed Types (`Audio.feed`)."""

    MUSIC_SERVICE = 1
    FM_AM_BROADCAST = 2
    PODCAST = 3
    CATCH_UP_RADIO = 4
    WEB_RADIO = 5
    VIDEO_GAME = 6
    TEXT_TO_SPEECH = 7


class VolumeNormalizationMode(IntEnum):
    """AdCOM List: Volume Normalization Modes (`Audio.nvol`)."""

    NONE = 0
    AVERAGE = 1
    PEAK = 2
    LOUDNESS = 3
    CUSTOM = 4


class ContentContext(IntEnum):
    """AdCOM List: Content Contexts (`Content.context`)."""

    VIDEO = 1
    GAME = 2
    MUSIC = 3
    APPLICATION = 4
    TEXT = 5
    OTHER = 6
    UNKNOWN = 7


class ProductionQuality(IntEnum):
    """AdCOM List: Production Qualities (`Content.prodq`)."""

    UNKNOWN = 0
    PROFESSIONAL = 1
    PROSUMER = 2
    USER_GENERATED = 3


class MediaRating(IntEnum):
    """AdCOM List: Media Ratings (`qagmediarating`)."""

    ALL_AUDIENCES = 1
    OVER_12 = 2
    MATURE = 3


class LocationType(IntEnum):
    """AdCOM List: Location Types (`Geo.type`)."""

    GPS = 1
    IP_ADDRESS = 2
    USER_PROVIDED = 3


class LocationService(IntEnum):
    """AdCOM List: Location Services (`Geo.ipservice`)."""

    IP2LOCATION = 1
    NEUSTAR = 2
    MAXMIND = 3
    NETACUITY = 4


class IDMatchMethod(IntEnum):
    """AdCOM List: ID Match Methods (`EID.mm`)."""

    UNKNOWN = 0
    NO_MATCHING = 1
    FIRST_PARTY_OBSERVED = 2
    PROBABILISTIC = 3
    DETERMINISTIC = 4


class AgentType(IntEnum):
    """AdCOM List: Agent Types (`UID.atype`)."""

    BROWSER_COOKIE = 1
    IN_APP_DEVICE_ID = 2
    PERSON_BASED = 3


class UserAgentSource(IntEnum):
    """AdCOM List: User-Agent Source (`UserAgent.source`)."""

    UNKNOWN = 0
    CLIENT_HINTS_LOW_ENTROPY = 1
    CLIENT_HINTS_HIGH_ENTROPY = 2
    PARSED_FROM_USER_AGENT = 3


class AutoRefreshTrigger(IntEnum):
    """AdCOM List: Auto Refresh Triggers (`RefSettings.reftype`)."""

    UNKNOWN = 0
    USER_ACTION = 1
    EVENT = 2
    TIME = 3


class MultiplierSourceType(IntEnum):
    """AdCOM List: DOOH Multiplier Measurement Source Types (`Qty.sourcetype`)."""

    UNKNOWN = 0
    MEASUREMENT_VENDOR = 1
    PUBLISHER = 2
    EXCHANGE = 3


class MarkupType(IntEnum):
    """`Bid.mtype`: the type of the creative markup."""

    BANNER = 1
    VIDEO = 2
    AUDIO = 3
    NATIVE = 4


class NoBidReason(IntEnum):
    """OpenRTB 3.0 List: No-Bid Reason Codes (`BidResponse.nbr`)."""

    UNKNOWN_ERROR = 0
    TECHNICAL_ERROR = 1
    INVALID_REQUEST = 2
    KNOWN_WEB_CRAWLER = 3
    SUSPECTED_NON_HUMAN_TRAFFIC = 4
    CLOUD_DATA_CENTER_PROXY_IP = 5
    UNSUPPORTED_DEVICE = 6
    BLOCKED_PUBLISHER = 7
    UNMATCHED_USER = 8
    DAILY_USER_CAP_MET = 9
    DAILY_DOMAIN_CAP_MET = 10
    ADS_TXT_UNAVAILABLE = 11
    ADS_TXT_VIOLATION = 12
    ADS_CERT_UNAVAILABLE = 13
    ADS_CERT_VIOLATION = 14
    INSUFFICIENT_AUCTION_TIME = 15
    INCOMPLETE_SUPPLY_CHAIN = 16
    BLOCKED_SUPPLY_CHAIN_NODE = 17


class LossReason(IntEnum):
    """OpenRTB List: Loss Reason Codes (the `${AUCTION_LOSS}` macro of a loss notice)."""

    BID_WON = 0
    INTERNAL_ERROR = 1
    IMPRESSION_EXPIRED = 2
    INVALID_BID_RESPONSE = 3
    INVALID_DEAL_ID = 4
    INVALID_AUCTION_ID = 5
    INVALID_ADVERTISER_DOMAIN = 6
    MISSING_MARKUP = 7
    MISSING_CREATIVE_ID = 8
    MISSING_BID_PRICE = 9
    MISSING_MINIMUM_CREATIVE_APPROVAL_DATA = 10
    BELOW_AUCTION_FLOOR = 100
    BELOW_DEAL_FLOOR = 101
    LOST_TO_HIGHER_BID = 102
    LOST_TO_PMP_DEAL = 103
    BUYER_SEAT_BLOCKED = 104
    CREATIVE_FILTERED_GENERAL = 200
    CREATIVE_FILTERED_PENDING = 201
    CREATIVE_FILTERED_DISAPPROVED = 202
    CREATIVE_FILTERED_SIZE = 203
    CREATIVE_FILTERED_FORMAT = 204
    CREATIVE_FILTERED_ADVERTISER = 205
    CREATIVE_FILTERED_APP_STORE_ID = 206
    CREATIVE_FILTERED_NOT_SECURE = 207
    CREATIVE_FILTERED_LANGUAGE = 208
    CREATIVE_FILTERED_CATEGORY = 209
    CREATIVE_FILTERED_ATTRIBUTE = 210
    CREATIVE_FILTERED_AD_TYPE = 211
    CREATIVE_FILTERED_ANIMATION_TOO_LONG = 212
    CREATIVE_FILTERED_NOT_ALLOWED_IN_DEAL = 213


# Native 1.2


class NativeContextType(IntEnum):
    """Native 1.2 Context Type IDs (`NativeRequest.context`)."""

    CONTENT = 1
    SOCIAL = 2
    PRODUCT = 3


class NativeContextSubtype(IntEnum):
    """Native 1.2 Context Sub Type IDs (`NativeRequest.contextsubtype`)."""

    GENERAL = 10
    ARTICLE = 11
    VIDEO = 12
    AUDIO = 13
    IMAGE = 14
    USER_GENERATED = 15
    SOCIAL = 20
    EMAIL = 21
    CHAT = 22
    SELLING = 30
    APPLICATION_STORE = 31
    PRODUCT_REVIEW = 32


class NativePlacementType(IntEnum):
    """Native 1.2 Placement Type IDs (`NativeRequest.plcmttype`)."""

    IN_FEED = 1
    ATOMIC_UNIT = 2
    OUTSIDE_CORE_CONTENT = 3
    RECOMMENDATION_WIDGET = 4


class NativeImageAssetType(IntEnum):
    """Native 1.2 Image Asset Types (`NativeImage.type`); 2 (logo) was dropped in 1.2."""

    ICON = 1
    LOGO = 2
    MAIN = 3


class NativeDataAssetType(IntEnum):
    """Native 1.2 Data Asset Types (`NativeData.type`)."""

    SPONSORED = 1
    DESC = 2
    RATING = 3
    LIKES = 4
    DOWNLOADS = 5
    PRICE = 6
    SALEPRICE = 7
    PHONE = 8
    ADDRESS = 9
    DESC2 = 10
    DISPLAYURL = 11
    CTATEXT = 12


class EventType(IntEnum):
    """Native 1.2 Event Types (`eventtrackers[].event`)."""

    IMPRESSION = 1
    VIEWABLE_MRC50 = 2
    VIEWABLE_MRC100 = 3
    VIEWABLE_VIDEO50 = 4


class EventTrackingMethod(IntEnum):
    """Native 1.2 Event Tracking Methods (`eventtrackers[].methods`)."""

    IMG = 1
    JS = 2
