"""The errors the OpenRTB package raises: each names the offending field by its JSON path.

The HTTP layer maps `InvalidBidRequest` to 400 (with `field` in the body), its subclass
`RequestTooLarge` to 413, and counts `InvalidBidResponse` against the DSP that sent it.

>>> err = InvalidBidRequest("request.imp[1].banner.format[0].w", "must be >= 0, got -3")
>>> str(err)
'request.imp[1].banner.format[0].w must be >= 0, got -3'
>>> err.field, err.reason
('request.imp[1].banner.format[0].w', 'must be >= 0, got -3')
"""

from __future__ import annotations


class OpenRTBError(ValueError):
    """An OpenRTB document is invalid; `field` is the JSON path, `reason` what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self):  # keep pickling (multiprocessing, logging handlers) working
        return (type(self), (self.field, self.reason))


class InvalidBidRequest(OpenRTBError):
    """A bid request (or the Native request inside it) breaks the spec or our limits."""


class RequestTooLarge(InvalidBidRequest):
    """A bid request body is larger than `Limits.max_body_bytes`."""


class InvalidBidResponse(OpenRTBError):
    """A bid response (or a Native response) breaks the spec or does not fit its request."""
