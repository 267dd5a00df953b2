"""The one exception type for bad user input."""


class UserError(Exception):
    """Bad input or missing files. The CLI prints the message (no traceback) and exits with 2;
    the UI shows it as an error message and keeps serving."""


def listing(names: list[str], limit: int = 8) -> str:
    """Names for an error message: the first `limit`, then "... and N more"."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")
