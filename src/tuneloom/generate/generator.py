"""Generation that stops where it should: at EOS, at a stop string, or where a new `###` section starts.

The hosted product's own example fine-tune ran on forever ("### Human: … ### Assistant: …"). Here
three things prevent that: training teaches EOS, `###` is always a stop string, and the returned
text is cut at the first stop string (the stop string itself is never returned).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from transformers import StoppingCriteria

from tuneloom.data.tokenized import completion_text
from tuneloom.errors import SettingsError
from tuneloom.generate.loading import InferenceModel
from tuneloom.generate.params import MAX_INPUTS, InferenceParams
from tuneloom.generate.penalties import OutputPenalty, has_output_penalty
from tuneloom.generate.results import Generation, Prompt
from tuneloom.generate.stops import VisibleText, cut_at_stop, stop_strings
from tuneloom.templates.prompting import PromptFormat

BATCH_SIZE = 32
MAX_CACHED_STOPS = 64  # stop-string criteria kept per tokenizer (`stop_criterion`)
_CRITERIA: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, ...], StoppingCriteria]] = weakref.WeakKeyDictionary()
_CRITERIA_LOCK = threading.Lock()


def generate(loaded: InferenceModel, texts: Sequence[Prompt], params: InferenceParams) -> list[Generation]:
    """Generate for up to 128 inputs: through tuneloom's own loop where it serves them (`own_loop_serves`),
    else through transformers' `generate()` in length-sorted batches (less left padding per batch)."""
    if not texts:
        return []
    if len(texts) > MAX_INPUTS:
        raise SettingsError(f"at most {MAX_INPUTS} inputs per call, got {len(texts)}", key="inputs")
    prompts = [model_prompt(loaded, t, params) for t in texts]
    check_context(loaded, [count_prompt_tokens(loaded, p) for p in prompts], params)
    if own_loop_serves(loaded, params, len(prompts)):
        from tuneloom.generate.continuous import generate_by_rows

        return generate_by_rows(loaded, prompts, params)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, Generation] = {}
    for start in range(0, len(order), BATCH_SIZE):
        chunk = order[start : start + BATCH_SIZE]
        for i, generation in zip(chunk, _generate_batch(loaded, [prompts[i] for i in chunk], params), strict=True):
            results[i] = generation
    return [results[i] for i in range(len(prompts))]


def own_loop_serves(loaded: InferenceModel, params: InferenceParams, inputs: int) -> bool:
    """Whether tuneloom's own decoding loop (`continuous`) serves a call instead of transformers' `generate()`:
    for seeded sampling (`generate()` draws from torch's one global generator), for one input of a model
    switched to compiled decoding (`compiled.run_static`), and for several inputs (the loop refills its batch
    as rows finish, prefills packed and once for a prompt start the inputs share: 64 demo prompts took
    SmolLM2 12 s against `generate()`'s 18 s) — wherever the loop can serve the parameters. One input
    otherwise stays with `generate()`: what a one-request-at-a-time baseline runs."""
    if params.seeded_sampling:
        return True
    if inputs == 1 and not loaded.compiled_decode:
        return False
    from tuneloom.generate.continuous import supports_continuous

    return supports_continuous(loaded, params)


def stream(loaded: InferenceModel, text: str, params: InferenceParams) -> Iterator[str]:
    """Yield the completion piece by piece, holding back text that might be the start of a stop string.

    Generation runs in a thread feeding a streamer. When the consumer stops early (a stop string,
    a closed connection) the thread is told to stop at its next token rather than run to max_tokens.
    """
    from transformers import TextIteratorStreamer

    if params.num_beams > 1:  # transformers streams no beam search: the answer comes in one piece
        (generation,) = generate(loaded, [text], params)
        yield generation.text
        return
    prompt = render_prompt(loaded, text, params)
    check_context(loaded, [count_prompt_tokens(loaded, prompt)], params, key="input")
    if params.return_full_text:
        yield prompt + " "
    if own_loop_serves(loaded, params, 1):
        from tuneloom.generate.continuous import stream_by_row

        yield from stream_by_row(loaded, prompt, params)
        return
    stops = stop_strings(params)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancel = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                inputs = _encode(loaded, [prompt])
                loaded.model.generate(
                    **inputs,
                    **_generate_kwargs(loaded, params, inputs["input_ids"].shape[1], StopWhenSet(cancel)),
                    streamer=streamer,
                )
        except BaseException as err:  # surfaced in the consumer's thread below
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    visible, text = VisibleText(stops), ""
    try:
        for piece in streamer:
            text += piece
            shown, stopped = visible.update(text, unchanged=len(text) - len(piece))
            if shown:
                yield shown
            if stopped:
                return
        if failure:
            raise failure[0]
        if rest := visible.rest():
            yield rest
    finally:
        cancel.set()
        worker.join()


class StopWhenSet(StoppingCriteria):
    """Ends every sequence at the next token once the event is set (a consumer went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class HasPromptFormat(Protocol):
    """A loaded model, or any other engine's view of a version (vLLM's), that knows its prompt format."""

    @property
    def prompt_format(self) -> PromptFormat: ...


def render_prompt(loaded: HasPromptFormat, text: str, params: InferenceParams) -> str:
    return loaded.prompt_format.render(text, system_prompt=params.system_prompt, prompt_template=params.prompt_template)


def model_prompt(loaded: HasPromptFormat, prompt: Prompt, params: InferenceParams) -> Prompt:
    """What the model reads for an input: a text in the version's prompt format; token ids as sent."""
    return prompt if isinstance(prompt, tuple) else render_prompt(loaded, prompt, params)


def check_token_ids(loaded: InferenceModel, prompts: Sequence[Prompt], key: str = "inputs") -> None:
    """Refuse a token-id prompt naming an id the model has no embedding for (it would fail the whole batch)."""
    size = int(getattr(loaded.model.config, "vocab_size", 0) or len(loaded.tokenizer))
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            continue
        bad = next((j for j, token in enumerate(prompt) if not 0 <= token < size), None)
        if bad is not None:
            raise SettingsError(
                f"token id {prompt[bad]} (prompt {i}, position {bad}) is not in the model's vocabulary: "
                f"its ids run from 0 to {size - 1}",
                key=key,
                details={"index": i, "position": bad, "vocab_size": size},
            )


CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(loaded: InferenceModel) -> int | None:
    """How many positions (prompt + new tokens) the model was built for; None where its config does not say.

    Past it a model with learned position embeddings (GPT-2, GPT-Neo) fails with an index error, and
    one with rotary positions (Llama, SmolLM2) goes on producing text it was never trained to produce.
    """
    config = getattr(loaded.model, "config", None)
    for name in CONTEXT_ATTRIBUTES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def count_prompt_tokens(loaded: InferenceModel, prompt: Prompt) -> int:
    """Tokens of a rendered prompt as the model reads it (special tokens included, as when generating)."""
    return len(prompt_ids(loaded, prompt))


def prompt_ids(loaded: InferenceModel, prompt: Prompt) -> list[int]:
    """A rendered prompt's token ids as the model reads them: a text's, special tokens included; token ids as sent."""
    if isinstance(prompt, tuple):
        return list(prompt)
    return list(loaded.tokenizer(prompt, add_special_tokens=True)["input_ids"])


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """What a prompt says: a text as it is; token ids decoded (special tokens kept: they were sent)."""
    return prompt if isinstance(prompt, str) else str(tokenizer.decode(list(prompt)))


def check_context(
    loaded: InferenceModel, prompt_tokens: Sequence[int], params: InferenceParams, key: str = "inputs"
) -> None:
    """Refuse a request whose longest prompt + max_tokens does not fit the model's context.

    Checked before anything is generated: one input past the context would otherwise fail (or
    derail) every request sharing its batch, long after the client was told nothing of it.
    """
    context = context_length(loaded)
    if context is None or not prompt_tokens:
        return
    index = max(range(len(prompt_tokens)), key=lambda i: prompt_tokens[i])
    longest = prompt_tokens[index]
    which = f"input {index}" if len(prompt_tokens) > 1 else "the input"
    details = {"limit": context, "prompt_tokens": longest, "max_tokens": params.max_tokens}
    if longest >= context:
        raise SettingsError(
            f"{which} is {longest} tokens as prompted, and this model's context is {context} tokens "
            "(prompt + max_tokens); shorten it",
            key=key,
            details=details,
        )
    if longest + params.max_tokens > context:
        raise SettingsError(
            f"{which} is {longest} tokens as prompted, and with max_tokens {params.max_tokens} needs "
            f"{longest + params.max_tokens}, beyond this model's context of {context} tokens; "
            f"ask for at most {context - longest} max_tokens or shorten the input",
            key="max_tokens",
            details=details,
        )


def finish_generation(prompt: str, decoded: str, tokens: int, ended: bool, params: InferenceParams) -> Generation:
    """One engine's raw output as a `Generation`: cut at a stop string, trimmed, finish reason, full text.

    `ended` says the engine itself stopped (EOS, or a stop string it applied); every engine's text goes
    through here so that transformers and vLLM answer alike.
    """
    text, stopped = cut_at_stop(decoded, stop_strings(params))
    text = text.strip()
    finish = "stop" if ended or stopped else "length"
    full = f"{prompt}{completion_text(text)}" if params.return_full_text else text
    return Generation(prompt, full, tokens, finish)


def _encode(loaded: InferenceModel, prompts: Sequence[Prompt]) -> dict[str, torch.Tensor]:
    """Token ids left-padded to one length (decoder-only: new tokens must follow the prompt directly)."""
    return padded_batch(loaded, batch_prompt_ids(loaded, prompts))


def batch_prompt_ids(loaded: InferenceModel, prompts: Sequence[Prompt]) -> list[list[int]]:
    """`prompt_ids` of many prompts, the texts tokenized in one call."""
    texts = [p for p in prompts if isinstance(p, str)]
    encoded = iter(loaded.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else [])
    return [list(p) if isinstance(p, tuple) else list(next(encoded)) for p in prompts]


def padded_batch(loaded: InferenceModel, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Rows of token ids left-padded to one length, with their attention mask, on the model's device.

    Padded here rather than by the tokenizer: `padding=True` switches padding on and off in the
    tokenizer's shared Rust state, and a server tokenizes from several threads at once (counting a
    request's tokens while the engine encodes a batch), which made a batch come out ragged.
    """
    width = max(len(row) for row in rows)
    pad = loaded.tokenizer.pad_token_id
    device = next(loaded.model.parameters()).device
    ids = torch.tensor([[pad] * (width - len(row)) + list(row) for row in rows], device=device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=device)
    return {"input_ids": ids, "attention_mask": mask}


def padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: each row's real tokens count from 0 (padding gets 0, masked anyway)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


def _generate_kwargs(
    loaded: InferenceModel, params: InferenceParams, prompt_width: int, *also: StoppingCriteria
) -> dict[str, Any]:
    """`generate()`'s arguments for `params`, on inputs left-padded to `prompt_width` tokens."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    criteria = StoppingCriteriaList([stop_criterion(loaded.tokenizer, stop_strings(params)), *also])
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_tokens,
        "num_beams": params.num_beams,
        "do_sample": params.sampling,
        "stopping_criteria": criteria,
        "pad_token_id": loaded.tokenizer.pad_token_id,
        "eos_token_id": loaded.tokenizer.eos_token_id,
    }
    if params.sampling:
        kwargs.update(temperature=max(params.temperature, 1e-5), top_p=params.top_p, top_k=params.top_k or None)
    else:  # greedy: unset sampling knobs so transformers does not warn about them
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if params.repetition_penalty is not None:  # None: the model's generation config's, which generate() reads
        kwargs["repetition_penalty"] = params.repetition_penalty
    if has_output_penalty(params):
        kwargs["logits_processor"] = LogitsProcessorList([OutputPenalty(params, prompt_width)])
    return kwargs


def stop_criterion(tokenizer: Any, stops: Sequence[str]) -> StoppingCriteria:
    """transformers' stop-string criterion for `stops`, built once per tokenizer and set of strings.

    Building one scans the whole vocabulary (80 ms for SmolLM2's 49k tokens on a CPU core, more
    than a short batch-1 generation), and `generate(stop_strings=…)` builds a new one on every call.
    It keeps no state between calls, so one serves every thread.
    """
    key = tuple(stops)
    with _CRITERIA_LOCK:
        known = _CRITERIA.setdefault(tokenizer, OrderedDict()).get(key)
    if known is None:
        from transformers import StopStringCriteria

        known = StopStringCriteria(tokenizer, list(stops))
    with _CRITERIA_LOCK:
        per_tokenizer = _CRITERIA[tokenizer]
        per_tokenizer[key] = known
        per_tokenizer.move_to_end(key)
        while len(per_tokenizer) > MAX_CACHED_STOPS:  # requests may bring their own stop strings
            per_tokenizer.popitem(last=False)
    return known


@torch.inference_mode()
def _generate_batch(loaded: InferenceModel, prompts: list[Prompt], params: InferenceParams) -> list[Generation]:
    inputs = _encode(loaded, prompts)
    output = loaded.model.generate(
        **inputs,
        **_generate_kwargs(loaded, params, inputs["input_ids"].shape[1]),
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    eos, pad = loaded.tokenizer.eos_token_id, loaded.tokenizer.pad_token_id
    results = []
    for prompt, row in zip(prompts, new_tokens, strict=True):
        ids = row.tolist()
        while ids and ids[-1] == pad and pad != eos:
            ids.pop()
        ended_on_eos = eos in ids
        if ended_on_eos:
            ids = ids[: ids.index(eos)]
        decoded = loaded.tokenizer.decode(ids, skip_special_tokens=True)
        results.append(
            finish_generation(prompt_text(loaded.tokenizer, prompt), decoded, len(ids), ended_on_eos, params)
        )
    return results
