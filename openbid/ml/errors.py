"""Errors of the learning core: each names the file, field or parameter a user must fix."""

from openbid.errors import OpenbidError


class MLError(OpenbidError):
    """Base class of errors raised by `openbid.ml`."""


class FeatureSpecError(MLError, ValueError):
    """A feature spec is invalid, or a raw value cannot be featurized; the message names the field."""


class ModelArtifactError(MLError):
    """A model directory is missing, truncated, corrupt or made for another feature spec."""


class TrainingDataError(MLError, ValueError):
    """Training input has the wrong shape, labels outside {0, 1}, or an unreadable file."""
