"""The one exception family tuneloom raises on purpose.

Every failure a user can cause (a bad file, a bad setting, a missing model) surfaces as a
`TuneloomError` carrying a stable machine-readable `code` and a message a person understands.
The CLI prints the message, the server turns it into a 4xx: neither ever shows a traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the OSErrors of a full disk, or of a user's full quota


class TuneloomError(Exception):
    """Base class: `code` is stable across releases, `message` is for people."""

    code = "TUNELOOM_ERROR"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            **({"details": self.details} if self.details else {}),
        }


class DataFileError(TuneloomError):
    """The file as a whole cannot be used (binary, unreadable encoding, wrong CSV columns, no rows)."""

    code = "INVALID_DATA_FILE"


class ToleranceExceededError(TuneloomError):
    """More rows were invalid than `invalid_data_tolerance_percent` allows; `details` holds the report."""

    code = "INVALID_DATA_TOLERANCE_EXCEEDED"


class SettingsError(TuneloomError):
    """A settings dictionary is invalid; `details["key"]` names the offending key (dotted path)."""

    code = "INVALID_PARAMS"

    def __init__(self, message: str, *, key: str | None = None, details: dict[str, Any] | None = None):
        merged = dict(details or {})
        if key is not None:
            merged["key"] = key
        super().__init__(message, details=merged)
        self.key = key
        self.headline = message  # what a client listing `parts` one per line prints above them

    @property
    def parts(self) -> list[dict[str, Any]]:
        """Each offending key with its message: one for a plain error, several for `raise_all`'s."""
        return self.details.get("errors") or [{"key": self.key, "message": self.message}]

    @classmethod
    def raise_all(cls, problems: list[SettingsError], *, what: str = "settings") -> None:
        """Raise one error for every problem found, so a user fixes them in one round, not one per try.

        `key` stays the first offender's (clients that mark one field keep working);
        `details["errors"]` lists each offender's key and message, nested collections flattened;
        `headline` ("3 settings are invalid") is the message's start, for a client that lists the parts.
        """
        if len(problems) == 1:
            raise problems[0]
        if problems:
            parts = [part for problem in problems for part in problem.parts]
            headline = f"{len(parts)} {what} are invalid"
            error = cls(f"{headline}: " + "; ".join(part["message"] for part in parts), key=parts[0]["key"])
            error.details["errors"], error.headline = parts, headline
            raise error

    @staticmethod
    def collect(problems: list[SettingsError], check: Callable[..., Any], *args: Any) -> Any:
        """`check(*args)`, or None with its SettingsError added to `problems` (raised later by `raise_all`)."""
        try:
            return check(*args)
        except SettingsError as err:
            problems.append(err)
            return None


class ModelUnavailableError(TuneloomError):
    """Base weights or tokenizer cannot be obtained (no local copy, Hub unreachable, no GPU for GPTQ)."""

    code = "MODEL_UNAVAILABLE"


class ModelVersionError(TuneloomError):
    """A model-version directory is missing, incomplete or damaged."""

    code = "INVALID_MODEL_VERSION"


class InvalidIdError(TuneloomError):
    """An id or slug is not of the safe shape ids must have (the server answers 422)."""

    code = "INVALID_ID"


class NotFoundError(TuneloomError):
    """The object does not exist, or is not visible from the app it was asked through (404)."""

    code = "NOT_FOUND"


class DiskFullError(TuneloomError):
    """A file system tuneloom writes to has no space left: a run's output, or the server's data dir (507)."""

    code = "DISK_FULL"


class ConflictError(TuneloomError):
    """The request clashes with the current state: a taken id, a change to an immutable object (409)."""

    code = "CONFLICT"


def error_from_dict(body: Any) -> TuneloomError:
    """The error another tuneloom process described with `to_dict()`, as the class its code names.

    A server relaying a generation node's refusal raises this, so the caller gets the node's own
    status, code and message (a 422 naming the key stays a 422 naming the key).
    """
    fields = body if isinstance(body, dict) else {}
    code = str(fields.get("code") or TuneloomError.code)
    message = str(fields.get("message") or code)
    details = fields.get("details") if isinstance(fields.get("details"), dict) else None
    kind = next((c for c in _subclasses(TuneloomError) if c.__dict__.get("code") == code), TuneloomError)
    error = kind.__new__(kind)
    TuneloomError.__init__(error, message, code=code, details=details)
    if isinstance(error, SettingsError):
        error.key = (details or {}).get("key")
    return error


def _subclasses(kind: type[TuneloomError]) -> list[type[TuneloomError]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
