"""Regressions for the defects the fuzzers found: each input once escaped as a non-tuneloom error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tuneloom.data import Example, InvalidRow, iter_rows, parse_file
from tuneloom.data.lines import LONE_CR
from tuneloom.errors import DataFileError, SettingsError
from tuneloom.generate.params import InferenceParams
from tuneloom.templates import resolve_settings

CR_PROBLEM = "a carriage return (\\r) inside an unquoted cell"


@pytest.mark.parametrize("content", [b"prompt,completion\rhello,world\r", b"x\ry,prompt,completion\nhi,there,z\n"])
@pytest.mark.parametrize("fmt", ["auto", "csv"])
def test_bare_carriage_return_in_the_header_is_one_clear_file_error(tmp_path: Path, content: bytes, fmt: str) -> None:
    """Old Mac line endings (\\r alone) made the csv module raise `_csv.Error` out of the sniffer."""
    path = tmp_path / "mac.csv"
    path.write_bytes(content)
    with pytest.raises(DataFileError) as info:
        parse_file(path, format=fmt)
    assert info.value.message.startswith(f"'{path}' has an unreadable CSV header: {CR_PROBLEM}")


def test_bare_carriage_return_inside_a_row_is_that_rows_reason(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"prompt,completion\nhello\rx,world\nok,fine\n")
    rows = list(iter_rows(path))
    assert [type(row) for row in rows] == [InvalidRow, Example]
    assert isinstance(rows[0], InvalidRow) and rows[0].line == 2
    assert rows[0].reason.startswith(f"{LONE_CR}, at character 6:"), rows[0]  # as in every format


@pytest.mark.parametrize("ending", [b"\r \n", b"\r\t\r\n", b" \r\n"])
def test_a_carriage_return_among_trailing_spaces_in_a_quoted_cell_is_a_line_ending(
    tmp_path: Path, ending: bytes
) -> None:
    """ "\\r \\n" inside a quoted cell reached the example as text; it is a line ending, as in every format."""
    path = tmp_path / "data.csv"
    path.write_bytes(b'prompt,completion\n"first' + ending + b'second",done\nok,fine\n')
    rows = list(iter_rows(path))
    assert all(isinstance(row, Example) for row in rows), rows
    padding = ending.replace(b"\r", b"").decode()  # the spaces are the cell's text; the \r is not
    assert [(row.prompt, row.completion) for row in rows] == [(f"first{padding}second", "done"), ("ok", "fine")]


@pytest.mark.parametrize("key", ["max_tokens", "max_new_tokens", "top_k", "num_beams"])
@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_non_finite_integer_parameters_are_refused_by_name(key: str, number: float) -> None:
    """`{"max_tokens": Infinity}` is JSON Python accepts; it raised OverflowError (a 500 on the API)."""
    with pytest.raises(SettingsError) as info:
        InferenceParams.from_dict({key: number})
    assert info.value.key == key and f"'{key}' must be an integer" in info.value.message  # the name sent


@pytest.mark.parametrize("data", [1.5, [["max_tokens", 3]], "max_tokens=3", True])
def test_inference_parameters_must_be_an_object(data: object) -> None:
    with pytest.raises(SettingsError) as info:
        InferenceParams.from_dict(data)  # type: ignore[arg-type]
    assert "inference parameters must be an object" in info.value.message


def test_whole_floats_still_count_as_integers() -> None:
    assert InferenceParams.from_dict({"max_tokens": 64.0, "top_k": 5.0}).max_tokens == 64


HUGE = 10**400  # valid JSON; float(HUGE) raises OverflowError


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"trainer_config": {"learning_rate": HUGE}}, "trainer_config.learning_rate"),
        ({"invalid_data_tolerance_percent": HUGE}, "invalid_data_tolerance_percent"),
        ({"peft_config": {"alpha_pattern": {"q_proj": -HUGE}}}, "peft_config.alpha_pattern.q_proj"),
        ({"trainer_config": {"lr_scheduler_kwargs": {"power": 2**63}}}, "trainer_config.lr_scheduler_kwargs.power"),
    ],
)
def test_integers_too_large_for_a_float_are_a_settings_error(overrides: dict[str, object], key: str) -> None:
    """A float field given a 400-digit integer raised OverflowError from the int → float cast."""
    with pytest.raises(SettingsError) as info:
        resolve_settings("tiny-random", overrides)
    assert info.value.key == key and "far too large a number" in info.value.message


@pytest.mark.parametrize(("key", "limits"), [("temperature", "between 0 and 5"), ("max_tokens", "between 1 and 4096")])
def test_huge_inference_parameters_are_out_of_range(key: str, limits: str) -> None:
    with pytest.raises(SettingsError) as info:
        InferenceParams.from_dict({key: HUGE})
    assert info.value.key == key and f"'{key}' must be {limits}, got a number beyond 2^63" in info.value.message


def test_a_whole_float_beyond_2_63_is_not_cast_to_a_309_digit_integer() -> None:
    """lora_alpha: 1e308 became int(1e308), which the stored settings could then not be read back with."""
    with pytest.raises(SettingsError) as info:
        resolve_settings("tiny-random", {"peft_config": {"lora_alpha": 1e308}})
    assert info.value.key == "peft_config.lora_alpha" and "far too large a number" in info.value.message
