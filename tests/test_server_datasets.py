"""Datasets over HTTP against a real server: upload reports, inputs paging, immutable versions."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import api_key, sentiment_lines
from tests.hostile.corpus import Hostile, corpus

IDLE_S = 2  # this module's --upload-idle-seconds: short for the stalled upload, ample for every other one
SERVER_ARGS = ["--upload-idle-seconds", str(IDLE_S), "--workers", "0"]  # nothing here trains


@pytest.fixture(scope="module")
def app_url(server: tuple[str, Path]) -> tuple[str, dict[str, str], Path]:
    url, data_dir = server
    admin = {"Authorization": f"Key {api_key(data_dir)}"}
    assert httpx.post(f"{url}/api/apps", json={"id": "shop"}, headers=admin).status_code == 201
    assert httpx.post(f"{url}/api/apps", json={"id": "other"}, headers=admin).status_code == 201
    headers = {"Authorization": f"Key {api_key(data_dir, '--app', 'shop')}"}
    created = httpx.post(f"{url}/api/apps/shop/datasets", json={"id": "tickets"}, headers=headers)
    assert created.status_code == 201, created.text
    return f"{url}/api/apps/shop/datasets/tickets", headers, data_dir


def test_upload_reports_invalid_rows_and_stores_the_valid_ones(app_url: tuple[str, dict[str, str], Path]) -> None:
    base, headers, _ = app_url
    lines = sentiment_lines(1)
    lines.insert(2, "### Human: no answer here")
    body = ("\n".join(lines) + "\n").encode()
    answer = httpx.post(f"{base}/uploads", params={"filename": "../../etc/passwd"}, content=body, headers=headers)
    assert answer.status_code == 201, answer.text
    report = answer.json()
    assert (report["valid_rows"], report["invalid_rows"]) == (16, 1)
    assert report["invalid"][0]["line"] == 3 and "Assistant" in report["invalid"][0]["reason"]
    assert report["source_file"] == "../../etc/passwd"  # kept as text only
    page = httpx.get(f"{base}/inputs", params={"limit": 10}, headers=headers).json()
    assert page["total"] == 16 and len(page["items"]) == 10 and page["next_after"] == 10
    rest = httpx.get(f"{base}/inputs", params={"after": page["next_after"]}, headers=headers).json()
    assert [i["seq"] for i in rest["items"]] == list(range(11, 17)) and rest["next_after"] is None


def test_whole_file_problems_and_oversize_uploads_are_4xx(app_url: tuple[str, dict[str, str], Path]) -> None:
    base, headers, _ = app_url
    zipped = httpx.post(f"{base}/uploads", content=b"PK\x03\x04" + bytes(2000), headers=headers)
    assert zipped.status_code == 422 and "zip" in zipped.json()["message"]
    huge = httpx.post(f"{base}/uploads", content=b"x" * (2 * 1024 * 1024), headers=headers)
    assert huge.status_code == 413


def test_versions_are_immutable_snapshots(app_url: tuple[str, dict[str, str], Path]) -> None:
    base, headers, data_dir = app_url
    first = httpx.post(f"{base}/versions", headers=headers).json()
    assert first["state"] == "READY", first
    assert first["example_count"] == 16 and len(first["content_hash"]) == 64
    deleted = httpx.post(f"{base}/inputs/delete", json={"seqs": [1, 2]}, headers=headers).json()
    assert deleted == {"deleted": 2}
    second = httpx.post(f"{base}/versions", headers=headers).json()
    assert second["example_count"] == 14 and second["content_hash"] != first["content_hash"]
    again = httpx.get(f"{base}/versions/{first['id']}", headers=headers).json()
    assert again["example_count"] == 16 and again["content_hash"] == first["content_hash"]
    assert (data_dir / "dataset-versions" / f"{first['id']}.jsonl").is_file()
    tokens = first["stats"]["tokens"]
    assert first["stats"]["examples"] == 16 and 0 < tokens["min"] <= tokens["mean"] <= tokens["max"] < 64
    unknown = httpx.post(f"{base}/versions", params={"template": "gpt-5"}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["details"]["key"] == "template"


def test_versioning_an_empty_dataset_is_refused_and_makes_no_version(
    app_url: tuple[str, dict[str, str], Path],
) -> None:
    """It answered 201 with a FAILURE version: nothing was versioned, and the user was not told what to do."""
    base, headers, _ = app_url
    url = base.rsplit("/", 1)[0]
    assert httpx.post(url, json={"id": "empty"}, headers=headers).status_code == 201
    refused = httpx.post(f"{url}/empty/versions", headers=headers)
    body = refused.json()
    assert refused.status_code == 409 and body["code"] == "EMPTY_DATASET", body
    assert "dataset 'empty' has no inputs to version" in body["message"], body
    assert "upload a file to it first (POST /api/apps/shop/datasets/empty/uploads" in body["message"], body
    assert httpx.get(f"{url}/empty/versions", headers=headers).json() == []


def test_another_apps_key_sees_nothing(server: tuple[str, Path], app_url: tuple[str, dict[str, str], Path]) -> None:
    base, _, data_dir = app_url
    other = {"Authorization": f"Key {api_key(data_dir, '--app', 'other')}"}
    assert httpx.get(f"{base}/inputs", headers=other).status_code == 404
    assert httpx.post(f"{base}/uploads", content=b"x", headers=other).status_code == 404
    assert httpx.get(f"{base}/versions", headers=other).status_code == 404


def test_refused_files_leave_no_orphan_upload(app_url: tuple[str, dict[str, str], Path]) -> None:
    base, headers, data_dir = app_url
    before = set((data_dir / "uploads").iterdir())
    assert httpx.post(f"{base}/uploads", content=b"\x1f\x8b" + bytes(100), headers=headers).status_code == 422
    assert set((data_dir / "uploads").iterdir()) == before


def test_a_stalled_upload_is_a_408_and_leaves_no_part_file(app_url: tuple[str, dict[str, str], Path]) -> None:
    """Headers and part of the body, then silence without closing: the server used to wait forever,
    holding the request and its `.part` file. Now it answers 408 naming the file and the limit."""
    base, headers, data_dir = app_url
    url = httpx.URL(f"{base}/uploads", params={"filename": "slow.txt"})
    head = f"POST {url.raw_path.decode()} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {headers['Authorization']}\r\n"
    with socket.create_connection((url.host, url.port), timeout=IDLE_S + 20) as client:
        client.sendall(f"{head}Content-Length: 100000\r\n\r\n".encode() + b"### Human: hi ### Assistant: hel")
        sent = time.monotonic()
        assert _part_files(data_dir), "the upload's .part file did not appear"
        status, body = _read_answer(client)
    assert status == 408 and time.monotonic() - sent >= IDLE_S * 0.9, (status, body)
    assert body["code"] == "UPLOAD_STALLED" and body["details"] == {"limit": IDLE_S}, body
    assert "'slow.txt' sent nothing for 2 s" in body["message"] and "--upload-idle-seconds" in body["message"]
    assert not _part_files(data_dir, wait_s=0)


def _part_files(data_dir: Path, wait_s: float = 5) -> list[Path]:
    """The uploads streaming in now (`.part`), waiting up to `wait_s` for one to appear."""
    deadline = time.monotonic() + wait_s
    while not (found := list((data_dir / "uploads").glob("*.part"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _read_answer(client: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the one answer on `client`, read until the server closes the connection."""
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def hostile_dataset(app_url: tuple[str, dict[str, str], Path]) -> tuple[str, dict[str, str], Path]:
    """A dataset of its own for the hostile corpus, so the other tests' counts stay theirs."""
    base, headers, data_dir = app_url
    created = httpx.post(base.rsplit("/", 1)[0], json={"id": "hostile"}, headers=headers)
    assert created.status_code == 201, created.text
    return base.rsplit("/", 1)[0] + "/hostile", headers, data_dir


LIMIT = 1024 * 1024  # the `server` fixture runs with --max-upload-mb 1


def message(response: httpx.Response) -> str:
    body = response.json()
    return str(body.get("message") or body.get("detail"))


def check_upload(hostile: Hostile, response: httpx.Response, data_dir: Path) -> int:
    """Assert the answer is `hostile`'s verdict; returns the rows it stored."""
    verdict = hostile.verdict
    expected = verdict.status(len(hostile.data), LIMIT)
    assert response.status_code == expected, (hostile.name, response.status_code, response.text[:500])
    assert str(data_dir) not in response.text  # the server's own paths never reach the client
    if expected == 413:
        assert response.json()["code"] == "UPLOAD_TOO_LARGE" and response.json()["details"] == {"limit": LIMIT}
        assert "1,048,576-byte limit" in message(response)
        return 0
    if expected == 422:
        assert response.json()["code"] == "INVALID_DATA_FILE"
        assert message(response).startswith(f"'{hostile.name}' ") and verdict.refused in message(response)
        return 0
    report = response.json()
    assert report["source_file"] == hostile.name
    assert (report["valid_rows"], report["invalid_rows"]) == verdict.rows, hostile.name
    if report["invalid"]:
        assert verdict.says in report["invalid"][0]["reason"], (hostile.name, report["invalid"][0])
    return int(report["valid_rows"])


def test_every_hostile_upload_gets_its_verdict_and_the_server_stays_up(
    server: tuple[str, Path], hostile_dataset: tuple[str, dict[str, str], Path]
) -> None:
    """tests/hostile/: 201 and the report `tuneloom validate` gives, or a 4xx naming the file; never a 500."""
    base, headers, data_dir = hostile_dataset
    log = data_dir.parent / f"{data_dir.name}.log"
    log_start = log.stat().st_size
    uploads = data_dir / "uploads"
    kept_before = len(list(uploads.iterdir())) if uploads.is_dir() else 0
    stored = accepted = 0
    for hostile in corpus():
        answer = httpx.post(f"{base}/uploads", params={"filename": hostile.name}, content=hostile.data, headers=headers)
        stored += check_upload(hostile, answer, data_dir)
        accepted += answer.status_code == 201

    url = server[0]
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    inputs = httpx.get(f"{base}/inputs", params={"limit": 1000}, headers=headers).json()
    assert inputs["total"] == stored  # every valid row kept, nothing else: no row silently dropped or added
    assert not any("\r" in i["completion"] or "\x00" in i["prompt"] + i["completion"] for i in inputs["items"])
    assert len(list(uploads.iterdir())) == kept_before + accepted  # refused uploads left no file behind

    normal = ("\n".join(sentiment_lines(1)) + "\n").encode()
    again = httpx.post(f"{base}/uploads", params={"filename": "normal.txt"}, content=normal, headers=headers)
    assert again.status_code == 201 and (again.json()["valid_rows"], again.json()["invalid_rows"]) == (16, 0)
    assert "Traceback" not in log.read_bytes()[log_start:].decode(errors="replace")


@pytest.mark.parametrize(
    ("filename", "status"),
    [
        ("<script>alert(1)</script>\u202etxt.exe", 201),
        ("../../etc/passwd", 201),
        ("a\x00b.txt", 422),  # PostgreSQL cannot store a NUL: this was a 500
        ("\x1b[2Jreport.txt", 422),
    ],
)
def test_hostile_file_names_are_display_text_or_refused(
    hostile_dataset: tuple[str, dict[str, str], Path], filename: str, status: int
) -> None:
    base, headers, data_dir = hostile_dataset
    body = b"### Human: hi ### Assistant: hello\n"
    answer = httpx.post(f"{base}/uploads", params={"filename": filename}, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 201:
        assert answer.json()["source_file"] == filename
        assert not (data_dir / "etc").exists() and not (data_dir.parent / "etc").exists()
    else:
        assert answer.json()["details"]["key"] == "filename" and "control characters" in message(answer)
