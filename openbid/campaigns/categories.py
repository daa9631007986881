"""IAB Content Taxonomy 1.0 codes (OpenRTB's `cat`, `bcat`, a creative's categories): which
codes exist, and the tier-1 parent of a tier-2 code.

>>> is_iab_category("IAB17-44"), is_iab_category("IAB17-45"), is_iab_category("IAB24")
(True, False, True)
>>> with_parent("IAB17-3"), with_parent("IAB17")
(('IAB17-3', 'IAB17'), ('IAB17',))
"""

from __future__ import annotations

# Tier-1 code number -> how many tier-2 codes it has (IAB1-1 ... IAB1-7); IAB24
# (Uncategorized) has none.
_TIER2_COUNTS = {
    1: 7,
    2: 23,
    3: 12,
    4: 11,
    5: 15,
    6: 9,
    7: 45,
    8: 18,
    9: 31,
    10: 9,
    11: 5,
    12: 3,
    13: 12,
    14: 8,
    15: 10,
    16: 7,
    17: 44,
    18: 6,
    19: 36,
    20: 27,
    21: 3,
    22: 4,
    23: 10,
    24: 0,
    25: 7,
    26: 4,
}

IAB_CATEGORIES = frozenset(
    [f"IAB{tier1}" for tier1 in _TIER2_COUNTS]
    + [
        f"IAB{tier1}-{tier2}"
        for tier1, count in _TIER2_COUNTS.items()
        for tier2 in range(1, count + 1)
    ]
)


def is_iab_category(code: str) -> bool:
    return code in IAB_CATEGORIES


def parent(code: str) -> str:
    """The tier-1 code of `code` (itself for a tier-1 code)."""
    return code.split("-", 1)[0]


def with_parent(code: str) -> tuple[str, ...]:
    """The code and, for a tier-2 code, its tier-1 parent: what a request's category
    matches (a line item targeting or a publisher blocking `IAB17` means all of sports)."""
    head = parent(code)
    return (code,) if head == code else (code, head)
