"""Request and response bodies (pydantic), kept apart from routes and storage: one module per area."""

from tuneloom.server.schemas.data import (
    AppCreate,
    AppOut,
    DatasetCreate,
    DatasetOut,
    DatasetVersionOut,
    ErrorOut,
    InputOut,
    InputPageOut,
    InputsDelete,
    InvalidRowOut,
    UploadReport,
)
from tuneloom.server.schemas.models import (
    LogLineOut,
    MetricPointOut,
    ModelCreate,
    ModelOut,
    ModelVersionOut,
    SettingsOut,
    TrainRequest,
)

__all__ = [
    "AppCreate",
    "AppOut",
    "DatasetCreate",
    "DatasetOut",
    "DatasetVersionOut",
    "ErrorOut",
    "InputOut",
    "InputPageOut",
    "InputsDelete",
    "InvalidRowOut",
    "LogLineOut",
    "MetricPointOut",
    "ModelCreate",
    "ModelOut",
    "ModelVersionOut",
    "SettingsOut",
    "TrainRequest",
    "UploadReport",
]
