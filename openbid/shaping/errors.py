"""Errors of traffic shaping: each says which model directory, field or event a user must fix."""

from openbid.errors import OpenbidError


class ShapingError(OpenbidError):
    """Base class of errors raised by `openbid.shaping`."""


class ShapingModelError(ShapingError):
    """A shaping model directory is missing, damaged, or disagrees with itself; the message
    names the file or field. A server refuses it and keeps the model it has."""


class ShapingDataError(ShapingError, ValueError):
    """Training or evaluation input is unusable (no rows, no bids for a DSP, bad shares)."""
