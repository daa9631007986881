"""openbid: an open-source, self-hosted real-time advertising platform."""

__version__ = "0.1.0"
