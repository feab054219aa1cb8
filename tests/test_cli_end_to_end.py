"""The whole flow through the real CLI on `tiny-random`: train → generate → evaluate → export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tests.conftest import run_cli, sentiment_lines
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneloom.cli import main
from tuneloom.model_version import MANIFEST, open_version

TRAIN_FAST = '{"num_train_epochs": 3, "per_device_train_batch_size": 8, "learning_rate": 0.05}'


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    data = root / "train.txt"
    lines = sentiment_lines()
    lines.insert(5, "### Instruction: no answer section here ### Human: hello")
    data.write_text("\n".join(lines) + "\n")
    out = root / "version"
    result = run_cli(
        "train",
        str(data),
        "--template",
        "tiny-random",
        "--output",
        str(out),
        "--trainer-config",
        TRAIN_FAST,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert "1 invalid row dropped (within the tolerance)" in result.stderr
    (root / "stderr.txt").write_text(result.stderr)
    return out


def test_train_writes_a_complete_verified_version(trained: Path) -> None:
    version = open_version(trained)  # verifies every checksum
    manifest = version.manifest
    assert manifest["template"] == "tiny-random"
    assert manifest["weights"] == "adapter"
    assert (trained / "adapter" / "adapter_model.safetensors").is_file()
    assert manifest["settings"]["trainer_config"]["learning_rate"] == 0.05
    assert manifest["prompt_format"]["template"] == (
        "### Instruction: Is this review positive or negative? Answer with one word. ### Human: {prompt} ### Assistant:"
    )
    metrics = json.loads((trained / "metrics.json").read_text())
    assert len(metrics["loss_curve"]) == metrics["steps"] > 0
    assert metrics["eval_loss"] > 0 and metrics["perplexity"] > 1
    report = json.loads((trained / "data_report.json").read_text())
    assert report["invalid_rows"] == 1 and report["invalid"][0]["line"] == 6
    assert not trained.with_name(trained.name + ".partial").exists()


def test_the_held_out_set_is_evaluated_once_per_reported_step(trained: Path) -> None:
    """The final eval loss is the Trainer's last evaluation, not a second pass over the held-out set."""
    printed = re.findall(r"step (\d+): eval loss", (trained.parent / "stderr.txt").read_text())
    metrics = json.loads((trained / "metrics.json").read_text())
    assert printed and len(printed) == len(set(printed)), printed
    assert int(printed[-1]) == metrics["steps"]
    assert metrics["eval_loss"] == metrics["eval_curve"][-1]["eval_loss"]


def test_training_lowers_the_loss(trained: Path) -> None:
    curve = [p["loss"] for p in json.loads((trained / "metrics.json").read_text())["loss_curve"]]
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3


def test_generate_wraps_bare_text_and_stops(trained: Path) -> None:
    result = run_cli("generate", str(trained), "lovely thing", "--max-tokens", "12", "--json")
    assert result.returncode == 0, result.stderr
    (gen,) = json.loads(result.stdout)
    assert gen["prompt"].endswith("### Human: lovely thing ### Assistant:")
    assert "###" not in gen["text"]
    assert gen["tokens"] <= 12


def test_stop_string_cuts_generation(trained: Path) -> None:
    free = json.loads(run_cli("generate", str(trained), "meh", "--max-tokens", "20", "--json").stdout)[0]
    if len(free["text"]) < 6:
        pytest.skip("the model stopped too early to pick a stop string from its output")
    stop = free["text"][3:6]
    cut = json.loads(run_cli("generate", str(trained), "meh", "--max-tokens", "20", "--stop", stop, "--json").stdout)[0]
    assert cut["text"] == free["text"][: free["text"].index(stop)].strip()
    assert cut["finish_reason"] == "stop"


def test_stream_matches_batch_generation(trained: Path) -> None:
    batch = run_cli("generate", str(trained), "not bad at all", "--max-tokens", "10")
    streamed = run_cli("generate", str(trained), "not bad at all", "--max-tokens", "10", "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() == batch.stdout.strip()


def test_evaluate_reports_label_metrics(trained: Path, sentiment_file: Path) -> None:
    result = run_cli("evaluate", str(trained), str(sentiment_file), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert {"accuracy", "macro_f1", "eval_loss", "perplexity"} <= metrics.keys()
    assert metrics["count"] == 48


def test_evaluate_works_on_an_untrained_template(sentiment_file: Path) -> None:
    assert main(["evaluate", "tiny-random", str(sentiment_file), "--max-tokens", "4", "--json"]) == 0


def test_export_merged_loads_in_plain_transformers(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    assert main(["export", str(trained), str(out), "--merged"]) == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = (
        "### Instruction: Is this review positive or negative? Answer with one word. ### Human: nice ### Assistant:"
    )
    ids = tokenizer(prompt, return_tensors="pt")
    plain = model.generate(**ids, max_new_tokens=5, do_sample=False)
    from tuneloom.generate.generator import generate
    from tuneloom.generate.loading import load_for_inference
    from tuneloom.generate.params import InferenceParams

    ours = generate(load_for_inference(trained), ["nice"], InferenceParams(max_tokens=5))[0]
    plain_text = tokenizer.decode(plain[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert plain_text.split("###")[0].strip() == ours.text
    assert torch.is_tensor(plain)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "library_name: transformers" in card and "These are merged weights" in card
    assert 'AutoModelForCausalLM.from_pretrained("merged")' in card and "peft" not in card.split("## Load it")[1]
    assert "### Human: {prompt} ### Assistant:" in card


def test_export_adapter_alone(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adapter"
    assert main(["export", str(trained), str(out)]) == 0
    assert "Exported the adapter to" in capsys.readouterr().out
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer_config.json").is_file()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tuneloom/tiny-random"  # not the training machine's cache
    card = (out / "README.md").read_text(encoding="utf-8")  # the same card code as --merged, not peft's blank one
    assert "library_name: peft" in card and "LoRA adapter alone" in card and "More Information Needed" not in card
    assert 'PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("tuneloom/tiny-random"), "adapter")' in card


def test_damaged_version_names_the_file(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / "adapter" / "adapter_model.safetensors").write_bytes(b"garbage")
    result = run_cli("generate", str(copy), "x")
    assert result.returncode == 1
    assert "adapter/adapter_model.safetensors is damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_unfinished_output_is_not_a_version(tmp_path: Path) -> None:
    (tmp_path / "v.partial").mkdir()
    result = run_cli("generate", str(tmp_path / "v.partial"), "x")
    assert result.returncode == 1 and MANIFEST in result.stderr
