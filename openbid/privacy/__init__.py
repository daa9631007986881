"""Privacy signals and the rules that follow from them: TCF v2 TC strings, US Privacy, GPP
(TCF EU and US National sections), COPPA, GPC, LMT/DNT, gathered in one `ConsentContext`;
`redaction_for` says what one demand partner may receive (docs/privacy.md)."""

from openbid.privacy.consent import NO_REDACTION, ConsentContext, Redaction, redaction_for
from openbid.privacy.errors import (
    InvalidGPPString,
    InvalidTCString,
    InvalidUSPrivacyString,
    PrivacyError,
)

__all__ = [
    "NO_REDACTION",
    "ConsentContext",
    "InvalidGPPString",
    "InvalidTCString",
    "InvalidUSPrivacyString",
    "PrivacyError",
    "Redaction",
    "redaction_for",
]
