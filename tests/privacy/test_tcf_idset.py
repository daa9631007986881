"""Vendor id sets stay spans (or a bitfield's bitmap), never expanded: a TC string of
ranges naming every vendor in every section decodes to a few KiB. `IdSet` behaves like a
frozenset of ints, checked against one on seeded random cases."""

import random
import tracemalloc
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.privacy import tcf
from openbid.privacy.bits import base64url_to_bits, bits_to_base64url
from openbid.privacy.errors import InvalidTCString
from openbid.privacy.tcf import IdSet, RestrictionType

FIXED_CORE_BITS = 213  # Version .. PublisherCC: the fields before the vendor consent section
TOP = 65535  # the largest vendor id a 16-bit field can name
HEADER = base64url_to_bits(tcf.encode(tcf.TCString()), InvalidTCString, "core")[:FIXED_CORE_BITS]


def range_entries(spans: list[tuple[int, int]]) -> str:
    """NumEntries, then per entry IsARange, StartOrOnlyVendorId and, for a range, EndVendorId."""
    entries = [format(len(spans), "012b")]
    for start, end in spans:
        if start == end:
            entries.append("0" + format(start, "016b"))
        else:
            entries.append("1" + format(start, "016b") + format(end, "016b"))
    return "".join(entries)


def range_section(spans: list[tuple[int, int]], max_id: int = TOP) -> str:
    """A vendor section in range form: MaxVendorId, IsRangeEncoding 1, the entries."""
    return format(max_id, "016b") + "1" + range_entries(spans)


def tc_string(
    consents: str, interests: str, restrictions: list[tuple[int, int, list]], vendors: str = ""
) -> str:
    """A TC string from vendor section bits; `vendors`, when given, is written as both the
    disclosed and the allowed vendors segment."""
    core = HEADER + consents + interests + format(len(restrictions), "012b")
    for purpose_id, restriction_type, spans in restrictions:
        core += format(purpose_id, "06b") + format(restriction_type, "02b") + range_entries(spans)
    segments = [bits_to_base64url(core)]
    if vendors:
        segments += [bits_to_base64url(format(kind, "03b") + vendors) for kind in (1, 2)]
    return ".".join(segments)


def decoded_bytes(text: str) -> tuple[tcf.TCString, int, int]:
    """The decoded string, the bytes it holds on to, and the peak bytes of decoding it."""
    tcf.decode(text)  # first, so that nothing allocated once per process is counted
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tc = tcf.decode(text)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return tc, after - before, peak - before


EVERY_VENDOR = [(1, TOP)]
VENDOR_SETS = (
    "vendor_consents",
    "vendor_legitimate_interests",
    "disclosed_vendors",
    "allowed_vendors",
)


def test_a_short_string_naming_every_vendor_everywhere_holds_a_few_kib():
    """94 characters that named 292,140 ids, which the old decoder expanded into 18 MiB."""
    every = range_section(EVERY_VENDOR)
    text = tc_string(every, every, [(1, 0, [(1, 30000)])], vendors=every)
    assert len(text) < 100
    tc, held, _ = decoded_bytes(text)
    for name in VENDOR_SETS:
        ids = getattr(tc, name)
        assert len(ids) == TOP and ids.spans() == ((1, TOP),)
        assert 1 in ids and TOP in ids and 0 not in ids and TOP + 1 not in ids
    assert tc.restriction(30000, 1) is RestrictionType.NOT_ALLOWED
    assert tc.restriction(30001, 1) is None
    assert held < 4 * 1024


def test_the_range_bomb_decodes_to_one_span_a_set_and_one_restriction_a_purpose_and_type():
    """60 range entries of 1-65535 in each vendor section, 144 publisher restrictions of 6
    such entries (each purpose and type twice): 72 million ids as written."""
    every = range_section(EVERY_VENDOR * 60)
    pairs = [(purpose, kind) for purpose in range(1, 25) for kind in range(3)]
    restrictions = [(purpose, kind, EVERY_VENDOR * 6) for purpose, kind in pairs * 2]
    text = tc_string(every, every, restrictions, vendors=every)
    assert len(text) < 8192  # within the OpenRTB string limit
    tc, held, peak = decoded_bytes(text)
    for name in VENDOR_SETS:
        assert getattr(tc, name).spans() == ((1, TOP),)
    # Entries of one purpose and type are one restriction: 72, not 144.
    assert [(r.purpose_id, r.restriction_type) for r in tc.publisher_restrictions] == pairs
    assert all(r.vendor_ids.spans() == ((1, TOP),) for r in tc.publisher_restrictions)
    assert tc.restriction(TOP, 24) is RestrictionType.NOT_ALLOWED  # its first pair for purpose 24
    assert tc.restriction(TOP, 25) is None
    assert held < 32 * 1024
    assert peak < 40 * len(text)  # decoding works in proportion to the string, not to its ids


def test_an_alternating_bitfield_is_held_as_a_bitmap_of_its_own_size():
    """65,535 bits alternating: 32,768 ids the old decoder held as a 3 MiB frozenset."""
    alternating = ("10" * (TOP // 2 + 1))[:TOP]
    bitfield = format(TOP, "016b") + "0" + alternating
    text = tc_string(bitfield, range_section([], max_id=0), [])
    tc, held, _ = decoded_bytes(text)
    assert len(tc.vendor_consents) == (TOP + 1) // 2
    assert 1 in tc.vendor_consents and 2 not in tc.vendor_consents and TOP in tc.vendor_consents
    assert held < TOP // 8 + 4 * 1024


# --- IdSet against frozenset -----------------------------------------------------------------

spans_lists = st.lists(
    st.tuples(st.integers(1, 300), st.integers(0, 40)).map(lambda s: (s[0], s[0] + s[1])),
    max_size=12,
)
bitfields = st.text(alphabet="01", max_size=200)


def expanded(spans: list[tuple[int, int]]) -> frozenset[int]:
    return frozenset(item for start, end in spans for item in range(start, end + 1))


def from_bitfield(bits: str) -> frozenset[int]:
    return frozenset(position + 1 for position, bit in enumerate(bits) if bit == "1")


def assert_behaves_like(ids: IdSet, reference: frozenset[int]) -> None:
    assert [item for item in range(-2, 360) if item in ids] == sorted(
        item for item in reference if item < 360
    )
    assert len(ids) == len(reference)
    assert list(ids) == sorted(reference)
    assert ids == reference and reference == ids and ids == set(reference)
    assert (ids != reference) is False and (reference != ids) is False
    assert hash(ids) == hash(reference)
    spans = ids.spans()
    assert expanded(list(spans)) == reference
    # Sorted, disjoint and not adjacent: the fewest spans the ids can be written in.
    assert all(
        end + 1 < next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False)
    )
    assert all(start <= end for start, end in spans)
    assert eval(repr(ids)) == reference


@settings(max_examples=200)
@given(spans_lists, spans_lists)
def test_ids_from_spans_behave_like_the_frozenset_they_name(spans, other_spans):
    ids, other = IdSet.from_spans(spans), IdSet.from_spans(other_spans)
    reference, other_reference = expanded(spans), expanded(other_spans)
    assert_behaves_like(ids, reference)
    assert (ids == other) == (reference == other_reference)
    assert ids | other == reference | other_reference
    assert ids & other_reference == reference & other_reference
    assert reference - other == reference - other_reference
    assert ids ^ other == reference ^ other_reference
    assert (ids <= other) == (reference <= other_reference)
    assert (ids < other_reference) == (reference < other_reference)
    assert ids.isdisjoint(other) == reference.isdisjoint(other_reference)


@settings(max_examples=200)
@given(bitfields, st.integers(0, 20))
def test_ids_from_a_bitfield_behave_like_the_frozenset_of_its_set_positions(bits, padding):
    ids = IdSet.from_bitfield(bits)
    reference = from_bitfield(bits)
    assert_behaves_like(ids, reference)
    # Trailing zeros change the field's width, not its ids; nor does the representation.
    assert IdSet.from_bitfield(bits + "0" * padding) == ids
    assert IdSet.from_spans(ids.spans()) == ids == IdSet(reference)
    assert hash(IdSet.from_spans(ids.spans())) == hash(ids)


def test_seeded_random_sets_match_their_expansion_near_the_top_vendor_id():
    chooser = random.Random(20240611)
    for _ in range(30):
        spans = []
        for _ in range(chooser.randrange(1, 40)):
            start = chooser.randrange(1, TOP + 1)
            spans.append((start, min(TOP, start + chooser.randrange(0, 3000))))
        ids, reference = IdSet.from_spans(spans), expanded(spans)
        probes = [chooser.randrange(0, TOP + 2) for _ in range(500)]
        probes += [edge + step for span in spans for edge in span for step in (-1, 0, 1)]
        assert [probe in ids for probe in probes] == [probe in reference for probe in probes]
        assert len(ids) == len(reference) and ids == reference
        bits = "".join("1" if position in reference else "0" for position in range(1, TOP + 1))
        assert IdSet.from_bitfield(bits) == ids


def test_id_sets_read_and_refuse_what_a_frozenset_would():
    ids = IdSet({3, 1, 2, 7})
    assert repr(ids) == "IdSet({1, 2, 3, 7})"
    assert repr(IdSet.from_spans([(1, TOP)])) == "IdSet.from_spans([(1, 65535)])"
    assert repr(IdSet()) == "IdSet()"
    assert None not in ids and "1" not in ids and 1 in ids and True in ids
    assert IdSet(ids) == ids and IdSet(range(5)) == {0, 1, 2, 3, 4}
    assert IdSet([-5, 2**40]) == {-5, 2**40}  # any ints, though TC strings hold 1-65535
    with pytest.raises(TypeError):
        IdSet(["a"])
    with pytest.raises(ValueError, match="ends before it starts"):
        IdSet.from_spans([(5, 4)])
    with pytest.raises(ValueError, match="only '0' and '1'"):
        IdSet.from_bitfield("012")


def test_tc_string_accepts_any_iterable_of_ints_and_holds_id_sets():
    rule = tcf.PublisherRestriction(2, RestrictionType.REQUIRE_CONSENT, [7, 8])
    tc = tcf.TCString(
        purpose_consents=frozenset({1, 2}),
        max_vendor_consent_id=42,
        vendor_consents=[42, 41],
        disclosed_vendors=range(1, 4),
        publisher_restrictions=(rule,),
    )
    assert isinstance(tc.vendor_consents, IdSet) and isinstance(rule.vendor_ids, IdSet)
    assert tc.vendor_consents == frozenset({41, 42}) and tc.disclosed_vendors == {1, 2, 3}
    assert tc.allowed_vendors is None
    assert tc == tcf.TCString(
        purpose_consents=IdSet({1, 2}),
        max_vendor_consent_id=42,
        vendor_consents=IdSet({41, 42}),
        disclosed_vendors=IdSet({1, 2, 3}),
        publisher_restrictions=(rule,),
    )
    assert tcf.decode(tcf.encode(tc)) == tc
    assert hash(tcf.decode(tcf.encode(tc))) == hash(tc)


# --- publisher restrictions -------------------------------------------------------------------


@st.composite
def conforming_restrictions(draw):
    """Restriction entries in which a vendor has at most one type a purpose (as TCF
    requires), split at random into entries, the same purpose and type possibly repeated."""
    rule_of = draw(
        st.dictionaries(
            st.tuples(st.integers(1, 4), st.integers(1, 30)),
            st.sampled_from(list(RestrictionType)),
            max_size=40,
        )
    )
    entries = []
    for (purpose_id, vendor_id), kind in rule_of.items():
        entries.append((draw(st.integers(0, 2)), purpose_id, kind, vendor_id))
    grouped: dict[tuple, list[int]] = {}
    for split, purpose_id, kind, vendor_id in entries:
        grouped.setdefault((split, purpose_id, kind), []).append(vendor_id)
    restrictions = [
        tcf.PublisherRestriction(purpose_id, kind, frozenset(vendors))
        for (_, purpose_id, kind), vendors in draw(st.permutations(list(grouped.items())))
    ]
    return rule_of, restrictions


@settings(max_examples=150)
@given(conforming_restrictions())
def test_restriction_lookup_names_each_vendors_rule_for_each_purpose(case):
    rule_of, restrictions = case
    tc = tcf.TCString(publisher_restrictions=tuple(restrictions))
    decoded = tcf.decode(tcf.encode(tc))
    assert decoded == tc
    pairs = [(r.purpose_id, r.restriction_type) for r in tc.publisher_restrictions]
    assert len(pairs) == len(set(pairs))  # one restriction a purpose and type
    for purpose_id in range(0, 6):
        for vendor_id in range(0, 32):
            expected = rule_of.get((purpose_id, vendor_id))
            assert tc.restriction(vendor_id, purpose_id) is expected
            assert decoded.restriction(vendor_id, purpose_id) is expected


def test_more_publisher_restrictions_than_purposes_and_types_is_refused():
    # 2,000 empty entries decode in milliseconds each time: a cheap way to burn our CPU.
    text = tc_string(
        range_section([(1, 1)]),
        range_section([(1, 1)]),
        [(i % 24 + 1, i % 3, []) for i in range(2000)],
    )
    with pytest.raises(
        InvalidTCString, match=r"NumPubRestrictions must be at most 192 .*, got 2000"
    ):
        tcf.decode(text)
    most = [
        (purpose, kind, [(purpose + 1, purpose + 1)]) for purpose in range(64) for kind in range(3)
    ]
    decoded = tcf.decode(tc_string(range_section([(1, 1)]), range_section([(1, 1)]), most))
    assert len(decoded.publisher_restrictions) == 192
    assert decoded.restriction(6, 5) is RestrictionType.NOT_ALLOWED


# --- IdSet against frozenset with members that are not ints ------------------------------------
# A frozenset of ints holds any object that hashes and compares equal to one of its ints:
# True is 1, 1.0, Fraction(1), Decimal(1) and 1+0j are 1. A str, None or 1.5 is never in it;
# an unhashable probe raises TypeError (a set probe is looked up as a frozenset: never in it).

NON_INT_PROBES = [
    True,
    False,
    1.0,
    2.0,
    1.5,
    -0.0,
    float("nan"),
    float("inf"),
    2.0**40,
    Fraction(3),
    Fraction(3, 2),
    Decimal(7),
    Decimal("7.0"),
    Decimal("7.5"),
    Decimal("NaN"),
    complex(7, 0),
    complex(7, 1),
    "1",
    "7",
    b"\x07",
    None,
    (7,),
    frozenset({7}),
    set(),
    {7},
    object(),
]
UNHASHABLE_PROBES = [[7], {7: 7}, bytearray(b"\x07")]
REFERENCE_SETS = [
    frozenset(),
    frozenset({0}),
    frozenset({1, 2, 3, 7}),
    frozenset({0, 1, 2**40}),
    frozenset(range(1, 200, 3)),
]


def id_sets_of(reference: frozenset[int]) -> list[IdSet]:
    """The same ints as each kind of IdSet: spans, and a bitmap when they are all positive."""
    kinds = [IdSet(reference), IdSet.from_spans((item, item) for item in reference)]
    if all(0 < item < 4096 for item in reference):
        bits = "".join(
            "1" if i in reference else "0" for i in range(1, max(reference, default=0) + 1)
        )
        kinds.append(IdSet.from_bitfield(bits))
    return kinds


@pytest.mark.parametrize(
    "reference", REFERENCE_SETS, ids=["empty", "zero", "small", "huge id", "every third"]
)
def test_membership_of_non_ints_is_the_frozensets(reference):
    for ids in id_sets_of(reference):
        for probe in NON_INT_PROBES:
            assert (probe in ids) is (probe in reference), (ids, probe)
        for probe in UNHASHABLE_PROBES:
            with pytest.raises(TypeError):
                probe in reference  # noqa: B015
            with pytest.raises(TypeError):
                probe in ids  # noqa: B015


def test_true_and_integral_numbers_are_in_the_set():
    ids = IdSet({1, 7})
    assert True in ids and 1.0 in ids and 7.0 in ids and Fraction(7) in ids
    assert Decimal(7) in ids and complex(1, 0) in ids
    assert False not in ids and 1.5 not in ids and "1" not in ids and complex(1, 1) not in ids
    assert IdSet.from_bitfield("1") == {True} and 1.0 in IdSet.from_bitfield("1")


def comparisons(left, right) -> list:
    """Every comparison and set operator between two sets, exceptions included."""
    results = []
    for name in ("==", "!=", "<=", "<", ">=", ">", "&", "|", "-", "^", "isdisjoint"):
        try:
            if name == "isdisjoint":
                value = left.isdisjoint(right)
            else:
                value = eval(f"left {name} right")
        except TypeError:
            value = TypeError
        results.append((name, value))
    return results


hashable_members = st.one_of(
    st.integers(-3, 12),
    st.booleans(),
    st.integers(-3, 12).map(float),
    st.sampled_from([0.5, 1.5, float("nan"), float("inf")]),
    st.integers(-3, 12).map(Fraction),
    st.integers(-3, 12).map(Decimal),
    st.integers(-3, 12).map(lambda n: complex(n, 0)),
    st.integers(-3, 12).map(str),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.frozensets(st.integers(-3, 12)), st.frozensets(hashable_members, max_size=8))
def test_comparisons_with_any_frozenset_are_the_frozensets(ints, other):
    reference = frozenset(ints)
    for ids in id_sets_of(reference):
        for left, right, expected_left, expected_right in (
            (ids, other, reference, other),
            (other, ids, other, reference),
        ):
            got, expected = comparisons(left, right), comparisons(expected_left, expected_right)
            assert got == expected, (ids, other)
        if ids == other:
            assert hash(ids) == hash(other) == hash(reference)
        for probe in other:
            assert (probe in ids) is (probe in reference)
