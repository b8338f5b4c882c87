"""The one exception type for user mistakes: CLIs print its message as a single sentence, never a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad path, bad option, missing data or weights); the message says how."""
