"""What house demand may use of a request, by the consent signals, as an external DSP with
our TCF vendor id (`campaigns.vendor_id`) would receive it (`openbid.privacy.consent.
redaction_for`): house demand never gets more permission than a DSP would.

| redaction for our vendor id | house demand |
| --- | --- |
| `block` (GDPR: no valid TC string, no vendor id of ours, no basis for purpose 2) | no bid |
| `strip_user_ids` | no frequency-cap user key (`frequency_user_key`): the anonymous share |
| `strip_user_data` | no user segments, in targeting nor in the models' features |
| `strip_fine_geo` (COPPA) | country and region only, in targeting and features |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from openbid.campaigns.caps import frequency_user_key
from openbid.campaigns.targeting import RequestFacts
from openbid.privacy.consent import ConsentContext, redaction_for

FINE_GEO_FEATURES = ("city", "metro", "zip")


class HouseInputs(msgspec.Struct, frozen=True):
    facts: RequestFacts
    features: Mapping[str, str]
    user_key: str | None


def house_inputs(
    request: Any,
    consent: ConsentContext,
    facts: RequestFacts,
    features: Mapping[str, str],
    vendor_id: int | None,
) -> HouseInputs | None:
    """The facts, features and user key house demand may bid with; None: it may not bid."""
    redaction = redaction_for(consent, vendor_id)
    if redaction.block:
        return None
    if redaction.strip_user_data and (facts.segments or features.get("user_segments")):
        facts = msgspec.structs.replace(facts, segments=())
        features = {**features, "user_segments": ""}
    if redaction.strip_fine_geo:
        if len(facts.geo) > 2:  # country, country-region, country-region-city
            facts = msgspec.structs.replace(facts, geo=facts.geo[:2])
        if any(features.get(name) for name in FINE_GEO_FEATURES):
            features = {**features, **dict.fromkeys(FINE_GEO_FEATURES, "")}
    return HouseInputs(facts, features, frequency_user_key(request, consent, vendor_id))
