"""Datasets over HTTP against a real server: upload reports, inputs paging, immutable versions."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.conftest import api_key, sentiment_lines


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
    assert first["state"] == "READY" and first["example_count"] == 16 and len(first["content_hash"]) == 64
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


def test_empty_dataset_version_fails_with_a_reason(app_url: tuple[str, dict[str, str], Path]) -> None:
    base, headers, _ = app_url
    url = base.rsplit("/", 1)[0]
    assert httpx.post(url, json={"id": "empty"}, headers=headers).status_code == 201
    version = httpx.post(f"{url}/empty/versions", headers=headers).json()
    assert version["state"] == "FAILURE" and "no inputs" in version["message"]


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
