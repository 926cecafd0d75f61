"""Exceptions that the CLI turns into a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad usage: unknown task or attention, bad option value, missing data (with instructions)."""
