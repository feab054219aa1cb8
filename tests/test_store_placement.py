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
from tuneloom.worker.capacity import Machine
from tuneloom.worker.child import visible_devices
from tuneloom.worker.pool import slot_gpus

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


FOUR_PROCESSES = {"strategy": "ddp", "num_processes": 4}
ONE_GPU_SLOT = Capacity(gpu_count=1, gpu_memory_mb=80_000, cpu_memory_mb=256_000)  # one of four slots on a box
FOUR_GPU_SLOT = Capacity(gpu_count=4, gpu_memory_mb=80_000, cpu_memory_mb=256_000)  # `--workers 1` on that box


def test_a_run_takes_one_gpu_per_process_on_its_machine() -> None:
    def gpus(**overrides: dict[str, object]) -> int:
        return job_requirement("tiny-random", resolve_settings("tiny-random", overrides).to_dict()).gpus

    assert gpus() == 1
    assert gpus(distributed=FOUR_PROCESSES) == 4
    assert gpus(distributed={"num_processes": 8, "num_machines": 2, "main_process_ip": "10.0.0.1"}) == 4


def test_a_multi_process_run_waits_for_a_slot_with_a_gpu_per_process(db: Database, dsv: str) -> None:
    """A slot with fewer GPUs than processes would fail the run at launch; it takes the run behind instead."""
    wide = _enqueue(db, dsv, "tiny-random", distributed=FOUR_PROCESSES)
    narrow = _enqueue(db, dsv, "tiny-random")
    assert jobs.claim_next(db, "box:1:0", 60, capacity=ONE_GPU_SLOT).id == narrow.id  # type: ignore[union-attr]
    assert jobs.claim_next(db, "box:1:1", 60, capacity=BIG_GPU) is None  # 2 GPUs < 4 processes
    assert jobs.claim_next(db, "box:2:0", 60, capacity=FOUR_GPU_SLOT).id == wide.id  # type: ignore[union-attr]


def test_a_multi_process_run_that_can_train_on_cpus_goes_to_a_cpu_worker(db: Database, dsv: str) -> None:
    """Without GPUs the processes share the CPUs (gloo), so a CPU slot is not one with too few GPUs."""
    wide = _enqueue(db, dsv, "tiny-random", distributed=FOUR_PROCESSES)
    assert jobs.claim_next(db, "box:1:0", 60, capacity=ONE_GPU_SLOT) is None
    assert jobs.claim_next(db, "cpu:1:0", 60, capacity=CPU).id == wide.id  # type: ignore[union-attr]


def test_a_cpu_worker_must_hold_every_process_copy_of_a_multi_process_run(db: Database, dsv: str) -> None:
    """On GPUs each process's copy lives on its own card; on a CPU machine all copies share its memory."""
    full = {"peft_config": {}, "distributed": {"strategy": "ddp", "num_processes": 2}}  # 2,060 MiB per process
    wide = _enqueue(db, dsv, "smollm2-135m-instruct-lora", **full)
    three_gb = Capacity(gpu_count=0, gpu_memory_mb=0, cpu_memory_mb=3_000)
    two_small_gpus = Capacity(gpu_count=2, gpu_memory_mb=3_000, cpu_memory_mb=3_000)
    assert three_gb.fits(wide) is False and two_small_gpus.fits(wide) is True
    assert jobs.claim_next(db, "small-box:1:0", 60, capacity=three_gb) is None  # 2 × 2,060 MiB > 3,000 MiB
    workers.beat(db, "small-box:1:0", three_gb, lease_s=30)
    assert workers.waiting_reason(db, wide) == (
        "waiting for a worker with at least 2 GPUs or none (each of its 2 processes needs a GPU of its own where there "
        "are any) and at least 2,060 MiB of memory per process (2 processes) for the weights, gradients and optimizer "
        "state (live workers: 1, CPU only, 3,000 MiB)"
    )
    assert jobs.claim_next(db, "box:1:0", 60, capacity=CPU).id == wide.id  # type: ignore[union-attr]


def test_a_waiting_multi_process_run_names_the_gpus_it_needs(db: Database, dsv: str) -> None:
    wide = _enqueue(db, dsv, "tiny-random", distributed=FOUR_PROCESSES)
    gptq = _enqueue(db, dsv, "llama-2-7b-chat-gptq-lora", distributed=FOUR_PROCESSES)
    now = utcnow()
    for slot in range(4):  # a four-GPU box run with the default one slot per GPU
        workers.beat(db, f"box:1:{slot}", ONE_GPU_SLOT, lease_s=30, now=now)
    live = "live workers: 4, 1 GPU × 80,000 MiB, 256,000 MiB CPU"
    hint = "a worker's slots split its GPUs: `tuneloom worker --workers 1` gives its one slot all of them"
    assert workers.waiting_reason(db, wide, now=now) == (
        "waiting for a worker with at least 4 GPUs or none (each of its 4 processes needs a GPU of its own where "
        f"there are any) and at least 2 MiB of memory per process (4 processes) for the weights ({live}; {hint})"
    )
    assert workers.waiting_reason(db, gptq, now=now) == (
        "waiting for a worker with at least 4 CUDA GPUs (quantization_config needs CUDA, and each of its 4 processes "
        f"a GPU of its own) and at least 3,338 MiB of GPU memory per process (4 processes) for the weights "
        f"({live}; {hint})"
    )
    assert [job.id for job, _ in workers.stuck_jobs(db, now=now)] == [wide.id, gptq.id]
    assert jobs.queue_position(db, wide.id, now=now) == 1  # no live slot can take either: nobody is ahead
    workers.beat(db, "big:2:0", FOUR_GPU_SLOT, lease_s=30, now=now)
    assert workers.waiting_reason(db, wide, now=now) is None
    assert workers.stuck_jobs(db, now=now) == []
    assert jobs.queue_position(db, gptq.id, now=now) == 2


def test_a_workers_slots_split_its_gpus_and_a_run_sees_only_its_slots_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a slot advertises is what its runs get: no two slots hand the same GPU to a multi-process run."""
    assert [slot_gpus(i, 4, 4) for i in range(4)] == [(0,), (1,), (2,), (3,)]  # the default: one slot per GPU
    assert slot_gpus(0, 1, 4) == (0, 1, 2, 3)  # --workers 1: all of them
    assert [slot_gpus(i, 2, 4) for i in range(2)] == [(0, 2), (1, 3)]
    assert [slot_gpus(i, 3, 2) for i in range(3)] == [(0,), (1,), (0,)]  # more slots than GPUs share them
    assert slot_gpus(0, 1, 0) == ()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_devices((1, 3), {}) == "1"  # a one-process run: the slot's first GPU
    assert visible_devices((0, 1, 2, 3), {"num_processes": 2, "num_machines": 1}) == "0,1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # the worker itself was given GPUs 4-7
    assert visible_devices((1, 3), {"num_processes": 2, "num_machines": 1}) == "5,7"


def test_a_slot_advertises_the_memory_of_its_own_gpus() -> None:
    """On a machine with mixed cards, a slot on the big ones is not held to the smallest card's memory."""
    machine = Machine(gpu_memory_mb=(24_000, 81_000, 24_000, 81_000), cpu_memory_mb=256_000)
    slots = [machine.slot_capacity(slot_gpus(i, 2, 4)) for i in range(2)]
    assert slots == [Capacity(2, 24_000, 256_000), Capacity(2, 81_000, 256_000)]
    assert machine.slot_capacity(slot_gpus(0, 1, 4)) == Capacity(4, 24_000, 256_000)
    assert Machine(gpu_memory_mb=(), cpu_memory_mb=16_000).slot_capacity(()) == CPU
