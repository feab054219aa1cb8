"""The tuneloom Python SDK: a typed, synchronous client for the platform's REST API.

    from tuneloom import Client
    c = Client("http://127.0.0.1:8000", api_key=KEY)
    app = c.create_app("demo")
    ds = app.create_dataset("sentiment")
    report = ds.upload_file("data.csv")
    model = app.create_model("sentiment-gen")
    mv = model.train(dataset_version=ds.create_version(), template="smollm2-135m-instruct-lora")
    status = model.wait(mv)                     # final TrainingStatus: .name, .code, .message
    print(model.predict("…", inference_params={"max_tokens": 20}))

Server refusals raise `TuneloomAPIError` (`.status`, `.code`, `.message`, `.key`).
"""

from tuneloom.client._http import TuneloomAPIError, TuneloomConnectionError
from tuneloom.client.handles import App, Client, Dataset, Model
from tuneloom.client.records import (
    DatasetVersion,
    Input,
    InvalidRow,
    LogLine,
    MetricPoint,
    ModelVersion,
    Progress,
    TrainingStatus,
    UploadReport,
)

__all__ = [
    "App",
    "Client",
    "Dataset",
    "DatasetVersion",
    "Input",
    "InvalidRow",
    "LogLine",
    "MetricPoint",
    "Model",
    "ModelVersion",
    "Progress",
    "TrainingStatus",
    "TuneloomAPIError",
    "TuneloomConnectionError",
    "UploadReport",
]
