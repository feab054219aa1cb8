"""Odd but plausible input to the CLI and the SDK: one clear message naming what is at fault, never a traceback.

Each case here once printed an internal error (FileExistsError, OverflowError, ModuleNotFoundError,
psycopg's OperationalError, JSONDecodeError), answered a wrong question ("Unknown template" for a
run directory), or finished with exit code 0 having done nothing. All are refused before a model
loads, so the file stays fast; the real command runs in a subprocess for the main cases, and
in-process (`main`, the same code, the imports paid once) for their variants.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import cli_command, cli_in_process, refused, run_cli, sentiment_lines

from tuneloom.cli import build_parser
from tuneloom.client import Client, TuneloomAPIError


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`tuneloom ARGS` through `main`: its exit code and what it printed to stderr."""
    result = cli_in_process(capsys, *args)
    return result.returncode, result.stderr


def test_generate_file_with_no_inputs(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("\n  \n", encoding="utf-8")
    refused(run_cli("generate", "tiny-random", "--file", str(inputs)), str(inputs), "no inputs")


def test_generate_file_with_too_many_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a line\n" * 10_000, encoding="utf-8")
    code, err = in_process(capsys, "generate", "tiny-random", "--file", str(inputs))
    assert code == 1 and str(inputs) in err and "10000 inputs" in err and "128" in err


def test_generate_on_an_interrupted_run_points_at_resume(tmp_path: Path) -> None:
    (tmp_path / "tickets.partial" / "checkpoints").mkdir(parents=True)
    run = tmp_path / "tickets"
    result = run_cli("generate", str(run), "hello")
    refused(result, str(run), "tickets.partial", "--resume")
    assert "Unknown template" not in result.stderr


def test_evaluate_on_a_file_of_only_invalid_rows(tmp_path: Path) -> None:
    data = tmp_path / "heldout.txt"
    data.write_text("no sections here\n### Human: no answer\n", encoding="utf-8")
    refused(run_cli("evaluate", "tiny-random", str(data)), str(data), "no valid examples", "no sections here")


@pytest.mark.parametrize("max_tokens", ["0", "-1"])
def test_evaluate_max_tokens_is_checked_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], max_tokens: str
) -> None:
    data = tmp_path / "heldout.txt"
    data.write_text("\n".join(sentiment_lines(1)) + "\n", encoding="utf-8")
    code, err = in_process(capsys, "evaluate", "tiny-random", str(data), "--max-tokens", max_tokens)
    assert code == 1 and "'max_tokens'" in err and "4096" in err


def test_export_below_a_file(tmp_path: Path) -> None:
    version = tmp_path / "v"
    version.mkdir()
    (version / "tuneloom.json").write_text(json.dumps({"weights": "adapter", "files": {}}), encoding="utf-8")
    (tmp_path / "notes").write_text("a user's file", encoding="utf-8")
    refused(run_cli("export", str(version), str(tmp_path / "notes" / "out")), "notes is a file, not a folder")


def test_train_output_below_a_file(tmp_path: Path) -> None:
    """Refused before the model loads; `--resume` with no checkpoint to resume from says so, too."""
    data = tmp_path / "data.txt"
    data.write_text("\n".join(sentiment_lines(1)) + "\n", encoding="utf-8")
    (tmp_path / "runs").write_text("", encoding="utf-8")
    output = str(tmp_path / "runs" / "v")
    result = run_cli("train", str(data), "--template", "tiny-random", "--output", output, "--resume")
    refused(result, "--output", "runs is a file, not a folder", "--resume: no checkpoint")


def test_train_resume_of_a_finished_run_says_there_is_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed "no checkpoint …; training from the start", then refused the existing output."""
    (tmp_path / "runs" / "v").mkdir(parents=True)
    output = str(tmp_path / "runs" / "v")
    code, err = in_process(capsys, "train", "data.txt", "--template", "tiny-random", "--output", output, "--resume")
    assert code == 1 and "already a finished model version: nothing to resume" in err and "--overwrite" in err
    assert "training from the start" not in err


def test_generate_refuses_text_and_file_together(tmp_path: Path) -> None:
    """One of them was silently ignored (the TEXT): a usage error names both."""
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("from the file\n", encoding="utf-8")
    refused(run_cli("generate", "tiny-random", "from the argument", "--file", str(inputs)), "--file", "text", code=2)


@pytest.mark.parametrize("text", ["", "  "])
def test_generate_refuses_an_empty_text(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """`tuneloom generate RUN "$EMPTY"` generated from an empty prompt; the server's /predict refuses one."""
    code, err = in_process(capsys, "generate", "tiny-random", text)
    assert code == 1 and "TEXT is empty" in err


def test_settings_at_sign_without_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = in_process(capsys, "train", "data.txt", "--output", str(tmp_path / "v"), "--peft-config", "@")
    assert code == 1 and "--peft-config: '@' must be followed by a JSON file's path" in err, err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("train", "data.txt", "--trainer-config", "@nofile.txt"), "--trainer-config: @nofile.txt: no such file"),
        (("train", "data.txt", "--distributed", "@nofile.txt"), "--distributed: @nofile.txt: no such file"),
        (("generate", "tiny-random", "--file", "nofile.txt"), "--file: nofile.txt: no such file"),
    ],
)
def test_a_missing_named_file_names_the_flag_and_path_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    expected: str,
) -> None:
    """It repeated Python's "[Errno 2] No such file or directory: 'nofile.txt'" after the path."""
    monkeypatch.chdir(tmp_path)
    code, err = in_process(capsys, *flags)
    assert code == 1 and expected in err, err
    assert "Errno" not in err and err.count("nofile.txt") == 1


def test_a_named_folder_is_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = in_process(capsys, "train", "data.txt", "--peft-config", f"@{tmp_path}")
    assert code == 1 and f"--peft-config: @{tmp_path}: a folder, not a file" in err


def test_csv_template_does_not_overwrite_a_file(tmp_path: Path) -> None:
    mine = tmp_path / "my-data.csv"
    mine.write_text("a user's data\n", encoding="utf-8")
    refused(run_cli("csv-template", str(mine)), str(mine), "--overwrite")
    assert mine.read_text(encoding="utf-8") == "a user's data\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--workers", "-1"], "--workers"),
        (["worker", "--lease-seconds", "-5"], "--lease-seconds"),
        (["worker", "--workers", "0"], "--workers"),  # a worker with no slots exited at once, saying nothing
        (["serve", "--max-upload-mb", "-1"], "--max-upload-mb"),
        (["validate", "data.txt", "--preview", "-1"], "--preview"),
    ],
)
def test_server_numbers_out_of_range_are_usage_errors(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(args)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("", encoding="utf-8")
    refused(run_cli("keys", "create", "--data-dir", str(tmp_path / "data" / "sub")), "--data-dir", "is a file", code=2)


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody may write in: mode 555, and immutable (`chattr +i`) for root, who ignores modes."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    as_root = os.geteuid() == 0
    if as_root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        folder.chmod(0o755)
        pytest.skip("running as root, where only an immutable folder refuses writes, and chattr +i failed")
    try:
        yield folder
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--workers", "0", "--backend", "transformers"],
        ["worker", "--workers", "1"],  # 0 is a usage error: a worker with no slots would do nothing
        ["keys", "create"],
    ],
)
@pytest.mark.parametrize("below", [True, False], ids=["cannot-create", "cannot-write"])
def test_a_data_dir_that_cannot_be_written(
    locked: Path, command: list[str], below: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was `internal error: OSError` (serve, worker, keys create), or SQLite's bare "unable to open database file"."""
    data_dir = locked / "data" if below else locked
    code, err = in_process(capsys, *command, "--data-dir", str(data_dir))
    message = " ".join(err.split())
    assert code == 1 and f"the data dir (--data-dir) {data_dir} cannot be created or written: " in message, err
    assert "internal error" not in err and not (locked / "data").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:hunter2@db/tuneloom", "'mysql'"),
        ("not a url", "not a URL"),
        ("postgresql://nobody:hunter2@127.0.0.1:1/tuneloom", "127.0.0.1:1"),
    ],
)
def test_unusable_database_url(tmp_path: Path, url: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = in_process(capsys, "keys", "list", "--data-dir", str(tmp_path), "--database-url", url)
    assert code == 1 and "database" in err and expected in err
    assert "hunter2" not in err and "internal error" not in err


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "revoke", "k"], ["workers"]])
def test_reading_commands_on_a_data_dir_without_a_database(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --data-dir made a new, empty database there and answered "no keys" / "no workers"."""
    missing = tmp_path / "tuneloom-dat"
    code, err = in_process(capsys, *command, "--data-dir", str(missing))
    assert code == 1 and f"{missing} holds no tuneloom database" in err and "--database-url" in err
    assert not missing.exists()


def test_revoking_an_unknown_key_is_reported_as_every_error_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed `Error: key 'nosuchkey' not found`, unlike every other command's `error (CODE): …`."""
    data_dir = str(tmp_path / "data")
    assert in_process(capsys, "keys", "create", "--data-dir", data_dir)[0] == 0
    code, err = in_process(capsys, "keys", "revoke", "nosuchkey", "--data-dir", data_dir)
    assert code == 1 and err.strip() == "error (NOT_FOUND): key 'nosuchkey' not found", err


def test_generate_from_an_empty_stdin(tmp_path: Path) -> None:
    """`producer | tuneloom generate RUN` where the producer printed nothing generated from an empty prompt."""
    command = cli_command("generate", "tiny-random")
    refused(subprocess.run(command, input="\n", capture_output=True, text=True, timeout=300), "stdin was empty")


def test_stop_escapes_mean_what_the_readme_shows() -> None:
    args = build_parser().parse_args(["generate", "x", "hi", "--stop", "\\n", "--stop", "a\\\\n"])
    assert args.stop == ["\n", "a\\n"]


@pytest.fixture
def not_tuneloom() -> Iterator[str]:
    """A web server on a loopback port that answers 200 with an HTML page, as a login portal would."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>sign in to the network</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sdk_names_a_server_that_is_not_tuneloom(not_tuneloom: str) -> None:
    with Client(not_tuneloom, api_key="k") as client, pytest.raises(TuneloomAPIError) as err:
        client.list_apps()
    assert err.value.code == "NOT_JSON" and not_tuneloom in str(err.value) and "sign in" in str(err.value)
