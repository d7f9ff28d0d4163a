"""The docs name only commands, flags and settings that exist, and every one that exists is documented.

README.md and docs/operations.md are read as a newcomer reads them: every
``pinkrelay ...`` in a code span or code block must be a real subcommand
(and action), with flags that subcommand takes; every setting and
``PINKRELAY_*`` variable must be one the config knows. The other way round,
every subcommand, action and setting is in docs/operations.md, every flag of
``pinkrelay serve`` is in its §3 table, and examples/pinkrelay.toml lists
every setting at the code's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from pinkrelay.cli import build_parser
from pinkrelay.config import ENV_PREFIX, OTHER_VARIABLES, RelayConfig, load_config, usable_cores

ROOT = Path(__file__).resolve().parents[1]
DOCS = {name: (ROOT / name).read_text() for name in ("README.md", "docs/operations.md")}
OPERATIONS = DOCS["docs/operations.md"]
EXAMPLE = ROOT / "examples" / "pinkrelay.toml"
SETTINGS = [f.name for f in dataclasses.fields(RelayConfig)]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


COMMANDS = _subparsers(build_parser())


def _action_word(words: list[str]) -> str | None:
    """The first word that is not an option or an option's value: an action, or alternatives ``a\\|b``."""
    after_option = False
    for word in words:
        if word.startswith(("-", "[-")):
            after_option = "=" not in word
            continue
        if not after_option:
            return word if re.fullmatch(r"[a-z][a-z-]*((\\?\|)[a-z][a-z-]*)*", word) else None
        after_option = False
    return None


def code_snippets(text: str) -> list[str]:
    """Inline code spans and the lines of fenced code blocks."""
    snippets: list[str] = []
    outside = []
    for number, part in enumerate(re.split(r"^```[^\n]*\n", text, flags=re.M)):
        if number % 2:
            snippets += part.splitlines()
        else:
            outside.append(part)
    for part in outside:
        snippets += re.findall(r"`([^`\n]+)`", part)
    return snippets


def command_uses(text: str) -> list[tuple[str, list[str]]]:
    """(snippet, its words after 'pinkrelay') for every command a snippet shows."""
    uses = []
    for snippet in code_snippets(text):
        for match in re.finditer(r"(?:^|[\s/])pinkrelay (\S.*)$", snippet):
            uses.append((snippet, match.group(1).split()))
    return uses


@pytest.mark.parametrize("doc", DOCS)
def test_every_command_and_flag_the_docs_show_exists(doc):
    problems = []
    for snippet, words in command_uses(DOCS[doc]):
        name = words[0].rstrip(":,.;)")
        if name.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", name):
            continue  # 'pinkrelay --help', 'pinkrelay COMMAND: message'
        if name not in COMMANDS:
            problems.append(f"{snippet!r}: no subcommand {name!r}")
            continue
        parsers = [COMMANDS[name]]
        actions = _subparsers(COMMANDS[name])
        action_word = _action_word(words[1:])
        if actions and action_word is not None:
            named = re.split(r"\\?\|", action_word)
            problems += [f"{snippet!r}: no action {a!r} of pinkrelay {name}" for a in named if a not in actions]
            parsers = [actions[a] for a in named if a in actions] or parsers
        elif actions:
            parsers = [COMMANDS[name], *actions.values()]
        known = set().union(*(_options(p) for p in parsers)) | _options(COMMANDS[name])
        for word in words[1:]:
            flag = re.match(r"\[?(--[a-z][a-z-]*)", word)
            if flag and flag.group(1) not in known:
                problems.append(f"{snippet!r}: pinkrelay {name} has no option {flag.group(1)}")
    assert not problems, "\n".join(problems)


def test_every_subcommand_and_action_is_in_operations_md():
    missing = []
    for name, parser in COMMANDS.items():
        if f"pinkrelay {name}" not in OPERATIONS:
            missing.append(name)
        for action in _subparsers(parser):
            if not re.search(rf"pinkrelay {name}\b[^`\n]*\b{re.escape(action)}\b", OPERATIONS):
                missing.append(f"{name} {action}")
    assert not missing, f"not documented in docs/operations.md: {missing}"


def test_every_flag_of_serve_is_in_the_flag_table_of_section_3():
    section = OPERATIONS[OPERATIONS.index("## 3. `pinkrelay serve`"):OPERATIONS.index("## 4. Configuration")]
    table = set(re.findall(r"^\| `[^|]*", section, re.M).__str__().split())
    documented = set(re.findall(r"--[a-z][a-z-]*", " ".join(table)))
    flags = _options(COMMANDS["serve"]) - {"-h", "--help"}
    assert flags - documented == set(), f"serve flags missing from operations.md §3: {sorted(flags - documented)}"


def test_the_settings_table_lists_exactly_the_settings_of_the_code():
    section = OPERATIONS[OPERATIONS.index("### 4.3 Settings"):]
    section = section[: section.index("\n## ")]
    rows = [name for cell in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", section, re.M)
            for name in re.findall(r"`([a-z_]+)`", cell)]
    assert sorted(rows) == sorted(SETTINGS)
    assert len(rows) == len(set(rows)), "a setting is listed twice"


@pytest.mark.parametrize("doc", DOCS)
def test_every_environment_variable_the_docs_name_exists(doc):
    named = set(re.findall(rf"\b{ENV_PREFIX}[A-Z][A-Z0-9_]*\b", DOCS[doc]))
    known = {ENV_PREFIX + name.upper() for name in SETTINGS} | set(OTHER_VARIABLES)
    assert named - known == set(), f"{doc} names variables pinkrelay does not read: {sorted(named - known)}"


def test_the_example_config_has_every_setting_at_its_default(tmp_path):
    text = EXAMPLE.read_text()
    values = re.findall(r"^# ([a-z_]+) = (.+)$", text, re.M)
    unset = re.findall(r"^# ([a-z_]+): (?:unset|none) by default", text, re.M)
    per_core = re.findall(r"^# ([a-z_]+): one per core by default", text, re.M)
    named = [n for n, _ in values] + unset + per_core
    assert named and sorted(named) == sorted(SETTINGS), (
        "examples/pinkrelay.toml must name every setting exactly once: run scripts/write-example-config.py")
    defaults = RelayConfig()
    for name in per_core:
        assert getattr(defaults, name) == usable_cores(), f"{name} is marked one per core"
    for name in unset:
        assert getattr(defaults, name) in (None, ()), f"{name} is marked unset but defaults to {getattr(defaults, name)!r}"
    uncommented = tmp_path / "pinkrelay.toml"
    uncommented.write_text("[relay]\n" + "".join(f"{name} = {value}\n" for name, value in values))
    tomllib.loads(uncommented.read_text())
    assert load_config(uncommented, environ={}) == defaults
    # And the file as shipped is a valid config that changes nothing.
    assert load_config(EXAMPLE, environ={}) == defaults
