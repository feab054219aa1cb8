"""Which fields of an OpenAI request tuneloom honours, which change nothing here, and which it refuses.

A client reads the answer as the one it asked for, so a field that would change that answer and that
tuneloom does not implement is a 400 naming it (OpenAI's `param`), never dropped: ignored, `n: 3`
would come back as one choice, `tools` as plain text, `response_format: json_object` as whatever the
model says. Fields that change nothing in what a tuneloom model answers (`user`, `metadata`, `store`,
…) are accepted, as OpenAI accepts them; a field OpenAI's API does not have is refused, as OpenAI
refuses it ("Unrecognized request argument supplied"), except vLLM's `top_k` and `repetition_penalty`,
which its users send.
"""

from __future__ import annotations

from collections.abc import Iterator

from tuneloom.errors import SettingsError
from tuneloom.generate.params import MAX_INPUTS, InferenceParams
from tuneloom.server.limits import cap_max_tokens
from tuneloom.server.schemas.openai import ChatCompletionRequest, CompletionRequest

OpenAIRequest = CompletionRequest | ChatCompletionRequest
NO_TOOL_CALL = (None, "none", "auto")  # with no tools, "auto" calls none either
UNSUPPORTED = "is not supported by this server"


def inference_params(
    body: OpenAIRequest, max_tokens: int | None, limit: int, system_prompt: str | None = None
) -> InferenceParams:
    """OpenAI's knobs as tuneloom's validated InferenceParams (OpenAI's defaults where unset), capped at `limit`.

    A refused token count names the field the client sent (`max_completion_tokens` is chat's newer name);
    an empty stop string is refused as on /predict, not dropped (the client asked for a stop it would not get).
    A `seed` makes a sampled answer reproducible; choice i (the inputs `n` repeats) samples with seed + i.
    `max_tokens: 0` is a completion's with `echo` only: the prompt alone (and its log-probabilities, if asked).
    The penalties are OpenAI's (and vLLM's `repetition_penalty`), with their ranges checked by name.
    """
    temperature = 1.0 if body.temperature is None else body.temperature
    top_k = 0 if body.top_k == -1 else body.top_k  # vLLM's other spelling of "no top-k"
    values = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": body.top_p,
        "top_k": top_k,
        "stop": body.stop,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "repetition_penalty": body.repetition_penalty,
    }
    key = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens"
    echo = isinstance(body, CompletionRequest) and bool(body.echo)
    params = InferenceParams.from_dict(
        {**values, "seed": body.seed, "system_prompt": system_prompt}, sent_as={"max_tokens": key}, prompt_only=echo
    )
    asked = bool(body.model_fields_set & {"max_tokens", "max_completion_tokens"}) and max_tokens is not None
    return cap_max_tokens(params, limit, asked=asked, key=key)


def check_supported(body: OpenAIRequest) -> None:
    """Refuse, by name, the first field that is not OpenAI's or that would change the answer and is not implemented."""
    for name in body.model_extra or {}:
        raise SettingsError(
            f"unrecognized request argument '{name}': it is not a parameter of OpenAI's API; leave it out", key=name
        )
    for name, why in refusals(body):
        raise SettingsError(f"'{name}' {why}", key=name)


def requested_logprobs(body: OpenAIRequest) -> int | None:
    """How many alternatives to report with each token's log-probability; None: no log-probabilities.

    Completions ask with `logprobs: N` (0 to 5), chat with `logprobs: true` and `top_logprobs: N` (0 to 20,
    default 0). The values are those of the distribution each token was drawn from (`sampling.token_logprobs`);
    with a completion's `echo`, the prompt's tokens come first, with the model's own (`logprobs.prompt_logprobs`).
    """
    if isinstance(body, CompletionRequest):
        return body.logprobs
    return (body.top_logprobs or 0) if body.logprobs else None


def choices_per_prompt(body: OpenAIRequest, prompts: int) -> int:
    """`n`: how many answers to each prompt; all of them run as one batch of at most MAX_INPUTS (streamed or not:
    a streamed choice is a row of that batch too)."""
    n = body.n or 1
    if n * prompts > MAX_INPUTS:
        raise SettingsError(
            f"'n' asks for {n * prompts} answers ({n} per prompt × {prompts}); at most {MAX_INPUTS} per request",
            key="n",
        )
    return n


def refusals(body: OpenAIRequest) -> Iterator[tuple[str, str]]:
    """(field, why) for each field sent with a value this server would otherwise answer wrongly."""
    if body.logit_bias:
        yield "logit_bias", f"{UNSUPPORTED} (only {{}}); leave it out"
    yield from completion_refusals(body) if isinstance(body, CompletionRequest) else chat_refusals(body)


def completion_refusals(body: CompletionRequest) -> Iterator[tuple[str, str]]:
    if body.max_tokens == 0 and not body.echo:
        yield "max_tokens", "0 generates nothing: it is only accepted with echo: true (the prompt alone is returned)"
    if body.logprobs is not None and body.echo and body.stream:
        yield "stream", "with echo and logprobs is not supported (the prompt's log-probabilities come unstreamed)"
    if body.echo and body.stream and not isinstance(body.prompt, str):
        yield "stream", "with echo takes the prompt as text (a token-id prompt is echoed only unstreamed)"
    if body.best_of is not None and body.best_of != (body.n or 1):
        yield "best_of", "other than n is not supported: this server returns every answer it makes, unranked; send n"
    if body.suffix:
        yield "suffix", f"{UNSUPPORTED} (no insertion: text is only generated after the prompt); leave it out"


def chat_refusals(body: ChatCompletionRequest) -> Iterator[tuple[str, str]]:
    if body.top_logprobs is not None and not body.logprobs:
        yield "top_logprobs", "needs logprobs: true (it says how many alternatives to report with each token)"
    if (body.response_format or {}).get("type", "text") != "text":
        yield "response_format", f"{UNSUPPORTED} (only {{'type': 'text'}}: the output is not constrained)"
    for name in ("tools", "functions"):
        if getattr(body, name):
            yield name, f"{UNSUPPORTED} (its models answer in text and call no tools); leave it out"
    for name in ("tool_choice", "function_call"):
        if getattr(body, name) not in NO_TOOL_CALL:
            yield name, f"{UNSUPPORTED}: only 'none' or 'auto' (no tool is ever called)"
    if body.audio is not None or any(kind != "text" for kind in body.modalities or ()):
        yield "audio" if body.audio is not None else "modalities", f"{UNSUPPORTED} (text only)"
    for name in ("web_search_options", "moderation"):
        if getattr(body, name) is not None:
            yield name, f"{UNSUPPORTED}; leave it out"
