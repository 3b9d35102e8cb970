"""`medevents --help` and every command's help are written for users: what the command does and
examples, and every example is a command line the parser accepts."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from medevents.cli import _parser


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser by its command path (``""``, ``"up"``, ``"dlq list"``, ...)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        found[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    walk(_parser(), "")
    return found


PARSERS = _all_parsers()


def test_every_command_is_covered() -> None:
    assert {"", "up", "ingest", "processor", "dlq", "dlq list", "dlq replay", "operator", "status"} <= set(
        PARSERS
    )
    assert "loadgen" in PARSERS


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_help_is_for_users(path: str) -> None:
    text = PARSERS[path].format_help()
    assert PARSERS[path].description, f"`medevents {path}` says nothing about what it does"
    for developer_talk in ("``", "composition root", "kernel module", ":class:", ":func:"):
        assert developer_talk not in text, (path, developer_talk)
    assert "examples:" in text or path == "", path
    if path == "":
        assert "medevents up" in text and "curl -X POST" in text


def _example_commands(text: str) -> list[list[str]]:
    """The `medevents ...` command lines of a help text, without env assignments and comments."""
    commands = []
    for raw in text.splitlines():
        line = raw.split("  #", 1)[0].split(" | ", 1)[0].strip()
        words = (
            shlex.split(line)
            if raw.startswith("  ") and re.match(r"(?:[A-Z_]+=\S*\s+)*medevents\s", line)
            else []
        )
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        if words[:1] == ["medevents"]:
            commands.append(words[1:])
    return commands


@pytest.mark.parametrize("path", sorted(PARSERS))
def test_every_example_parses(path: str) -> None:
    examples = _example_commands(PARSERS[path].format_help())
    assert examples, path
    for argv in examples:
        try:
            _parser().parse_args(argv)
        except SystemExit as exc:  # argparse's way of saying no
            raise AssertionError(f"example `medevents {' '.join(argv)}` does not parse") from exc


def test_processors_is_a_count_from_0_to_64() -> None:
    assert _parser().parse_args(["up", "--processors", "3"]).processors == 3
    assert _parser().parse_args(["up"]).processors is None  # the settings' minimum applies
    for bad in ("-1", "65", "two"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["up", "--processors", bad])
