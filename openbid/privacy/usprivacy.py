"""IAB US Privacy strings (CCPA, `regs.us_privacy`): four characters such as `1YNN`.

Version `1`, then explicit notice given, opted out of sale, covered by the LSPA, each
`Y`, `N` or `-` (not applicable). `1---` says the law does not apply to this user.

>>> parse("1YYN").opted_out_of_sale
True
>>> parse("1---").opted_out_of_sale is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from openbid.cache import deep_sizeof, memoize
from openbid.privacy.errors import InvalidUSPrivacyString

_FLAG = {"Y": True, "N": False, "-": None}


@dataclass(frozen=True, slots=True)
class USPrivacy:
    """A parsed US Privacy string; each flag is None where it does not apply."""

    version: int
    notice_given: bool | None
    opted_out_of_sale: bool | None
    lspa_covered: bool | None

    def __str__(self) -> str:
        flags = {value: char for char, value in _FLAG.items()}
        return (
            f"{self.version}{flags[self.notice_given]}"
            f"{flags[self.opted_out_of_sale]}{flags[self.lspa_covered]}"
        )


@memoize(64, 64 << 10, deep_sizeof)  # only valid strings (4 characters) are kept
def parse(text: str) -> USPrivacy:
    """Parses a US Privacy string (lower-case flags are accepted); raises InvalidUSPrivacyString."""
    if not isinstance(text, str) or len(text) != 4:
        raise InvalidUSPrivacyString(
            f"a US Privacy string has 4 characters such as '1YNN', got {text!r}"
        )
    if text[0] != "1":
        raise InvalidUSPrivacyString(f"US Privacy version {text[0]!r} is not supported: only '1'")
    try:
        notice, sale, lspa = (_FLAG[char] for char in text[1:].upper())
    except KeyError:
        raise InvalidUSPrivacyString(
            f"US Privacy flags must each be Y, N or '-', got {text[1:]!r}"
        ) from None
    return USPrivacy(1, notice, sale, lspa)
