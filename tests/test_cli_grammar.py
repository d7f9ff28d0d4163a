"""One grammar for every ``pinkrelay`` subcommand (operations.md §2).

The location options go before or after an action alike; an unknown flag is
answered with the usage of the subcommand (or action) it was given to; an
unknown setting names the closest known one (``alerts export`` without
``--since``: tests/test_journal_cli.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pinkrelay.cli import COMMANDS, build_parser, main
from pinkrelay.config import load_config
from pinkrelay.errors import ConfigError

#: Every action of every subcommand that has actions, with the arguments it needs.
ACTIONS = {
    "registry": {"check": ["r.csv"], "reload": []},
    "operators": {"add": ["desk-9"], "list": [], "disable": ["desk-9"], "enable": ["desk-9"]},
    "alerts": {"list": [], "show": ["0190"], "export": ["--format", "csv"]},
    "button-mode": {"test": ["kp-1"], "live": ["kp-1"], "list": []},
    "evidence": {"list": [], "show": ["0190"], "verify": ["0190"], "export": ["0190", "--to", "out"],
                 "hold": ["0190", "--reason", "case 12"], "release": ["0190"]},
}
#: Options every subcommand with actions takes before or after its action.
LOCATION = ["--data-dir", "/srv/relay-data", "--config", "/etc/pinkrelay/relay.toml"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_table_above_covers_every_subcommand_with_actions():
    commands = _subparsers(build_parser())
    assert set(commands) == set(COMMANDS)
    with_actions = {name for name, sub in commands.items() if _subparsers(sub)}
    # certs (init DIR) and alert (ack ID ...) take no data directory: they have nothing to place.
    assert with_actions - {"certs", "alert"} == set(ACTIONS)
    for name, actions in ACTIONS.items():
        assert set(_subparsers(commands[name])) == set(actions), name


@pytest.mark.parametrize("command,action", [(c, a) for c, actions in ACTIONS.items() for a in actions])
def test_location_options_mean_the_same_before_and_after_the_action(command, action):
    parser = build_parser()
    extra = ACTIONS[command][action]
    before = parser.parse_args([command, *LOCATION, action, *extra])
    after = parser.parse_args([command, action, *extra, *LOCATION])
    split = parser.parse_args([command, *LOCATION[:2], action, *extra, *LOCATION[2:]])
    assert vars(before) == vars(after) == vars(split)
    assert before.data_dir == "/srv/relay-data" and before.config == "/etc/pinkrelay/relay.toml"
    neither = parser.parse_args([command, action, *extra])
    assert neither.data_dir is None and neither.config is None


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_prints_the_subcommands_usage(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--bogus-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: pinkrelay {command} "), err
    # A command with required options names those first, with the same usage.
    assert "unrecognized arguments: --bogus-flag" in err or "arguments are required" in err, err


@pytest.mark.parametrize("command,action", [(c, a) for c, actions in ACTIONS.items() for a in actions])
def test_an_unknown_flag_after_an_action_prints_that_actions_usage(command, action, capsys):
    with pytest.raises(SystemExit):
        main([command, action, *ACTIONS[command][action], "--bogus-flag"])
    err = capsys.readouterr().err
    assert err.startswith(f"usage: pinkrelay {command} {action} "), err
    assert "unrecognized arguments: --bogus-flag" in err


def test_operators_take_the_data_dir_on_either_side(tmp_path, capsys):
    assert main(["operators", "add", "desk-9", "--data-dir", str(tmp_path)]) == 0
    assert main(["operators", "--data-dir", str(tmp_path), "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["name"] == "desk-9"


def test_registry_check_without_a_file_checks_the_relays_registry(tmp_path, capsys):
    example = Path(__file__).resolve().parents[1] / "examples" / "peshawar-buttons.csv"
    (tmp_path / "registry.csv").write_text(example.read_text())
    assert main(["registry", "check", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("OK: 68 buttons")


def test_an_unknown_setting_says_did_you_mean(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('supervison_window = 30\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "unknown setting 'supervison_window'; did you mean 'supervision_window'?" in message
    assert "known settings" not in message
    path.write_text('zzzz = 1\n')
    with pytest.raises(ConfigError, match="unknown setting 'zzzz'; known settings: .*supervision_window"):
        load_config(path)

