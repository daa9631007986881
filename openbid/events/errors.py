"""The event log's exceptions."""

from __future__ import annotations


class EventLogError(Exception):
    """The event log cannot be opened or written."""


class RollProcessError(EventLogError):
    """The roll process died, could not start or was stuck (and was killed: `stuck`)."""

    def __init__(self, message: str, *, stuck: bool = False) -> None:
        super().__init__(message)
        self.stuck = stuck
