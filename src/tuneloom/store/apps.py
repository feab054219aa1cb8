"""Apps: the top of the tree. Deleting one removes its keys, datasets, models and runs in the database.

Files are not removed by the cascade: `delete_app` returns the artifact paths that belonged to the
app so the caller can delete them after the transaction commits (a rolled-back delete must not
have lost files).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneloom.store.artifacts import kept_upload, model_version_files
from tuneloom.store.db import Database
from tuneloom.store.ids import ConflictError, NotFoundError, check_id, new_id
from tuneloom.store.models import App, Dataset, DatasetVersion, Model, ModelVersion, Upload


def create_app(db: Database, name: str, app_id: str | None = None) -> App:
    """Create an app; `app_id` is a user slug, or random when not given."""
    app = App(id=check_id(app_id or new_id(), "app id"), name=name or app_id or "")
    try:
        with db.write() as session:
            session.add(app)
    except IntegrityError:
        raise ConflictError(f"app '{app.id}' already exists", details={"key": "app_id"}) from None
    return app


def add_under_app(db: Database, child: Dataset | Model, what: str) -> None:
    """Insert a dataset or model: 404 when its app is missing, 409 when its id is taken in that app."""
    try:
        with db.write() as session:
            find_app(session, child.app_id)
            session.add(child)
    except IntegrityError:
        raise ConflictError(f"{what} '{child.id}' already exists", details={"key": f"{what}_id"}) from None


def get_app(db: Database, app_id: str) -> App:
    with db.read() as session:
        return find_app(session, app_id)


def find_app(session: Session, app_id: str, *, lock: bool = False) -> App:
    """The app, or its 404 (`app_not_found`)."""
    app = session.get(App, check_id(app_id, "app id"), with_for_update=lock)
    if app is None:
        raise app_not_found(app_id)
    return app


def app_not_found(app_id: str) -> NotFoundError:
    """The one 404 for an app that is missing or hidden from the key: the two must read alike.

    `details.key` names `app_id`, the path parameter of every app-scoped route.
    """
    return NotFoundError(f"app '{app_id}' not found", details={"key": "app_id"})


def not_found_in_app(session: Session, app_id: str, what: str, child_id: str) -> NotFoundError:
    """The 404 for a model or dataset (`what`) missing from an app; the app's own 404 when the app is missing.

    Blaming the child sent a user who mistyped the app id looking for a model that was there all along.
    `details.key` names the path parameter (`model_id`, `dataset_id`).
    """
    find_app(session, app_id)
    return NotFoundError(f"{what} '{child_id}' not found in app '{app_id}'", details={"key": f"{what}_id"})


def list_apps(db: Database, app_ids: list[str] | None = None) -> list[App]:
    """All apps, or only those in `app_ids` (what an app-scoped key may see)."""
    query = select(App).order_by(App.created_at, App.id)
    if app_ids is not None:
        query = query.where(App.id.in_(app_ids))
    with db.read() as session:
        return list(session.scalars(query))


def delete_app(db: Database, app_id: str) -> list[str]:
    """Delete the app and everything under it; returns the artifact paths the caller should remove."""
    with db.write() as session:
        app = find_app(session, app_id, lock=True)
        _lock_models_then_datasets(session, app_id)
        paths = _artifact_paths(session, app_id)
        session.delete(app)
    return paths


def _lock_models_then_datasets(session: Session, app_id: str) -> None:
    """Lock the app's rows in the order `jobs.enqueue` locks a run's model and dataset.

    The cascade deletes them in the database's own order; a run being queued in the app at that moment
    held its model and waited for its dataset while the cascade held the dataset and waited for the
    model, and PostgreSQL broke the deadlock by failing one of the two requests.
    """
    for table in (Model, Dataset):
        session.execute(select(table.pk).where(table.app_id == app_id).order_by(table.pk).with_for_update()).all()


def _artifact_paths(session: Session, app_id: str) -> list[str]:
    dataset_files = session.scalars(
        select(DatasetVersion.artifact_path)
        .join(Dataset, Dataset.pk == DatasetVersion.dataset_pk)
        .where(Dataset.app_id == app_id, DatasetVersion.artifact_path.is_not(None))
    )
    runs = session.execute(
        select(ModelVersion.id, ModelVersion.artifact_path)
        .join(Model, Model.pk == ModelVersion.model_pk)
        .where(Model.app_id == app_id)
    )
    model_paths = [p for run_id, artifact in runs for p in model_version_files(run_id, artifact)]
    datasets = select(Dataset.pk).where(Dataset.app_id == app_id)
    uploads = raw_uploads(session, Upload.dataset_pk.in_(datasets))
    return [p for p in [*dataset_files, *model_paths, *uploads] if p]


def raw_uploads(session: Session, condition: ColumnElement[bool]) -> list[str]:
    """The kept files of the uploads matching `condition`: a deleted dataset's data must not stay on disk."""
    rows = session.execute(select(Upload.id, Upload.source_file).where(condition))
    return [kept_upload(upload_id, source) for upload_id, source in rows]
