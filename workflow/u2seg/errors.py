"""Errors reported to the user without a traceback."""


class UserError(RuntimeError):
    """An error caused by input or configuration (bad image, missing weights, bad value)."""
