"""The root of openbid's own exceptions: every error we raise on purpose derives from here."""


class OpenbidError(Exception):
    """Base class of errors raised by openbid with a message a user can act on."""


class ConfigError(OpenbidError, ValueError):
    """A configuration file or environment override is invalid; the message names the key."""
