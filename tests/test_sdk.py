"""The Python SDK end to end against a real server: data in, a trained tiny model, predictions out.

One module-scoped training run (template "tiny-random", seconds on a CPU) per backend feeds the
status, metrics and prediction tests; errors are checked as a script would see them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import api_key, sentiment_lines
from tests.server_helpers import (
    server_database,
    server_on_sqlite,  # noqa: F401  (the module's `server`)
    unfinished_version,
)

from tuneloom import Client, TuneloomAPIError
from tuneloom.client import App, Dataset, DatasetVersion, Model, ModelVersion, TrainingStatus, TuneloomConnectionError

TEMPLATE = "tiny-random"
GREEDY = {"max_tokens": 8, "temperature": 0}
PROMPT = "great product, works well"


@dataclass(frozen=True)
class Flow:
    client: Client
    app: App
    dataset: Dataset
    upload_path: Path
    report_invalid_line: int
    version: DatasetVersion
    model: Model
    trained: ModelVersion
    final: TrainingStatus


@pytest.fixture(scope="module")
def flow(server: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """Admin creates the app; an app-scoped key does the rest, as a deployed script would."""
    url, data_dir = server
    with Client(url, api_key=api_key(data_dir)) as admin:
        app_id = admin.create_app("sdk-demo", name="SDK demo").id
    client = Client(url, api_key=api_key(data_dir, "--app", app_id))
    app = client.get_app(app_id)
    dataset = app.create_dataset("sentiment")
    lines = sentiment_lines()
    lines.insert(5, "### Instruction: no answer section here ### Human: hello")  # line 6
    path = tmp_path_factory.mktemp("sdk") / "sentiment.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset.upload_file(path)
    version = dataset.create_version()
    model = app.create_model("sentiment-gen", model_type_id="text-to-text")
    trained = model.train(version, TEMPLATE, trainer_config={"num_train_epochs": 2}, invalid_data_tolerance_percent=5)
    final = model.wait(trained, timeout=600, poll=0.5)
    yield Flow(client, app, dataset, path, 6, version, model, trained, final)
    client.close()


def test_upload_report_and_inputs_paging(flow: Flow) -> None:
    report = flow.dataset.upload_file(flow.upload_path, filename="again.txt")  # the same rows, once more
    assert (report.total_rows, report.valid_rows, report.invalid_rows) == (49, 48, 1)
    assert report.source_file == "again.txt" and report.format == "sections"
    assert report.invalid[0].line == flow.report_invalid_line and "Assistant" in report.invalid[0].reason
    inputs = list(flow.dataset.list_inputs(page_size=20))  # three pages per upload
    assert len(inputs) == 96 and [i.seq for i in inputs] == sorted(i.seq for i in inputs)
    assert inputs[0].completion in ("positive", "negative")


def test_datasets_and_versions_through_handles(flow: Flow) -> None:
    assert flow.version.state == "READY" and flow.version.example_count == 48
    assert flow.dataset.get_version(flow.version.id) == flow.version
    assert flow.version.id in {v.id for v in flow.dataset.list_versions()}
    scratch = flow.app.create_dataset("scratch")
    scratch.upload_file(flow.upload_path)
    assert scratch.delete_inputs([1, 2]) == 2
    assert len(list(scratch.list_inputs())) == 46
    ready = scratch.create_version()
    assert scratch.delete_inputs() == 46
    with pytest.raises(TuneloomAPIError) as empty:  # was a FAILURE version, made of nothing
        scratch.create_version()
    assert (empty.value.status, empty.value.code) == (409, "EMPTY_DATASET") and "upload" in empty.value.message
    scratch.delete_version(ready)
    assert scratch.list_versions() == []
    with pytest.raises(TuneloomAPIError) as gone:
        scratch.delete_version(ready)
    assert gone.value.status == 404 and ready.id in gone.value.message and gone.value.key == "version_id"
    assert {d.id for d in flow.app.list_datasets()} == {"sentiment", "scratch"}
    flow.app.delete_dataset("scratch")
    with pytest.raises(TuneloomAPIError) as missing:
        flow.app.get_dataset("scratch")
    assert missing.value.status == 404 and missing.value.key == "dataset_id"


def test_params_and_templates(flow: Flow) -> None:
    params = flow.model.get_params(template=TEMPLATE)
    assert params["template"] == TEMPLATE
    assert {"model_config", "peft_config", "trainer_config", "invalid_data_tolerance_percent"} <= set(params)
    assert TEMPLATE in {t["id"] for t in flow.client.templates()}
    assert [m.id for m in flow.app.list_models()] == ["sentiment-gen"]
    assert flow.app.get_model("sentiment-gen").model_type_id == "text-to-text"


def test_training_reaches_model_trained_with_full_progress(flow: Flow) -> None:
    assert flow.trained.status.name in ("MODEL_QUEUED_FOR_TRAINING", "MODEL_TRAINING")
    assert flow.trained.settings["trainer_config"]["num_train_epochs"] == 2
    status = flow.model.training_status(flow.trained.id)
    assert (status.name, status.code) == ("MODEL_TRAINED", 21100), status.message
    assert status == flow.final and status.trained and status.finished
    assert status.progress.step is not None and status.progress.step == status.progress.total_steps
    assert flow.model.list_versions()[0].id == flow.trained.id


def test_metrics_and_logs(flow: Flow) -> None:
    points = flow.model.metrics(flow.trained)
    assert points and all(p.step >= 1 for p in points)
    assert any(p.loss is not None for p in points)
    assert flow.model.metrics(flow.trained, after_step=points[-1].step) == []
    lines = flow.model.logs(flow.trained)
    assert all(line.message for line in lines)
    assert flow.model.logs(flow.trained, limit=2, tail=True) == lines[-2:]  # the newest two, oldest first
    losses = [p for p in points if p.loss is not None]
    drawn = [p for p in flow.model.metrics(flow.trained, max_points=2) if p.loss is not None]
    assert len(losses) > 2 and [p.step for p in drawn] == [losses[0].step, losses[-1].step]  # the ends exact


def test_predict_one_and_many_and_generate_agrees(flow: Flow) -> None:
    one = flow.model.predict(PROMPT, version=flow.trained.id, inference_params=GREEDY)
    assert isinstance(one, str)
    many = flow.model.predict([PROMPT, "awful quality"], inference_params=GREEDY)  # latest trained version
    assert isinstance(many, list) and len(many) == 2 and all(isinstance(t, str) for t in many)
    pieces = list(flow.model.generate(PROMPT, version=flow.trained, inference_params=GREEDY))
    assert pieces and "".join(pieces) == one


def test_a_seed_passes_through_and_reproduces_sampled_predictions(flow: Flow) -> None:
    hot = {"max_tokens": 6, "temperature": 1.5, "seed": 3}
    one = flow.model.predict(PROMPT, inference_params=hot)
    many = flow.model.predict([PROMPT, PROMPT], inference_params=hot)
    assert many[0] == one != many[1]  # input i samples with seed + i
    assert "".join(flow.model.generate(PROMPT, inference_params=hot)) == one
    with pytest.raises(TuneloomAPIError) as bad:
        flow.model.predict(PROMPT, inference_params={**hot, "seed": -1})
    assert bad.value.status == 422 and bad.value.key == "seed"


def test_invalid_settings_are_422_naming_the_key(flow: Flow) -> None:
    with pytest.raises(TuneloomAPIError) as bad_train:
        flow.model.train(flow.version, TEMPLATE, trainer_config={"learning_rat": 0.1})
    assert bad_train.value.status == 422 and bad_train.value.key and "learning_rat" in bad_train.value.key
    assert "422" in str(bad_train.value) and "learning_rat" in str(bad_train.value)
    with pytest.raises(TuneloomAPIError) as bad_params:
        flow.model.predict(PROMPT, inference_params={"temperatur": 0})
    assert bad_params.value.status == 422 and bad_params.value.key == "temperatur"
    with pytest.raises(TuneloomAPIError) as bad_distributed:
        flow.model.train(flow.version, TEMPLATE, distributed={"num_procs": 2})
    assert bad_distributed.value.status == 422 and bad_distributed.value.key == "distributed.num_procs"
    assert "Did you mean 'num_processes'?" in str(bad_distributed.value)
    assert len(flow.model.list_versions()) == 1  # nothing was queued


def test_other_errors_carry_status_and_code(flow: Flow) -> None:
    with pytest.raises(TuneloomAPIError) as unknown:
        flow.app.get_model("nope")
    assert unknown.value.status == 404 and unknown.value.code == "NOT_FOUND" and "nope" in unknown.value.message
    with pytest.raises(TuneloomAPIError) as taken:
        flow.app.create_model("sentiment-gen")
    assert taken.value.status == 409
    with pytest.raises(TuneloomAPIError) as scoped:
        flow.client.create_app("another")
    assert scoped.value.status == 403
    with pytest.raises(TuneloomAPIError) as no_key:
        Client(flow.client.base_url, api_key="tl_wrong").list_apps()
    assert no_key.value.status == 401


def test_wait_times_out_naming_the_status_then_cancel_ends_the_run(flow: Flow) -> None:
    long_run = flow.model.train(flow.version, TEMPLATE, trainer_config={"num_train_epochs": 50})
    with pytest.raises(TimeoutError, match=r"still MODEL_(QUEUED_FOR_)?TRAINING"):
        flow.model.wait(long_run, timeout=0)
    flow.model.cancel(long_run)
    assert flow.model.wait(long_run, timeout=120, poll=0.2).name == "MODEL_TRAINING_CANCELLED"
    with pytest.raises(TuneloomAPIError) as again:
        flow.model.cancel(long_run)
    assert again.value.status == 409 and again.value.details == {"status": "MODEL_TRAINING_CANCELLED"}
    with pytest.raises(TuneloomAPIError) as untrained:
        flow.model.predict(PROMPT, version=long_run.id)
    assert untrained.value.status == 409 and "MODEL_TRAINING_CANCELLED" in untrained.value.message
    flow.model.delete_version(long_run)
    assert [v.id for v in flow.model.list_versions()] == [flow.trained.id]


def test_cancelling_a_run_that_has_ended_is_409_naming_its_status(flow: Flow, server: tuple[str, Path]) -> None:
    """It answered 200 and changed nothing: a script read a trained or failed run as cancelled."""
    ended = flow.app.create_model("ended")
    db = server_database(server[1])
    try:
        failed = unfinished_version(db, ended.app_id, ended.id, flow.version.id, fail=True)
    finally:
        db.dispose()
    runs = [(flow.model, flow.trained.id, "MODEL_TRAINED"), (ended, failed, "MODEL_TRAINING_FAILED")]
    for model, version, status in runs:
        with pytest.raises(TuneloomAPIError) as refused:
            model.cancel(version)
        assert (refused.value.status, refused.value.code) == (409, "CONFLICT")
        assert refused.value.details == {"status": status}
        assert f"'{version}' has already ended as {status}" in str(refused.value)
        assert model.training_status(version).name == status


def test_apps_list_get_delete(server: tuple[str, Path]) -> None:
    url, data_dir = server
    with Client(url, api_key=api_key(data_dir)) as admin:
        temporary = admin.create_app("sdk-temporary")
        assert admin.get_app(temporary.id) == temporary
        assert temporary.id in {a.id for a in admin.list_apps()}
        admin.delete_app(temporary.id)
        with pytest.raises(TuneloomAPIError) as gone:
            admin.get_app(temporary.id)
        assert gone.value.status == 404 and admin.health()["status"] == "ok"


def test_an_unreachable_server_is_a_connection_error_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused
        with pytest.raises(TuneloomConnectionError) as refused:
            Client(url, api_key="k", timeout=5).list_apps()
    assert isinstance(refused.value, ConnectionError) and url in str(refused.value)
