"""The training queue: atomic claims under concurrency, leases, attempts, cancel, positions, telemetry."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from tests.test_store_support import SETTINGS, make_db_fixture, ready_dataset_version

from tuneloom.errors import SettingsError
from tuneloom.store import apps, dataset_versions, jobs, registry, telemetry
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, NotFoundError
from tuneloom.store.models import ModelVersion, TrainingStatus, utcnow

db = make_db_fixture()
S = TrainingStatus


@pytest.fixture
def dsv(db: Database, tmp_path: Path) -> str:
    """App "a" with model "m" and a READY dataset version (its id)."""
    return ready_dataset_version(db, tmp_path / "data")


def _enqueue(db: Database, dsv: str, **kwargs: object) -> ModelVersion:
    return jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="tiny-random", settings=SETTINGS, **kwargs)  # type: ignore[arg-type]


def test_enqueue_stores_a_queued_run(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    assert (job.status, job.status_code, job.attempts) == ("MODEL_QUEUED_FOR_TRAINING", 21103, 0)
    stored = registry.get_model_version(db, "a", "m", job.id)
    assert stored.settings == SETTINGS and stored.status_enum is S.MODEL_QUEUED_FOR_TRAINING
    assert jobs.queue_position(db, job.id) == 1


def test_enqueue_refuses_what_would_fail_later(db: Database, dsv: str) -> None:
    with pytest.raises(SettingsError) as err:
        jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template="t", settings={"model_config": {}})
    assert err.value.key == "quantization_config"
    pending = dataset_versions.create_version(db, "a", "ds")
    with pytest.raises(ConflictError, match="PENDING"):
        _enqueue(db, pending.id)
    apps.create_app(db, "b", "b")
    registry.create_model(db, "b", "m")
    with pytest.raises(NotFoundError):
        jobs.enqueue(db, "b", "m", dataset_version_id=dsv, template="t", settings=SETTINGS)
    queued = _enqueue(db, dsv)
    with pytest.raises(SettingsError, match="not MODEL_TRAINED"):
        _enqueue(db, dsv, resume_from=queued.id)


def _claim_all(db: Database, worker: str, out: list[str], errors: list[BaseException]) -> None:
    try:
        while (job := jobs.claim_next(db, worker, 60)) is not None:
            out.append(job.id)
    except BaseException as err:  # pragma: no cover - reported by the test
        errors.append(err)


def test_concurrent_claimers_never_share_a_job(db: Database, dsv: str) -> None:
    """Each worker thread has its own engine (own connections), as separate processes would."""
    ids = {_enqueue(db, dsv).id for _ in range(40)}
    workers = [Database(db.url) for _ in range(6)]
    claimed: list[list[str]] = [[] for _ in workers]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_claim_all, args=(w, f"w{i}", claimed[i], errors)) for i, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for w in workers:
        w.dispose()
    everything = [job_id for one in claimed for job_id in one]
    assert errors == []
    assert sorted(everything) == sorted(ids)  # all claimed, none twice
    for job_id in ids:
        job = registry.get_model_version_by_id(db, job_id)
        assert job.attempts == 1 and job.status == "MODEL_TRAINING"
        assert job_id in claimed[int(str(job.worker_id)[1:])]


def test_queue_positions_follow_creation_order(db: Database, dsv: str) -> None:
    first, second, third = (_enqueue(db, dsv) for _ in range(3))
    positions = [jobs.queue_position(db, j.id) for j in (first, second, third)]
    assert sorted(positions) == [1, 2, 3]  # type: ignore[type-var]
    order = [j.id for _, j in sorted(zip(positions, (first, second, third), strict=True))]  # type: ignore[type-var]
    claimed = jobs.claim_next(db, "w", 60)
    assert claimed is not None and claimed.id == order[0]
    assert jobs.queue_position(db, claimed.id) is None
    assert [jobs.queue_position(db, job_id) for job_id in order[1:]] == [1, 2]


def test_heartbeat_extends_the_lease_and_reports_progress(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    t0 = utcnow()
    assert jobs.claim_next(db, "w1", 10, now=t0) is not None
    assert (
        jobs.heartbeat(db, job.id, "w1", 10, step=3, total_steps=9, eta_s=12.5, now=t0 + timedelta(seconds=8)) is False
    )
    assert jobs.requeue_expired(db, now=t0 + timedelta(seconds=15)) == []
    running = registry.get_model_version_by_id(db, job.id)
    assert (running.step, running.total_steps, running.eta_s, running.worker_id) == (3, 9, 12.5, "w1")
    with pytest.raises(jobs.LeaseLostError):
        jobs.heartbeat(db, job.id, "someone-else", 10)


def test_expired_leases_requeue_then_fail_after_max_attempts(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv, max_attempts=2)
    t0 = utcnow()
    jobs.claim_next(db, "w1", 10, now=t0)
    assert jobs.requeue_expired(db, now=t0 + timedelta(seconds=5)) == []
    [requeued] = jobs.requeue_expired(db, now=t0 + timedelta(seconds=11))
    assert (requeued.status, requeued.attempts, requeued.worker_id) == ("MODEL_QUEUED_FOR_TRAINING", 1, None)
    assert "w1 stopped responding" in str(requeued.message) and jobs.queue_position(db, job.id) == 1
    with pytest.raises(jobs.LeaseLostError):  # the lost worker comes back: it must stop
        jobs.heartbeat(db, job.id, "w1", 10)
    t1 = t0 + timedelta(seconds=20)
    again = jobs.claim_next(db, "w2", 10, now=t1)
    assert again is not None and (again.id, again.attempts, again.started_at) == (job.id, 2, t0)
    [failed] = jobs.requeue_expired(db, now=t1 + timedelta(seconds=11))
    assert (failed.status, failed.status_code) == ("MODEL_TRAINING_FAILED", 21106)
    assert "giving up" in str(failed.message) and failed.finished_at is not None
    assert jobs.claim_next(db, "w3", 10) is None


def test_release_gives_the_job_back_without_spending_an_attempt(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv, max_attempts=1)
    jobs.claim_next(db, "w1", 60)
    with pytest.raises(jobs.LeaseLostError):
        jobs.release(db, job.id, "w2")
    back = jobs.release(db, job.id, "w1")
    assert (back.status, back.attempts, back.worker_id) == ("MODEL_QUEUED_FOR_TRAINING", 0, None)
    again = jobs.claim_next(db, "w2", 60)
    assert again is not None and (again.id, again.attempts) == (job.id, 1)


def test_cancel_round_trip(db: Database, dsv: str) -> None:
    queued, running = _enqueue(db, dsv), _enqueue(db, dsv)
    first = jobs.claim_next(db, "w", 60)
    assert first is not None
    running, queued = (queued, running) if first.id == queued.id else (running, queued)
    cancelled = jobs.request_cancel(db, queued.id)
    assert (cancelled.status, cancelled.status_code) == ("MODEL_TRAINING_CANCELLED", 21120)
    assert jobs.queue_position(db, queued.id) is None
    assert jobs.request_cancel(db, running.id).cancel_requested is True
    assert jobs.heartbeat(db, running.id, "w", 60, step=1) is True
    done = jobs.finish(db, running.id, S.MODEL_TRAINING_CANCELLED, "cancelled by the user", worker_id="w")
    assert done.status == "MODEL_TRAINING_CANCELLED" and done.finished_at is not None
    with pytest.raises(ConflictError, match="already ended as MODEL_TRAINING_CANCELLED") as ended:
        jobs.request_cancel(db, running.id)
    assert ended.value.details == {"status": "MODEL_TRAINING_CANCELLED"}


def test_cancel_of_a_dead_workers_job_ends_it_on_requeue(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    t0 = utcnow()
    jobs.claim_next(db, "w", 10, now=t0)
    jobs.request_cancel(db, job.id)
    [ended] = jobs.requeue_expired(db, now=t0 + timedelta(seconds=11))
    assert ended.status == "MODEL_TRAINING_CANCELLED"


def test_finish_records_the_outcome_for_the_lease_holder_only(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    jobs.claim_next(db, "w", 60)
    with pytest.raises(ValueError):
        jobs.finish(db, job.id, S.MODEL_TRAINING, worker_id="w")
    with pytest.raises(ValueError):
        jobs.finish(db, job.id, S.MODEL_TRAINED, worker_id="w")
    with pytest.raises(jobs.LeaseLostError):
        jobs.finish(db, job.id, S.MODEL_TRAINING_FAILED, "boom", worker_id="other")
    with pytest.raises(ConflictError):
        registry.delete_model_version(db, "a", "m", job.id)
    path = f"model-versions/{job.id}"
    done = jobs.finish(db, job.id, S.MODEL_TRAINED, None, path, worker_id="w")
    assert (done.status_code, done.artifact_path, done.lease_expires_at) == (21100, path, None)
    assert registry.latest_trained(db, "a", "m").id == job.id  # type: ignore[union-attr]
    with pytest.raises(jobs.LeaseLostError):
        jobs.finish(db, job.id, S.MODEL_TRAINING_FAILED, worker_id="w")
    again = _enqueue(db, dsv, resume_from=job.id)
    assert again.resume_from == job.id
    with pytest.raises(ConflictError, match=again.id):  # a queued run's starting point stays
        registry.delete_model_version(db, "a", "m", job.id)
    jobs.request_cancel(db, again.id)
    assert registry.delete_model_version(db, "a", "m", job.id) == [path, f"checkpoints/{job.id}", f"exports/{job.id}"]
    assert registry.get_model_version_by_id(db, again.id).resume_from is None


def test_metrics_and_logs_round_trip(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    assert telemetry.add_metrics(db, job.id, [{"step": s, "loss": 3.0 - s, "learning_rate": 1e-4} for s in (1, 2)]) == 2
    telemetry.add_metrics(db, job.id, [{"step": 2, "eval_loss": 1.5}])
    points = telemetry.list_metrics(db, job.id, after_step=1)
    assert [(p.step, p.loss, p.eval_loss) for p in points] == [(2, 1.0, None), (2, None, 1.5)]
    assert telemetry.append_logs(db, job.id, [("info", "start"), ("bogus", "x" * 5000)]) == 2
    assert telemetry.append_logs(db, job.id, [("error", "end")]) == 3
    logs = telemetry.list_logs(db, job.id, after_seq=1)
    assert [(line.seq, line.level, len(line.message)) for line in logs] == [(2, "info", 4000), (3, "error", 3)]
    with pytest.raises(jobs.RunDeletedError):  # only workers write here: their run was deleted
        telemetry.append_logs(db, "nojob", [("info", "x")])


def test_a_long_curve_is_downsampled_keeping_its_spikes_ends_and_eval_points(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    points = [{"step": s, "loss": 2.0 + (s % 10) / 100} for s in range(1, 5001)]
    points[2999]["loss"] = 9.0  # a spike at step 3000, and a dip at step 4000
    points[3999]["loss"] = 0.01
    points[-1]["loss"] = 1.234567  # the last point, exact
    telemetry.add_metrics(db, job.id, points)
    telemetry.add_metrics(db, job.id, [{"step": s, "eval_loss": 3.0 - s / 5000} for s in range(100, 5001, 100)])

    curve = telemetry.downsampled_metrics(db, job.id, 100)
    loss = [(p["step"], p["loss"]) for p in curve if p["loss"] is not None]
    assert len(loss) <= 100
    assert loss[0] == (1, 2.01) and loss[-1] == (5000, 1.234567)
    assert (3000, 9.0) in loss and (4000, 0.01) in loss
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    evals = [p["step"] for p in curve if p["eval_loss"] is not None]
    assert evals == list(range(100, 5001, 100))  # 50 eval points: fewer than 100, all kept
    assert all(p["at"] is not None for p in curve)
    assert len([p for p in telemetry.downsampled_metrics(db, job.id, 10_000) if p["loss"] is not None]) == 5000
    later = telemetry.downsampled_metrics(db, job.id, 2, after_step=4000)
    assert [(p["step"], p["loss"]) for p in later if p["loss"] is not None] == [(4001, 2.01), (5000, 1.234567)]


def test_a_resumed_runs_curve_is_what_it_logs_now_not_the_tail_it_went_back_over(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    telemetry.add_metrics(db, job.id, [{"step": s, "loss": 3.0} for s in range(1, 31)])  # attempt 1 to step 30
    telemetry.add_metrics(db, job.id, [{"step": 20, "eval_loss": 3.5}])
    telemetry.add_metrics(db, job.id, [{"step": s, "loss": 2.0} for s in range(21, 26)])  # resumed at 20
    telemetry.add_metrics(db, job.id, [{"step": 25, "eval_loss": 2.5}])  # joins step 25: no going back
    telemetry.add_metrics(db, job.id, [{"step": s, "loss": 1.0} for s in range(23, 28)])  # resumed at 22
    expected = [(s, 3.0) for s in range(1, 21)] + [(21, 2.0), (22, 2.0)] + [(s, 1.0) for s in range(23, 28)]
    curve = telemetry.list_metrics(db, job.id)
    assert [(p.step, p.loss) for p in curve if p.loss is not None] == expected
    assert [(p.step, p.eval_loss) for p in curve if p.eval_loss is not None] == [(20, 3.5)]
    assert [p.step for p in telemetry.list_metrics(db, job.id, after_step=25)] == [26, 27]
    drawn = telemetry.downsampled_metrics(db, job.id, 1000)
    assert [(p["step"], p["loss"]) for p in drawn if p["loss"] is not None] == expected
    assert drawn[-1]["point"] == max(p.pk for p in curve)  # the last recorded: where a live stream goes on
    every = telemetry.metrics_recorded_after(db, job.id, 0)  # as they came, what a live stream sends
    assert [p.step for p in every[29:]] == [30, 20, 21, 22, 23, 24, 25, 25, 23, 24, 25, 26, 27]
    assert [p.pk for p in telemetry.metrics_recorded_after(db, job.id, every[29].pk)] == [p.pk for p in every[30:]]


def test_the_log_tail_is_its_last_lines_oldest_first(db: Database, dsv: str) -> None:
    job = _enqueue(db, dsv)
    telemetry.append_logs(db, job.id, [("info", f"line {n}") for n in range(1, 2501)])
    tail = telemetry.list_logs(db, job.id, limit=3, tail=True)
    assert [(line.seq, line.message) for line in tail] == [
        (2498, "line 2498"),
        (2499, "line 2499"),
        (2500, "line 2500"),
    ]
    assert [line.seq for line in telemetry.list_logs(db, job.id, after_seq=2499, limit=3, tail=True)] == [2500]
    assert [line.seq for line in telemetry.list_logs(db, job.id, limit=2)] == [1, 2]
