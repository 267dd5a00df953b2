"""The one exception type for bad user input."""


class UserError(Exception):
    """Bad input or missing files. The CLI prints the message (no traceback) and exits with 2;
    the UI shows it as an error message and keeps serving."""
