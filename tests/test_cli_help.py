"""`tuneloom COMMAND --help` explains every argument: none is listed bare, as `data` and `--template` were.

The walk covers the real parser (`build_parser`), every command and sub-command, so an argument added
later without `help=` fails here, naming the command and the option, rather than reaching a user as
an unexplained name.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
from tests.conftest import cli_in_process

from tuneloom.cli import build_parser
from tuneloom.templates import DEFAULT_TEMPLATE


def _commands(parser: argparse.ArgumentParser, name: str = "tuneloom") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """`parser` as `name`, then each of its sub-commands (and theirs) as `tuneloom store sweep` etc."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def _subcommand_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction[argparse.ArgumentParser]]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _label(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.metavar or action.dest)


def _unexplained(help_text: str | None) -> bool:
    return help_text is None or help_text == argparse.SUPPRESS or not help_text.strip()


COMMANDS = list(_commands(build_parser()))


def test_the_walk_reaches_sub_commands() -> None:
    """A walk that stopped at the top level would pass with every argument bare."""
    names = {name for name, _ in COMMANDS}
    assert {"tuneloom train", "tuneloom generate", "tuneloom store sweep", "tuneloom store republish"} <= names


@pytest.mark.parametrize(("command", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_argument_has_help(command: str, parser: argparse.ArgumentParser) -> None:
    """Each argument but argparse's own -h/--help says what it does; the sub-command lists are the next test."""
    bare = [
        _label(action)
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and _unexplained(action.help)
    ]
    assert not bare, f"`{command}`: no help for {', '.join(bare)}"


@pytest.mark.parametrize(("command", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_sub_command_is_listed_with_help(command: str, parser: argparse.ArgumentParser) -> None:
    """`tuneloom --help` (and `tuneloom store --help`) list each command with a line saying what it does."""
    for subparsers in _subcommand_actions(parser):
        helps = {listed.dest: listed.help for listed in subparsers._choices_actions}
        bare = [name for name in subparsers.choices if _unexplained(helps.get(name))]
        assert not bare, f"`{command}`: no help in the command list for {', '.join(bare)}"


@pytest.mark.parametrize(("command", "parser"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_renders(command: str, parser: argparse.ArgumentParser) -> None:
    """A lone `%` in a help string (not `%%`) makes `--help` itself fail with a ValueError or KeyError."""
    assert parser.format_help(), command


def test_train_help_explains_data_and_template(capsys: pytest.CaptureFixture[str]) -> None:
    """The two arguments every `train` needs were the two `tuneloom train --help` left unexplained."""
    result = cli_in_process(capsys, "train", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal's width
    assert "data training data: ###-sectioned lines" in text and "CSV or JSONL" in text
    assert (
        f"--template TEMPLATE the template to fine-tune, from `tuneloom templates` (default: {DEFAULT_TEMPLATE})"
        in text
    )
