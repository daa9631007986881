"""URLs a DSP chose become valid request lines, or a clear error (`openbid.http.urls`)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbid.http.urls import MAX_URL_CHARS, parse_target

_VALID_TARGET = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


@settings(max_examples=500, derandomize=True)
@given(st.text(max_size=200))
def test_whatever_follows_the_host_the_target_sent_is_valid(tail):
    try:
        target = parse_target("http://dsp.example/" + tail)
    except ValueError:
        return  # refused with a reason: the caller reports it as that DSP's failure
    assert _VALID_TARGET.fullmatch(target.request_target), target.request_target
    assert target.host_header == "dsp.example"


@settings(max_examples=300, derandomize=True)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=60))
def test_a_target_already_valid_is_sent_unchanged(tail):
    target = "/" + "".join(c for c in tail if c.isalnum() or c in "-._~!$&'()*+,;=:@/")
    assert parse_target("https://dsp.example:8443" + target).request_target == target


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://dsp.example/x", "not an http(s) URL"),
        ("http:///x", "no host"),
        ("http://dsp.example:99999/x", "out of range"),
        ("http://dsp example/x", "bad host name"),
        ("http://[::1/x", "Invalid IPv6 URL"),
        ("http://dsp.example/" + "a" * MAX_URL_CHARS, "longer than"),
    ],
)
def test_a_url_that_cannot_be_sent_is_refused_with_its_reason(url, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_target(url)
