"""Errors the workflow raises on bad input: each names the file, key or row at fault."""

from __future__ import annotations


class RimError(Exception):
    """Base class: a problem the user can fix from the message alone."""


class ConfigError(RimError):
    """The configuration does not match the schema or is inconsistent."""


class DataError(RimError):
    """A dataset file is missing, malformed, or has bad rows."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None):
        where = []
        if source is not None:
            where.append(f"in {source}")
        if row is not None:
            # Rows are reported 1-based as a user counts them in a table (header excluded).
            where.append(f"row {row}")
        prefix = (" ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.source = source
        self.row = row


class ModelSourceError(RimError):
    """A model cannot be found or loaded from the source named in the config."""
