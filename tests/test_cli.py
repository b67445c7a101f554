"""The command line as its users meet it: --version, help lines with defaults and no reST
markup, a --help that imports nothing heavy, one spelling of -i/-o (the old ones hidden)."""

from __future__ import annotations

import argparse
import re

import pytest

import sparsekits
from cli_runner import run_cli, run_python
from sparsekits.cli import _take_positional_input, build_parser

# What takes seconds to import, or pulls in what does: --help must need none of it.
HEAVY = ("torch", "SimpleITK", "nibabel", "matplotlib", "scipy", "pydicom", "highdicom", "numpy")


def _parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every parser by its prog ("sparsekits", "sparsekits model assemble", ...)."""
    found = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _parsers(sub)
    return found


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and arguments a user sees (not -h, --version or a hidden old spelling)."""
    shown = [action for action in parser._actions if action.help is not argparse.SUPPRESS]
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [action for action in shown if not isinstance(action, skip)]


def test_version():
    run = run_cli("--version", timeout=60)

    assert run.returncode == 0, run.stderr
    assert run.stdout == f"sparsekits {sparsekits.__version__}\n"


def test_help_shows_no_rest_markup():
    run = run_cli("--help", timeout=60)

    assert run.returncode == 0, run.stderr
    assert "The sparsekits command" in run.stdout and "``" not in run.stdout
    for prog, parser in _parsers(build_parser()).items():
        assert "``" not in parser.format_help(), prog


def test_every_command_and_option_has_a_help_line_with_its_default():
    parsers = _parsers(build_parser())
    commands = [
        action
        for parser in parsers.values()
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    for action in commands:
        assert {choice.dest for choice in action._choices_actions} == set(action.choices)
        assert all(choice.help for choice in action._choices_actions)
    for prog, parser in parsers.items():
        formatter = parser._get_formatter()
        for action in _options(parser):
            text = formatter._expand_help(action) if action.help else ""
            assert text, f"{prog} {action.dest}: no help line"
            if action.option_strings:
                assert "default" in text or "required" in text, f"{prog} {action.dest}: {text}"


def test_building_the_parser_and_its_help_imports_nothing_heavy():
    code = (
        "import sys; from sparsekits.cli import build_parser; build_parser().format_help(); "
        f"print([name for name in {HEAVY!r} if name in sys.modules])"
    )
    run = run_python(code)

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# Each command's old spelling and its one spelling: the same arguments.
ALIASES = [
    (["phantom", "--out", "d"], ["phantom", "-o", "d"]),
    (["preprocess", "ds", "--out", "c"], ["preprocess", "-i", "ds", "-o", "c"]),
    (
        ["train", "--data", "c", "--stage", "roi", "--out", "r"],
        ["train", "-i", "c", "--stage", "roi", "-o", "r"],
    ),
    (["demo", "--out", "d"], ["demo", "-o", "d"]),
    (["compare", "--out", "d"], ["compare", "--output", "d"]),
    (["benchmark", "--input", "ct", "--out", "b"], ["benchmark", "-i", "ct", "-o", "b"]),
    (["evaluate", "p", "g", "--out", "e.csv"], ["evaluate", "p", "g", "-o", "e.csv"]),
]


def _parse(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    _take_positional_input(args)
    return args


@pytest.mark.parametrize(("old", "new"), ALIASES, ids=[old[0] for old, _ in ALIASES])
def test_old_spellings_are_hidden_aliases(old, new):
    assert _parse(old) == _parse(new)
    shown = _parsers(build_parser())[f"sparsekits {old[0]}"].format_help()
    assert not re.search(r"--out\b(?!put)|--data\b", shown)


def test_an_old_spelling_runs_as_a_user_types_it(tmp_path):
    run = run_cli("plan", "--out", tmp_path / "plan.json", timeout=120)

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "plan.json").is_file()


def test_the_input_is_given_once(capsys):
    with pytest.raises(SystemExit) as refused:
        _parse(["preprocess", "ds", "-i", "other", "-o", "c"])

    assert refused.value.code == 2
    assert "give the input once" in capsys.readouterr().err
