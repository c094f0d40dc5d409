"""Every `u2seg` flag explains itself; `u2seg --version`."""
from __future__ import annotations

import argparse
import importlib

import pytest

from u2seg import __version__, cli


def _actions(parser: argparse.ArgumentParser, prefix: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prefix} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield prefix, action


@pytest.mark.parametrize("stage", sorted(cli.STAGES))
def test_every_flag_of_every_subcommand_has_help(stage):
    module, _ = cli.STAGES[stage]
    parser = argparse.ArgumentParser(prog=f"u2seg {stage}")
    importlib.import_module(module).add_arguments(parser)
    actions = list(_actions(parser, stage))
    assert actions
    missing = [f"{where}: {a.option_strings or a.dest}" for where, a in actions
               if not (a.help and a.help.strip() and a.help != argparse.SUPPRESS)]
    assert not missing, missing


def test_top_level_flags_and_version(capsys):
    missing = [a.option_strings for _, a in _actions(cli.build_parser(), "u2seg") if not a.help]
    assert not missing, missing
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"u2seg {__version__}"
    assert cli.main(["no-such-stage"]) == 2
    assert "unknown stage 'no-such-stage'" in capsys.readouterr().err
