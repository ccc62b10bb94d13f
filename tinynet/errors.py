"""The one exception type for a user's mistake: the scripts print it as one line and exit 2."""


class UserError(Exception):
    """Bad input that the user can fix: a missing file, a flag out of range, a broken data folder."""
