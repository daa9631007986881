"""One request's privacy signals (`ConsentContext`) and the rules that follow from them.

`ConsentContext.from_request` reads GDPR/TCF, COPPA, US Privacy, GPP (TCF EU, US National,
US states), GPC and LMT/DNT from an OpenRTB 2.6 request once. `redaction_for(consent,
vendor_id)` is a pure function saying what one demand partner (by TCF vendor id, or None)
may receive: a `Redaction` listing what to strip or coarsen, or to block the call. The
rules are written out in docs/privacy.md; an unreadable or missing signal never grants more
than a readable "no consent" or "opted out" one.

>>> consent = ConsentContext(gdpr_applies=True)  # GDPR applies, no TC string
>>> redaction = redaction_for(consent, vendor_id=42)
>>> redaction.block, redaction.reasons
(True, ('gdpr_no_valid_tc_string',))
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from openbid.cache import deep_sizeof, memoize
from openbid.privacy import gpp, tcf, usprivacy
from openbid.privacy.errors import InvalidGPPString, InvalidTCString, InvalidUSPrivacyString

logger = logging.getLogger(__name__)

PURPOSE_STORAGE = 1
"""TCF purpose 1: store and/or access information on a device (needed for user/device ids)."""
PURPOSE_BASIC_ADS = 2
"""TCF purpose 2: use limited data to select advertising (needed to receive the request)."""
PURPOSE_PERSONALISED_ADS = 4
"""TCF purpose 4: use profiles to select personalised advertising (needed for user data and
eids). Under TCF 2.2 purposes 3-6 rest on consent only."""
SPECIAL_FEATURE_PRECISE_GEO = 1
"""TCF special feature 1: use precise geolocation data (the opt-in and vendor consent)."""
US_GPP_SECTIONS = frozenset(range(gpp.SECTION_US_NATIONAL, 28))
"""GPP sections of US privacy laws (national, then the states): one that `gpp_sid` says
applies but that we do not read (absent from the string, or a state we do not decode) is
read as an opt-out."""
UNREADABLE_US_SIGNALS = frozenset({"gpp", "us_privacy", "gpp_us_section"})
"""`ConsentContext.unreadable` names that are US signals (`gpp_us_section`: an applicable US
GPP section we could not read)."""


@dataclass(frozen=True, slots=True)
class Redaction:
    """What to do to a request before one demand partner sees it. `reasons` explain it
    (for logs and events) and take no part in equality."""

    block: bool = False
    strip_user_ids: bool = False
    """user.id, user.buyeruid, user.eids and the `eids` members of other ext objects (the
    request's and its prebid's, source, imp, site, app, dooh, their publishers', device's:
    docs/privacy.md lists them); user.ext keeps only consent signals and unknown user fields
    go (this and strip_user_data)."""
    strip_device_ids: bool = False
    """device.ifa and the hashed device ids (didsha1, didmd5, dpidsha1, dpidmd5, macsha1,
    macmd5); device.ext keeps only atts and ifa_type, unknown device fields go."""
    strip_user_data: bool = False
    """user.yob, gender, keywords, kwarray, customdata, data, eids (and user.ext data; the
    `eids` members of other ext objects too, as for strip_user_ids)."""
    strip_fine_geo: bool = False
    """device.geo keeps only country, region and time zone; user.geo is removed (COPPA)."""
    round_geo: bool = False
    """device.geo and user.geo lat/lon to 2 decimals (about 1 km); their ext and unknown
    fields dropped."""
    truncate_ip: bool = False
    """device.ip to its /24, device.ipv6 to its /56 (an embedded IPv4 address to its /24)."""
    reasons: tuple[str, ...] = field(default=(), compare=False)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The exchange keys each request's encoded body by its redaction, for every partner
        # of every auction: the flags' hash is computed once, here, not per lookup.
        flags = (
            self.block,
            self.strip_user_ids,
            self.strip_device_ids,
            self.strip_user_data,
            self.strip_fine_geo,
            self.round_geo,
            self.truncate_ip,
        )
        object.__setattr__(self, "_hash", hash(flags))

    def __hash__(self) -> int:
        return self._hash

    @property
    def is_noop(self) -> bool:
        """Nothing to strip, round or block."""
        return not (
            self.block
            or self.strip_user_ids
            or self.strip_device_ids
            or self.strip_user_data
            or self.strip_fine_geo
            or self.round_geo
            or self.truncate_ip
        )

    def __or__(self, other: Redaction) -> Redaction:
        """Both redactions at once (the stricter of each flag)."""
        if other.is_noop:
            return self
        if self.is_noop:
            return other
        return Redaction(
            block=self.block or other.block,
            strip_user_ids=self.strip_user_ids or other.strip_user_ids,
            strip_device_ids=self.strip_device_ids or other.strip_device_ids,
            strip_user_data=self.strip_user_data or other.strip_user_data,
            strip_fine_geo=self.strip_fine_geo or other.strip_fine_geo,
            round_geo=self.round_geo or other.round_geo,
            truncate_ip=self.truncate_ip or other.truncate_ip,
            reasons=self.reasons + other.reasons,
        )


NO_REDACTION = Redaction()


class _RegsExt(msgspec.Struct):
    """OpenRTB 2.5-style signals some publishers still send in regs.ext (and GPC, which
    has no 2.6 field)."""

    gdpr: Any = None
    us_privacy: Any = None
    gpc: Any = None


class _UserExt(msgspec.Struct):
    consent: Any = None


_regs_ext_decoder = msgspec.json.Decoder(_RegsExt)
_user_ext_decoder = msgspec.json.Decoder(_UserExt)


@dataclass(frozen=True, slots=True)
class ConsentContext:
    """The privacy signals of one request, decoded. `unreadable` names the signals that were
    present but malformed, or said to apply but missing (`gpp_us_section`); each is then
    read as the strictest case."""

    gdpr_applies: bool = False
    tc: tcf.TCString | None = None
    """The TC string in force (user.consent, else GPP's TCF EU section), when readable."""
    coppa: bool = False
    us_privacy: usprivacy.USPrivacy | None = None
    usnat: gpp.UsNat | None = None
    us_states: tuple[gpp.UsState, ...] = ()
    """The applicable US state sections of the GPP string we decode (8-12)."""
    gpc: bool = False
    lmt: bool = False
    dnt: bool = False
    unreadable: tuple[str, ...] = ()
    baseline: Redaction = field(default=NO_REDACTION, init=False, compare=False)
    """The part of every redaction that does not depend on the vendor."""
    _by_vendor: dict[int | None, Redaction] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """`redaction_for` results memoised by vendor id (the context itself never changes)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", _baseline(self))

    @property
    def us_sections(self) -> tuple[gpp.UsReadings, ...]:
        """The applicable US GPP sections we read: US National, then the states."""
        if self.usnat is None:
            return self.us_states
        return (self.usnat, *self.us_states)

    @property
    def us_opt_out(self) -> bool:
        """Personal data may not be sold or shared in the US: a US Privacy opt-out of sale, GPC,
        or a US GPP section that restricts it (opt-out, missing notice, known child, ...)."""
        return (
            self.gpc
            or (self.us_privacy is not None and self.us_privacy.opted_out_of_sale is True)
            or any(section.restricts_personal_data for section in self.us_sections)
        )

    @property
    def us_known_child(self) -> bool:
        """A US GPP section says the user is a known child."""
        return any(section.known_child for section in self.us_sections)

    @classmethod
    def from_request(cls, request: Any, gpc_header: str | None = None) -> ConsentContext:
        """Reads the signals of an OpenRTB 2.6 BidRequest; `gpc_header` is the value of the
        HTTP `Sec-GPC` header when the request came with one. Never raises on bad signals.

        The same signals give the same (shared, immutable) context: contexts are cached by
        their raw signal values, so a request costs a few attribute reads and a lookup."""
        regs = request.regs
        user = request.user
        device = request.device
        gdpr = coppa = us_privacy_text = gpp_text = gpp_sid = gpc_value = None
        if regs is not None:
            gdpr, coppa, us_privacy_text = regs.gdpr, regs.coppa, regs.us_privacy
            gpp_text, gpp_sid = regs.gpp, regs.gpp_sid
            if regs.ext:
                ext = _decode_ext(_regs_ext_decoder, regs.ext)
                if ext is not None:
                    gpc_value = ext.gpc
                    if gdpr is None and ext.gdpr is not None:
                        # 2.5-style "1" strings count; anything else unreadable reads as 1.
                        flag = ext.gdpr if isinstance(ext.gdpr, (int, str)) else None
                        gdpr = {0: 0, 1: 1, "0": 0, "1": 1}.get(flag, 1)
                    if not us_privacy_text and isinstance(ext.us_privacy, str):
                        us_privacy_text = ext.us_privacy
        consent_text = None
        if user is not None:
            consent_text = user.consent
            if consent_text is None and user.ext:
                ext = _decode_ext(_user_ext_decoder, user.ext)
                if ext is not None and isinstance(ext.consent, str):
                    consent_text = ext.consent
        gpc = gpc_value in (1, "1", True) or (gpc_header is not None and gpc_header.strip() == "1")
        return _context_from_signals(
            gdpr if gdpr in (0, 1) else None,
            coppa == 1,
            us_privacy_text or None,
            gpp_text or None,
            tuple(gpp_sid) if gpp_sid else None,
            consent_text or None,
            gpc,
            device is not None and device.lmt == 1,
            device is not None and device.dnt == 1,
        )


CONTEXT_CACHE_MAX_ENTRIES = 8192
CONTEXT_CACHE_MAX_BYTES = 16 << 20
"""A context with a realistic TC string holds ~3.8 KB with its key (the TC string decoded
in it included, though `tcf.decode_cached` may share it): ~4,400 fit; contexts of US
signals only are ~0.6 KB, and the entry bound binds."""
VENDOR_MEMO_ALLOWANCE_BYTES = 1024
"""What `redaction_for` adds to a context where GDPR applies, after it is cached: ~70
bytes a partner (measured), so 1 KiB covers 16 partners, counted up front."""


def _context_bytes(signals: tuple, context: ConsentContext) -> int:
    memo = VENDOR_MEMO_ALLOWANCE_BYTES if context.gdpr_applies else 0
    return deep_sizeof(signals, context) + memo


@memoize(CONTEXT_CACHE_MAX_ENTRIES, CONTEXT_CACHE_MAX_BYTES, _context_bytes)
def _context_from_signals(
    gdpr: int | None,
    coppa: bool,
    us_privacy_text: str | None,
    gpp_text: str | None,
    gpp_sid: tuple[int, ...] | None,
    consent_text: str | None,
    gpc: bool,
    lmt: bool,
    dnt: bool,
) -> ConsentContext:
    unreadable: list[str] = []
    tc = None
    us_privacy = None
    usnat = None
    us_states: tuple[gpp.UsState, ...] = ()
    if gpp_text:
        decoded = gpp.decode_cached(gpp_text)
        if isinstance(decoded, InvalidGPPString):
            unreadable.append("gpp")
            logger.debug("unreadable GPP string", extra={"error": str(decoded)})
        else:
            applicable = set(gpp_sid) if gpp_sid else set(decoded.section_ids)
            if gpp.SECTION_US_NATIONAL in applicable:
                usnat = decoded.usnat
            us_states = tuple(s for s in decoded.us_states if s.section_id in applicable)
            if gpp.SECTION_TCF_EU_V2 in applicable and not consent_text:
                tc = decoded.tcf_eu
            if gpp.SECTION_US_PRIVACY in applicable and not us_privacy_text:
                us_privacy = decoded.us_privacy
            read = {section.section_id for section in us_states}
            if usnat is not None:
                read.add(gpp.SECTION_US_NATIONAL)
            if (applicable & US_GPP_SECTIONS) - read:
                unreadable.append("gpp_us_section")
    elif gpp_sid and US_GPP_SECTIONS.intersection(gpp_sid):
        unreadable.append("gpp_us_section")  # a US section applies, but there is no string
    if consent_text:
        decoded_tc = tcf.decode_cached(consent_text)
        if isinstance(decoded_tc, InvalidTCString):
            unreadable.append("tcf")
            logger.debug("unreadable TC string", extra={"error": str(decoded_tc)})
        else:
            tc = decoded_tc
    if us_privacy_text:
        try:
            us_privacy = usprivacy.parse(us_privacy_text)
        except InvalidUSPrivacyString as error:
            unreadable.append("us_privacy")
            logger.debug("unreadable US Privacy string", extra={"error": str(error)})
    if gdpr is None:
        # No explicit flag: a TC string, or GPP saying its TCF section applies, means a
        # CMP ran under GDPR.
        # (a TCF EU section in a GPP string with no gpp_sid counts as applicable: it applies).
        gdpr_applies = (
            bool(consent_text)
            or bool(gpp_sid and gpp.SECTION_TCF_EU_V2 in gpp_sid)
            or (not gpp_sid and tc is not None)
        )
    else:
        gdpr_applies = gdpr == 1
    return ConsentContext(
        gdpr_applies=gdpr_applies,
        tc=tc,
        coppa=coppa,
        us_privacy=us_privacy,
        usnat=usnat,
        us_states=us_states,
        gpc=gpc or any(section.gpc is True for section in (usnat, *us_states) if section),
        lmt=lmt,
        dnt=dnt,
        unreadable=tuple(unreadable),
    )


def _decode_ext(decoder: msgspec.json.Decoder, raw: Any) -> Any:
    try:
        return decoder.decode(raw)
    except (msgspec.DecodeError, TypeError):
        return None


_COPPA = Redaction(
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    strip_fine_geo=True,
    round_geo=True,
    truncate_ip=True,
    reasons=("coppa",),
)


_US_KNOWN_CHILD = dataclasses.replace(_COPPA, reasons=("us_known_child",))
"""A known child in a US GPP section: as COPPA."""
_US_OPT_OUT = Redaction(
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    round_geo=True,
    truncate_ip=True,
    reasons=("us_opt_out",),
)
"""Prebid's CCPA scrubbing (ids, IP, geo), and user data and eids: they are what is sold or
shared."""
_UNREADABLE_US_SIGNAL = Redaction(
    strip_user_ids=True,
    strip_device_ids=True,
    strip_user_data=True,
    round_geo=True,
    truncate_ip=True,
    reasons=("unreadable_us_signal",),
)
"""We cannot prove there was no opt-out: as one."""
_US_NO_PRECISE_GEO = Redaction(round_geo=True, truncate_ip=True, reasons=("us_no_precise_geo",))
_LIMITED_TRACKING = Redaction(
    strip_user_ids=True, strip_device_ids=True, round_geo=True, truncate_ip=True, reasons=("lmt",)
)
"""device.lmt: Prebid Server's LMT scrubbing (ids of device and user, IP and geo coarsened)."""
_DO_NOT_TRACK = Redaction(
    strip_user_ids=True, strip_device_ids=True, round_geo=True, truncate_ip=True, reasons=("dnt",)
)
"""device.dnt: read as LMT. Prebid ignores DNT as obsolete, but it is the user's own request
not to be tracked, and honouring it costs a little fill at most."""


def _baseline(consent: ConsentContext) -> Redaction:
    """The vendor-independent rules: COPPA, US opt-outs, LMT/DNT, unreadable US signals."""
    result = NO_REDACTION
    if consent.coppa:
        result |= _COPPA
    if consent.us_known_child:
        result |= _US_KNOWN_CHILD
    if consent.us_opt_out:
        result |= _US_OPT_OUT
    if not UNREADABLE_US_SIGNALS.isdisjoint(consent.unreadable):
        result |= _UNREADABLE_US_SIGNAL
    if any(section.precise_geo_refused for section in consent.us_sections):
        result |= _US_NO_PRECISE_GEO
    if consent.lmt:
        result |= _LIMITED_TRACKING
    elif consent.dnt:
        result |= _DO_NOT_TRACK
    return result


def _blocked(reason: str) -> Redaction:
    """The call is not made; every other flag is set too, so that a block is the strictest
    redaction there is (redactions combine flag by flag)."""
    return Redaction(
        block=True,
        strip_user_ids=True,
        strip_device_ids=True,
        strip_user_data=True,
        strip_fine_geo=True,
        round_geo=True,
        truncate_ip=True,
        reasons=(reason,),
    )


_GDPR_BLOCK_NO_TC_STRING = _blocked("gdpr_no_valid_tc_string")
_GDPR_BLOCK_NO_VENDOR_ID = _blocked("gdpr_no_vendor_id")
_GDPR_BLOCK_BASIC_ADS = _blocked("gdpr_no_basic_ads_basis")
_GDPR_NO_STORAGE = Redaction(
    strip_user_ids=True, strip_device_ids=True, reasons=("gdpr_no_storage_consent",)
)
_GDPR_NO_PERSONALISED_ADS = Redaction(
    strip_user_data=True, reasons=("gdpr_no_personalised_ads_consent",)
)
_GDPR_NO_PRECISE_GEO = Redaction(round_geo=True, truncate_ip=True, reasons=("gdpr_no_precise_geo",))


def redaction_for(consent: ConsentContext, vendor_id: int | None = None) -> Redaction:
    """What the demand partner with TCF vendor id `vendor_id` (None: it has none) may receive."""
    if not consent.gdpr_applies:
        return consent.baseline
    memo = consent._by_vendor
    redaction = memo.get(vendor_id)
    if redaction is None:
        redaction = consent.baseline | gdpr_redaction(consent.tc, vendor_id)
        memo[vendor_id] = redaction
    return redaction


def gdpr_redaction(tc: tcf.TCString | None, vendor_id: int | None) -> Redaction:
    """The GDPR rules alone, for a request where GDPR applies (see docs/privacy.md)."""
    if tc is None:
        # Missing or unreadable: no more than a readable string without purpose 2 allows.
        return _GDPR_BLOCK_NO_TC_STRING
    if vendor_id is None:
        return _GDPR_BLOCK_NO_VENDOR_ID
    if not purpose_allowed(tc, vendor_id, PURPOSE_BASIC_ADS, legitimate_interest_ok=True):
        return _GDPR_BLOCK_BASIC_ADS
    result = NO_REDACTION
    if not purpose_allowed(tc, vendor_id, PURPOSE_STORAGE, legitimate_interest_ok=False):
        result = _GDPR_NO_STORAGE
    if not purpose_allowed(tc, vendor_id, PURPOSE_PERSONALISED_ADS, legitimate_interest_ok=False):
        result |= _GDPR_NO_PERSONALISED_ADS
    # Special features have no legitimate interest: the opt-in and the vendor's consent.
    if not (
        SPECIAL_FEATURE_PRECISE_GEO in tc.special_feature_opt_ins
        and vendor_id in tc.vendor_consents
    ):
        result |= _GDPR_NO_PRECISE_GEO
    return result


def purpose_allowed(
    tc: tcf.TCString, vendor_id: int, purpose_id: int, *, legitimate_interest_ok: bool
) -> bool:
    """Whether `vendor_id` has a legal basis for `purpose_id`: the user's consent to the
    purpose and to the vendor, or (where allowed) legitimate interest for both, as narrowed
    by the publisher's restriction for that vendor and purpose.

    >>> tc = tcf.TCString(purpose_consents=frozenset({1}), vendor_consents=frozenset({7}))
    >>> purpose_allowed(tc, 7, 1, legitimate_interest_ok=False)
    True
    >>> purpose_allowed(tc, 8, 1, legitimate_interest_ok=False)
    False
    """
    restriction = tc.restriction(vendor_id, purpose_id)
    if restriction is tcf.RestrictionType.NOT_ALLOWED:
        return False
    by_consent = purpose_id in tc.purpose_consents and vendor_id in tc.vendor_consents
    by_interest = (
        legitimate_interest_ok
        and purpose_id in tc.purpose_legitimate_interests
        and vendor_id in tc.vendor_legitimate_interests
    )
    if restriction is tcf.RestrictionType.REQUIRE_CONSENT:
        return by_consent
    if restriction is tcf.RestrictionType.REQUIRE_LEGITIMATE_INTEREST:
        return by_interest
    return by_consent or by_interest
