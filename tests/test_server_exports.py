"""Downloading a trained version from the server: `POST …/exports` builds the zip, a signed link serves it.

The zip must hold exactly what `tuneloom export` writes from the same version (the CLI's export is
tested on its own), the link must work without a key and nowhere else, and deleting a version must
take its exports and links with it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from tests.conftest import cli_command, cli_in_process, refused
from tests.server_helpers import (
    ONE_STEP,
    Deployed,
    deploy,
    server_database,
    server_on_sqlite,  # noqa: F401  (the module's `server`)
    train_version,
    unfinished_version,
)

from tuneloom import Client
from tuneloom.errors import ModelVersionError
from tuneloom.export import export_version
from tuneloom.server.exports import (
    IN_USE_S,
    LINK_TTL_S,
    ExportFailed,
    Exports,
    Named,
    evict_least_used,
    run_in_child,
)
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.keys import load_pepper

FORMS = [("adapter", None, "adapter"), ("merged", None, "merged"), ("gguf", "q8_0", "gguf-q8_0")]


@pytest.fixture(scope="module")
def deployed(server: tuple[str, Path]) -> Deployed:
    return deploy(*server, trainer_config=ONE_STEP)


def _export(deployed: Deployed, version_id: str | None = None, **body: str) -> httpx.Response:
    url = f"{deployed.model_url}/versions/{version_id or deployed.version_id}/exports"
    return httpx.post(url, json=body, headers=deployed.headers, timeout=120)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("format", "gguf_type", "form"), FORMS)
def test_each_format_downloads_as_the_cli_exports_it(
    deployed: Deployed, tmp_path: Path, format: str, gguf_type: str | None, form: str
) -> None:
    with Client(deployed.url, api_key=deployed.key) as client:
        model = client.get_app(deployed.app_id).get_model(deployed.model_id)
        got = model.export(deployed.version_id, tmp_path / "downloaded", format, gguf_type=gguf_type)
    named = tmp_path / "local" / f"{deployed.model_id}-{deployed.version_id}-{form}"  # the name its card was given
    local = export_version(deployed.version_dir, named, merged=format == "merged", gguf_type=gguf_type).path
    assert got.name == "downloaded" and _files(got) == _files(local)
    expected = {"adapter": "adapter_config.json", "merged": "model.safetensors", "gguf-q8_0": "model.gguf"}[form]
    assert expected in _files(got) and "README.md" in _files(got)


def test_an_export_is_built_once_and_its_link_needs_no_key_and_resumes(deployed: Deployed) -> None:
    first = _export(deployed, format="adapter")
    assert first.status_code == 200, first.text
    built = deployed.data_dir / "exports" / deployed.version_id / "adapter.zip"
    stamp = built.stat().st_mtime_ns
    again = _export(deployed, format="adapter").json()
    assert built.stat().st_mtime_ns == stamp and again["sha256"] == first.json()["sha256"]  # not built again
    link = f"{deployed.url}{again['download_url']}"
    whole = httpx.get(link)  # no Authorization header
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/zip"
    assert hashlib.sha256(whole.content).hexdigest() == again["sha256"] and len(whole.content) == again["size_bytes"]
    assert f'filename="{again["file_name"]}"' in whole.headers["content-disposition"]
    assert again["file_name"] == f"{deployed.model_id}-{deployed.version_id}-adapter.zip"
    with zipfile.ZipFile(built) as packed:  # one top folder, named as the file
        assert {name.split("/")[0] for name in packed.namelist()} == {again["file_name"].removesuffix(".zip")}
    rest = httpx.get(link, headers={"Range": "bytes=100-"})  # an interrupted download goes on from byte 100
    assert rest.status_code == 206 and rest.content == whole.content[100:]


def test_an_altered_or_expired_link_is_refused(deployed: Deployed) -> None:
    link = _export(deployed, format="adapter").json()["download_url"]
    altered = link[:-1] + ("0" if link[-1] != "0" else "1")
    other_form = link.replace(".adapter.", ".merged.")
    for bad in (altered, other_form, "/api/downloads/nothing"):
        refused = httpx.get(f"{deployed.url}{bad}")
        assert (refused.status_code, refused.json()["code"]) == (403, "INVALID_LINK"), bad
    exports = Exports(Artifacts(deployed.data_dir), load_pepper(deployed.data_dir), cache_bytes=2**40)
    named = Named(deployed.app_id, deployed.model_id, deployed.version_id, "adapter")
    token, expires = exports.link(named, now=time.time() - LINK_TTL_S - 60)
    expired = httpx.get(f"{deployed.url}/api/downloads/{token}")
    assert (expired.status_code, expired.json()["code"]) == (410, "LINK_EXPIRED")
    assert time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires)) in expired.json()["message"]


def test_bad_requests_name_what_is_wrong(deployed: Deployed) -> None:
    cases = [
        ({"format": "onnx"}, "format: 'onnx' is not one of adapter, merged, gguf"),
        ({"format": "gguf", "gguf_type": "q4_k"}, "gguf_type: 'q4_k' is not one of f32, f16, bf16, q8_0, q4_k_m"),
        (
            {"format": "adapter", "gguf_type": "f16"},
            "gguf_type: gguf_type applies to format 'gguf' only, not 'adapter'",
        ),
    ]
    for body, message in cases:
        answer = _export(deployed, **body)
        assert answer.status_code == 422 and answer.json()["message"] == message, answer.text
        assert answer.json()["details"]["key"] == message.split(":")[0]
    db = server_database(deployed.data_dir)
    try:
        failed = unfinished_version(db, deployed.app_id, deployed.model_id, deployed.dataset_version_id, fail=True)
    finally:
        db.dispose()
    untrained = _export(deployed, failed, format="adapter")
    assert untrained.status_code == 409
    assert (
        "is MODEL_TRAINING_FAILED: ran out of memory (test); only a MODEL_TRAINED version can be exported"
        in (untrained.json()["message"])
    )
    missing = _export(deployed, "nosuchversion", format="adapter")
    assert missing.status_code == 404 and "nosuchversion" in missing.json()["message"]
    keyless = httpx.post(f"{deployed.model_url}/versions/{deployed.version_id}/exports", json={})
    assert keyless.status_code == 401


def test_deleting_a_version_deletes_its_exports_and_voids_its_links(deployed: Deployed) -> None:
    doomed = train_version(deployed.model_url, deployed.headers, deployed.dataset_version_id, trainer_config=ONE_STEP)
    link = _export(deployed, doomed, format="gguf").json()["download_url"]
    assert (deployed.data_dir / "exports" / doomed / "gguf-f16.zip").is_file()
    deleted = httpx.delete(f"{deployed.model_url}/versions/{doomed}", headers=deployed.headers)
    assert deleted.status_code == 204
    assert not (deployed.data_dir / "exports" / doomed).exists()
    gone = httpx.get(f"{deployed.url}{link}")
    assert gone.status_code == 404 and doomed in gone.json()["message"]


def test_past_the_cache_bound_the_least_used_export_goes_and_its_link_builds_it_again(deployed: Deployed) -> None:
    """A server's exports are a bounded cache (`serve --exports-cache-mb`): a link outlives the file it names."""
    first = _export(deployed, format="adapter").json()
    root = deployed.data_dir / "exports"
    hour_ago = time.time() - 3600
    for facts in root.glob("*/*.json"):
        os.utime(facts, (hour_ago, hour_ago))
    (root / deployed.version_id / "merged.zip").unlink(missing_ok=True)  # so asking for it builds it
    tight = Exports(Artifacts(deployed.data_dir), load_pepper(deployed.data_dir), cache_bytes=1)
    named = Named(deployed.app_id, deployed.model_id, deployed.version_id, "merged")
    merged = tight.packed(named, f"model-versions/{deployed.version_id}")
    assert merged.path.is_file() and merged.size > 1  # the build asked for stays, however large
    assert sorted(p.name for p in root.glob("*/*.zip")) == ["merged.zip"]  # every older one went
    again = httpx.get(f"{deployed.url}{first['download_url']}")  # the server builds the adapter's zip again
    assert again.status_code == 200 and hashlib.sha256(again.content).hexdigest() == first["sha256"]
    assert (root / deployed.version_id / "adapter.zip").is_file()


def test_the_cli_downloads_a_version_as_export_writes_it(deployed: Deployed, tmp_path: Path) -> None:
    """`tuneloom download` on another machine: the key from the environment, never the command line."""
    env = {**os.environ, "TUNELOOM_API_KEY": deployed.key}
    env.pop("TUNELOOM_URL", None)
    out = tmp_path / "downloaded"
    args = ["download", deployed.version_id, str(out), "--app", deployed.app_id, "--model", deployed.model_id]
    ran = subprocess.run(cli_command(*args, "--url", deployed.url, "--merged"), capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr
    assert f"Downloaded the merged export of version {deployed.version_id} to {out}" in ran.stdout
    assert "Downloading the merged export" in ran.stderr  # the progress bar, as left on a non-terminal
    named = tmp_path / "local" / f"{deployed.model_id}-{deployed.version_id}-merged"  # the name its card was given
    local = export_version(deployed.version_dir, named, merged=True).path
    assert _files(out) == _files(local)


def test_cli_download_refusals_name_what_is_wrong(
    deployed: Deployed, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    where = ["--app", deployed.app_id, "--model", deployed.model_id, "--url", deployed.url]
    monkeypatch.delenv("TUNELOOM_API_KEY", raising=False)
    no_key = cli_in_process(capsys, "download", deployed.version_id, str(tmp_path / "a"), *where)
    refused(no_key, "UNAUTHORIZED", "(set $TUNELOOM_API_KEY or pass --api-key-file)")
    (tmp_path / "empty-key").write_text("\n")
    for file, reason in ((tmp_path / "no-such-key", "cannot read it"), (tmp_path / "empty-key", "first line is empty")):
        args = ("download", deployed.version_id, str(tmp_path / "a"), *where, "--api-key-file", str(file))
        refused(cli_in_process(capsys, *args), f"--api-key-file {file}", reason)
    (tmp_path / "key").write_text(f"{deployed.key}\n")  # as `echo` writes it
    from_file = ("download", deployed.version_id, str(tmp_path / "e"), *where, "--api-key-file", str(tmp_path / "key"))
    assert cli_in_process(capsys, *from_file).returncode == 0 and (tmp_path / "e").is_dir()
    monkeypatch.setenv("TUNELOOM_API_KEY", deployed.key)
    unknown = cli_in_process(capsys, "download", "mv_nothing", str(tmp_path / "b"), *where)
    refused(unknown, "mv_nothing")
    (tmp_path / "c").mkdir()
    refused(cli_in_process(capsys, "download", deployed.version_id, str(tmp_path / "c"), *where), str(tmp_path / "c"))
    away = ["--app", deployed.app_id, "--model", deployed.model_id, "--url", "http://127.0.0.1:9"]
    refused(cli_in_process(capsys, "download", deployed.version_id, str(tmp_path / "d"), *away), "http://127.0.0.1:9")
    assert not any((tmp_path / name).exists() for name in "abd")


def test_the_sdk_waits_for_a_build_longer_than_its_timeout(deployed: Deployed, tmp_path: Path) -> None:
    """Building an export takes minutes for a 7B: the client's timeout (here 0.5 s) bounds each other request."""
    with Client(deployed.url, api_key=deployed.key, timeout=0.5) as client:
        model = client.get_app(deployed.app_id).get_model(deployed.model_id)
        started = time.monotonic()
        out = model.export(deployed.version_id, tmp_path / "bf16", "gguf", gguf_type="bf16")  # not built yet
        took = time.monotonic() - started
    assert (out / "model.gguf").is_file()
    assert took > 0.5, took  # the build outlasted the timeout the client was given


def _built(root: Path, version: str, form: str, size: int, used: float) -> Path:
    zip_path = root / version / f"{form}.zip"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    zip_path.write_bytes(b"z" * size)
    zip_path.with_suffix(".json").write_text("{}", encoding="utf-8")
    os.utime(zip_path.with_suffix(".json"), (used, used))
    return zip_path


def test_eviction_goes_by_last_use_and_spares_the_build_asked_for_and_exports_in_use(tmp_path: Path) -> None:
    now = 1_000_000.0
    oldest = _built(tmp_path, "v1", "adapter", 100, now - 500)
    in_use = _built(tmp_path, "v1", "merged", 100, now - IN_USE_S / 2)  # a download may be about to open it
    older = _built(tmp_path, "v2", "gguf-q8_0", 100, now - 400)
    recent = _built(tmp_path, "v3", "adapter", 100, now - 300)
    new = _built(tmp_path, "v4", "merged", 250, now)
    assert evict_least_used(tmp_path, 500, keep=new, now=now) == [oldest, older]
    assert not oldest.with_suffix(".json").exists() and not older.with_suffix(".json").exists()  # and their facts
    assert in_use.is_file() and recent.is_file() and new.is_file()
    assert evict_least_used(tmp_path, 1, keep=new, now=now) == [recent]  # never `keep`, never one in use
    assert evict_least_used(tmp_path, 10**6, keep=new, now=now + IN_USE_S) == []  # within the bound: nothing


def _killed(_: str) -> tuple[int, str]:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer ends a process
    raise AssertionError("unreachable")


def _refused(reason: str) -> tuple[int, str]:
    raise ModelVersionError(reason)


def test_an_export_whose_process_dies_or_refuses_is_a_clear_error_and_the_server_lives_on() -> None:
    """Builds run in a child (a merged 7B holds some 14 GB): a killed one is a 503 EXPORT_FAILED, a refusal its own."""
    with pytest.raises(ExportFailed, match="killed before it finished, most likely for lack of memory"):
        run_in_child(_killed, "x")
    with pytest.raises(ModelVersionError, match="this version is GPTNeoForCausalLM"):
        run_in_child(_refused, "this version is GPTNeoForCausalLM")
    assert run_in_child(os.path.split, "a/b") == ("a", "b")  # and the next build runs
