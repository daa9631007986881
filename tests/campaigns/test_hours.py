"""Hour-of-week specs: what they mean, that writing a mask and reading it back gives the
same mask, and the errors for specs that cannot be read."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbid.campaigns.hours import HoursError, format_hours, hour_of_week_in, parse_hours
from openbid.campaigns.model import FULL_WEEK_MASK


def hours_of(mask):
    return [bit for bit in range(168) if mask >> bit & 1]


@pytest.mark.parametrize(
    "spec, hours",
    [
        ("mon 09-12", [9, 10, 11]),
        ("tue", list(range(24, 48))),
        ("sat,sun 23-01", [5 * 24 + 23, 6 * 24, 6 * 24 + 23, 0]),
        ("sun 22-02", [0, 1, 166, 167]),
        ("fri-mon 00-01", [0, 4 * 24, 5 * 24, 6 * 24]),
        ("all 00-24", list(range(168))),
        ("wed 07-09,17-19", [55, 56, 65, 66]),
        ("1" + "0" * 166 + "1", [0, 167]),
    ],
)
def test_specs_set_these_hours(spec, hours):
    assert hours_of(parse_hours(spec)) == sorted(hours)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("moon 09-17", "'moon' is not a day"),
        ("mon 9am-5pm", "'9am' is not an hour"),
        ("mon 25-02", "'25' is not an hour"),
        ("mon 09", "'09' is not a range of hours"),
        ("mon 10-10", "'10-10' is an empty range"),
        ("", "an empty spec"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(HoursError, match=message):
        parse_hours(spec)


@given(st.integers(1, FULL_WEEK_MASK))
def test_writing_a_mask_and_reading_it_back_gives_the_mask(mask):
    specs = format_hours(mask)
    assert parse_hours(specs) == mask if specs else mask == FULL_WEEK_MASK


@given(st.integers(0, FULL_WEEK_MASK), st.integers(0, 6), st.integers(0, 23))
def test_hour_of_week_in_reads_the_bit(mask, weekday, hour):
    assert hour_of_week_in(mask, weekday, hour) == bool(mask & (1 << (weekday * 24 + hour)))
