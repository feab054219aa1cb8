"""Helpers shared by the tests/test_data_*.py modules: a hang guard and file writers.

(Named test_data_* so it belongs with them; it holds no tests itself.)
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuneloom.data import parse_file
from tuneloom.errors import DataFileError

SEED_SENTIMENT = [
    "### Instruction: What is the sentiment of this tweet? Please choose an answer from "
    "{negative/neutral/positive} ### Human: Net sales of the Paper segment decreased to EUR 221.6 mn in "
    "the second quarter of 2009 from EUR 241.1 mn in the second quarter of 2008, while operating profit "
    "excluding non-recurring items rose to EUR 8.0 mn from EUR 7.6 mn . ### Assistant: negative.",
    "### Instruction: What is the sentiment of this tweet? Please choose an answer from "
    "{negative/neutral/positive} ### Human: Stora Enso said DeLight was suitable for a wide range of "
    "applications including food , cosmetics , home decoration and leisure products . "
    "### Assistant: neutral.",
    "### Instruction: What is the sentiment of this tweet? Please choose an answer from "
    "{negative/neutral/positive} ### Human: Earnings per share were higher at 0.48 against 0.37 a year "
    "before and ahead of market consensus of 0.40 eur . ### Assistant: positive.",
]
VALID = "### Instruction: Classify ### Human: hi there ### Assistant: positive."
MISSING = "### Instruction: Classify ### Human: no answer here"


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging CI) any data test that runs longer than 20 seconds."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("a data test ran longer than 20 s: something hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 20)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def file_error(path: Path, **kwargs: object) -> DataFileError:
    """Parse a file that must be rejected as a whole; return the error for the message checks."""
    with pytest.raises(DataFileError) as caught:
        parse_file(path, **kwargs)  # type: ignore[arg-type]
    assert str(path) in caught.value.message
    return caught.value
