"""The invalid-row tolerance: below it training goes on, above it one clear error with the report."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from test_data_support import MISSING, VALID, no_hang, write  # noqa: F401
from tuneloom.data import DataReport, InvalidRow, check_tolerance, parse_file
from tuneloom.errors import DataFileError, SettingsError, ToleranceExceededError


def report(valid: int, invalid: int) -> DataReport:
    result = DataReport(source="train.txt", format="sections", total_rows=valid + invalid, valid_rows=valid)
    for line in range(invalid):
        result.add_invalid(InvalidRow(7 + line, "no '### Assistant:' section", "x"))
    return result


def test_above_tolerance_raises_with_the_report() -> None:
    with pytest.raises(ToleranceExceededError) as caught:
        check_tolerance(report(188, 12), 5)
    error = caught.value
    assert error.code == "INVALID_DATA_TOLERANCE_EXCEEDED"
    assert error.message == (
        "'train.txt': 12 of 200 rows (6.0%) are invalid, above the 5% tolerance; "
        "first: line 7: no '### Assistant:' section"
    )
    assert error.details["invalid_rows"] == 12 and error.details["invalid_percent"] == 6.0
    assert error.details["invalid"][0]["line"] == 7


@pytest.mark.parametrize(("valid", "invalid", "tolerance"), [(190, 10, 5), (200, 0, 0), (1, 99, 99), (5, 1, 100)])
def test_at_or_below_tolerance_passes(valid: int, invalid: int, tolerance: float) -> None:
    check_tolerance(report(valid, invalid), tolerance)


def test_what_a_run_dropped_is_counted_in_words() -> None:
    assert [report(9, n).dropped for n in (0, 1, 2)] == [
        "0 invalid rows dropped",
        "1 invalid row dropped",
        "2 invalid rows dropped",
    ]


def test_no_valid_rows_is_a_file_error_even_at_100_percent() -> None:
    with pytest.raises(DataFileError) as caught:
        check_tolerance(report(0, 3), 100)
    assert "has no valid rows" in caught.value.message and "first: line 7" in caught.value.message


@pytest.mark.parametrize("bad", [-0.1, 100.5, math.nan, math.inf, "5", None, True])
def test_tolerance_must_be_a_number_from_0_to_100(bad: object) -> None:
    with pytest.raises(SettingsError) as caught:
        check_tolerance(report(10, 0), bad)  # type: ignore[arg-type]
    assert caught.value.details["key"] == "invalid_data_tolerance_percent"


def test_parsed_file_against_tolerance(tmp_path: Path) -> None:
    lines = [VALID] * 19 + [MISSING]
    parsed = parse_file(write(tmp_path, "d.txt", "\n".join(lines)))
    check_tolerance(parsed.report, 5)
    with pytest.raises(ToleranceExceededError):
        check_tolerance(parsed.report, 4.9)
