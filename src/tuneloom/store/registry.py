"""Models and their versions (training runs) as the API reads them; the queue's transitions live in `jobs`.

Lookups always go through the app (`app_id`, `model_id`, `version_id`), so a version id from
another app is "not found" rather than visible; `get_model_version_by_id` is for workers only.
Deletes return the artifact paths to remove once the transaction has committed.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from tuneloom.errors import SettingsError
from tuneloom.store.apps import add_under_app, find_app, not_found_in_app
from tuneloom.store.artifacts import model_version_files
from tuneloom.store.db import Database, fetch
from tuneloom.store.ids import ConflictError, NotFoundError, check_id, new_id
from tuneloom.store.models import QUEUED, RUNNING, Model, ModelVersion, TrainingStatus
from tuneloom.store.paging import DEFAULT_PAGE, Page, newest_first

MODEL_TYPES = ("text-to-text",)


def create_model(db: Database, app_id: str, model_id: str | None = None, model_type_id: str = "text-to-text") -> Model:
    if model_type_id not in MODEL_TYPES:
        raise SettingsError(
            f"model_type_id must be one of {', '.join(MODEL_TYPES)}; got {model_type_id!r}", key="model_type_id"
        )
    model = Model(
        app_id=check_id(app_id, "app id"), id=check_id(model_id or new_id(), "model id"), model_type_id=model_type_id
    )
    add_under_app(db, model, "model")
    return model


def get_model(db: Database, app_id: str, model_id: str) -> Model:
    with db.read() as session:
        return find_model(session, app_id, model_id)


def list_models(db: Database, app_id: str) -> list[Model]:
    query = select(Model).where(Model.app_id == check_id(app_id, "app id")).order_by(Model.created_at, Model.id)
    with db.read() as session:
        find_app(session, app_id)  # a mistyped app is a 404, not "no models yet"
        return list(session.scalars(query))


def delete_model(db: Database, app_id: str, model_id: str) -> list[str]:
    """Delete a model and all its versions; a worker training one of them loses its lease (see jobs)."""
    with db.write() as session:
        model = find_model(session, app_id, model_id, lock=True)  # a run being queued now waits, then is refused
        runs = session.execute(
            select(ModelVersion.id, ModelVersion.artifact_path).where(ModelVersion.model_pk == model.pk)
        ).all()
        session.delete(model)
    return [p for run_id, artifact in runs for p in model_version_files(run_id, artifact)]


def get_model_version(db: Database, app_id: str, model_id: str, version_id: str) -> ModelVersion:
    with db.read() as session:
        return find_model_version(session, app_id, model_id, version_id)


def get_model_version_by_id(db: Database, version_id: str) -> ModelVersion:
    with db.read() as session:
        return fetch(session, ModelVersion, version_id, "model version")


def list_model_versions(
    db: Database, app_id: str, model_id: str, *, limit: int = DEFAULT_PAGE, before: str | None = None
) -> Page[ModelVersion]:
    """Newest first, as a user looking at a model's runs expects, a page at a time (`store.paging`)."""
    with db.read() as session:
        model = find_model(session, app_id, model_id)
        return newest_first(session, ModelVersion, ModelVersion.model_pk == model.pk, limit=limit, before=before)


def latest_trained(db: Database, app_id: str, model_id: str) -> ModelVersion | None:
    """The newest MODEL_TRAINED version (what `<app_id>/<model_id>` means to the OpenAI routes)."""
    with db.read() as session:
        model = find_model(session, app_id, model_id)
        return session.scalar(
            select(ModelVersion)
            .where(ModelVersion.model_pk == model.pk, ModelVersion.status == TrainingStatus.MODEL_TRAINED.name)
            .order_by(ModelVersion.finished_at.desc(), ModelVersion.id.desc())
            .limit(1)
        )


def delete_model_version(db: Database, app_id: str, model_id: str, version_id: str) -> list[str]:
    """Delete a finished or queued run; a training one must be cancelled first (its worker holds files).

    The paths returned include the run's own folder even when its row names no artifact: a run whose
    publish failed or was cut short left a partial upload there (`model_version_files`).
    """
    with db.write() as session:
        version = find_model_version(session, app_id, model_id, version_id, lock=True)
        if version.status == TrainingStatus.MODEL_TRAINING.name:
            raise ConflictError(f"model version '{version_id}' is training; cancel it before deleting it")
        needs = f"model version '{version_id}' is the starting point of {{run}}"
        refuse_while_a_run_needs(session, ModelVersion.resume_from == version.id, needs, "it")
        paths = model_version_files(version.id, version.artifact_path)
        session.delete(version)
    return paths


def refuse_while_a_run_needs(session: Session, condition: ColumnElement[bool], needs: str, deleting: str) -> None:
    """Refuse (409, naming it) a delete while a queued or training run matching `condition` needs what goes.

    What such a run was created from must outlive it: the foreign keys would quietly set its dataset
    version or starting point to NULL, and a run whose starting point vanished trains from the base
    model instead, as if the user had asked for that. `needs` says how the run needs it, with
    `{run}` for the run (the oldest such) and `{version}` for its dataset version.
    """
    query = select(ModelVersion).where(ModelVersion.status.in_((QUEUED, RUNNING)), condition)
    run = session.scalar(query.order_by(ModelVersion.created_at, ModelVersion.id).limit(1))
    if run is not None:
        why = needs.format(run=f"run '{run.id}' ({run.status})", version=run.dataset_version_id)
        raise ConflictError(f"{why}; cancel that run before deleting {deleting}", details={"model_version_id": run.id})


def find_model(session: Session, app_id: str, model_id: str, *, lock: bool = False) -> Model:
    query = select(Model).where(Model.app_id == check_id(app_id, "app id"), Model.id == check_id(model_id, "model id"))
    model = session.scalar(query.with_for_update() if lock else query)
    if model is None:
        raise not_found_in_app(session, app_id, "model", model_id)
    return model


def find_model_version(
    session: Session, app_id: str, model_id: str, version_id: str, *, lock: bool = False
) -> ModelVersion:
    model = find_model(session, app_id, model_id)
    query = select(ModelVersion).where(
        ModelVersion.id == check_id(version_id, "model version id"), ModelVersion.model_pk == model.pk
    )
    version = session.scalar(query.with_for_update() if lock else query)
    if version is None:
        raise NotFoundError(
            f"model version '{version_id}' not found in model '{model_id}'", details={"key": "version_id"}
        )
    return version
