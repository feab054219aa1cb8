"""`tuneloom validate` on files that break other tools: a verdict, never a traceback or a hang."""

from __future__ import annotations

import gzip
import io
import json
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from tuneloom.cli import main
from tuneloom.data.validation import validate_file

GOOD = "### Instruction: Label it. ### Human: fine ### Assistant: ok"


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.csv", "input.data.text.raw\nx\n")
    return buffer.getvalue()


HOSTILE: dict[str, bytes] = {
    "empty.txt": b"",
    "blank.txt": b"\n \n\t\n",
    "noise.bin": random.Random(0).randbytes(50_000),
    "nul.txt": f"{GOOD}\n".encode() * 5 + b"\x00\x00\x00\n",
    "bad-utf8.txt": f"{GOOD}\n".encode() * 5 + b"\xff\xfe broken \xc3\x28\n",
    "utf16.txt": (f"{GOOD}\n" * 5).encode("utf-16"),
    "utf16-no-bom.txt": (f"{GOOD}\n" * 5).encode("utf-16-le"),
    "crlf.txt": (f"{GOOD}\r\n" * 5).encode(),
    "long-line.txt": f"{GOOD}\n".encode() + b"### Human: " + b"a" * 2_000_000 + b" ### Assistant: x\n",
    "deep.jsonl": b'{"prompt": "a", "completion": "b"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "header-only.csv": b"input.data.text.raw,input.data.concepts[*].id\n",
    "wrong-columns.csv": b"foo,bar\n1,2\n",
    "unclosed-quote.csv": b'input.data.text.raw\n"' + GOOD.encode() + b"\n",
    "zip-renamed.csv": _zip_bytes(),
    "gzip-renamed.csv": gzip.compress(b"input.data.text.raw\nx\n"),
    "controls.txt": f"{GOOD}\n".encode() + "### Human: \x1b[31mred\u202e ### Assistant: \x07x\n".encode(),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gets_a_verdict(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    code = main(["validate", str(path), "--template", "tiny-random", "--json"])
    out, err = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in err and "internal error" not in err
    if code == 0 or out.strip():
        verdict = json.loads(out)
        assert verdict["usable"] is (code == 0)
    else:
        assert "error" in err and name in err  # a whole-file problem: one message naming the file
    assert "\x1b" not in out + err  # terminal control characters never reach the terminal raw


def test_million_line_file_validates_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with path.open("w") as handle:
        for i in range(1_000_000):
            line = f"### Instruction: Label it. ### Human: row {i} ### Assistant: {i % 3}" if i % 1000 else "junk"
            handle.write(line + "\n")
    tracemalloc.start()
    result = validate_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.report.total_rows == 1_000_000
    assert result.report.invalid_rows == 1000 and len(result.report.invalid) == 100
    assert peak < 32 * 1024 * 1024  # the file is ~70 MB; nothing proportional to it is kept
