"""Errors of the privacy package: a consent signal we cannot read says which one and why."""

from openbid.errors import OpenbidError


class PrivacyError(OpenbidError, ValueError):
    """A privacy signal (TC string, US Privacy string, GPP string) is malformed."""


class InvalidTCString(PrivacyError):
    """An IAB TCF v2 TC string cannot be decoded; the message says where it breaks."""


class InvalidUSPrivacyString(PrivacyError):
    """A US Privacy (CCPA) string is not the four-character `1YNN` form."""


class InvalidGPPString(PrivacyError):
    """An IAB GPP string (header or one of the sections we read) cannot be decoded."""
