"""Identifiers: random ids and user-given slugs share one shape, so both are safe in URLs and file names.

Every id the store accepts or makes matches `ID_PATTERN` (lowercase letters, digits, `_` and `-`,
starting with a letter or digit, at most 64 characters). That rules out `/`, `..`, and anything a
shell or a file system would treat specially, which is what lets `artifacts` derive paths from ids.
"""

from __future__ import annotations

import re
import secrets

from tuneloom.errors import ConflictError, InvalidIdError, NotFoundError

__all__ = ["ID_PATTERN", "ConflictError", "InvalidIdError", "NotFoundError", "check_id", "new_id"]

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RANDOM_ID_LENGTH = 16  # 36**16 ≈ 2**82: collisions are not a practical concern


def new_id(length: int = RANDOM_ID_LENGTH) -> str:
    """A random id; lowercase alphanumerics only, so it is also a valid slug."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def check_id(value: object, what: str = "id") -> str:
    """Return `value` if it is a valid id, else raise `InvalidIdError` naming `what`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        shown = repr(value)[:80]
        raise InvalidIdError(
            f"{what} {shown} is not valid: use 1-64 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit.",
            details={"key": what},
        )
    return value
