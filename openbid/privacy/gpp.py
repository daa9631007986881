"""IAB Global Privacy Platform (GPP) strings (`regs.gpp`): the header and the sections we enforce.

A GPP string is `~`-separated: a header (type 3, version 1, the section ids as
Fibonacci-coded ranges), then one encoded section per id, in the header's order. We decode
section 2 (TCF EU v2, a TC string: `openbid.privacy.tcf`), section 6 (US Privacy) and
section 7 (US National, `usnat` v1 and v2, with its optional GPC subsection); the other
sections are kept as raw text. `decode` raises `InvalidGPPString` and nothing else.

>>> gpp = decode(encode({7: encode_usnat(UsNat(sale_opt_out=OPTED_OUT))}))
>>> gpp.section_ids, gpp.usnat.sale_opt_out == OPTED_OUT
((7,), True)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from openbid.privacy import tcf, usprivacy
from openbid.privacy.bits import BitReader, BitWriter, base64url_to_bits
from openbid.privacy.errors import InvalidGPPString, InvalidTCString, InvalidUSPrivacyString

SECTION_TCF_EU_V2 = 2
SECTION_US_PRIVACY = 6
SECTION_US_NATIONAL = 7

MAX_GPP_STRING_CHARS = 65_536
"""Longer strings are refused before any decoding work."""

# The two-bit values of US National fields: 0 not applicable, 1 yes, 2 no. For an opt-out
# field "yes" means the user opted out (for a notice field, that the notice was given).
NOT_APPLICABLE = 0
OPTED_OUT = 1
DID_NOT_OPT_OUT = 2

_USNAT_LIST_LENGTHS = {1: (12, 2), 2: (16, 3)}
"""usnat version -> (sensitive data processing categories, known child consents)."""

_GPC_SUBSECTION_TYPE = 1


@dataclass(frozen=True, slots=True)
class UsNat:
    """The US National section (GPP section 7), core fields and the GPC subsection.

    Two-bit fields hold 0 (not applicable), 1 (yes: opted out / notice given / consent
    refused) or 2 (no). `gpc` is None when the GPC subsection is absent.
    """

    version: int = 1
    sharing_notice: int = NOT_APPLICABLE
    sale_opt_out_notice: int = NOT_APPLICABLE
    sharing_opt_out_notice: int = NOT_APPLICABLE
    targeted_advertising_opt_out_notice: int = NOT_APPLICABLE
    sensitive_data_processing_opt_out_notice: int = NOT_APPLICABLE
    sensitive_data_limit_use_notice: int = NOT_APPLICABLE
    sale_opt_out: int = NOT_APPLICABLE
    sharing_opt_out: int = NOT_APPLICABLE
    targeted_advertising_opt_out: int = NOT_APPLICABLE
    sensitive_data_processing: tuple[int, ...] = (0,) * 12
    known_child_sensitive_data_consents: tuple[int, ...] = (0, 0)
    personal_data_consents: int = NOT_APPLICABLE
    mspa_covered_transaction: int = 2
    mspa_opt_out_option_mode: int = NOT_APPLICABLE
    mspa_service_provider_mode: int = NOT_APPLICABLE
    gpc: bool | None = None

    @property
    def opted_out(self) -> bool:
        """The user opted out of sale, sharing or targeted advertising."""
        return OPTED_OUT in (
            self.sale_opt_out,
            self.sharing_opt_out,
            self.targeted_advertising_opt_out,
        )

    @property
    def known_child(self) -> bool:
        """A known child: the 13-16 consent was refused (1), or a consent for a younger
        child applies at all (any non-zero value after the first)."""
        first, *rest = self.known_child_sensitive_data_consents
        return first == 1 or any(value != NOT_APPLICABLE for value in rest)

    @property
    def restricts_personal_data(self) -> bool:
        """Personal data may not go to third parties: an opt-out, GPC, MSPA service
        provider mode, or a known child (Prebid's default reading of the MSPA)."""
        return (
            self.opted_out
            or self.gpc is True
            or self.mspa_service_provider_mode == 1
            or self.known_child
        )


@dataclass(frozen=True, slots=True)
class GPPString:
    """A decoded GPP string: the section ids in header order, each section's raw text, and
    the sections we decode (None when absent)."""

    version: int
    section_ids: tuple[int, ...]
    sections: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    tcf_eu: tcf.TCString | None = None
    us_privacy: usprivacy.USPrivacy | None = None
    usnat: UsNat | None = None


def decode(gpp_string: str) -> GPPString:
    """Decodes a GPP string's header and the sections we enforce; raises InvalidGPPString."""
    if not isinstance(gpp_string, str):
        raise InvalidGPPString(f"a GPP string must be text, not {type(gpp_string).__name__}")
    if not gpp_string:
        raise InvalidGPPString("the GPP string is empty")
    if len(gpp_string) > MAX_GPP_STRING_CHARS:
        raise InvalidGPPString(
            f"the GPP string has {len(gpp_string)} characters, more than {MAX_GPP_STRING_CHARS}"
        )
    header, *texts = gpp_string.split("~")
    version, section_ids = _decode_header(header)
    if len(texts) != len(section_ids):
        raise InvalidGPPString(
            f"the GPP header lists {len(section_ids)} sections {list(section_ids)} "
            f"but {len(texts)} follow it"
        )
    sections = dict(zip(section_ids, texts, strict=True))
    decoded: dict[str, object] = {}
    for section_id, text in sections.items():
        if not text:
            raise InvalidGPPString(f"GPP section {section_id} is empty")
        if section_id == SECTION_TCF_EU_V2:
            try:
                decoded["tcf_eu"] = tcf.decode(text)
            except InvalidTCString as error:
                raise InvalidGPPString(f"GPP section 2 (tcfeuv2): {error}") from error
        elif section_id == SECTION_US_PRIVACY:
            try:
                decoded["us_privacy"] = usprivacy.parse(text)
            except InvalidUSPrivacyString as error:
                raise InvalidGPPString(f"GPP section 6 (uspv1): {error}") from error
        elif section_id == SECTION_US_NATIONAL:
            decoded["usnat"] = decode_usnat(text)
    return GPPString(version, section_ids, MappingProxyType(sections), **decoded)


@functools.lru_cache(maxsize=4096)
def decode_cached(gpp_string: str) -> GPPString | InvalidGPPString:
    """`decode` memoised by string, returning (not raising) the error of an invalid one."""
    try:
        return decode(gpp_string)
    except InvalidGPPString as error:
        # Drop the tracebacks: a cached error must not keep the decoder's frames alive.
        if error.__cause__ is not None:
            error.__cause__.with_traceback(None)
        return error.with_traceback(None)


def _decode_header(text: str) -> tuple[int, tuple[int, ...]]:
    what = "GPP header"
    reader = BitReader(base64url_to_bits(text, InvalidGPPString, what), InvalidGPPString, what)
    header_type = reader.int(6, "Type")
    if header_type != 3:
        raise InvalidGPPString(f"the GPP header has type {header_type}: a GPP header is type 3")
    version = reader.int(6, "Version")
    if version != 1:
        raise InvalidGPPString(f"GPP version {version} is not supported: only version 1")
    section_ids: list[int] = []
    last = 0
    for _ in range(reader.int(12, "SectionIds NumEntries")):
        # Each id is an offset from the previous one, so ids come out strictly ascending.
        if reader.bool("SectionIds IsARange"):
            start = last + reader.fibonacci("SectionIds StartId")
            last = start + reader.fibonacci("SectionIds EndId")
            if last - start > 64:
                raise InvalidGPPString(f"GPP section id range {start}-{last} is implausibly long")
            section_ids.extend(range(start, last + 1))
        else:
            last += reader.fibonacci("SectionIds Id")
            section_ids.append(last)
    return version, tuple(section_ids)


def decode_usnat(text: str) -> UsNat:
    """Decodes a US National section (core segment, then optional '.'-separated GPC subsection)."""
    core, *subsections = text.split(".")
    what = "GPP usnat core segment"
    reader = BitReader(base64url_to_bits(core, InvalidGPPString, what), InvalidGPPString, what)
    version = reader.int(6, "Version")
    if version not in _USNAT_LIST_LENGTHS:
        raise InvalidGPPString(f"usnat version {version} is not supported: only 1 and 2")
    sensitive_count, child_count = _USNAT_LIST_LENGTHS[version]
    names = (
        "sharing_notice",
        "sale_opt_out_notice",
        "sharing_opt_out_notice",
        "targeted_advertising_opt_out_notice",
        "sensitive_data_processing_opt_out_notice",
        "sensitive_data_limit_use_notice",
        "sale_opt_out",
        "sharing_opt_out",
        "targeted_advertising_opt_out",
    )
    fields: dict[str, object] = {name: _two_bits(reader, name) for name in names}
    fields["sensitive_data_processing"] = tuple(
        _two_bits(reader, "sensitive_data_processing") for _ in range(sensitive_count)
    )
    fields["known_child_sensitive_data_consents"] = tuple(
        _two_bits(reader, "known_child_sensitive_data_consents") for _ in range(child_count)
    )
    for name in (
        "personal_data_consents",
        "mspa_covered_transaction",
        "mspa_opt_out_option_mode",
        "mspa_service_provider_mode",
    ):
        fields[name] = _two_bits(reader, name)
    gpc = None
    for subsection in subsections:
        what = "GPP usnat subsection"
        sub = BitReader(
            base64url_to_bits(subsection, InvalidGPPString, what), InvalidGPPString, what
        )
        subsection_type = sub.int(2, "SubsectionType")
        if subsection_type != _GPC_SUBSECTION_TYPE:
            raise InvalidGPPString(f"usnat subsection type {subsection_type} is unknown (1 is GPC)")
        gpc = sub.bool("Gpc")
    return UsNat(version=version, gpc=gpc, **fields)  # type: ignore[arg-type]


def _two_bits(reader: BitReader, name: str) -> int:
    value = reader.int(2, name)
    if value == 3:
        raise InvalidGPPString(f"usnat {name} is 3: two-bit fields hold 0, 1 or 2")
    return value


def encode_usnat(section: UsNat) -> str:
    """Encodes a US National section (with the GPC subsection when `gpc` is not None)."""
    if section.version not in _USNAT_LIST_LENGTHS:
        raise ValueError(f"usnat version {section.version} is not supported: only 1 and 2")
    sensitive_count, child_count = _USNAT_LIST_LENGTHS[section.version]
    if len(section.sensitive_data_processing) != sensitive_count:
        raise ValueError(
            f"usnat v{section.version} has {sensitive_count} sensitive data categories"
        )
    if len(section.known_child_sensitive_data_consents) != child_count:
        raise ValueError(f"usnat v{section.version} has {child_count} known child consents")
    writer = BitWriter()
    writer.int(section.version, 6, "version")
    for name in (
        "sharing_notice",
        "sale_opt_out_notice",
        "sharing_opt_out_notice",
        "targeted_advertising_opt_out_notice",
        "sensitive_data_processing_opt_out_notice",
        "sensitive_data_limit_use_notice",
        "sale_opt_out",
        "sharing_opt_out",
        "targeted_advertising_opt_out",
    ):
        writer.int(getattr(section, name), 2, name)
    for value in section.sensitive_data_processing:
        writer.int(value, 2, "sensitive_data_processing")
    for value in section.known_child_sensitive_data_consents:
        writer.int(value, 2, "known_child_sensitive_data_consents")
    for name in (
        "personal_data_consents",
        "mspa_covered_transaction",
        "mspa_opt_out_option_mode",
        "mspa_service_provider_mode",
    ):
        writer.int(getattr(section, name), 2, name)
    text = writer.base64url()
    if section.gpc is not None:
        sub = BitWriter()
        sub.int(_GPC_SUBSECTION_TYPE, 2, "subsection type")
        sub.bool(section.gpc)
        text += "." + sub.base64url()
    return text


def encode(sections: Mapping[int, str]) -> str:
    """A GPP string from encoded sections by id (written in ascending id order).

    >>> encode({2: "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"})
    'DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA'
    """
    ids = sorted(sections)
    if any(section_id < 1 for section_id in ids):
        raise ValueError(f"GPP section ids are positive, got {ids}")
    spans: list[tuple[int, int]] = []
    for section_id in ids:
        if spans and section_id == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], section_id)
        else:
            spans.append((section_id, section_id))
    writer = BitWriter()
    writer.int(3, 6, "type")
    writer.int(1, 6, "version")
    writer.int(len(spans), 12, "section count")
    last = 0
    for start, end in spans:
        writer.bool(start != end)
        writer.fibonacci(start - last, "section id")
        if start != end:
            writer.fibonacci(end - start, "section id")
        last = end
    return "~".join([writer.base64url(), *(sections[section_id] for section_id in ids)])
