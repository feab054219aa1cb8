"""Inference parameters, with the same names the hosted product's users pass, validated up front."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tuneloom.errors import SettingsError
from tuneloom.templates.prompting import check_prompt_template

MAX_TOKENS_LIMIT = 4096  # a prediction can never ask for more than this
MAX_INPUTS = 128
MAX_STOP_STRINGS = 16
# Characters per stop string. transformers' stop-string criterion (beam search, the CLI) costs memory
# and time with the longest string: 16 of 1,000 characters took 24 s and GBs on a 50k vocabulary.
MAX_STOP_CHARS = 128
MAX_SEED = 2**63 - 1  # OpenAI's seed is an int64; vLLM and torch.Generator take every non-negative one


@dataclass(frozen=True)
class InferenceParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k filtering
    num_beams: int = 1
    do_sample: bool | None = None  # None: sample exactly when temperature > 0
    return_full_text: bool = False
    system_prompt: str | None = None
    prompt_template: str | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None  # sampling draws from a generator seeded with it: the same request, the same answer
    # Repetition controls (`generate.penalties`). repetition_penalty is Hugging Face's, over prompt and output;
    # None: the model's generation config's (1.0, none, where it sets none). The two others are OpenAI's.
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @property
    def sampling(self) -> bool:
        return self.do_sample if self.do_sample is not None else self.temperature > 0

    @property
    def seeded_sampling(self) -> bool:
        """Sampling with a seed: drawn from a generator of its own, not from torch's global one (greedy needs none)."""
        return self.seed is not None and self.sampling

    def for_input(self, index: int) -> InferenceParams:
        """The parameters input `index` of a request is generated with: its seed is `seed + index`.

        One seed for a list of inputs (or OpenAI's `n` choices, which are repeated inputs) must not
        give every input the same draws: identical inputs would come back identical. Input `index`
        alone with seed `seed + index` gives the same answer (wrapping past MAX_SEED to 0).
        """
        if self.seed is None or index == 0:
            return self
        return replace(self, seed=(self.seed + index) % (MAX_SEED + 1))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | None, *, sent_as: Mapping[str, str] | None = None, prompt_only: bool = False
    ) -> InferenceParams:
        """Validate a JSON-ish dict: unknown keys, types and ranges are refused naming the key.

        `sent_as` maps a parameter to the field a request sent it as (OpenAI's `max_completion_tokens`
        is `max_tokens` here), so that a refusal names what the client wrote; one sent under an alias
        (`max_new_tokens`) is named by that alias. `prompt_only`: max_tokens may be 0, generating nothing
        (OpenAI's echo with max_tokens 0, which returns the prompt and its log-probabilities alone).
        """
        if data is not None and not isinstance(data, Mapping):
            raise SettingsError(f"inference parameters must be an object ({{...}}), not {type(data).__name__}")
        data = dict(data or {})
        names = {f.name for f in fields(cls)}
        sent_as = {**sent_names(data), **(sent_as or {})}
        data = _without_aliases(data)
        problems = [_unknown(key, names) for key in data if key not in names]
        checked = {
            k: SettingsError.collect(problems, _coerce, k, v, sent_as.get(k, k))
            for k, v in data.items()
            if k in names and v is not None
        }
        params = cls(**{k: v for k, v in checked.items() if v is not None})  # a refused one keeps its default
        ranged = replace(params, max_tokens=1) if prompt_only and params.max_tokens == 0 else params
        problems += _range_problems(ranged, sent_as)
        SettingsError.raise_all(problems, what="inference parameters")  # every mistake at once
        return params


def _unknown(key: str, names: set[str]) -> SettingsError:
    near = difflib.get_close_matches(key, sorted(names), n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return SettingsError(f"inference parameter '{key}' is unknown.{hint}", key=key)


ALIASES = {"max_new_tokens": "max_tokens"}  # transformers' name, accepted as well


def sent_names(data: Mapping[str, Any]) -> dict[str, str]:
    """Each parameter that `data` sends under an alias, mapped to that alias: what a refusal must call it."""
    return {name: alias for alias, name in ALIASES.items() if alias in data and name not in data}


def _without_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each alias renamed to its parameter; both names at once are refused, as neither would win."""
    for alias, name in ALIASES.items():
        if alias in data and name in data:
            raise SettingsError(f"'{alias}' is another name for '{name}': send one of them", key=alias)
        if alias in data:
            data[name] = data.pop(alias)
    return data


_HUGE = 2**63  # past every range below; JSON integers can be longer than a float can hold
_INTS = {"max_tokens", "top_k", "num_beams", "seed"}
_FLOATS = {"temperature", "top_p", "repetition_penalty", "presence_penalty", "frequency_penalty"}
_BOOLS = {"do_sample", "return_full_text"}
_STRINGS = {"system_prompt", "prompt_template"}


def _coerce(key: str, value: Any, name: str) -> Any:
    """`value` as parameter `key` holds it; `name` is what the request called it, for the refusal."""
    if key in _RANGES and isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _HUGE:
        raise SettingsError(
            f"inference parameter '{name}' must be {range_text(key)}, got a number beyond 2^63", key=name
        )
    if key in _INTS:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())  # not inf/nan
        if isinstance(value, bool) or not whole:
            raise SettingsError(f"inference parameter '{name}' must be an integer, got {value!r}", key=name)
        return int(value)
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"inference parameter '{name}' must be a number, got {value!r}", key=name)
        return float(value)
    if key in _BOOLS:
        if not isinstance(value, bool):
            raise SettingsError(f"inference parameter '{name}' must be true or false, got {value!r}", key=name)
        return value
    if key in _STRINGS:
        if not isinstance(value, str):
            raise SettingsError(f"inference parameter '{name}' must be a string", key=name)
        return value
    # stop: a string or a list of strings
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list | tuple) or not all(isinstance(s, str) and s for s in stops):
        raise SettingsError(f"inference parameter '{name}' must be a non-empty string or a list of them", key=name)
    return tuple(stops)


_RANGES: dict[str, tuple[float, float]] = {
    "max_tokens": (1, MAX_TOKENS_LIMIT),
    "temperature": (0.0, 5.0),
    "top_p": (1e-6, 1.0),
    "top_k": (0, 10_000),
    "num_beams": (1, 16),
    "seed": (0, MAX_SEED),
    "repetition_penalty": (0.0, 10.0),  # above 0: it divides (and multiplies) logits
    "presence_penalty": (-2.0, 2.0),  # OpenAI's range
    "frequency_penalty": (-2.0, 2.0),
}
_ABOVE_LOW = {"repetition_penalty"}  # the low end is excluded


def _shown(number: float) -> str:
    """A bound or value as a refusal writes it: integers below 2^63 in full (the seed's bound is no 9.22337e+18)."""
    return str(number) if isinstance(number, int) and abs(number) < _HUGE else f"{number:g}"


def range_text(key: str) -> str:
    """Parameter `key`'s range as a refusal words it."""
    low, high = _RANGES[key]
    if key in _ABOVE_LOW:
        return f"above {_shown(low)} and at most {_shown(high)}"
    return f"between {_shown(low)} and {_shown(high)}"


def _in_range(key: str, value: float) -> bool:
    low, high = _RANGES[key]
    return (low < value if key in _ABOVE_LOW else low <= value) and value <= high  # NaN is in no range


def _range_problems(params: InferenceParams, sent_as: Mapping[str, str]) -> list[SettingsError]:
    """Each parameter outside its range or limit, as the refusal that names it."""
    problems = [
        SettingsError(f"inference parameter '{name}' must be {range_text(key)}, got {_shown(value)}", key=name)
        for key in _RANGES
        for value, name in [(getattr(params, key), sent_as.get(key, key))]
        if value is not None and not _in_range(key, value)
    ]
    stop = sent_as.get("stop", "stop")
    if len(params.stop) > MAX_STOP_STRINGS:
        problems.append(SettingsError(f"at most {MAX_STOP_STRINGS} stop strings are allowed", key=stop))
    longest = max((len(s) for s in params.stop), default=0)
    if longest > MAX_STOP_CHARS:
        problems.append(
            SettingsError(
                f"a stop string may be at most {MAX_STOP_CHARS} characters, got one of {longest:,}",
                key=stop,
                details={"limit": MAX_STOP_CHARS},
            )
        )
    if params.prompt_template is not None:
        SettingsError.collect(problems, check_prompt_template, params.prompt_template)
    return problems
