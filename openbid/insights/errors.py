"""The errors of the insights analyses: bad input named by its field, refused queries."""

from __future__ import annotations

from openbid.errors import OpenbidError


class InsightsError(OpenbidError, ValueError):
    """An analysis could not run on its input; the message names the field or column."""
