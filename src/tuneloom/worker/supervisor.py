"""A worker slot: claim a job, run it in a child process, and keep the database told.

One slot trains one job at a time (one device). The loop, top to bottom:
    requeue jobs whose worker died → claim the oldest queued job → start the child →
    every heartbeat: write progress, metrics and logs, extend the lease, honour a cancel →
    record the final status.
Everything the run produces goes through `tuneloom.store` (`jobs`, `telemetry`), so the API —
possibly on another machine — sees it. A cancelled run's child is killed at once (no checkpoint is
needed for a run that will never resume); a worker shutting down asks its child to checkpoint,
then gives the job back to the queue, where the next worker resumes it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from tuneloom.errors import ModelVersionError, NotFoundError, SettingsError, TuneloomError
from tuneloom.model_version import open_version
from tuneloom.store import dataset_versions, jobs, telemetry
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.db import Database, is_unavailable
from tuneloom.store.models import ModelVersion, TrainingStatus
from tuneloom.store.registry import get_model_version_by_id
from tuneloom.store.republish import unshared_message
from tuneloom.store.shared import ArtifactStoreError
from tuneloom.store.workers import Capacity
from tuneloom.templates.settings_distributed import check_queueable
from tuneloom.train.checkpoints import latest_checkpoint
from tuneloom.worker.child import RunSpec, run_child
from tuneloom.worker.child_link import RunState, describe_exit, kill, process_context, receive, send

STOP_GRACE_S = 120.0  # a checkpoint of a big model takes a while; after this the child is killed
DB_RETRY_S = 2.0  # while the database is unavailable, try again this often
log = logging.getLogger("tuneloom.worker")
T = TypeVar("T")


@dataclass
class WorkerConfig:
    lease_s: float = 60.0  # a worker silent for this long loses its job to another
    heartbeat_s: float = 2.0  # progress reaches the database (and cancels reach the worker) this often
    poll_s: float = 1.0  # an idle worker looks for work this often
    checkpoint_every_s: float = 300.0
    # A trained model is shared again after each pause (about 8 minutes in all): a store's outage or a
    # full bucket should not cost hours of training. A wrong URL or key never gets here (`check()` at start).
    publish_retry_s: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 120.0, 240.0)


class WorkerSlot:
    def __init__(
        self,
        db: Database,
        artifacts: Artifacts,
        *,
        slot: int = 0,
        config: WorkerConfig | None = None,
        cuda_devices: tuple[int, ...] = (),
        capacity: Capacity | None = None,
    ):
        self.db = db
        self.artifacts = artifacts
        self.config = config or WorkerConfig()
        self.cuda_devices = cuda_devices  # this slot's share of the machine's GPUs
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{slot}"
        self.shutdown = threading.Event()
        self.capacity = capacity  # what this slot offers a run; None claims any job

    def run_forever(self) -> None:
        """Train queued jobs until `shutdown` is set; a job in hand is checkpointed and released."""
        while not self.shutdown.is_set():
            try:
                busy = self.run_once()
            except DBAPIError as err:
                if not is_unavailable(err):
                    raise
                log.warning("worker %s: database unavailable, retrying: %s", self.worker_id, err.orig)
                busy = False
            if not busy:
                self.shutdown.wait(self.config.poll_s)

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        jobs.requeue_expired(self.db)
        job = jobs.claim_next(self.db, self.worker_id, self.config.lease_s, capacity=self.capacity)
        if job is None:
            return False
        try:
            self._run(job)
        except jobs.RunDeletedError:  # its child is dead (`_run`); what it wrote since the delete is nobody's
            self._drop_files(job)
        except jobs.LeaseLostError:  # taken over after a stall: the new owner decides what happens to it
            pass
        except DBAPIError as err:
            if is_unavailable(err):
                raise  # `run_forever` waits for the database; the lease expires and the job is requeued
            self._fail_unexpectedly(job, err)
        except Exception as err:
            self._fail_unexpectedly(job, err)
        return True

    def _fail_unexpectedly(self, job: ModelVersion, err: Exception) -> None:
        """One job's bug must not end this slot's thread: the queue would stop, its job stuck in MODEL_TRAINING."""
        log.exception("worker %s: model version %s failed unexpectedly", self.worker_id, job.id)
        message = f"the worker failed while running this job: {type(err).__name__}: {self._public(str(err))}"
        with contextlib.suppress(jobs.LeaseLostError):
            jobs.finish(self.db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, message, worker_id=self.worker_id)

    def _drop_files(self, job: ModelVersion) -> None:
        self._remove(self.artifacts.checkpoint_dir(job.id))
        self._remove(self.artifacts.model_version_dir(job.id))

    def _remove(self, folder: Path) -> None:
        """Delete one of a run's folders in the data dir (missing is fine)."""
        self.artifacts.remove(self.artifacts.relative(folder))

    def _run(self, job: ModelVersion) -> None:
        spec = self._spec(job)
        if isinstance(spec, str):
            jobs.finish(self.db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, spec, worker_id=self.worker_id)
            return
        telemetry.append_logs(self.db, job.id, [("info", self._start_message(job))])
        context = process_context()
        ours, theirs = context.Pipe()
        child = context.Process(target=run_child, args=(spec, theirs), name=f"train-{job.id}", daemon=True)
        child.start()
        theirs.close()
        try:
            self._supervise(job, child, ours)
        finally:
            ours.close()
            kill(child)

    def _supervise(self, job: ModelVersion, child: Any, conn: Connection) -> None:
        state = RunState()
        next_beat = time.monotonic() + self.config.heartbeat_s
        stopping_since: float | None = None
        while state.result is None and (child.is_alive() or conn.poll()):
            receive(conn, state, timeout=0.2)
            if self.shutdown.is_set() and stopping_since is None:
                stopping_since = time.monotonic()
                send(conn, "stop")
            if stopping_since is not None and time.monotonic() - stopping_since > STOP_GRACE_S:
                break
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.config.heartbeat_s
                if self._beat(job, state):
                    self._cancel(job, child)
                    return
        if state.result is not None and state.result[0] == "error":
            # A failed run never resumes: free its checkpoints before writing (after a full disk, the
            # database on that disk may need the space to record the failure; it would wait forever).
            self._remove(self.artifacts.checkpoint_dir(job.id))
        self._until_database_answers(lambda: self._report(job, state))  # the last progress, before the final status
        self._until_database_answers(lambda: self._record(job, state.result, child))

    def _beat(self, job: ModelVersion, state: RunState) -> bool:
        """Write what arrived, extend the lease; True when the user asked to cancel.

        While the database is unavailable the run goes on: what arrived is kept for the next beat.
        """
        try:
            return self._report(job, state)
        except DBAPIError as err:
            if not is_unavailable(err):
                raise
            log.warning("worker %s: database unavailable during %s: %s", self.worker_id, job.id, err.orig)
            return False

    def _report(self, job: ModelVersion, state: RunState) -> bool:
        """Write what arrived and the progress, extending the lease; True when the user asked to cancel."""
        self._flush(job, state)
        return jobs.heartbeat(
            self.db,
            job.id,
            self.worker_id,
            self.config.lease_s,
            step=state.step,
            total_steps=state.total,
            eta_s=state.eta_s,
        )

    def _until_database_answers(self, write: Any) -> Any:
        """Call `write` until the database takes it: a finished run's status must not be lost to an outage."""
        while True:
            try:
                return write()
            except DBAPIError as err:
                if not is_unavailable(err):
                    raise
                log.warning("worker %s: database unavailable, retrying: %s", self.worker_id, err.orig)
                time.sleep(DB_RETRY_S)

    def _flush(self, job: ModelVersion, state: RunState) -> None:
        if state.metrics:
            telemetry.add_metrics(self.db, job.id, state.metrics)
            state.metrics = []
        if state.logs:  # "Reading <data dir>/dataset-versions/…": API users see logs, not this machine's paths
            telemetry.append_logs(self.db, job.id, [(level, self._public(text)) for level, text in state.logs])
            state.logs = []

    def _cancel(self, job: ModelVersion, child: Any) -> None:
        kill(child)
        jobs.finish(
            self.db, job.id, TrainingStatus.MODEL_TRAINING_CANCELLED, "cancelled by the user", worker_id=self.worker_id
        )
        telemetry.append_logs(self.db, job.id, [("warning", "cancelled by the user; training stopped")])
        self._remove(self.artifacts.checkpoint_dir(job.id))

    def _record(self, job: ModelVersion, result: tuple[str, dict[str, Any]] | None, child: Any) -> None:
        """The run's end, as the database keeps it."""
        kind, payload = result or ("crashed", {})
        if kind == "done":
            output = self.artifacts.model_version_dir(job.id)
            unshared = self._publish(job, output)
            if unshared is not None:
                jobs.finish(self.db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, unshared, worker_id=self.worker_id)
                telemetry.append_logs(self.db, job.id, [("error", unshared)])
                return
            jobs.finish(
                self.db,
                job.id,
                TrainingStatus.MODEL_TRAINED,
                artifact_path=self.artifacts.relative(output),
                worker_id=self.worker_id,
            )
            telemetry.append_logs(self.db, job.id, [("info", "training finished; model version saved")])
            self._remove(self.artifacts.checkpoint_dir(job.id))
        elif kind == "stopped" or (kind == "crashed" and self.shutdown.is_set()):
            message = "worker shut down; the run resumes from its checkpoint"
            telemetry.append_logs(self.db, job.id, [("warning", message)])
            jobs.release(self.db, job.id, self.worker_id, message)
        elif kind == "error":
            if payload.get("trace"):
                telemetry.append_logs(self.db, job.id, [("error", payload["trace"])])
            message = self._public(payload["message"])
            jobs.finish(self.db, job.id, TrainingStatus[payload["status"]], message, worker_id=self.worker_id)
            telemetry.append_logs(self.db, job.id, [("error", message)])
        else:
            child.join(timeout=5)
            message = f"the training process exited unexpectedly ({describe_exit(child.exitcode)})"
            jobs.finish(self.db, job.id, TrainingStatus.MODEL_TRAINING_FAILED, message, worker_id=self.worker_id)
            telemetry.append_logs(self.db, job.id, [("error", message)])

    def _public(self, message: str) -> str:
        """A run's message as API users read it: the data dir's place on this machine is the server's business."""
        return message.replace(str(self.artifacts.root), "<data dir>")

    def _spec(self, job: ModelVersion) -> RunSpec | str:
        """The child's instructions, or why the job cannot run at all."""
        if job.dataset_version_id is None:
            return "the dataset version this run was created with has been deleted"
        try:  # queued by an older tuneloom, which did not refuse it
            check_queueable(job.settings.get("distributed") or {})
        except SettingsError as err:
            return err.message
        try:  # deleted since the claim read the job (the delete's check and the claim can interleave)
            data = dataset_versions.get_version_by_id(self.db, job.dataset_version_id)
        except NotFoundError:
            return "the dataset version this run was created with has been deleted"
        snapshot = data.artifact_path
        if snapshot is None:
            return f"dataset version '{data.id}' has no snapshot file"
        try:
            self._with_lease(job, functools.partial(self.artifacts.fetch, snapshot))  # when this machine lacks it
            dataset_versions.verify_snapshot(self.artifacts, data)
        except TuneloomError as err:
            return err.message
        start_from = None
        if job.resume_from is not None:
            try:
                weights = get_model_version_by_id(self.db, job.resume_from).artifact_path
            except NotFoundError:
                return f"model version '{job.resume_from}' to continue from has been deleted"
            if weights is None:
                return f"model version '{job.resume_from}' to continue from has no trained weights"
            try:
                start_from = str(self._with_lease(job, functools.partial(self.artifacts.fetch, weights)))
            except TuneloomError as err:
                return err.message
            try:  # refused before a process starts: continuing from damaged weights would train on garbage
                open_version(Path(start_from), label=f"model version '{job.resume_from}' to continue from")
            except ModelVersionError as err:
                return err.message
        return RunSpec(
            job_id=job.id,
            data=str(self.artifacts.resolve(snapshot)),
            output=str(self.artifacts.model_version_dir(job.id)),
            workdir=str(self.artifacts.checkpoint_dir(job.id)),
            template=job.template,
            settings=job.settings,
            start_from=start_from,
            checkpoint_every_s=self.config.checkpoint_every_s,
            cuda_devices=self.cuda_devices,
        )

    def _publish(self, job: ModelVersion, output: Path) -> str | None:
        """Put the trained version on the shared store before it is MODEL_TRAINED; why not, if it never could.

        Each failure is logged on the run and tried again after a pause (`publish_retry_s`), holding
        the lease meanwhile; a worker shutting down stops waiting and tries once more. After the last
        try the files stay here, and the message names the command that shares them (`store.republish`).
        """
        if self.artifacts.shared is None:
            return None
        relative = self.artifacts.relative(output)
        for pause in (*self.config.publish_retry_s, None):  # a try now, then one after each pause
            try:
                self._with_lease(job, functools.partial(self.artifacts.publish, relative))
                return None
            except ArtifactStoreError as err:
                problem = err.message
            if pause is not None:
                retrying = f"could not share the model version, trying again in {pause:g} s: {problem}"
                telemetry.append_logs(self.db, job.id, [("warning", retrying)])
                self._with_lease(job, functools.partial(self.shutdown.wait, pause))
        message = unshared_message(problem, self.db, self.artifacts, job.id, self.worker_id)
        log.error("worker %s: %s", self.worker_id, message)  # this machine's operator sees its real data dir
        return self._public(message)

    def _with_lease(self, job: ModelVersion, transfer: Callable[[], T]) -> T:
        """`transfer()` (a download or upload) in a thread while the job's lease is extended beside it.

        Fetching a large model to continue from, or publishing one, takes longer than a lease, and a
        worker silent that long would lose its job to another worker (which would start it again).
        """
        mover = ThreadPoolExecutor(1, thread_name_prefix=f"transfer-{job.id}")
        try:
            moving = mover.submit(transfer)
            while not wait([moving], timeout=self.config.heartbeat_s).done:
                self._beat(job, RunState())  # nothing new to report: only the lease is extended
            return moving.result()
        finally:
            mover.shutdown(wait=False)  # a lost lease (LeaseLostError) does not wait for the transfer

    def _start_message(self, job: ModelVersion) -> str:
        checkpoint = latest_checkpoint(self.artifacts.checkpoint_dir(job.id))
        resumed = f"; resuming from {checkpoint.name}" if checkpoint else ""
        return f"attempt {job.attempts} of {job.max_attempts} on worker {self.worker_id}{resumed}"
