"""Placement by capacity: each run's requirement, workers' advertised capacity, and claims that match them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tests.test_store_support import make_db_fixture, ready_dataset_version

from tuneloom.store import jobs, workers
from tuneloom.store.db import Database
from tuneloom.store.models import ModelVersion, utcnow
from tuneloom.store.workers import Capacity
from tuneloom.templates import resolve_settings
from tuneloom.templates.requirements import job_requirement

db = make_db_fixture()
CPU = Capacity(gpu_count=0, gpu_memory_mb=0, cpu_memory_mb=16_000)
SMALL_GPU = Capacity(gpu_count=1, gpu_memory_mb=2_000, cpu_memory_mb=64_000)
BIG_GPU = Capacity(gpu_count=2, gpu_memory_mb=80_000, cpu_memory_mb=256_000)


@pytest.fixture
def dsv(db: Database, tmp_path: Path) -> str:
    """App "a" with model "m" and a READY dataset version (its id)."""
    return ready_dataset_version(db, tmp_path / "data")


def _enqueue(db: Database, dsv: str, template: str, **overrides: dict[str, object]) -> ModelVersion:
    settings = resolve_settings(template, overrides).to_dict()
    return jobs.enqueue(db, "a", "m", dataset_version_id=dsv, template=template, settings=settings)


def test_requirements_follow_the_template_and_the_settings() -> None:
    def need(template: str, **overrides: dict[str, object]) -> tuple[bool, str | None, int | None]:
        r = job_requirement(template, resolve_settings(template, overrides).to_dict())
        return r.cuda, r.cuda_why, r.memory_mb

    assert need("tiny-random") == (False, None, 2)
    # 135M parameters in float32: the weights alone are 515 MiB
    assert need("smollm2-135m-instruct-lora") == (False, None, 515)
    # 7B at 4 bits is 3,338 MiB; GPTQ needs CUDA
    assert need("llama-2-7b-chat-gptq-lora") == (True, "quantization_config", 3338)
    assert need("llama-2-7b-chat-gptq-lora", quantization_config={})[0:2] == (
        True,
        "template llama-2-7b-chat-gptq-lora",
    )
    assert need("tiny-random", trainer_config={"tf32": True})[0:2] == (True, "trainer_config.tf32")
    # another base model than the template's: its size is unknown, so no memory estimate
    assert need("advanced", model_config={"pretrained_model_name_or_path": "tuneloom/tiny-random"})[2] is None


def test_a_full_fine_tune_needs_room_for_gradients_and_optimizer_state() -> None:
    """135M parameters in float32 without PEFT: weights + gradients + AdamW's two moments = 4 × 515 MiB."""

    def need(**overrides: dict[str, object]) -> tuple[int | None, str]:
        settings = resolve_settings("smollm2-135m-instruct-lora", {"peft_config": {}, **overrides}).to_dict()
        r = job_requirement("smollm2-135m-instruct-lora", settings)
        return r.memory_mb, r.memory_what

    assert need() == (2060, "the weights, gradients and optimizer state")
    assert need(trainer_config={"optim": "adamw_bnb_8bit"})[0] == 1288  # one byte per moment
    assert need(trainer_config={"optim": "sgd"}) == (1030, "the weights and gradients")
    fsdp = need(distributed={"strategy": "fsdp", "num_processes": 2})
    assert fsdp == (1030, "the weights, gradients and optimizer state (sharded over 2 processes)")
    assert need(distributed={"strategy": "deepspeed_zero2", "num_processes": 2})[0] == 515 + 773  # 515 + 1545 / 2
    assert need(distributed={"strategy": "ddp", "num_processes": 2})[0] == 2060  # every process holds it all


def test_a_waiting_full_fine_tune_names_what_its_memory_is_for(db: Database, dsv: str) -> None:
    run = _enqueue(db, dsv, "mistral-7b-lora", peft_config={})
    workers.beat(db, "box:1:0", CPU, lease_s=30)
    assert jobs.claim_next(db, "box:1:0", 60, capacity=CPU) is None  # 53,406 MiB > 16,000 MiB
    assert workers.waiting_reason(db, run) == (
        "waiting for a worker with at least 53,406 MiB of memory for the weights, gradients and optimizer state "
        "(live workers: 1, CPU only, 16,000 MiB)"
    )


def test_a_cpu_worker_skips_a_gpu_run_and_takes_the_one_behind(db: Database, dsv: str) -> None:
    gpu_run = _enqueue(db, dsv, "llama-2-7b-chat-gptq-lora")
    cpu_run = _enqueue(db, dsv, "tiny-random")
    assert jobs.claim_next(db, "cpu-worker", 60, capacity=CPU).id == cpu_run.id  # type: ignore[union-attr]
    assert jobs.claim_next(db, "cpu-worker-2", 60, capacity=CPU) is None  # the GPU run stays queued
    assert jobs.claim_next(db, "small-gpu", 60, capacity=SMALL_GPU) is None  # 2,000 MiB < 3,338 MiB of weights
    assert jobs.claim_next(db, "big-gpu", 60, capacity=BIG_GPU).id == gpu_run.id  # type: ignore[union-attr]


def test_a_run_that_no_live_worker_can_take_is_not_counted_ahead_of_others(db: Database, dsv: str) -> None:
    gpu_run = _enqueue(db, dsv, "llama-2-7b-chat-gptq-lora")
    cpu_run = _enqueue(db, dsv, "tiny-random")
    assert jobs.queue_position(db, cpu_run.id) == 2  # no live worker yet: every earlier run counts
    workers.beat(db, "box:1:0", CPU, lease_s=30)
    assert [jobs.queue_position(db, j.id) for j in (gpu_run, cpu_run)] == [1, 1]
    workers.beat(db, "gpu:2:0", BIG_GPU, lease_s=30)
    assert jobs.queue_position(db, cpu_run.id) == 2  # now someone can run the GPU job first


def test_a_gpu_worker_takes_cpu_runs_in_queue_order(db: Database, dsv: str) -> None:
    first, second = _enqueue(db, dsv, "tiny-random"), _enqueue(db, dsv, "llama-2-7b-chat-gptq-lora")
    assert [jobs.claim_next(db, f"g{i}", 60, capacity=BIG_GPU).id for i in range(2)] == [first.id, second.id]  # type: ignore[union-attr]


def test_a_waiting_run_says_what_it_waits_for_and_who_is_there(db: Database, dsv: str) -> None:
    gpu_run = _enqueue(db, dsv, "llama-2-7b-chat-gptq-lora")
    assert workers.waiting_reason(db, gpu_run) == (
        "waiting for a worker with a CUDA GPU (quantization_config needs one) and at least 3,338 MiB of GPU memory "
        "for the weights (live workers: none)"
    )
    now = utcnow()
    workers.beat(db, "box:1:0", CPU, lease_s=30, now=now)
    workers.beat(db, "gone:2:0", BIG_GPU, lease_s=30, now=now - timedelta(seconds=31))  # silent past its lease
    assert workers.waiting_reason(db, gpu_run, now=now) == (
        "waiting for a worker with a CUDA GPU (quantization_config needs one) and at least 3,338 MiB of GPU memory "
        "for the weights (live workers: 1, CPU only, 16,000 MiB)"
    )
    assert [j.id for j, _ in workers.stuck_jobs(db, now=now)] == [gpu_run.id]
    workers.beat(db, "gpu:3:0", BIG_GPU, lease_s=30, now=now)
    assert workers.waiting_reason(db, gpu_run, now=now) is None
    assert workers.stuck_jobs(db, now=now) == []
    listed = {w.id: (w.live, w.host) for w in workers.list_workers(db, now=now)}
    assert listed == {"box:1:0": (True, "box"), "gone:2:0": (False, "gone"), "gpu:3:0": (True, "gpu")}
    workers.leave(db, "gpu:3:0")
    assert workers.waiting_reason(db, gpu_run, now=now) is not None


def test_a_worker_row_shows_the_run_it_trains(db: Database, dsv: str) -> None:
    run = _enqueue(db, dsv, "tiny-random")
    workers.beat(db, "box:1:0", CPU, lease_s=30)
    jobs.claim_next(db, "box:1:0", 60, capacity=CPU)
    (info,) = workers.list_workers(db)
    assert (info.job_id, info.capacity, info.live) == (run.id, CPU, True)
