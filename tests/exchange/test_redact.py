"""`apply_redaction` and `truncate_ip`: what each redaction flag does to a request."""

import ipaddress

import pytest

from openbid.exchange.redact import truncate_ip

# --- truncate_ip --------------------------------------------------------------------------

TRUNCATE_IP_TABLE = [
    # (case, address, expected)
    ("ipv4 to its /24", "203.0.113.77", "203.0.113.0"),
    ("ipv4 already truncated", "203.0.113.0", "203.0.113.0"),
    ("ipv6 to its /56", "2001:db8:1234:5678::1", "2001:db8:1234:5600::"),
    ("unparsable is dropped", "x", None),
    ("empty stays empty", "", ""),
    ("absent stays absent", None, None),
    # 6to4 (2002::/16) carries the IPv4 address in bits 16-48: a /56 would keep all of it.
    ("6to4 keeps the embedded ipv4 /24", "2002:cb00:714d:1234::1", "2002:cb00:7100::"),
    # IPv4-mapped and NAT64 carry it in the last 32 bits: keep its /24, as for plain IPv4.
    ("ipv4-mapped keeps the ipv4 /24", "::ffff:203.0.113.77", "::ffff:203.0.113.0"),
    ("ipv4-mapped in hex form", "::ffff:cb00:714d", "::ffff:203.0.113.0"),
    ("nat64 keeps the ipv4 /24", "64:ff9b::203.0.113.77", "64:ff9b::203.0.113.0"),
    ("nat64 in hex form", "64:ff9b::cb00:714d", "64:ff9b::203.0.113.0"),
    ("scoped ipv6", "fe80::1:2:3:4%eth0", "fe80::"),
]


@pytest.mark.parametrize(
    ("address", "expected"),
    [row[1:] for row in TRUNCATE_IP_TABLE],
    ids=[row[0] for row in TRUNCATE_IP_TABLE],
)
def test_truncate_ip(address, expected):
    result = truncate_ip(address)
    if expected and ":" in expected:  # compare addresses, not one spelling of them
        assert ipaddress.ip_address(result) == ipaddress.ip_address(expected)
    else:
        assert result == expected


def test_truncate_ip_never_keeps_an_embedded_ipv4_last_octet():
    for address in ("2002:cb00:714d::", "::ffff:203.0.113.77", "64:ff9b::203.0.113.77"):
        truncated = ipaddress.IPv6Address(truncate_ip(address))
        assert truncated.sixtofour in (None, ipaddress.IPv4Address("203.0.113.0"))
        assert truncated.ipv4_mapped in (None, ipaddress.IPv4Address("203.0.113.0"))
        assert int(truncated) & 0xFF == 0
