"""Commands that run no model never import torch, transformers or peft.

Those imports are ~5 s of a process's start on a 2-core machine; `templates` (the list), `csv-template`,
`validate --no-tokenize` and `keys` answer in well under a second without them. The server's
modules are held to the same line, so that a command reaching into them (`keys` opens the
server's context) does not pull the libraries back in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import sentiment_lines

HEAVY = ("torch", "transformers", "peft")
REPORT = f"import sys; print('HEAVY:', *(m for m in {HEAVY!r} if m in sys.modules))"


def heavy_modules_after(code: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after running `code`."""
    result = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (report,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY:")]
    return report.split()[1:]


@pytest.mark.parametrize(
    "args",
    [
        ["templates", "--json"],
        ["csv-template", "{tmp}/template.csv"],
        ["validate", "{tmp}/data.txt", "--no-tokenize"],
        ["keys", "list", "--data-dir", "{tmp}/data"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_command_that_runs_no_model_imports_none_of_the_libraries(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "data.txt").write_text("\n".join(sentiment_lines(4)) + "\n", encoding="utf-8")
    argv = [arg.format(tmp=tmp_path) for arg in args]
    code = f"from tuneloom.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert heavy_modules_after(code) == []


def test_the_server_and_its_workers_import_none_of_the_libraries_until_they_run_a_model() -> None:
    assert heavy_modules_after("import tuneloom.server.app, tuneloom.worker, tuneloom.cli.server_cmds") == []
