"""`tuneloom compare`: two `tiny-random` runs that differ in learning rate, trained once for the module.

The command's output is checked against the runs' own files and against `tuneloom evaluate` /
`tuneloom generate` on each run, so a best mark or a score can only pass when it is the real one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import run_cli, sentiment_lines

from tuneloom.cli import main
from tuneloom.evaluate.compare import HIGHER, LOWER, Run, best_marks, diff_rows, flatten, notes
from tuneloom.model_version import ModelVersion
from tuneloom.templates.sources import resolve_model_dir

RATES = ("0.05", "0.01")


def _train(root: Path, name: str, rate: str, *extra: str) -> Path:
    out = root / name
    config = f'{{"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": {rate}}}'
    args = ["train", str(root / "train.txt"), "--template", "tiny-random", "--output", str(out)]
    assert main([*args, "--trainer-config", config, *extra]) == 0
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    (root / "train.txt").write_text("\n".join(sentiment_lines(2)) + "\n", encoding="utf-8")
    (root / "heldout.txt").write_text("\n".join(sentiment_lines(1)[:6]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def in_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs named as a user names them (`a b`, not two 80-character paths), here and in a subprocess."""
    monkeypatch.chdir(root)


@pytest.fixture(scope="module")
def runs(root: Path) -> tuple[Path, Path]:
    """Same data, same template, learning rate 0.05 and 0.01; named relative to `root`."""
    _train(root, "a", RATES[0])
    _train(root, "b", RATES[1])
    return Path("a"), Path("b")


@pytest.fixture(scope="module")
def other_base(root: Path) -> Path:
    """A run on another base model: a copy of tiny-random's weights in a folder of its own."""
    base = root / "other-base"
    shutil.copytree(resolve_model_dir("tuneloom/tiny-random"), base)
    _train(root, "c", RATES[0], "--model-config", json.dumps({"pretrained_model_name_or_path": str(base)}))
    return Path("c")


def compared(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["compare", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_table_shows_the_setting_that_differs_and_marks_the_best(runs: tuple[Path, Path]) -> None:
    result = run_cli("compare", *map(str, runs))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    (rate_line,) = [line for line in out.splitlines() if "trainer_config.learning_rate" in line]
    assert "≠" in rate_line and rate_line.index("0.05") < rate_line.index("0.01")  # columns in run order
    assert "1 of " in out and "settings differ" in out
    assert "trainer_config.seed" not in out  # the same in both: listed with --all-settings only
    assert "tuneloom/tiny-random" in out and "data.valid_rows" in out
    metrics = {json.loads((run / "metrics.json").read_text())["train_loss"] for run in runs}
    (loss_line,) = [line for line in out.splitlines() if line.startswith("│ train_loss")]
    assert "lower" in loss_line and f"{min(metrics):.4f} ★" in loss_line and f"{max(metrics):.4f} ★" not in loss_line
    assert "★ best" in out


def test_all_settings_lists_the_identical_ones_too(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", *map(str, runs), "--all-settings"]) == 0
    out = capsys.readouterr().out
    (seed_line,) = [line for line in out.splitlines() if "trainer_config.seed" in line]
    assert "≠" not in seed_line and seed_line.count("42") == 2


def test_json_holds_every_setting_and_the_best_of_each_metric(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    data = compared(capsys, *map(str, runs))
    assert data["runs"] == [str(r) for r in runs]
    assert data["evaluation"] is None and data["prompts"] == [] and data["notes"] == []
    settings = {row["key"]: row for row in data["settings"]}
    assert [key for key, row in settings.items() if row["differs"]] == ["trainer_config.learning_rate"]
    assert settings["trainer_config.learning_rate"]["values"] == [0.05, 0.01]
    assert settings["peft_config.r"] == {"key": "peft_config.r", "values": [8, 8], "differs": False}
    overview = {row["key"]: row["values"] for row in data["overview"]}
    assert overview["data.valid_rows"] == [32, 32] and overview["base_model"] == ["tuneloom/tiny-random"] * 2
    trained_on = hashlib.sha256(Path("train.txt").read_bytes()).hexdigest()  # the path may hold other data later
    assert overview["data.sha256"] == [trained_on] * 2 and "data.validation_sha256" not in overview
    stored = [json.loads((run / "metrics.json").read_text()) for run in runs]
    rows = {row["key"]: row for row in data["metrics"]}
    assert list(rows)[:3] == ["train_loss", "eval_loss", "perplexity"]
    for key, better in (("train_loss", LOWER), ("eval_loss", LOWER), ("train_tokens_per_second", HIGHER)):
        values = [m[key] for m in stored]
        pick = min if better == LOWER else max
        assert rows[key]["values"] == values and rows[key]["better"] == better
        assert rows[key]["best"] == [v == pick(values) for v in values], key
    assert rows["steps"]["better"] is None and rows["steps"]["best"] == [False, False]
    assert "loss_curve" not in rows


def test_data_and_prompts_give_what_evaluate_and_generate_give(
    runs: tuple[Path, Path], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heldout = str(root / "heldout.txt")
    prompts = ["--prompt", "I love it", "--prompt", "awful"]
    data = compared(capsys, *map(str, runs), "--data", heldout, *prompts, "--max-tokens", "4")
    evaluation = data["evaluation"]
    assert evaluation["data"] == heldout and evaluation["data_report"]["valid_rows"] == 6
    second = str(runs[1])  # the second column: a swapped or shifted column would not match
    assert main(["evaluate", second, heldout, "--max-tokens", "4", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    for row in evaluation["metrics"]:
        assert row["values"][1] == pytest.approx(alone["metrics"][row["key"]]), row["key"]
    assert [e["generated"][1] for e in evaluation["examples"]] == [r["generated"] for r in alone["rows"]]
    assert main(["generate", second, "awful", "--max-tokens", "4", "--json"]) == 0
    assert data["prompts"][1]["answers"][1]["text"] == json.loads(capsys.readouterr().out)[0]["text"]
    rows = {row["key"]: row for row in evaluation["metrics"]}
    assert rows["accuracy"]["better"] == HIGHER and rows["eval_loss"]["better"] == LOWER
    losses = rows["eval_loss"]["values"]
    assert rows["eval_loss"]["best"] == [v == min(losses) for v in losses]
    assert [p["prompt"] for p in data["prompts"]] == ["I love it", "awful"]
    assert [a["run"] for a in data["prompts"][0]["answers"]] == [str(r) for r in runs]


def test_data_and_prompt_show_a_column_per_run(
    runs: tuple[Path, Path], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["compare", *map(str, runs), "--data", "heldout.txt", "--prompt", "great", "--max-tokens", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    title = "On heldout.txt (6 examples)"
    after_title = out.splitlines()[out.splitlines().index(title) :]
    header = next(line for line in after_title if "┃ metric" in line)
    assert "better" in header and all(str(r) in header for r in runs)
    assert "Prompt: great" in out and "answer (greedy)" in out
    assert all(f"│ {r} " in out for r in runs)
    assert "evaluating" in captured.err  # the progress bar of `tuneloom evaluate`


def test_runs_on_different_base_models_are_evaluated_with_a_note(
    runs: tuple[Path, Path], other_base: Path, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = compared(capsys, str(runs[0]), str(other_base), "--data", str(root / "heldout.txt"), "--max-tokens", "2")
    (note,) = data["notes"]
    assert "different base models" in note and str(root / "other-base") in note and "tokenizer" in note
    assert all(len(row["values"]) == 2 for row in data["evaluation"]["metrics"])
    assert {row["key"]: row["differs"] for row in data["overview"]}["base_model"]
    assert main(["compare", str(runs[0]), str(other_base)]) == 0  # no --data: the Runs table says it
    assert "different base models" not in capsys.readouterr().out


def test_one_run_is_a_usage_error(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(runs[0])])
    assert exit_.value.code == 2
    assert "at least two" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["same", "slash", "absolute", "symlink"])
def test_the_same_run_twice_is_a_usage_error(
    runs: tuple[Path, Path], root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    link = tmp_path / "link"
    link.symlink_to(root / runs[0], target_is_directory=True)
    again = {"same": str(runs[0]), "slash": f"{runs[0]}/", "absolute": str(root / runs[0]), "symlink": str(link)}
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(runs[0]), again[spelling], str(runs[1])])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"{runs[0]} is given twice" in err
        if spelling in ("same", "slash")
        else f"{runs[0]} and {again[spelling]}" in err
    )
    assert "give each run once" in err


def test_a_folder_that_is_no_version_is_named(runs: tuple[Path, Path], tmp_path: Path) -> None:
    empty = tmp_path / "notes"
    empty.mkdir()
    result = run_cli("compare", str(runs[0]), str(empty))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{empty} has no tuneloom.json" in result.stderr


def test_a_missing_run_is_named(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs[0]), str(tmp_path / "nope")]) == 1
    assert f"{tmp_path / 'nope'} is not a model-version directory (it does not exist)" in capsys.readouterr().err


def test_a_damaged_run_is_refused_before_any_model_loads(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs[1], copy)
    (copy / "metrics.json").write_text("{}", encoding="utf-8")
    assert main(["compare", str(runs[0]), str(copy), "--prompt", "hi"]) == 1
    captured = capsys.readouterr()
    assert "metrics.json is damaged" in captured.err and "answer" not in captured.out


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--max-tokens", "8"], ["--max-tokens", "--prompt", "--data"]),
        (["--format", "csv"], ["--format", "--data"]),
        (["--prompt", "  "], ["--prompt", "must not be empty"]),
    ],
)
def test_options_with_nothing_to_act_on_are_usage_errors(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str], extra: list[str], names: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["compare", *map(str, runs), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert all(name in err for name in names), err


def test_a_heldout_file_without_examples_is_refused(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "heldout.txt"
    data.write_text("no sections here\n", encoding="utf-8")
    assert main(["compare", *map(str, runs), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert str(data) in err and "no valid examples" in err


def test_best_marks_follow_the_web_pages_rules() -> None:
    """compare_data.js: no mark without a direction or with fewer than two distinct numbers; ties all marked."""
    assert best_marks([1.0, 2.0, 1.0], LOWER) == [True, False, True]
    assert best_marks([1.0, 2.0, None], HIGHER) == [False, True, False]
    assert best_marks([3, 3], LOWER) == [False, False]
    assert best_marks([1, None], LOWER) == [False, False]
    assert best_marks([float("nan"), 1, 2], LOWER) == [False, True, False]
    assert best_marks([1, 2], None) == [False, False]


def test_settings_are_flattened_and_compared_as_values() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "q": {}}) == {"a.b": 1, "a.c": [1, 2], "q": {}}
    rows = {r.key: r for r in diff_rows([{"x": 1, "y": True, "z": 1}, {"x": 1.0, "y": 1}])}
    assert not rows["x"].differs and rows["y"].differs
    assert rows["z"].differs and rows["z"].values == [1, None]


def test_notes_say_when_losses_are_not_measured_on_the_same_thing() -> None:
    def run(name: str, held_out: str, base: str) -> Run:
        manifest = {"base_model": base, "files": {"held_out.json": held_out}}
        return Run(name, ModelVersion(Path(name), manifest), {"eval_loss": 1.0}, {})

    assert notes([run("a", "h1", "m"), run("b", "h1", "m")], evaluated=True) == []
    (held_out,) = notes([run("a", "h1", "m"), run("b", "h2", "m")], evaluated=False)
    assert "own held-out examples" in held_out and "--data" in held_out
    (base,) = notes([run("a", "h1", "m"), run("b", "h1", "n")], evaluated=True)
    assert "a: m; b: n" in base
    assert notes([run("a", "h1", "m"), run("b", "h1", "n")], evaluated=False) == []
