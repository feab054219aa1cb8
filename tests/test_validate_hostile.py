"""`tuneloom validate` on files that break other tools (tests/hostile/): a verdict, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import cli_command
from tests.hostile.corpus import FOLDER, GENERATED, get, names

from tuneloom.cli import main


@pytest.mark.parametrize("name", names())
def test_hostile_file_gets_its_verdict(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    hostile = get(name)
    path = hostile.write(tmp_path)
    verdict = hostile.verdict
    # Rows are tokenized (tiny-random's GPT-2 BPE) as training would; a refused file never gets that far.
    tokenize = ["--no-tokenize"] if verdict.refused else ["--template", "tiny-random"]
    code = main(["validate", str(path), *tokenize, "--json"])
    out, err = capsys.readouterr()
    assert code == (0 if verdict.usable else 1), out + err
    assert "Traceback" not in err and "internal error" not in err
    if verdict.refused:  # a whole-file problem: one message naming the file, no report
        assert not out.strip()
        assert err.startswith("error (INVALID_DATA_FILE): ") and f"'{path}'" in err and verdict.refused in err, err
    else:
        report = json.loads(out)["report"]
        assert json.loads(out)["usable"] is verdict.usable
        assert (report["valid_rows"], report["invalid_rows"]) == verdict.rows
        assert report["total_rows"] == sum(verdict.rows or ())
        if report["invalid"]:
            assert verdict.says in report["invalid"][0]["reason"], report["invalid"][0]
    # The same file rendered for a person: the same exit code, and nothing raw reaches the terminal.
    assert main(["validate", str(path), "--no-tokenize"]) == code
    human = "".join(capsys.readouterr())
    assert "Traceback" not in human and name in human
    for raw in ("\x1b", "\x07", "\x08", "\u202e", "\x00"):
        assert raw not in out + err + human, f"{raw!r} reached the terminal"


def test_the_corpus_folder_holds_only_listed_files() -> None:
    """A file dropped into tests/hostile/ without a verdict would be silently untested."""
    on_disk = {p.name for p in FOLDER.iterdir() if p.is_file() and p.suffix != ".py" and p.name != ".gitattributes"}
    assert on_disk == set(names()) - set(GENERATED)
    assert sum(p.stat().st_size for p in FOLDER.iterdir() if p.is_file()) < 200 * 1024


def test_a_row_too_long_in_tokens_is_reported_with_its_controls_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The excerpt of a row refused for its token count once carried raw escape sequences to the terminal."""
    path = tmp_path / "long-tokens.txt"
    hostile = "### Human: \x1b]0;pwned\x07\x1b[31m \u202e " + "word " * 700 + "### Assistant: ok"
    path.write_text("### Human: a ### Assistant: b\n" * 40 + hostile + "\n", encoding="utf-8")
    assert main(["validate", str(path), "--template", "tiny-random"]) == 0  # 1 of 41 rows: within 5%
    out = capsys.readouterr().out
    assert "tokens after tokenization" in out and "\\x1b]0;pwned" in out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out


def labelled_file(path: Path, rows: int) -> Path:
    """`rows` sectioned rows, every thousandth one junk."""
    with path.open("w") as handle:
        for i in range(rows):
            line = f"### Instruction: Label it. ### Human: row {i} ### Assistant: {i % 3}" if i % 1000 else "junk"
            handle.write(line + "\n")
    return path


def validate_in_a_process(path: Path) -> tuple[dict[str, Any], int]:
    """`tuneloom validate --json` on `path` in its own process: its report and its peak RSS in KiB."""
    command = cli_command("validate", str(path), "--no-tokenize", "--json")
    errors = path.with_suffix(".err")
    with errors.open("wb") as err, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err) as process:
        assert process.stdout is not None
        out = process.stdout.read()  # to the end; wait4 (not wait) then reaps the process with its usage
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, errors.read_text()
    return json.loads(out)["report"], usage.ru_maxrss


def test_million_line_file_validates_in_bounded_memory(tmp_path: Path) -> None:
    big, big_rss = validate_in_a_process(labelled_file(tmp_path / "big.txt", 1_000_000))
    assert big["total_rows"] == 1_000_000
    assert big["invalid_rows"] == 1000 and len(big["invalid"]) == 100
    small, small_rss = validate_in_a_process(labelled_file(tmp_path / "small.txt", 100_000))
    assert small["total_rows"] == 100_000
    # The big file is ~70 MB, ten times the small one, and both peak within ~0.1 MB of each other;
    # keeping even one pointer per row (a list of line lengths) would add 8 MB.
    assert big_rss - small_rss < 4 * 1024, (big_rss, small_rss)
