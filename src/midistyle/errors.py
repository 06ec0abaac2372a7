"""Errors a user can act on: printed as one line, never as a traceback."""


class UserError(Exception):
    """Bad input or a missing prerequisite; the message names the file or key and the reason."""
