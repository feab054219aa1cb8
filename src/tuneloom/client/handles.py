"""`Client` and the handles it returns: `App`, `Dataset`, `Model`, each bound to one server session.

A handle is a dataclass of the object's fields plus methods for what lives under it, so a script
reads like the REST paths it calls: `c.get_app("shop").get_model("gen").predict("…")`.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, overload
from urllib.parse import quote

from tuneloom.client._http import Transport, TuneloomAPIError
from tuneloom.client.records import (
    DatasetVersion,
    Input,
    LogLine,
    MetricPoint,
    ModelVersion,
    TrainingStatus,
    UploadReport,
    build,
)

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_SIZE = 100  # versions per request when listing; the server takes up to 500
EXPORT_BUILD_TIMEOUT_S = 4 * 3600.0  # the server builds an export in the request: a 7B's merge or Q4_K_M, minutes


def _seg(object_id: str) -> str:
    """One path segment, escaped: an id can never climb to another route."""
    return quote(object_id, safe="")


def _id(obj: str | ModelVersion | DatasetVersion) -> str:
    return obj if isinstance(obj, str) else obj.id


class Client:
    """A session with one tuneloom server (defaults: $TUNELOOM_URL and $TUNELOOM_API_KEY)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0):
        url = base_url or os.environ.get("TUNELOOM_URL") or DEFAULT_URL
        self._t = Transport(url, api_key or os.environ.get("TUNELOOM_API_KEY"), timeout)

    @property
    def base_url(self) -> str:
        return self._t.base_url

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._t.request("GET", "/healthz")
        return result

    def create_app(self, id: str | None = None, name: str = "") -> App:
        """A new app (admin key needed); the server picks an id when none is given."""
        return build(App, self._t.request("POST", "/api/apps", json={"id": id, "name": name}), _t=self._t)

    def list_apps(self) -> list[App]:
        return [build(App, a, _t=self._t) for a in self._t.request("GET", "/api/apps")]

    def get_app(self, app_id: str) -> App:
        return build(App, self._t.request("GET", f"/api/apps/{_seg(app_id)}"), _t=self._t)

    def delete_app(self, app_id: str) -> None:
        """Delete the app and everything under it (datasets, models, artifacts)."""
        self._t.request("DELETE", f"/api/apps/{_seg(app_id)}")

    def templates(self) -> list[dict[str, Any]]:
        """The training templates the server offers (id, description, base_model, requires_gpu, …)."""
        result: list[dict[str, Any]] = self._t.request("GET", "/api/templates")
        return result

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class App:
    id: str
    name: str = ""
    created_at: datetime | None = None
    primary_input_type: str = "text"
    _t: Transport = field(kw_only=True, repr=False, compare=False)

    @property
    def path(self) -> str:
        return f"/api/apps/{_seg(self.id)}"

    def create_dataset(self, id: str | None = None, name: str | None = None) -> Dataset:
        answer = self._t.request("POST", f"{self.path}/datasets", json={"id": id, "name": name})
        return build(Dataset, answer, _t=self._t)

    def list_datasets(self) -> list[Dataset]:
        return [build(Dataset, d, _t=self._t) for d in self._t.request("GET", f"{self.path}/datasets")]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return build(Dataset, self._t.request("GET", f"{self.path}/datasets/{_seg(dataset_id)}"), _t=self._t)

    def delete_dataset(self, dataset_id: str) -> None:
        self._t.request("DELETE", f"{self.path}/datasets/{_seg(dataset_id)}")

    def create_model(self, id: str | None = None, model_type_id: str = "text-to-text") -> Model:
        answer = self._t.request("POST", f"{self.path}/models", json={"id": id, "model_type_id": model_type_id})
        return build(Model, answer, _t=self._t)

    def list_models(self) -> list[Model]:
        return [build(Model, m, _t=self._t) for m in self._t.request("GET", f"{self.path}/models")]

    def get_model(self, model_id: str) -> Model:
        return build(Model, self._t.request("GET", f"{self.path}/models/{_seg(model_id)}"), _t=self._t)

    def delete_model(self, model_id: str) -> None:
        self._t.request("DELETE", f"{self.path}/models/{_seg(model_id)}")


@dataclass
class Dataset:
    id: str
    app_id: str
    name: str = ""
    created_at: datetime | None = None
    _t: Transport = field(kw_only=True, repr=False, compare=False)

    @property
    def path(self) -> str:
        return f"/api/apps/{_seg(self.app_id)}/datasets/{_seg(self.id)}"

    def upload_file(self, path: str | Path, format: str = "auto", filename: str | None = None) -> UploadReport:
        """Stream the file as the request body (never read whole into memory); the report lists refused rows."""
        path = Path(path)
        params = {"filename": filename or path.name, "format": format}
        with path.open("rb") as handle:
            answer = self._t.request("POST", f"{self.path}/uploads", params=params, content=handle)
        return UploadReport.from_dict(answer)

    def list_inputs(self, page_size: int = 100) -> Iterator[Input]:
        """Every stored input in order, fetched a page at a time as the iteration goes."""
        after: int | None = None
        while True:
            page = self._t.request("GET", f"{self.path}/inputs", params={"limit": page_size, "after": after})
            yield from (build(Input, item) for item in page["items"])
            after = page.get("next_after")
            if after is None:
                return

    def delete_inputs(self, seqs: list[int] | None = None) -> int:
        """Delete these inputs (by `seq`), or all of them when `seqs` is None; returns how many went."""
        return int(self._t.request("POST", f"{self.path}/inputs/delete", json={"seqs": seqs})["deleted"])

    def create_version(self) -> DatasetVersion:
        """Snapshot the current inputs; check `.state` (READY, or FAILURE with `.message`).

        A dataset with no inputs raises `TuneloomAPIError` 409 `EMPTY_DATASET` (upload a file first).
        """
        return build(DatasetVersion, self._t.request("POST", f"{self.path}/versions"))

    def list_versions(self, limit: int | None = None, *, page_size: int = PAGE_SIZE) -> list[DatasetVersion]:
        """Newest first: every version, or the newest `limit`, read `page_size` to a request."""
        listed = self._t.listed(f"{self.path}/versions", limit=limit, page_size=page_size)
        return [build(DatasetVersion, v) for v in listed]

    def get_version(self, version_id: str) -> DatasetVersion:
        return build(DatasetVersion, self._t.request("GET", f"{self.path}/versions/{_seg(version_id)}"))

    def delete_version(self, version: str | DatasetVersion) -> None:
        """Delete a version and its snapshot; 409 while a queued or training run trains on it or it is being built.

        Models already trained on it keep working: they hold their own weights.
        """
        self._t.request("DELETE", f"{self.path}/versions/{_seg(_id(version))}")


@dataclass
class Model:
    id: str
    app_id: str
    model_type_id: str = "text-to-text"
    created_at: datetime | None = None
    _t: Transport = field(kw_only=True, repr=False, compare=False)

    @property
    def path(self) -> str:
        return f"/api/apps/{_seg(self.app_id)}/models/{_seg(self.id)}"

    def _version_path(self, version: str | ModelVersion) -> str:
        return f"{self.path}/versions/{_seg(_id(version))}"

    def get_params(self, template: str) -> dict[str, Any]:
        """The template's full default settings: a starting point to edit and pass to `train`."""
        result: dict[str, Any] = self._t.request("GET", f"{self.path}/params", params={"template": template})
        return result

    def train(
        self,
        dataset_version: str | DatasetVersion,
        template: str,
        *,
        model_config: dict[str, Any] | None = None,
        quantization_config: dict[str, Any] | None = None,
        peft_config: dict[str, Any] | None = None,
        tokenizer_config: dict[str, Any] | None = None,
        trainer_config: dict[str, Any] | None = None,
        invalid_data_tolerance_percent: float | None = None,
        resume_from_model: str | ModelVersion | None = None,
        distributed: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Queue a training run; invalid settings fail here (422 naming the key), before anything is queued."""
        body: dict[str, Any] = {"dataset_version_id": _id(dataset_version), "template": template}
        optional = {
            "model_config": model_config,
            "quantization_config": quantization_config,
            "peft_config": peft_config,
            "tokenizer_config": tokenizer_config,
            "trainer_config": trainer_config,
            "invalid_data_tolerance_percent": invalid_data_tolerance_percent,
            "resume_from_model": None if resume_from_model is None else _id(resume_from_model),
            "distributed": distributed,  # several processes on the worker's machine (README: Scaling out)
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return ModelVersion.from_dict(self._t.request("POST", f"{self.path}/versions", json=body))

    def list_versions(self, limit: int | None = None, *, page_size: int = PAGE_SIZE) -> list[ModelVersion]:
        """Newest first: every version, or the newest `limit`, read `page_size` to a request."""
        listed = self._t.listed(f"{self.path}/versions", limit=limit, page_size=page_size)
        return [ModelVersion.from_dict(v) for v in listed]

    def get_version(self, version: str | ModelVersion) -> ModelVersion:
        return ModelVersion.from_dict(self._t.request("GET", self._version_path(version)))

    def training_status(self, version: str | ModelVersion) -> TrainingStatus:
        return self.get_version(version).status

    def cancel(self, version: str | ModelVersion) -> ModelVersion:
        return ModelVersion.from_dict(self._t.request("POST", f"{self._version_path(version)}/cancel"))

    def delete_version(self, version: str | ModelVersion) -> None:
        self._t.request("DELETE", self._version_path(version))

    def metrics(
        self, version: str | ModelVersion, after_step: int | None = None, max_points: int | None = None
    ) -> list[MetricPoint]:
        """Loss and learning rate per logged step, oldest first (only those after `after_step`).

        `max_points` bounds each series for a chart of a long run: first and last points exact,
        the lowest and highest of each stretch in between.
        """
        params = {"after_step": after_step, "max_points": max_points}
        return [
            MetricPoint.from_dict(p)
            for p in self._t.request("GET", f"{self._version_path(version)}/metrics", params=params)
        ]

    def logs(
        self, version: str | ModelVersion, after: int | None = None, limit: int | None = None, tail: bool = False
    ) -> list[LogLine]:
        """Log lines after `after`, oldest first: the first `limit` (200 by default), or with `tail` the last."""
        params = {"after": after, "limit": limit, "tail": tail or None}
        return [
            LogLine.from_dict(line)
            for line in self._t.request("GET", f"{self._version_path(version)}/logs", params=params)
        ]

    def wait(self, version: str | ModelVersion, timeout: float = 3600.0, poll: float = 2.0) -> TrainingStatus:
        """Poll until training reaches a final status (trained, failed, cancelled) and return it.

        A failed run is returned, not raised: its `name` and `message` say why. Raises TimeoutError
        (naming the status it was still in) if `timeout` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.training_status(version)
            if status.finished:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"model version '{_id(version)}' still {status.name} after {timeout:g}s")
            time.sleep(min(poll, left))

    def export(
        self,
        version: str | ModelVersion,
        dest: str | Path,
        format: str = "adapter",
        *,
        gguf_type: str | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Download the version as `tuneloom export` writes it, into the folder `dest` (which must not exist yet).

        `format`: "adapter" (the LoRA adapter, for peft), "merged" (full weights, plain transformers) or "gguf"
        (one file for llama.cpp / Ollama; `gguf_type` f32, f16, bf16, q8_0 or q4_k_m). The server builds it on first
        request, which for a 7B takes minutes (the client's timeout does not cut that wait short); the download is
        checked against the SHA-256 the server reported before it is unpacked. `progress(done, total)`: bytes
        downloaded so far, after each chunk.
        """
        out = Path(dest)
        if out.exists():
            raise FileExistsError(f"{out} already exists; choose another folder")
        body = {"format": format, "gguf_type": gguf_type}
        path = f"{self._version_path(version)}/exports"
        built = self._t.request("POST", path, json=body, timeout=EXPORT_BUILD_TIMEOUT_S)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
            archive = Path(tmp) / built["file_name"]
            if self._t.download(built["download_url"], archive, progress=progress) != built["sha256"]:
                raise TuneloomAPIError(
                    502, "DOWNLOAD_CORRUPT", f"the download of {built['file_name']} does not match its SHA-256"
                )
            with zipfile.ZipFile(archive) as packed:
                packed.extractall(Path(tmp) / "unpacked")  # names with '..' or a leading '/' are kept inside
            (Path(tmp) / "unpacked" / archive.stem).rename(out)
        return out

    @overload
    def predict(
        self,
        inputs: str,
        version: str | ModelVersion | None = None,
        inference_params: dict[str, Any] | None = None,
    ) -> str: ...

    @overload
    def predict(
        self,
        inputs: list[str],
        version: str | ModelVersion | None = None,
        inference_params: dict[str, Any] | None = None,
    ) -> list[str]: ...

    def predict(
        self,
        inputs: str | list[str],
        version: str | ModelVersion | None = None,
        inference_params: dict[str, Any] | None = None,
    ) -> str | list[str]:
        """Completions for one text (→ str) or a list (→ list[str]); `version` None means the latest trained."""
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        body = {"inputs": texts, "version": _opt_id(version), "inference_params": inference_params or {}}
        outputs = [o["text"] for o in self._t.request("POST", f"{self.path}/predict", json=body)["outputs"]]
        return outputs[0] if isinstance(inputs, str) else outputs

    def generate(
        self,
        text: str,
        version: str | ModelVersion | None = None,
        inference_params: dict[str, Any] | None = None,
    ) -> Iterator[str]:
        """The completion of one text, piece by piece as the server generates it."""
        body = {"input": text, "version": _opt_id(version), "inference_params": inference_params or {}}
        for event, data in self._t.events(f"{self.path}/generate", body):
            if event == "done":
                return
            if event == "error":
                data = data if isinstance(data, dict) else {"message": str(data)}
                raise TuneloomAPIError(500, str(data.get("code", "GENERATION_FAILED")), str(data.get("message", "")))
            if isinstance(data, dict) and "text" in data:
                yield str(data["text"])
        raise TuneloomAPIError(502, "STREAM_INCOMPLETE", "the generation stream ended without a 'done' event")


def _opt_id(version: str | ModelVersion | None) -> str | None:
    return None if version is None else _id(version)
