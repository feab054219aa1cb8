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
    "UploadReport",
]
