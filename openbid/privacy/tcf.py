"""IAB TCF v2 (2.0 to 2.2) TC strings: decode to a frozen `TCString`, and encode one back.

A TC string is '.'-separated base64url segments: the core segment first (consents,
legitimate interests, vendors, publisher restrictions), then optional segments each opening
with a 3-bit type: 1 disclosed vendors, 2 allowed vendors, 3 publisher TC (publisher
purposes and custom purposes). Ids are sets of ints, times UTC datetimes (the string
counts deciseconds since the epoch). `decode` raises `InvalidTCString` and nothing else.

>>> tc = decode(encode(TCString(purpose_consents=frozenset({1, 2}), vendor_consents=frozenset({42}))))
>>> sorted(tc.purpose_consents), 42 in tc.vendor_consents, tc.version
([1, 2], True, 2)
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from openbid.privacy.bits import BitReader, BitWriter, base64url_to_bits
from openbid.privacy.errors import InvalidTCString

SEGMENT_DISCLOSED_VENDORS = 1
SEGMENT_ALLOWED_VENDORS = 2
SEGMENT_PUBLISHER_TC = 3

MAX_TC_STRING_CHARS = 32_768
"""Longer strings are refused: real ones are a few KiB even with every vendor disclosed."""

MAX_EXPANDED_VENDOR_IDS = 300_000
"""Ranges may name up to 65,535 vendors each; past this many ids in all, a string is refused
rather than expanded (a 50 KiB string of overlapping ranges must not cost gigabytes)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEFAULT_TIME = datetime(2020, 1, 1, tzinfo=UTC)
_NO_IDS: frozenset[int] = frozenset()


class RestrictionType(enum.IntEnum):
    """What a publisher restriction demands of the vendors it names for one purpose."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LEGITIMATE_INTEREST = 2


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One restriction: for `purpose_id`, the vendors in `vendor_ids` are held to `restriction_type`."""

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded TC string. Optional segments that were absent are None (disclosed and
    allowed vendors) or leave `has_publisher_tc` False with empty publisher sets."""

    version: int = 2
    created: datetime = _DEFAULT_TIME
    last_updated: datetime = _DEFAULT_TIME
    cmp_id: int = 0
    cmp_version: int = 0
    consent_screen: int = 0
    consent_language: str = "EN"
    vendor_list_version: int = 0
    policy_version: int = 4
    is_service_specific: bool = False
    use_non_standard_stacks: bool = False
    special_feature_opt_ins: frozenset[int] = _NO_IDS
    purpose_consents: frozenset[int] = _NO_IDS
    purpose_legitimate_interests: frozenset[int] = _NO_IDS
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    max_vendor_consent_id: int = 0
    """MaxVendorId of the vendor consent section as written (`encode` writes at least the
    largest id of the set)."""
    vendor_consents: frozenset[int] = _NO_IDS
    max_vendor_legitimate_interest_id: int = 0
    vendor_legitimate_interests: frozenset[int] = _NO_IDS
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    disclosed_vendors: frozenset[int] | None = None
    allowed_vendors: frozenset[int] | None = None
    has_publisher_tc: bool = False
    publisher_purpose_consents: frozenset[int] = _NO_IDS
    publisher_purpose_legitimate_interests: frozenset[int] = _NO_IDS
    num_custom_purposes: int = 0
    custom_purpose_consents: frozenset[int] = _NO_IDS
    custom_purpose_legitimate_interests: frozenset[int] = _NO_IDS

    def restriction(self, vendor_id: int, purpose_id: int) -> RestrictionType | None:
        """The publisher's restriction on `vendor_id` for `purpose_id`, or None.

        >>> rule = PublisherRestriction(2, RestrictionType.REQUIRE_CONSENT, frozenset({7}))
        >>> TCString(publisher_restrictions=(rule,)).restriction(7, 2).name
        'REQUIRE_CONSENT'
        """
        for restriction in self.publisher_restrictions:
            if restriction.purpose_id == purpose_id and vendor_id in restriction.vendor_ids:
                return restriction.restriction_type
        return None


def decode(tc_string: str) -> TCString:
    """Decodes a TC string (every segment); raises `InvalidTCString` saying what is wrong."""
    if not isinstance(tc_string, str):
        raise InvalidTCString(f"a TC string must be text, not {type(tc_string).__name__}")
    if not tc_string:
        raise InvalidTCString("the TC string is empty")
    if len(tc_string) > MAX_TC_STRING_CHARS:
        raise InvalidTCString(
            f"the TC string has {len(tc_string)} characters, more than {MAX_TC_STRING_CHARS}"
        )
    budget = _IdBudget()
    segments = tc_string.split(".")
    fields = _decode_core(_reader(segments[0], "core segment"), budget)
    seen: set[int] = set()
    for number, text in enumerate(segments[1:], start=2):
        reader = _reader(text, f"segment {number}")
        segment_type = reader.int(3, "segment type")
        if segment_type in seen:
            raise InvalidTCString(f"segment {number} repeats segment type {segment_type}")
        seen.add(segment_type)
        if segment_type == SEGMENT_DISCLOSED_VENDORS:
            fields["disclosed_vendors"] = _read_vendor_section(reader, "disclosed vendors", budget)[
                1
            ]
        elif segment_type == SEGMENT_ALLOWED_VENDORS:
            fields["allowed_vendors"] = _read_vendor_section(reader, "allowed vendors", budget)[1]
        elif segment_type == SEGMENT_PUBLISHER_TC:
            fields.update(_decode_publisher_tc(reader))
        else:
            raise InvalidTCString(
                f"segment {number} has unknown segment type {segment_type} "
                "(1 disclosed vendors, 2 allowed vendors, 3 publisher TC)"
            )
    return TCString(**fields)


@functools.lru_cache(maxsize=4096)
def decode_cached(tc_string: str) -> TCString | InvalidTCString:
    """`decode` memoised by string, returning (not raising) the error of an invalid one.

    The same few consent strings repeat across a publisher's traffic, so the hot path
    decodes each once; invalid strings are cached too, so they cost no more the second time.
    """
    try:
        return decode(tc_string)
    except InvalidTCString as error:
        # Drop the traceback: a cached error must not keep the decoder's frames alive.
        return error.with_traceback(None)


def _reader(text: str, what: str) -> BitReader:
    if not text:
        raise InvalidTCString(f"the TC string's {what} is empty")
    return BitReader(
        base64url_to_bits(text, InvalidTCString, f"TC string {what}"),
        InvalidTCString,
        f"TC string {what}",
    )


class _IdBudget:
    """Counts vendor ids expanded from ranges across one string (see MAX_EXPANDED_VENDOR_IDS)."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = 0

    def spend(self, count: int) -> None:
        self.spent += count
        if self.spent > MAX_EXPANDED_VENDOR_IDS:
            raise InvalidTCString(
                f"the TC string names more than {MAX_EXPANDED_VENDOR_IDS} vendor ids in all"
            )


def _decode_core(reader: BitReader, budget: _IdBudget) -> dict:
    version = reader.int(6, "Version")
    if version != 2:
        raise InvalidTCString(
            f"TC string version {version} is not supported: only TCF v2 (version 2) strings are"
        )
    fields = {
        "version": version,
        "created": _read_time(reader, "Created"),
        "last_updated": _read_time(reader, "LastUpdated"),
        "cmp_id": reader.int(12, "CmpId"),
        "cmp_version": reader.int(12, "CmpVersion"),
        "consent_screen": reader.int(6, "ConsentScreen"),
        "consent_language": _read_letters(reader, "ConsentLanguage"),
        "vendor_list_version": reader.int(12, "VendorListVersion"),
        "policy_version": reader.int(6, "TcfPolicyVersion"),
        "is_service_specific": reader.bool("IsServiceSpecific"),
        "use_non_standard_stacks": reader.bool("UseNonStandardTexts"),
        "special_feature_opt_ins": reader.id_bitfield(12, "SpecialFeatureOptIns"),
        "purpose_consents": reader.id_bitfield(24, "PurposesConsent"),
        "purpose_legitimate_interests": reader.id_bitfield(24, "PurposesLITransparency"),
        "purpose_one_treatment": reader.bool("PurposeOneTreatment"),
        "publisher_cc": _read_letters(reader, "PublisherCC"),
    }
    max_id, ids = _read_vendor_section(reader, "vendor consents", budget)
    fields["max_vendor_consent_id"], fields["vendor_consents"] = max_id, ids
    max_id, ids = _read_vendor_section(reader, "vendor legitimate interests", budget)
    fields["max_vendor_legitimate_interest_id"], fields["vendor_legitimate_interests"] = max_id, ids
    fields["publisher_restrictions"] = _read_publisher_restrictions(reader, budget)
    return fields


def _read_time(reader: BitReader, name: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=100 * reader.int(36, name))


def _read_letters(reader: BitReader, name: str) -> str:
    first, second = reader.int(6, name), reader.int(6, name)
    if first > 25 or second > 25:
        raise InvalidTCString(
            f"{name} holds letter codes {first}, {second}: each must be 0-25 (A-Z)"
        )
    return chr(65 + first) + chr(65 + second)


def _read_vendor_section(
    reader: BitReader, what: str, budget: _IdBudget
) -> tuple[int, frozenset[int]]:
    """MaxVendorId, IsRangeEncoding, then a bitfield or range entries; returns (max id, ids)."""
    max_id = reader.int(16, f"{what} MaxVendorId")
    if not reader.bool(f"{what} IsRangeEncoding"):
        return max_id, reader.id_bitfield(max_id, f"{what} bitfield")
    return max_id, _read_ranges(reader, what, budget, max_id)


def _read_ranges(
    reader: BitReader, what: str, budget: _IdBudget, max_id: int = 0xFFFF
) -> frozenset[int]:
    """TCF range entries expanded to ids (1..max_id), within the string's id budget."""
    spans = reader.id_ranges(what)
    if not spans:
        return _NO_IDS
    spans.sort()
    if spans[0][0] < 1:
        raise InvalidTCString(f"{what} names vendor id 0: vendor ids start at 1")
    highest = max(end for _, end in spans)
    if highest > max_id:
        raise InvalidTCString(f"{what} names vendor id {highest}, above its MaxVendorId {max_id}")
    # Merge overlapping spans first so that expanding them costs at most one step an id.
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    ids: set[int] = set()
    for start, end in merged:
        budget.spend(end - start + 1)
        ids.update(range(start, end + 1))
    return frozenset(ids)


def _read_publisher_restrictions(
    reader: BitReader, budget: _IdBudget
) -> tuple[PublisherRestriction, ...]:
    restrictions = []
    for _ in range(reader.int(12, "NumPubRestrictions")):
        purpose_id = reader.int(6, "publisher restriction PurposeId")
        raw_type = reader.int(2, "publisher restriction RestrictionType")
        if raw_type == 3:
            raise InvalidTCString(
                f"publisher restriction for purpose {purpose_id} has the undefined type 3"
            )
        vendor_ids = _read_ranges(reader, "publisher restriction", budget)
        restrictions.append(PublisherRestriction(purpose_id, RestrictionType(raw_type), vendor_ids))
    return tuple(restrictions)


def _decode_publisher_tc(reader: BitReader) -> dict:
    consents = reader.id_bitfield(24, "PubPurposesConsent")
    legitimate_interests = reader.id_bitfield(24, "PubPurposesLITransparency")
    count = reader.int(6, "NumCustomPurposes")
    return {
        "has_publisher_tc": True,
        "publisher_purpose_consents": consents,
        "publisher_purpose_legitimate_interests": legitimate_interests,
        "num_custom_purposes": count,
        "custom_purpose_consents": reader.id_bitfield(count, "CustomPurposesConsent"),
        "custom_purpose_legitimate_interests": reader.id_bitfield(
            count, "CustomPurposesLITransparency"
        ),
    }


def encode(tc: TCString) -> str:
    """Encodes a `TCString` (vendor sections as bitfield or ranges, whichever is shorter).

    Used by tests and by the simulator to make consent strings; `decode(encode(tc)) == tc`
    for any `tc` whose times are whole deciseconds and whose max vendor ids are at least the
    largest id of their sets.
    Raises ValueError when a field does not fit its width.
    """
    writer = BitWriter()
    writer.int(tc.version, 6, "version")
    _write_time(writer, tc.created, "created")
    _write_time(writer, tc.last_updated, "last_updated")
    writer.int(tc.cmp_id, 12, "cmp_id")
    writer.int(tc.cmp_version, 12, "cmp_version")
    writer.int(tc.consent_screen, 6, "consent_screen")
    _write_letters(writer, tc.consent_language, "consent_language")
    writer.int(tc.vendor_list_version, 12, "vendor_list_version")
    writer.int(tc.policy_version, 6, "policy_version")
    writer.bool(tc.is_service_specific)
    writer.bool(tc.use_non_standard_stacks)
    writer.id_bitfield(tc.special_feature_opt_ins, 12, "special_feature_opt_ins")
    writer.id_bitfield(tc.purpose_consents, 24, "purpose_consents")
    writer.id_bitfield(tc.purpose_legitimate_interests, 24, "purpose_legitimate_interests")
    writer.bool(tc.purpose_one_treatment)
    _write_letters(writer, tc.publisher_cc, "publisher_cc")
    _write_vendor_section(writer, tc.vendor_consents, tc.max_vendor_consent_id, "vendor_consents")
    _write_vendor_section(
        writer,
        tc.vendor_legitimate_interests,
        tc.max_vendor_legitimate_interest_id,
        "vendor_legitimate_interests",
    )
    writer.int(len(tc.publisher_restrictions), 12, "publisher_restrictions count")
    for restriction in tc.publisher_restrictions:
        writer.int(restriction.purpose_id, 6, "publisher restriction purpose_id")
        writer.int(int(restriction.restriction_type), 2, "publisher restriction type")
        _write_ranges(writer, restriction.vendor_ids, "publisher restriction vendor_ids")
    segments = [writer.base64url()]
    for segment_type, ids, name in (
        (SEGMENT_DISCLOSED_VENDORS, tc.disclosed_vendors, "disclosed_vendors"),
        (SEGMENT_ALLOWED_VENDORS, tc.allowed_vendors, "allowed_vendors"),
    ):
        if ids is not None:
            writer = BitWriter()
            writer.int(segment_type, 3, "segment type")
            _write_vendor_section(writer, ids, 0, name)
            segments.append(writer.base64url())
    if tc.has_publisher_tc:
        writer = BitWriter()
        writer.int(SEGMENT_PUBLISHER_TC, 3, "segment type")
        writer.id_bitfield(tc.publisher_purpose_consents, 24, "publisher_purpose_consents")
        writer.id_bitfield(
            tc.publisher_purpose_legitimate_interests, 24, "publisher_purpose_legitimate_interests"
        )
        writer.int(tc.num_custom_purposes, 6, "num_custom_purposes")
        writer.id_bitfield(
            tc.custom_purpose_consents, tc.num_custom_purposes, "custom_purpose_consents"
        )
        writer.id_bitfield(
            tc.custom_purpose_legitimate_interests,
            tc.num_custom_purposes,
            "custom_purpose_legitimate_interests",
        )
        segments.append(writer.base64url())
    return ".".join(segments)


def _write_time(writer: BitWriter, moment: datetime, name: str) -> None:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC)")
    writer.int((moment - _EPOCH) // timedelta(milliseconds=100), 36, name)


def _write_letters(writer: BitWriter, letters: str, name: str) -> None:
    if len(letters) != 2 or not all("A" <= char <= "Z" for char in letters):
        raise ValueError(f"{name}={letters!r} must be two upper-case letters A-Z")
    writer.int(ord(letters[0]) - 65, 6, name)
    writer.int(ord(letters[1]) - 65, 6, name)


def _spans(ids: frozenset[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for item in sorted(ids):
        if spans and item == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], item)
        else:
            spans.append((item, item))
    return spans


def _write_vendor_section(writer: BitWriter, ids: frozenset[int], max_id: int, name: str) -> None:
    max_id = max(max_id, max(ids, default=0))
    spans = _spans(ids)
    range_bits = 12 + sum(17 if start == end else 33 for start, end in spans)
    writer.int(max_id, 16, f"{name} max id")
    if range_bits < max_id:
        writer.bool(True)
        _write_ranges(writer, ids, name)
    else:
        writer.bool(False)
        writer.id_bitfield(ids, max_id, name)


def _write_ranges(writer: BitWriter, ids: frozenset[int], name: str) -> None:
    spans = _spans(ids)
    writer.int(len(spans), 12, f"{name} range count")
    for start, end in spans:
        writer.bool(start != end)
        writer.int(start, 16, name)
        if start != end:
            writer.int(end, 16, name)
