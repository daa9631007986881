"""IAB Global Privacy Platform (GPP) strings (`regs.gpp`): the header and the sections we enforce.

A GPP string is `~`-separated: a header (type 3, version 1, the section ids as
Fibonacci-coded ranges), then one encoded section per id, in the header's order. We decode
section 2 (TCF EU v2, a TC string: `openbid.privacy.tcf`), section 6 (US Privacy),
section 7 (US National, `usnat` v1 and v2, with its optional GPC subsection) and the first
US state sections, 8-12 (California, Virginia, Colorado, Utah, Connecticut: `UsState`); the
other sections are kept as raw text (the later US state sections, 13-27, are listed in
`US_STATE_SECTIONS_UNDECODED`). `decode` raises `InvalidGPPString` and nothing else: for
a malformed header, an empty section, or a TCF EU or US Privacy section that does not
decode. A US National or state section that does not decode is only that section
unreadable (`GPPString.unreadable`): the others still stand.

>>> gpp = decode(encode({7: encode_usnat(UsNat(sale_opt_out=OPTED_OUT))}))
>>> gpp.section_ids, gpp.usnat.sale_opt_out == OPTED_OUT
((7,), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from openbid.cache import deep_sizeof, memoize, without_traceback
from openbid.privacy import tcf, usprivacy
from openbid.privacy.bits import BitReader, BitWriter, base64url_to_bits
from openbid.privacy.errors import InvalidGPPString, InvalidTCString, InvalidUSPrivacyString

SECTION_TCF_EU_V2 = 2
SECTION_US_PRIVACY = 6
SECTION_US_NATIONAL = 7
SECTION_US_CALIFORNIA = 8
SECTION_US_VIRGINIA = 9
SECTION_US_COLORADO = 10
SECTION_US_UTAH = 11
SECTION_US_CONNECTICUT = 12
US_STATE_SECTIONS_UNDECODED = frozenset(range(13, 28))
"""The US state sections registered after Connecticut (13-27), kept raw: one that applies
reads as an opt-out (we cannot prove there was none)."""

MAX_GPP_STRING_CHARS = 65_536
"""Longer strings are refused before any decoding work."""

# The two-bit values of US fields: 0 not applicable, 1 yes, 2 no. For an opt-out field
# "yes" means the user opted out; for a notice field, that the notice was given; for a
# consent field (sensitive data, known child) 1 means no consent and 2 consent.
NOT_APPLICABLE = 0
OPTED_OUT = 1
DID_NOT_OPT_OUT = 2
NOTICE_NOT_PROVIDED = 2
NO_CONSENT = 1

_USNAT_LIST_LENGTHS = {1: (12, 2), 2: (16, 3)}
"""usnat version -> (sensitive data processing categories, known child consents)."""

_GPC_SUBSECTION_TYPE = 1


class UsReadings:
    """What the rules read from a US section, national or state: Prebid's default reading of
    the MSPA strings (docs.prebid.org/features/mspa-usnat.html). A subclass has the fields
    named here (a state without one leaves it not applicable) and says where its under-13
    consents and its precise geolocation category sit."""

    __slots__ = ()
    _under_13_consents: tuple[int, ...] = ()
    """Indexes in KnownChildSensitiveDataConsents about children under 13."""
    _precise_geo: int | None = None
    """Index in SensitiveDataProcessing of precise geolocation (None: no such category)."""

    sharing_notice: int
    sale_opt_out_notice: int
    sharing_opt_out_notice: int
    targeted_advertising_opt_out_notice: int
    sensitive_data_processing_opt_out_notice: int
    sensitive_data_limit_use_notice: int
    sale_opt_out: int
    sharing_opt_out: int
    targeted_advertising_opt_out: int
    sensitive_data_processing: tuple[int, ...]
    known_child_sensitive_data_consents: tuple[int, ...]
    mspa_service_provider_mode: int
    gpc: bool | None

    @property
    def opted_out(self) -> bool:
        """The user opted out of sale, sharing or targeted advertising."""
        return OPTED_OUT in (
            self.sale_opt_out,
            self.sharing_opt_out,
            self.targeted_advertising_opt_out,
        )

    @property
    def notice_missing(self) -> bool:
        """A notice the user needed to opt out (or about sharing) was not given: read as an
        opt-out, since no choice was offered."""
        return NOTICE_NOT_PROVIDED in (
            self.sharing_notice,
            self.sale_opt_out_notice,
            self.sharing_opt_out_notice,
            self.targeted_advertising_opt_out_notice,
        )

    @property
    def known_child(self) -> bool:
        """A known child: a consent about a minor's data refused, or a consent about a child
        under 13 applicable at all (such a child cannot consent)."""
        consents = self.known_child_sensitive_data_consents
        return NO_CONSENT in consents or any(
            consents[index] != NOT_APPLICABLE
            for index in self._under_13_consents
            if index < len(consents)
        )

    @property
    def precise_geo_refused(self) -> bool:
        """No consent (or an opt-out) for precise geolocation, or no notice about sensitive
        data at all."""
        if NOTICE_NOT_PROVIDED in (
            self.sensitive_data_processing_opt_out_notice,
            self.sensitive_data_limit_use_notice,
        ):
            return True
        index = self._precise_geo
        return (
            index is not None
            and index < len(self.sensitive_data_processing)
            and self.sensitive_data_processing[index] == NO_CONSENT
        )

    @property
    def restricts_personal_data(self) -> bool:
        """Personal data may not go to third parties: an opt-out, a missing opt-out notice,
        GPC, MSPA service provider mode, or a known child."""
        return (
            self.opted_out
            or self.notice_missing
            or self.gpc is True
            or self.mspa_service_provider_mode == 1
            or self.known_child
        )


@dataclass(frozen=True, slots=True)
class UsNat(UsReadings):
    """The US National section (GPP section 7), core fields and the GPC subsection.

    Two-bit fields hold 0 (not applicable), 1 (yes: opted out / notice given; for consents:
    refused) or 2 (no; for consents: given). `gpc` is None when the GPC subsection is absent.
    """

    _under_13_consents = (1,)
    _precise_geo = 7

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


@dataclass(frozen=True, slots=True)
class _StateLayout:
    """How one US state section is laid out (IAB GPP US state technical specifications)."""

    name: str
    """The client-side API prefix."""
    fields: tuple[str, ...]
    """The two-bit core fields before SensitiveDataProcessing, in order."""
    sensitive_count: int
    child_count: int
    personal_data_consents: bool
    """A PersonalDataConsents field follows KnownChildSensitiveDataConsents (California)."""
    gpc: bool
    """A GPC subsection may follow the core segment."""
    precise_geo: int | None
    """Index of precise geolocation in SensitiveDataProcessing (Colorado has none)."""


_VA_FIELDS = (
    "sharing_notice",
    "sale_opt_out_notice",
    "targeted_advertising_opt_out_notice",
    "sale_opt_out",
    "targeted_advertising_opt_out",
)
_STATE_LAYOUTS = {
    SECTION_US_CALIFORNIA: _StateLayout(
        "usca",
        (
            "sale_opt_out_notice",
            "sharing_opt_out_notice",
            "sensitive_data_limit_use_notice",
            "sale_opt_out",
            "sharing_opt_out",
        ),
        sensitive_count=9,
        child_count=2,
        personal_data_consents=True,
        gpc=True,
        precise_geo=2,
    ),
    SECTION_US_VIRGINIA: _StateLayout(
        "usva",
        _VA_FIELDS,
        sensitive_count=8,
        child_count=1,
        personal_data_consents=False,
        gpc=False,
        precise_geo=7,
    ),
    SECTION_US_COLORADO: _StateLayout(
        "usco",
        _VA_FIELDS,
        sensitive_count=7,
        child_count=1,
        personal_data_consents=False,
        gpc=True,
        precise_geo=None,
    ),
    SECTION_US_UTAH: _StateLayout(
        "usut",
        (
            "sharing_notice",
            "sale_opt_out_notice",
            "targeted_advertising_opt_out_notice",
            "sensitive_data_processing_opt_out_notice",
            "sale_opt_out",
            "targeted_advertising_opt_out",
        ),
        sensitive_count=8,
        child_count=1,
        personal_data_consents=False,
        gpc=False,
        precise_geo=7,
    ),
    SECTION_US_CONNECTICUT: _StateLayout(
        "usct",
        _VA_FIELDS,
        sensitive_count=8,
        child_count=3,
        personal_data_consents=False,
        gpc=True,
        precise_geo=7,
    ),
}
_MSPA_FIELDS = (
    "mspa_covered_transaction",
    "mspa_opt_out_option_mode",
    "mspa_service_provider_mode",
)


@dataclass(frozen=True, slots=True)
class UsState(UsReadings):
    """A US state section (GPP sections 8-12), with the fields of the US National section
    that the state has; the others stay not applicable. Empty sensitive data and known child
    tuples are filled with zeros to the state's lengths.

    Any known child consent that applies at all marks a known child: the state sections do
    not tell a child under 13 from an older minor (Prebid Server reads them the same way).

    >>> decode_us_state(SECTION_US_VIRGINIA, "BVWSSVY").opted_out
    True
    """

    section_id: int
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
    sensitive_data_processing: tuple[int, ...] = ()
    known_child_sensitive_data_consents: tuple[int, ...] = ()
    personal_data_consents: int = NOT_APPLICABLE
    mspa_covered_transaction: int = 2
    mspa_opt_out_option_mode: int = NOT_APPLICABLE
    mspa_service_provider_mode: int = NOT_APPLICABLE
    gpc: bool | None = None

    def __post_init__(self) -> None:
        layout = _STATE_LAYOUTS.get(self.section_id)
        if layout is None:
            raise ValueError(f"GPP section {self.section_id} is not a US state section we decode")
        if not self.sensitive_data_processing:
            object.__setattr__(self, "sensitive_data_processing", (0,) * layout.sensitive_count)
        if not self.known_child_sensitive_data_consents:
            object.__setattr__(
                self, "known_child_sensitive_data_consents", (0,) * layout.child_count
            )

    @property
    def name(self) -> str:
        """The section's client-side API prefix (`usca`, `usva`, ...)."""
        return _STATE_LAYOUTS[self.section_id].name

    @property
    def _under_13_consents(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(range(len(self.known_child_sensitive_data_consents)))

    @property
    def _precise_geo(self) -> int | None:  # type: ignore[override]
        return _STATE_LAYOUTS[self.section_id].precise_geo


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
    us_states: tuple[UsState, ...] = ()
    """The US state sections we decode (8-12), in header order."""
    unreadable: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    """The US National and state sections (7-12) that did not decode: section id -> error.
    Each is left out of `usnat` / `us_states` (and the rules read it as unreadable, an
    opt-out, where it applies); the string's other sections still stand."""


def decode(gpp_string: str) -> GPPString:
    """Decodes a GPP string's header and the sections we enforce; raises InvalidGPPString
    (a US National or state section that does not decode goes to `unreadable` instead)."""
    if not isinstance(gpp_string, str):
        raise InvalidGPPString(f"a GPP string must be text, not {type(gpp_string).__name__}")
    if not gpp_string:
        raise InvalidGPPString("the GPP string is empty")
    if len(gpp_string) > MAX_GPP_STRING_CHARS:
        raise InvalidGPPString(
            f"the GPP string has {len(gpp_string)} characters, more than {MAX_GPP_STRING_CHARS}"
        )
    header, *texts = gpp_string.split("~")
    version, section_ids = _decode_header(header, len(texts))
    if len(texts) != len(section_ids):
        raise InvalidGPPString(
            f"the GPP header lists {len(section_ids)} sections {_first_ids(section_ids)} "
            f"but {len(texts)} follow it"
        )
    sections = dict(zip(section_ids, texts, strict=True))
    decoded: dict[str, object] = {}
    states: list[UsState] = []
    unreadable: dict[int, str] = {}
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
            try:
                decoded["usnat"] = decode_usnat(text)
            except InvalidGPPString as error:
                unreadable[section_id] = str(error)
        elif section_id in _STATE_LAYOUTS:
            try:
                states.append(decode_us_state(section_id, text))
            except InvalidGPPString as error:
                unreadable[section_id] = str(error)
    return GPPString(
        version,
        section_ids,
        MappingProxyType(sections),
        us_states=tuple(states),
        unreadable=MappingProxyType(unreadable),
        **decoded,
    )


DECODE_CACHE_MAX_ENTRIES = 4096
DECODE_CACHE_MAX_BYTES = 8 << 20
"""Bounded by bytes of strings and decodings too (`openbid.cache`), like `tcf`'s."""


@memoize(DECODE_CACHE_MAX_ENTRIES, DECODE_CACHE_MAX_BYTES, deep_sizeof)
def decode_cached(gpp_string: str) -> GPPString | InvalidGPPString:
    """`decode` memoised by string, returning (not raising) the error of an invalid one."""
    try:
        return decode(gpp_string)
    except InvalidGPPString as error:
        # A cached error must not keep the decoder's frames (and their locals) alive.
        return without_traceback(error)


MAX_GPP_SECTIONS = 64
"""More section ids than any GPP string could carry: a header listing more is hostile."""


def _first_ids(section_ids: list[int] | tuple[int, ...], shown: int = 5) -> str:
    """The first few section ids for an error message: the full list can be ~10^5 long."""
    head = ", ".join(map(str, section_ids[:shown]))
    return f"[{head}, ...]" if len(section_ids) > shown else f"[{head}]"


def _decode_header(text: str, section_count: int) -> tuple[int, tuple[int, ...]]:
    # The header may not list more ids than the '~' sections that follow (nor MAX_GPP_SECTIONS):
    # expanding ranges past that only burns CPU and memory on a string already known invalid.
    id_limit = min(section_count, MAX_GPP_SECTIONS)
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
            if len(section_ids) + last - start + 1 > id_limit:
                raise _too_many_ids([*section_ids, start], section_count)
            section_ids.extend(range(start, last + 1))
        else:
            last += reader.fibonacci("SectionIds Id")
            if len(section_ids) + 1 > id_limit:
                raise _too_many_ids([*section_ids, last], section_count)
            section_ids.append(last)
    return version, tuple(section_ids)


def _too_many_ids(section_ids: list[int], section_count: int) -> InvalidGPPString:
    return InvalidGPPString(
        f"the GPP header lists more sections {_first_ids(section_ids)} "
        f"than the {section_count} that follow it (at most {MAX_GPP_SECTIONS})"
    )


def decode_usnat(text: str) -> UsNat:
    """Decodes a US National section (core segment, then optional '.'-separated GPC subsection)."""
    core, *subsections = text.split(".")
    what = "GPP usnat core segment"
    bits = base64url_to_bits(core, InvalidGPPString, what)
    reader = BitReader(bits, InvalidGPPString, what)
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
    _check_core_length("usnat", version, reader.pos, bits)
    gpc = _decode_gpc_subsections(subsections, "usnat")
    return UsNat(version=version, gpc=gpc, **fields)  # type: ignore[arg-type]


def decode_us_state(section_id: int, text: str) -> UsState:
    """Decodes a US state section (8-12): core segment, then the GPC subsection where the
    state defines one."""
    layout = _STATE_LAYOUTS[section_id]
    name = layout.name
    core, *subsections = text.split(".")
    what = f"GPP {name} core segment"
    bits = base64url_to_bits(core, InvalidGPPString, what)
    reader = BitReader(bits, InvalidGPPString, what)
    version = reader.int(6, "Version")
    if version != 1:
        raise InvalidGPPString(f"{name} version {version} is not supported: only 1")
    fields: dict[str, object] = {key: _two_bits(reader, key, name) for key in layout.fields}
    fields["sensitive_data_processing"] = tuple(
        _two_bits(reader, "sensitive_data_processing", name) for _ in range(layout.sensitive_count)
    )
    fields["known_child_sensitive_data_consents"] = tuple(
        _two_bits(reader, "known_child_sensitive_data_consents", name)
        for _ in range(layout.child_count)
    )
    if layout.personal_data_consents:
        fields["personal_data_consents"] = _two_bits(reader, "personal_data_consents", name)
    for key in _MSPA_FIELDS:
        fields[key] = _two_bits(reader, key, name)
    _check_core_length(name, version, reader.pos, bits)
    if subsections and not layout.gpc:
        raise InvalidGPPString(f"{name} has no subsections, but {len(subsections)} follow")
    gpc = _decode_gpc_subsections(subsections, name)
    return UsState(section_id, version, gpc=gpc, **fields)  # type: ignore[arg-type]


def _check_core_length(name: str, version: int, used: int, bits: str) -> None:
    """A core segment holds its version's fields, then at most zero padding up to the next
    24-bit boundary: encoders pad to the next character (6 bits), to whole bytes then a
    character (the IAB's reference encoders, and `bits_to_base64url`), to 24-bit groups
    (the IAB's traditional base64 encoder), or add a zero character. A longer segment, or a
    non-zero bit past the fields, means the section is not the version it says (or not
    that section at all), and its fields would be read from the wrong bits."""
    total = len(bits)
    limit = used + -used % 24
    if total > limit:
        raise InvalidGPPString(
            f"GPP {name} v{version} core segment has {total} bits: its fields take {used}, "
            f"padded to at most {limit} bits"
        )
    if "1" in bits[used:]:
        raise InvalidGPPString(
            f"GPP {name} v{version} core segment has {total} bits: its fields take {used}, "
            f"and the {total - used} bits after them are not all zero"
        )


def _decode_gpc_subsections(subsections: list[str], name: str) -> bool | None:
    gpc = None
    for subsection in subsections:
        what = f"GPP {name} subsection"
        sub = BitReader(
            base64url_to_bits(subsection, InvalidGPPString, what), InvalidGPPString, what
        )
        subsection_type = sub.int(2, "SubsectionType")
        if subsection_type != _GPC_SUBSECTION_TYPE:
            raise InvalidGPPString(
                f"{name} subsection type {subsection_type} is unknown (1 is GPC)"
            )
        gpc = sub.bool("Gpc")
    return gpc


def _two_bits(reader: BitReader, field: str, section: str = "usnat") -> int:
    value = reader.int(2, field)
    if value == 3:
        raise InvalidGPPString(f"{section} {field} is 3: two-bit fields hold 0, 1 or 2")
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
    return writer.base64url() + _encode_gpc_subsection(section.gpc)


def encode_us_state(section: UsState) -> str:
    """Encodes a US state section (with the GPC subsection when `gpc` is not None)."""
    layout = _STATE_LAYOUTS[section.section_id]
    if section.version != 1:
        raise ValueError(f"{layout.name} version {section.version} is not supported: only 1")
    if len(section.sensitive_data_processing) != layout.sensitive_count:
        raise ValueError(f"{layout.name} has {layout.sensitive_count} sensitive data categories")
    if len(section.known_child_sensitive_data_consents) != layout.child_count:
        raise ValueError(f"{layout.name} has {layout.child_count} known child consents")
    if section.gpc is not None and not layout.gpc:
        raise ValueError(f"{layout.name} has no GPC subsection")
    writer = BitWriter()
    writer.int(section.version, 6, "version")
    for name in layout.fields:
        writer.int(getattr(section, name), 2, name)
    for value in section.sensitive_data_processing:
        writer.int(value, 2, "sensitive_data_processing")
    for value in section.known_child_sensitive_data_consents:
        writer.int(value, 2, "known_child_sensitive_data_consents")
    if layout.personal_data_consents:
        writer.int(section.personal_data_consents, 2, "personal_data_consents")
    for name in _MSPA_FIELDS:
        writer.int(getattr(section, name), 2, name)
    return writer.base64url() + _encode_gpc_subsection(section.gpc)


def _encode_gpc_subsection(gpc: bool | None) -> str:
    if gpc is None:
        return ""
    sub = BitWriter()
    sub.int(_GPC_SUBSECTION_TYPE, 2, "subsection type")
    sub.bool(gpc)
    return "." + sub.base64url()


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
