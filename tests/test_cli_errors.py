"""Every user mistake ends in one clear message and the documented exit code — never a traceback.

Each command's main case runs as a real process (`run_cli`); its variants run through the same
`main` in this process (`cli_in_process`), so they do not each pay a process's imports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import cli_in_process, refused, run_cli, sentiment_lines

CLI = pytest.CaptureFixture[str]


def test_validate_usable_file_exits_0(sentiment_file: Path) -> None:
    result = run_cli("validate", str(sentiment_file), "--template", "tiny-random", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["usable"] is True
    assert data["report"]["valid_rows"] == 48 and data["report"]["invalid_rows"] == 1
    assert data["report"]["invalid"][0]["line"] == 6
    assert data["report"]["token_stats"]["count"] == 48


def test_validate_preview_tells_prompt_from_completion(sentiment_file: Path, capsys: CLI) -> None:
    result = cli_in_process(
        capsys, "validate", str(sentiment_file), "--template", "tiny-random", "--preview", "1", "--json"
    )
    (pieces,) = json.loads(result.stdout)["preview"]
    masked = "".join(p["text"] for p in pieces if not p["trained"])
    trained = "".join(p["text"] for p in pieces if p["trained"])
    assert masked.endswith("### Assistant:")
    assert trained == " positive<|endoftext|>"  # the completion, then EOS: both learned


def test_validate_over_tolerance_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*sentiment_lines(1), *["no sections at all"] * 5]) + "\n")
    result = run_cli("validate", str(path), "--no-tokenize")  # a real process: exit 1 with the report on stdout
    assert result.returncode == 1
    assert "not usable" in result.stdout and "line" in result.stdout


def test_validate_usage_error_exits_2(capsys: CLI) -> None:
    assert run_cli("validate").returncode == 2
    refused(cli_in_process(capsys, "validate", "x.txt", "--format", "xml"), "--format", "xml", code=2)


def test_validate_binary_file_is_one_clear_error(tmp_path: Path, capsys: CLI) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 10)
    refused(cli_in_process(capsys, "validate", str(path), "--no-tokenize"), str(path), "zip")


def test_train_over_tolerance_stops_with_the_report(tmp_path: Path, capsys: CLI) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("\n".join([*sentiment_lines(1), *["### Human: no answer"] * 4]) + "\n")
    result = cli_in_process(
        capsys,
        "train",
        str(path),
        "--template",
        "tiny-random",
        "--output",
        str(tmp_path / "v"),
        "--invalid-data-tolerance-percent",
        "5",
    )
    refused(result, "INVALID_DATA_TOLERANCE_EXCEEDED")
    assert not (tmp_path / "v").exists()


def test_train_refuses_bad_settings_before_loading(sentiment_file: Path, tmp_path: Path) -> None:
    """One refused setting through a real process; each rule is tested in `test_settings`."""
    output = str(tmp_path / "v")
    result = run_cli(
        "train",
        str(sentiment_file),
        "--template",
        "tiny-random",
        "--output",
        output,
        "--trainer-config",
        '{"push_to_hub": true}',
    )
    refused(result, "push_to_hub")
    assert result.stderr.startswith("error"), result.stderr  # the unused progress bar once left an empty line above


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--trainer-config", '{"num_train_epochs": 1', "not valid JSON"),
        ("--invalid-data-tolerance-percent", "140", "invalid_data_tolerance_percent"),
    ],
)
def test_train_refuses_malformed_settings_before_loading(
    sentiment_file: Path, tmp_path: Path, capsys: CLI, flag: str, value: str, expected: str
) -> None:
    output = str(tmp_path / "v")
    result = cli_in_process(
        capsys, "train", str(sentiment_file), "--template", "tiny-random", "--output", output, flag, value
    )
    refused(result, expected)
    assert result.stderr.startswith("error"), result.stderr
    assert not (tmp_path / "v").exists()


def test_every_bad_setting_is_listed_one_per_line(sentiment_file: Path, tmp_path: Path, capsys: CLI) -> None:
    """Three mistakes in one dict and one in another: all four in one run, each on its own line."""
    result = cli_in_process(
        capsys,
        "train",
        str(sentiment_file),
        "--template",
        "tiny-random",
        "--output",
        str(tmp_path / "v"),
        "--trainer-config",
        '{"learning_rate": "abc", "num_train_epochs": -1, "learning_rte": 0.1}',
        "--peft-config",
        '{"r": 0}',
    )
    refused(result, "INVALID_PARAMS")
    lines = result.stderr.strip().splitlines()
    assert lines[0].endswith("4 settings are invalid:"), result.stderr
    assert sorted(line.split()[1] for line in lines[1:]) == [
        "peft_config.r",
        "trainer_config.learning_rate",
        "trainer_config.learning_rte",
        "trainer_config.num_train_epochs",
    ], result.stderr
    assert "Did you mean 'learning_rate'?" in result.stderr
    assert not (tmp_path / "v").exists()


def test_quantized_template_on_cpu_says_so_plainly(sentiment_file: Path, tmp_path: Path, capsys: CLI) -> None:
    result = cli_in_process(
        capsys,
        "train",
        str(sentiment_file),
        "--template",
        "HF_Llama_2_7b_chat_GPTQ_lora",
        "--output",
        str(tmp_path / "v"),
    )
    refused(result, "GPU")


def test_missing_base_weights_is_one_line(sentiment_file: Path, tmp_path: Path, capsys: CLI) -> None:
    output = str(tmp_path / "v")
    result = cli_in_process(capsys, "train", str(sentiment_file), "--template", "gpt-neo-125m-lora", "--output", output)
    refused(result, "EleutherAI/gpt-neo-125m", "local directory")


def test_gpt_neo_template_tokenizes_offline(sentiment_file: Path, capsys: CLI) -> None:
    result = cli_in_process(capsys, "validate", str(sentiment_file), "--template", "gpt-neo-125m-lora", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["report"]["token_stats"]["count"] == 48


def test_templates_list_and_show(capsys: CLI) -> None:
    listed = json.loads(run_cli("templates", "--json").stdout)
    assert {"smollm2-135m-instruct-lora", "tiny-random", "advanced"} <= {t["id"] for t in listed}
    shown = json.loads(cli_in_process(capsys, "templates", "show", "HF_GPTNeo_125m_lora").stdout)
    assert shown["id"] == "gpt-neo-125m-lora"
    assert shown["defaults"]["peft_config"]["r"] == 16


def test_csv_template_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "template.csv"
    assert run_cli("csv-template", str(path)).returncode == 0
    assert run_cli("validate", str(path), "--no-tokenize").returncode == 0


def test_existing_output_is_refused_before_training(sentiment_file: Path, tmp_path: Path, capsys: CLI) -> None:
    out = tmp_path / "v"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    result = cli_in_process(capsys, "train", str(sentiment_file), "--template", "tiny-random", "--output", str(out))
    refused(result, "already exists", "--overwrite")
    assert (out / "keep.txt").read_text() == "a user's file"
