"""A /v1/chat/completions conversation as the one prompt the model reads.

Chat clients (LangChain agents, chat UIs) send the whole history on every request; answering the
last message without it changes the answer, so nothing is dropped. System and developer messages,
wherever they stand, become the system prompt; user and assistant messages are rendered in the
sections the version was trained with (`PromptFormat.render_turns`): consecutive messages of one role
are one turn, joined by a newline. Refused, each naming `messages.N.…`: a tool or function message
(no tool is ever called here), an assistant message without text (tool calls), and a conversation that
does not end with a user message; and a message's `name` (`messages.N.name`), which the sections
have no place for. A version trained on plain prompt/completion data has no sections
to show earlier turns in: more than one turn is refused naming `messages`, never answered without them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from tuneloom.errors import ModelVersionError, SettingsError
from tuneloom.generate.params import InferenceParams
from tuneloom.model_version import MANIFEST
from tuneloom.server.context import ServerContext
from tuneloom.server.routes.predict import check_inputs
from tuneloom.server.schemas.inference import MAX_INPUT_CHARS
from tuneloom.server.schemas.openai import ChatMessage
from tuneloom.store.artifacts import Artifacts
from tuneloom.store.models import ModelVersion
from tuneloom.templates.prompting import PromptFormat, Turn, merge_turns

T = TypeVar("T")
SYSTEM_ROLES = ("system", "developer")
TOOL_ROLES = ("tool", "function")
ONE_TURN_ONLY = (
    "this model was trained on plain prompt/completion data, which has no sections to show earlier turns in, "
    "so it would answer the last message without them; send the conversation as one user message (with what "
    "the model needs from the history in it), or train on sectioned data ('### Human: … ### Assistant: …') "
    "to chat with history"
)


def conversation(messages: Sequence[ChatMessage]) -> tuple[list[Turn], str | None]:
    """The request's user and assistant turns, and its system prompt; what cannot be shown to the model is
    refused naming the message (`messages.N.role`, `messages.N.content` or `messages.N.name`)."""
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        refuse_unshowable(index, message)
        if message.role in SYSTEM_ROLES:
            continue
        if message.role == "user":
            check_inputs([message.text()], key=f"messages.{index}.content", listed=False)
        elif not message.text().strip():
            raise SettingsError(
                f"'messages.{index}.content' is empty: an assistant message of the history needs its text "
                "(tool calls are not supported)",
                key=f"messages.{index}.content",
            )
        turns.append(Turn("user" if message.role == "user" else "assistant", message.text()))
    if not any(turn.role == "user" for turn in turns):
        raise SettingsError("messages must include a user message", key="messages")
    if turns[-1].role != "user":
        last = max(i for i, m in enumerate(messages) if m.role == "assistant")
        raise SettingsError(
            f"'messages.{last}.role' is 'assistant' after the last user message: a conversation must end with "
            "a user message, the one the model answers (continuing an assistant message is not supported)",
            key=f"messages.{last}.role",
        )
    system = "\n".join(m.text() for m in messages if m.role in SYSTEM_ROLES) or None
    return turns, system


def refuse_unshowable(index: int, message: ChatMessage) -> None:
    """A tool message, or a message's participant name: the version's sections have no place for either, and
    the model would answer as if it were not there."""
    if message.role in TOOL_ROLES:
        raise SettingsError(
            f"'messages.{index}.role' is '{message.role}': tool and function messages are not supported "
            "(this server's models call no tools); send system, developer, user and assistant messages",
            key=f"messages.{index}.role",
        )
    if message.name:
        raise SettingsError(
            f"'messages.{index}.name' is not supported: this model was trained without participant names "
            "(its sections say only who speaks: user or assistant), so it would answer as if the name were not "
            "there; leave name out, or write it into the message's content",
            key=f"messages.{index}.name",
        )


def chat_input(
    ctx: ServerContext, version: ModelVersion, turns: Sequence[Turn], params: InferenceParams
) -> tuple[str, InferenceParams]:
    """The text to generate from, and the parameters to generate it with (blocking: may read the manifest).

    One turn goes as /predict's input, the engine wrapping it in the version's format with the system
    prompt. A longer conversation is rendered here, system prompt included, in the sections the
    version was trained with; the engine uses a sectioned text as written.
    """
    merged = merge_turns(turns)
    if len(merged) == 1:
        text = merged[0].text
    else:
        prompt_format = stored_prompt_format(ctx, version)
        if prompt_format.turn_layout() is None:
            raise SettingsError(ONE_TURN_ONLY, key="messages")
        text = prompt_format.render_turns(merged, system_prompt=params.system_prompt)
        params = dataclasses.replace(params, system_prompt=None)
    if len(text) > MAX_INPUT_CHARS:
        raise SettingsError(
            f"the conversation is {len(text):,} characters as prompted, above the limit of {MAX_INPUT_CHARS:,} "
            "for one input; drop earlier turns or shorten the messages",
            key="messages",
            details={"limit": MAX_INPUT_CHARS},
        )
    return text, params


def stored_prompt_format(ctx: ServerContext, version: ModelVersion) -> PromptFormat:
    """The prompt format the version was trained with, read from its manifest alone: the engines read the
    same one, and a `--backend remote` server, which loads no weights, can read it too."""
    assert version.artifact_path is not None  # resolve_model only returns trained versions
    return _prompt_format(ctx.artifacts, version.id, version.artifact_path)


@functools.lru_cache(maxsize=256)
def _prompt_format(artifacts: Artifacts, version_id: str, artifact_path: str) -> PromptFormat:
    """Read once per version: a trained version's manifest never changes, and every chat request with
    history needs it (a shared store would otherwise be asked on each one)."""
    try:
        manifest = json.loads(artifacts.read_member(artifact_path, MANIFEST))
        return PromptFormat.from_dict(manifest["prompt_format"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelVersionError(
            f"model version '{version_id}': file {MANIFEST} is missing or damaged ({type(err).__name__})",
            details={"file": MANIFEST},
        ) from None


async def said_of_the_conversation(work: Awaitable[T], max_tokens_key: str) -> T:
    """`work`, with a refusal of its prompt (past the model's context) said of the conversation, naming
    `messages`: how many tokens it is and how many fit, so that a client can drop earlier turns."""
    try:
        return await work
    except SettingsError as err:
        raise conversation_refusal(err, max_tokens_key) from None


def conversation_refusal(err: SettingsError, max_tokens_key: str) -> SettingsError:
    """The engine's refusal of an input, as a refusal of the conversation (others unchanged)."""
    details = err.details
    if err.key == "system_prompt":  # the system messages, and a user message with a system section of its own
        return SettingsError(err.message, key="messages", details={**details, "key": "messages"})
    counted = isinstance(details.get("prompt_tokens"), int) and isinstance(details.get("limit"), int)
    if err.key not in ("inputs", "input", "max_tokens") or (err.key == "max_tokens" and not counted):
        return err
    if not counted:
        return SettingsError(err.message, key="messages", details={**details, "key": "messages"})
    tokens, context, max_tokens = details["prompt_tokens"], details["limit"], int(details.get("max_tokens", 0))
    fit = max(context - max_tokens, 0)
    if err.key == "max_tokens":
        message = (
            f"the conversation is {tokens} tokens as prompted, and with {max_tokens_key} {max_tokens} needs "
            f"{tokens + max_tokens}, beyond this model's context of {context} tokens; ask for at most "
            f"{context - tokens} {max_tokens_key}, or drop earlier turns (at most {fit} tokens fit)"
        )
        return SettingsError(message, key=max_tokens_key, details={**details, "key": max_tokens_key})
    message = (
        f"the conversation is too long: {tokens} tokens as prompted, and this model's context is {context} "
        f"tokens (prompt + {max_tokens_key}); with {max_tokens_key} {max_tokens} at most {fit} tokens fit: "
        "drop earlier turns or shorten the messages"
    )
    return SettingsError(message, key="messages", details={**details, "key": "messages"})
