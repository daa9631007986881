"""IAB TCF v2 (2.0 to 2.2) TC strings: decode to a frozen `TCString`, and encode one back.

A TC string is '.'-separated base64url segments: the core segment first (consents,
legitimate interests, vendors, publisher restrictions), then optional segments each opening
with a 3-bit type: 1 disclosed vendors, 2 allowed vendors, 3 publisher TC (publisher
purposes and custom purposes). Times are UTC datetimes (the string counts deciseconds since
the epoch). `decode` raises `InvalidTCString` and nothing else.

Ids are sets of ints, held as `IdSet`s: a range entry of the string stays one span and a
bitfield stays a bitmap of its own size, so memory follows the length of the string, not
the number of ids it names (one 33-bit entry names up to 65,535 vendors).

>>> tc = decode(encode(TCString(purpose_consents=frozenset({1, 2}), vendor_consents=frozenset({42}))))
>>> sorted(tc.purpose_consents), 42 in tc.vendor_consents, tc.version
([1, 2], True, 2)
"""

from __future__ import annotations

import enum
import numbers
import operator
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, compress

from openbid.cache import deep_sizeof, memoize, without_traceback
from openbid.privacy.bits import BitReader, BitWriter, base64url_to_bits
from openbid.privacy.errors import InvalidTCString

SEGMENT_DISCLOSED_VENDORS = 1
SEGMENT_ALLOWED_VENDORS = 2
SEGMENT_PUBLISHER_TC = 3

MAX_TC_STRING_CHARS = 32_768
"""Longer strings are refused: real ones are a few KiB even with every vendor disclosed."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DEFAULT_TIME = datetime(2020, 1, 1, tzinfo=UTC)
_ZERO_ONE_BYTES = bytes.maketrans(b"01", b"\x00\x01")
"""'0'/'1' characters to 0/1 bytes: `itertools.compress` then picks set positions in C."""
_RUNS_OF_ONES = re.compile("1+")
_REPR_MAX_IDS = 16
"""Up to this many ids, a repr lists them; past it, it lists spans."""


class IdSet(AbstractSet[int]):
    """An immutable set of ints held as sorted, disjoint spans, or (when decoded from a
    TCF bitfield) as that field's bitmap: memory grows with the runs of ids, not their count.

    It is a `collections.abc.Set`: `in` (a bisection over the spans, or one byte of the
    bitmap), `len`, ascending iteration, comparisons and the set operators; it equals, and
    hashes like, the frozenset of the same ints, and holds what that frozenset holds (True
    and 1.0 where it has 1; never "1"). Build one from any iterable of ints, from
    (first, last) spans, or from a '0'/'1' bitfield:

    >>> ids = IdSet.from_spans([(5, 9), (1, 2), (9, 12)])
    >>> ids.spans(), 7 in ids, 3 in ids, len(ids)
    (((1, 2), (5, 12)), True, False, 10)
    >>> ids == frozenset({1, 2, *range(5, 13)}), IdSet.from_bitfield("0110") == {2, 3}
    (True, True)
    >>> IdSet([7, 3]), IdSet.from_spans([(1, 65535)])
    (IdSet({3, 7}), IdSet.from_spans([(1, 65535)]))
    """

    __slots__ = ("_bitmap", "_bounds", "_hash", "_len")

    _bounds: array | None
    """First and last id of each span, flattened: first0, last0, first1, last1, ...; two
    bytes an id when all are within 0-65535 (every TCF id is), else eight."""
    _bitmap: bytes | None
    """Bit i (MSB first) is id i + 1; no trailing zero bytes. Set instead of `_bounds`."""

    def __init__(self, ids: Iterable[int] = ()) -> None:
        if isinstance(ids, IdSet):
            self._bounds, self._bitmap, self._len = ids._bounds, ids._bitmap, ids._len
        else:
            self._bounds, self._len = _merged_bounds(
                (item, item) for item in map(operator.index, ids)
            )
            self._bitmap = None
        self._hash: int | None = None

    @classmethod
    def from_spans(cls, spans: Iterable[tuple[int, int]]) -> IdSet:
        """The ids of inclusive (first, last) spans, in any order, overlapping or not; each
        span costs the same whatever its length. Raises ValueError for a span whose last id
        is below its first."""
        ids = cls.__new__(cls)
        ids._bounds, ids._len = _merged_bounds(spans)
        ids._bitmap, ids._hash = None, None
        return ids

    @classmethod
    def from_bitfield(cls, bits: str) -> IdSet:
        """The 1-based positions of the '1's of a '0'/'1' string (a TCF bitfield), held as
        a bitmap: one bit an id up to the last one set."""
        if bits.strip("01"):
            raise ValueError("a bitfield holds only '0' and '1' characters")
        length = bits.count("1")
        if not length:
            return _NO_IDS
        used = bits[: bits.rindex("1") + 1]
        used += "0" * (-len(used) % 8)
        ids = cls.__new__(cls)
        ids._bitmap = int(used, 2).to_bytes(len(used) // 8, "big")
        ids._bounds, ids._len, ids._hash = None, length, None
        return ids

    def spans(self) -> tuple[tuple[int, int], ...]:
        """The ids as inclusive (first, last) spans: ascending, apart, and as few as can be."""
        if self._bitmap is not None:
            return tuple(
                (run.start() + 1, run.end()) for run in _RUNS_OF_ONES.finditer(self._bitmap_bits())
            )
        bounds = self._bounds
        return tuple(zip(bounds[::2], bounds[1::2], strict=True))

    def _bitmap_bits(self) -> str:
        bitmap = self._bitmap
        return format(int.from_bytes(bitmap, "big"), f"0{8 * len(bitmap)}b")

    def __contains__(self, item: object) -> bool:
        # As in a frozenset of ints: True is 1, and so is any number that hashes and compares
        # equal to 1 (1.0, Fraction(1), Decimal(1), 1+0j); an unhashable item raises TypeError
        # (a set is looked up as a frozenset, which is never an int).
        if not isinstance(item, int):
            if isinstance(item, set):
                return False
            item = _int_equal_to(item)  # hashes the item first, as a frozenset does
            if item is None:
                return False
        bitmap = self._bitmap
        if bitmap is not None:
            position = item - 1
            return (
                0 <= position < 8 * len(bitmap)
                and bitmap[position >> 3] & (0x80 >> (position & 7)) != 0
            )
        # bisect_right lands after the span's first id (odd index) when item is inside a
        # span, and right after its last id (even index) when item is that last id.
        bounds = self._bounds
        index = bisect_right(bounds, item)
        return index & 1 == 1 or (index > 0 and bounds[index - 1] == item)

    def __iter__(self) -> Iterator[int]:
        if self._bitmap is not None:
            flags = self._bitmap_bits().encode("ascii").translate(_ZERO_ONE_BYTES)
            return compress(range(1, len(flags) + 1), flags)
        bounds = self._bounds
        return chain.from_iterable(
            range(first, last + 1) for first, last in zip(bounds[::2], bounds[1::2], strict=True)
        )

    def __len__(self) -> int:
        return self._len

    @classmethod
    def _from_iterable(cls, items: Iterable[object]) -> AbstractSet:
        """The result of a set operator (`&`, `|`, `-`, `^`): an IdSet of the ints, or, when
        some member is not a number equal to an int ("a" from `ids | {"a"}`), the frozenset
        those operators on a frozenset would give."""
        members = list(items)
        ints = []
        for member in members:
            value = member if isinstance(member, int) else _int_equal_to(member)
            if value is None:
                return frozenset(members)
            ints.append(value)
        return cls(ints)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdSet):
            if self._len != other._len:
                return False
            if self._bitmap is not None and other._bitmap is not None:
                return self._bitmap == other._bitmap
            if self._bounds is not None and other._bounds is not None:
                return self._bounds == other._bounds
            return self.spans() == other.spans()
        return super().__eq__(other)

    def __hash__(self) -> int:
        # The frozenset's hash, so that equal sets hash alike whatever their type; it costs
        # one pass over the ids, once.
        if self._hash is None:
            self._hash = hash(frozenset(self))
        return self._hash

    def __repr__(self) -> str:
        if not self._len:
            return "IdSet()"
        if self._len <= _REPR_MAX_IDS:
            return f"IdSet({{{', '.join(map(str, self))}}})"
        return f"IdSet.from_spans({list(self.spans())!r})"

    def __reduce__(self) -> tuple:
        return IdSet.from_spans, (self.spans(),)


def _int_equal_to(item: object) -> int | None:
    """The int that `item` (not an int) hashes and compares equal to, if any: the only
    objects a frozenset of ints can hold besides ints. Raises TypeError for an unhashable
    item."""
    item_hash = hash(item)
    if isinstance(item, float):
        value = int(item) if item.is_integer() else None
    elif isinstance(item, numbers.Number):
        number = item
        if isinstance(number, numbers.Complex) and not isinstance(number, numbers.Real):
            number = number.real if number.imag == 0 else None
        try:
            value = None if number is None else int(number)  # type: ignore[call-overload]
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            value = None
    else:
        return None
    # `not ==`: a frozenset compares its int to the item with ==, whatever != says.
    if value is None or hash(value) != item_hash or not value == item:  # noqa: SIM201
        return None
    return value


def _merged_bounds(spans: Iterable[tuple[int, int]]) -> tuple[array, int]:
    """Sorts inclusive spans and merges those that overlap or touch: (flat bounds, id count)."""
    bounds: list[int] = []
    length = 0
    for first, last in sorted(spans):
        if last < first:
            raise ValueError(f"the span {first}-{last} ends before it starts")
        if bounds and first <= bounds[-1] + 1:
            if last > bounds[-1]:
                length += last - bounds[-1]
                bounds[-1] = last
        else:
            bounds += (first, last)
            length += last - first + 1
    narrow = not bounds or (bounds[0] >= 0 and bounds[-1] <= 0xFFFF)
    return array("H" if narrow else "q", bounds), length


_NO_IDS = IdSet()


class RestrictionType(enum.IntEnum):
    """What a publisher restriction demands of the vendors it names for one purpose."""

    NOT_ALLOWED = 0
    REQUIRE_CONSENT = 1
    REQUIRE_LEGITIMATE_INTEREST = 2


@dataclass(frozen=True, slots=True)
class PublisherRestriction:
    """One restriction: for `purpose_id`, the vendors in `vendor_ids` are held to
    `restriction_type`. `vendor_ids` may be given as any iterable of ints; it is held as an
    `IdSet`."""

    purpose_id: int
    restriction_type: RestrictionType
    vendor_ids: AbstractSet[int]

    def __post_init__(self) -> None:
        if not isinstance(self.vendor_ids, IdSet):
            object.__setattr__(self, "vendor_ids", IdSet(self.vendor_ids))


_ID_SET_FIELDS = (
    "special_feature_opt_ins",
    "purpose_consents",
    "purpose_legitimate_interests",
    "vendor_consents",
    "vendor_legitimate_interests",
    "publisher_purpose_consents",
    "publisher_purpose_legitimate_interests",
    "custom_purpose_consents",
    "custom_purpose_legitimate_interests",
)
_OPTIONAL_ID_SET_FIELDS = ("disclosed_vendors", "allowed_vendors")


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded TC string. Optional segments that were absent are None (disclosed and
    allowed vendors) or leave `has_publisher_tc` False with empty publisher sets.

    Id sets may be given as any iterable of ints; they are held as `IdSet`s. Publisher
    restrictions of the same purpose and type are held as one (their vendors merged), in the
    order each purpose and type first appears."""

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
    special_feature_opt_ins: AbstractSet[int] = _NO_IDS
    purpose_consents: AbstractSet[int] = _NO_IDS
    purpose_legitimate_interests: AbstractSet[int] = _NO_IDS
    purpose_one_treatment: bool = False
    publisher_cc: str = "AA"
    max_vendor_consent_id: int = 0
    """MaxVendorId of the vendor consent section as written (`encode` writes at least the
    largest id of the set)."""
    vendor_consents: AbstractSet[int] = _NO_IDS
    max_vendor_legitimate_interest_id: int = 0
    vendor_legitimate_interests: AbstractSet[int] = _NO_IDS
    publisher_restrictions: tuple[PublisherRestriction, ...] = ()
    disclosed_vendors: AbstractSet[int] | None = None
    allowed_vendors: AbstractSet[int] | None = None
    has_publisher_tc: bool = False
    publisher_purpose_consents: AbstractSet[int] = _NO_IDS
    publisher_purpose_legitimate_interests: AbstractSet[int] = _NO_IDS
    num_custom_purposes: int = 0
    custom_purpose_consents: AbstractSet[int] = _NO_IDS
    custom_purpose_legitimate_interests: AbstractSet[int] = _NO_IDS
    _restrictions_by_purpose: Mapping[int, tuple[PublisherRestriction, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """`publisher_restrictions` by purpose id (at most one a restriction type); None when
    there are none."""

    def __post_init__(self) -> None:
        for name in _ID_SET_FIELDS:
            ids = getattr(self, name)
            if not isinstance(ids, IdSet):
                object.__setattr__(self, name, IdSet(ids))
        for name in _OPTIONAL_ID_SET_FIELDS:
            ids = getattr(self, name)
            if ids is not None and not isinstance(ids, IdSet):
                object.__setattr__(self, name, IdSet(ids))
        if self.publisher_restrictions:
            restrictions = _merge_restrictions(self.publisher_restrictions)
            by_purpose: dict[int, tuple[PublisherRestriction, ...]] = {}
            for restriction in restrictions:
                by_purpose[restriction.purpose_id] = (
                    *by_purpose.get(restriction.purpose_id, ()),
                    restriction,
                )
            object.__setattr__(self, "publisher_restrictions", restrictions)
            object.__setattr__(self, "_restrictions_by_purpose", by_purpose)

    def restriction(self, vendor_id: int, purpose_id: int) -> RestrictionType | None:
        """The publisher's restriction on `vendor_id` for `purpose_id`, or None: a lookup
        among at most three restrictions, each a bisection.

        A vendor named under two types for one purpose (which TCF forbids) is held to the
        type whose restriction comes first.

        >>> rule = PublisherRestriction(2, RestrictionType.REQUIRE_CONSENT, frozenset({7}))
        >>> TCString(publisher_restrictions=(rule,)).restriction(7, 2).name
        'REQUIRE_CONSENT'
        """
        if self._restrictions_by_purpose is None:
            return None
        for restriction in self._restrictions_by_purpose.get(purpose_id, ()):
            if vendor_id in restriction.vendor_ids:
                return restriction.restriction_type
        return None


def _merge_restrictions(
    restrictions: Iterable[PublisherRestriction],
) -> tuple[PublisherRestriction, ...]:
    """One restriction a purpose and type (the vendors of repeats merged), in first-seen order.

    Merging bounds what a string can make us hold: 64 purposes by 3 types, whatever the
    4,095 entries it may declare."""
    restrictions = tuple(restrictions)
    groups: dict[tuple[int, int], list[PublisherRestriction]] = {}
    for restriction in restrictions:
        key = (restriction.purpose_id, restriction.restriction_type)
        groups.setdefault(key, []).append(restriction)
    if len(groups) == len(restrictions):
        return restrictions
    return tuple(
        group[0]
        if len(group) == 1
        else PublisherRestriction(
            purpose_id,
            restriction_type,
            IdSet.from_spans(span for member in group for span in member.vendor_ids.spans()),
        )
        for (purpose_id, restriction_type), group in groups.items()
    )


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
    segments = tc_string.split(".")
    fields = _decode_core(_reader(segments[0], "core segment"))
    seen: set[int] = set()
    for number, text in enumerate(segments[1:], start=2):
        reader = _reader(text, f"segment {number}")
        segment_type = reader.int(3, "segment type")
        if segment_type in seen:
            raise InvalidTCString(f"segment {number} repeats segment type {segment_type}")
        seen.add(segment_type)
        if segment_type == SEGMENT_DISCLOSED_VENDORS:
            fields["disclosed_vendors"] = _read_vendor_section(reader, "disclosed vendors")[1]
        elif segment_type == SEGMENT_ALLOWED_VENDORS:
            fields["allowed_vendors"] = _read_vendor_section(reader, "allowed vendors")[1]
        elif segment_type == SEGMENT_PUBLISHER_TC:
            fields.update(_decode_publisher_tc(reader))
        else:
            raise InvalidTCString(
                f"segment {number} has unknown segment type {segment_type} "
                "(1 disclosed vendors, 2 allowed vendors, 3 publisher TC)"
            )
    return TCString(**fields)


DECODE_CACHE_MAX_ENTRIES = 4096
DECODE_CACHE_MAX_BYTES = 8 << 20
"""A realistic TC string and its decoding hold ~2.2 KB (~3,800 fit); an 8 KiB hostile one
~10 KB, or 50 KB for 1.2 KB naming 192 publisher restrictions: counted as they are."""


@memoize(DECODE_CACHE_MAX_ENTRIES, DECODE_CACHE_MAX_BYTES, deep_sizeof)
def decode_cached(tc_string: str) -> TCString | InvalidTCString:
    """`decode` memoised by string, returning (not raising) the error of an invalid one.

    The same few consent strings repeat across a publisher's traffic, so the hot path
    decodes each once; invalid strings are cached too, so they cost no more the second time.
    The cache is bounded by entries and by the bytes of strings and decodings
    (`openbid.cache`): strings a request chooses cannot inflate it.
    """
    try:
        return decode(tc_string)
    except InvalidTCString as error:
        # A cached error must not keep the decoder's frames (and their locals) alive.
        return without_traceback(error)


def _reader(text: str, what: str) -> BitReader:
    if not text:
        raise InvalidTCString(f"the TC string's {what} is empty")
    return BitReader(
        base64url_to_bits(text, InvalidTCString, f"TC string {what}"),
        InvalidTCString,
        f"TC string {what}",
    )


def _decode_core(reader: BitReader) -> dict:
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
        "special_feature_opt_ins": _read_bitfield(reader, 12, "SpecialFeatureOptIns"),
        "purpose_consents": _read_bitfield(reader, 24, "PurposesConsent"),
        "purpose_legitimate_interests": _read_bitfield(reader, 24, "PurposesLITransparency"),
        "purpose_one_treatment": reader.bool("PurposeOneTreatment"),
        "publisher_cc": _read_letters(reader, "PublisherCC"),
    }
    max_id, ids = _read_vendor_section(reader, "vendor consents")
    fields["max_vendor_consent_id"], fields["vendor_consents"] = max_id, ids
    max_id, ids = _read_vendor_section(reader, "vendor legitimate interests")
    fields["max_vendor_legitimate_interest_id"], fields["vendor_legitimate_interests"] = max_id, ids
    fields["publisher_restrictions"] = _read_publisher_restrictions(reader)
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


def _read_bitfield(reader: BitReader, width: int, name: str) -> IdSet:
    return IdSet.from_bitfield(reader.bitfield(width, name))


def _read_vendor_section(reader: BitReader, what: str) -> tuple[int, IdSet]:
    """MaxVendorId, IsRangeEncoding, then a bitfield or range entries; returns (max id, ids)."""
    max_id = reader.int(16, f"{what} MaxVendorId")
    if not reader.bool(f"{what} IsRangeEncoding"):
        return max_id, _read_bitfield(reader, max_id, f"{what} bitfield")
    spans = _read_spans(reader, what, max_id)
    return max_id, IdSet.from_spans(spans) if spans else _NO_IDS


def _read_spans(reader: BitReader, what: str, max_id: int = 0xFFFF) -> list[tuple[int, int]]:
    """TCF range entries as (first, last) spans, each within 1..max_id; never expanded."""
    spans = reader.id_ranges(what)
    if spans:
        lowest = min(start for start, _ in spans)
        if lowest < 1:
            raise InvalidTCString(f"{what} names vendor id 0: vendor ids start at 1")
        highest = max(end for _, end in spans)
        if highest > max_id:
            raise InvalidTCString(
                f"{what} names vendor id {highest}, above its MaxVendorId {max_id}"
            )
    return spans


MAX_PUBLISHER_RESTRICTIONS = 64 * 3
"""Publisher restriction entries a TC string may hold: one for each 6-bit purpose id and each
of the three restriction types."""


def _read_publisher_restrictions(reader: BitReader) -> tuple[PublisherRestriction, ...]:
    """The restriction entries, those of the same purpose and type read as one (see
    `_merge_restrictions`) without building a set an entry."""
    spans_by_rule: dict[tuple[int, RestrictionType], list[tuple[int, int]]] = {}
    count = reader.int(12, "NumPubRestrictions")
    if count > MAX_PUBLISHER_RESTRICTIONS:
        # A CMP writes one entry a purpose and type; thousands of (empty) entries are only
        # a way to make every distinct string cost milliseconds to decode.
        raise InvalidTCString(
            f"NumPubRestrictions must be at most {MAX_PUBLISHER_RESTRICTIONS}"
            f" (one a purpose and restriction type), got {count}"
        )
    for _ in range(count):
        purpose_id = reader.int(6, "publisher restriction PurposeId")
        raw_type = reader.int(2, "publisher restriction RestrictionType")
        if raw_type == 3:
            raise InvalidTCString(
                f"publisher restriction for purpose {purpose_id} has the undefined type 3"
            )
        spans = _read_spans(reader, "publisher restriction")
        spans_by_rule.setdefault((purpose_id, RestrictionType(raw_type)), []).extend(spans)
    return tuple(
        PublisherRestriction(
            purpose_id, restriction_type, IdSet.from_spans(spans) if spans else _NO_IDS
        )
        for (purpose_id, restriction_type), spans in spans_by_rule.items()
    )


def _decode_publisher_tc(reader: BitReader) -> dict:
    consents = _read_bitfield(reader, 24, "PubPurposesConsent")
    legitimate_interests = _read_bitfield(reader, 24, "PubPurposesLITransparency")
    count = reader.int(6, "NumCustomPurposes")
    return {
        "has_publisher_tc": True,
        "publisher_purpose_consents": consents,
        "publisher_purpose_legitimate_interests": legitimate_interests,
        "num_custom_purposes": count,
        "custom_purpose_consents": _read_bitfield(reader, count, "CustomPurposesConsent"),
        "custom_purpose_legitimate_interests": _read_bitfield(
            reader, count, "CustomPurposesLITransparency"
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
        _write_ranges(
            writer, IdSet(restriction.vendor_ids).spans(), "publisher restriction vendor_ids"
        )
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


def _write_vendor_section(writer: BitWriter, ids: AbstractSet[int], max_id: int, name: str) -> None:
    spans = IdSet(ids).spans()
    max_id = max(max_id, spans[-1][1] if spans else 0)
    range_bits = 12 + sum(17 if start == end else 33 for start, end in spans)
    writer.int(max_id, 16, f"{name} max id")
    if range_bits < max_id:
        writer.bool(True)
        _write_ranges(writer, spans, name)
    else:
        writer.bool(False)
        writer.id_bitfield(ids, max_id, name)


def _write_ranges(writer: BitWriter, spans: tuple[tuple[int, int], ...], name: str) -> None:
    writer.int(len(spans), 12, f"{name} range count")
    for start, end in spans:
        writer.bool(start != end)
        writer.int(start, 16, name)
        if start != end:
            writer.int(end, 16, name)
