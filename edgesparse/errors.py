"""User-facing errors.

A `UserError` is a problem with what the user gave us (a file, a flag, a recipe, data).
The CLI prints its message as one line and exits with code 2, no traceback unless --debug.
The message names the problem *and* what to do about it.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: one line that names the problem and the fix."""

    exit_code = 2


class BudgetError(UserError):
    """The build could not meet the accuracy budget; the report still says what was tried."""

    exit_code = 3


ECHO_LIMIT = 80   # characters of a user's value or key quoted back in an error


def describe_validation_error(exc, known=None, as_option: bool = False) -> str:
    """One line for a pydantic ValidationError: the key (or `--option`) and what is wrong with it.

    A misspelt key also makes the right one "missing", so an unknown key is named first, with
    the `known` keys when given. pydantic's "Value error, " prefix (a validator's ValueError) is
    dropped: the validator's own sentence says what to do.
    """
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in err["loc"])[:ECHO_LIMIT]    # a hostile key is echoed bounded
    if as_option and key:
        key = "--" + key.replace("_", "-")
    if err["type"] == "extra_forbidden":
        what = "option" if as_option else "key"
        listed = "" if known is None else f" (known: {', '.join(known) or 'none'})"
        return f"unknown {what} {key!r}{listed}"
    msg = err["msg"].removeprefix("Value error, ")[:4 * ECHO_LIMIT]
    return f"{key}: {msg}" if key else msg
