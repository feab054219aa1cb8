"""Training across several processes: the `distributed` setting, and DDP on two CPU processes (gloo).

The two-process run goes through the real `tuneloom train --num-processes 2`, which starts
`accelerate launch` exactly as a worker does; it must match a one-process run at the same
effective batch (per-device batch halved) step for step. FSDP and ZeRO shard over GPUs only, so a CPU
machine refuses them (on a GPU: bench/gpu_fsdp.sh).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import run_cli, sentiment_lines

from tuneloom.cli import main
from tuneloom.errors import SettingsError
from tuneloom.model_version import open_version
from tuneloom.templates import resolve_settings
from tuneloom.templates.requirements import job_requirement
from tuneloom.templates.settings_distributed import SHARDED_STRATEGIES
from tuneloom.train.launch import launch_command
from tuneloom.train.recipe import TrainJob, run_training

TRAIN = {"num_train_epochs": 1, "learning_rate": 0.05, "seed": 7}
TWO_MACHINES = {"num_processes": 2, "num_machines": 2}


def distributed(value: Any) -> dict[str, Any]:
    return resolve_settings("tiny-random", {"distributed": value}).distributed


def refused(value: Any) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        distributed(value)
    return info.value


def test_one_process_is_the_plain_run_and_other_values_are_stored_in_full() -> None:
    for plain in (None, {}, {"strategy": "none", "num_processes": 4}, {"num_processes": 1}):
        assert distributed(plain) == {}
    assert "distributed" not in resolve_settings("tiny-random").to_dict()  # one-process manifests unchanged
    two = distributed({"num_processes": 2.0, "strategy": "FSDP"})
    assert two == {
        "strategy": "fsdp",
        "num_processes": 2,
        "num_machines": 1,
        "machine_rank": 0,
        "main_process_ip": None,
        "main_process_port": 0,
    }
    stored = resolve_settings("tiny-random", {"distributed": two}).to_dict()
    assert resolve_settings("tiny-random", stored).distributed == two  # the normal form is a fixed point
    nodes = distributed({"num_processes": 16, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.0.0.5"})
    assert nodes["main_process_port"] == 29500
    for host in ("fd00::1", "node-1.cluster.local", "trainer_0"):  # IPv6 and compose-style names were refused
        assert distributed({"num_processes": 2, "num_machines": 2, "main_process_ip": host})["main_process_ip"] == host


@pytest.mark.parametrize(
    ("value", "key", "words"),
    [
        ({"num_procs": 2}, "distributed.num_procs", "Did you mean 'num_processes'?"),
        ({"num_processes": 0}, "distributed.num_processes", "between 1 and 4096"),
        ({"num_processes": 1.5}, "distributed.num_processes", "whole number"),
        ({"strategy": "zero3"}, "distributed.strategy", "'deepspeed_zero3'"),
        ({"num_processes": 3, "num_machines": 2, "main_process_ip": "h"}, "distributed.num_processes", "multiple"),
        ({"num_processes": 4, "num_machines": 2}, "distributed.main_process_ip", "required with 2 machines"),
        ({"machine_rank": 1}, "distributed.machine_rank", "below num_machines (1)"),
        ({"main_process_port": 70000}, "distributed.main_process_port", "between 0 and 65_535"),
        ({"main_process_ip": "a b"}, "distributed.main_process_ip", "host name or IP"),
        (TWO_MACHINES | {"main_process_ip": "10.0.0.1:29500"}, "distributed.main_process_ip", "as main_process_port"),
        (
            TWO_MACHINES | {"main_process_ip": "[::1]:29500"},
            "distributed.main_process_ip",
            "without brackets (got '[::1]:29500'): write '::1' and give the port (29500) as main_process_port",
        ),
        (
            TWO_MACHINES | {"main_process_ip": "[fd00::1]"},
            "distributed.main_process_ip",
            "without brackets (got '[fd00::1]'): write 'fd00::1'",
        ),
        (TWO_MACHINES | {"main_process_ip": "999.1.1.1"}, "distributed.main_process_ip", "host name or IP"),
        (TWO_MACHINES | {"main_process_ip": "a..b"}, "distributed.main_process_ip", "host name or IP"),
        ({"main_process_ip": "10.0.0.5"}, "distributed.main_process_ip", "only for runs over several machines"),
        ("ddp", "distributed", "must be an object"),
    ],
)
def test_bad_distributed_settings_name_the_key(value: Any, key: str, words: str) -> None:
    err = refused(value)
    assert err.key == key
    assert words in err.message


def test_every_wrong_distributed_key_is_named_at_once() -> None:
    err = refused({"num_procs": 2, "strategy": "zero3", "main_process_port": 70000})
    assert [each["key"] for each in err.details["errors"]] == [
        "distributed.num_procs",
        "distributed.strategy",
        "distributed.main_process_port",
    ]
    assert err.message.startswith("3 settings are invalid: ")


def test_deepspeed_without_deepspeed_installed_says_how_to_get_it() -> None:
    settings = distributed({"strategy": "deepspeed_zero3", "num_processes": 2})
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(SettingsError, match=r"pip install deepspeed") as info:
            launch_command(settings)
        assert info.value.key == "distributed.strategy"
    else:
        assert "--zero_stage=3" in launch_command(settings)


def test_cli_flags_reach_the_setting_and_bad_ones_are_one_line(
    sentiment_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = ["train", str(sentiment_file), "--template", "tiny-random", "--output", str(tmp_path / "v")]
    code = main([*train, "--distributed", '{"strategy": "ddp"}', "--num-processes", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert "distributed.num_processes must be between 1 and 4096 (got 0)" in err
    assert "Traceback" not in err and not (tmp_path / "v").exists()


def test_what_only_this_machine_can_tell_is_checked_before_any_process_starts(
    sentiment_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0's address must resolve here, and each process needs a GPU of its own where there are GPUs.

    An unknown name was retried by every rank until torch's rendezvous timed out; two ranks on one
    GPU fail in NCCL. (No GPU here: the device count is the one thing faked.)
    """
    train = ["train", str(sentiment_file), "--template", "tiny-random", "--output", str(tmp_path / "v")]
    nowhere = ["--num-machines", "2", "--num-processes", "2", "--machine-rank", "1"]
    assert main([*train, *nowhere, "--main-process-ip", "no-such-host.invalid"]) == 1
    err = capsys.readouterr().err
    assert "distributed.main_process_ip 'no-such-host.invalid' cannot be resolved on this machine" in err

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main([*train, "--num-processes", "2"]) == 1
    err = capsys.readouterr().err
    assert "distributed.num_processes: 2 processes on this machine need a GPU each, and it has 1" in err
    assert "Traceback" not in err and not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The data file, and the metrics of one process at batch 8: what every two-process run must match."""
    folder = tmp_path_factory.mktemp("one-process")
    data = folder / "data.txt"
    data.write_text("\n".join(sentiment_lines()) + "\n", encoding="utf-8")
    settings = {"trainer_config": {**TRAIN, "per_device_train_batch_size": 8}}
    return data, run_training(
        TrainJob(data=data, output=folder / "one", template="tiny-random", settings=settings)
    ).metrics


def test_ddp_on_two_cpu_processes_matches_one_process(one_process: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Same effective batch, same losses step for step, one ordinary version that generates."""
    strategy = "ddp"
    data, one = one_process
    out = tmp_path / "two"
    config = json.dumps({**TRAIN, "per_device_train_batch_size": 4})  # 2 × 4 = the same effective batch of 8
    args = ["train", str(data), "--template", "tiny-random", "--output", str(out), "--strategy", strategy]
    result = run_cli(*args, "--trainer-config", config, "--num-processes", "2", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(result.stdout)["metrics"]

    assert two["steps"] == one["steps"] > 1
    losses = [(a["loss"], b["loss"]) for a, b in zip(one["loss_curve"], two["loss_curve"], strict=True)]
    figures = {k: (round(one[k], 4), round(two[k], 4)) for k in ("train_loss", "eval_loss")}
    print(f"\n{strategy}, 1 process × batch 8 vs 2 processes × batch 4: per step {losses}; {figures}")
    assert all(abs(a - b) < 0.01 for a, b in losses), losses
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=0.005)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], abs=0.005)

    version = open_version(out)  # an ordinary, checksum-verified model-version directory
    assert version.manifest["distributed"] == {"strategy": strategy, "processes": 2, "sharded": False}
    assert version.manifest["settings"]["distributed"]["num_processes"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not out.with_name("two.partial").exists()
    assert result.stderr.count("Saving model version") == 1  # rank 0 alone reports progress
    generated = run_cli("generate", str(out), "great product, works well", "--max-tokens", "4", "--json")
    assert generated.returncode == 0 and json.loads(generated.stdout), generated.stderr[-2000:]


@pytest.mark.parametrize("strategy", SHARDED_STRATEGIES)
def test_sharded_strategies_on_a_cpu_machine_are_refused_before_any_process_starts(
    strategy: str, one_process: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """accelerate shards only over GPUs: on CPUs it ran 'fsdp' as plain DDP and the version said 'fsdp'."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data, _ = one_process
    args = ["train", str(data), "--template", "tiny-random", "--output", str(tmp_path / "v"), "--strategy", strategy]
    result = run_cli(*args, "--num-processes", "2")
    assert result.returncode == 1
    assert f"distributed.strategy '{strategy}' shards the model over GPUs; this machine has none" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "v").exists() and not (tmp_path / "v.partial").exists()
    # A worker queue places such a run on a GPU worker only, saying why while it waits.
    settings = resolve_settings("tiny-random", {"distributed": {"strategy": strategy, "num_processes": 2}})
    need = job_requirement("tiny-random", settings.to_dict())
    assert need.cuda and need.cuda_why == "distributed.strategy"
