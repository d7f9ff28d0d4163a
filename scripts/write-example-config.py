"""Write examples/pinkrelay.toml: every setting of RelayConfig at its default, commented, described.

Run it after adding or changing a setting (and its row in docs/operations.md §4.3):

    .venv/bin/python scripts/write-example-config.py

The description of each setting is the first sentence of its §4.3 row, so the
docs stay the one place that says what a setting does;
tests/test_docs_match_code.py checks the result against the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pinkrelay.config import _FIELDS, Address, RelayConfig

ROOT = Path(__file__).resolve().parents[1]
#: Settings unset by default, with an example value to show the form.
EXAMPLES = {
    "registry": "/etc/pinkrelay/buttons.csv",
    "console_tokens_file": "/etc/pinkrelay/console-tokens",
    "tls_cert": "/etc/pinkrelay/certs/relay.pem",
    "tls_key": "/etc/pinkrelay/certs/relay.key",
    "tls_client_ca": "/etc/pinkrelay/certs/ca.pem",
    "evidence_dir": "/srv/pinkrelay-evidence",
    "cluster_secret_file": "/etc/pinkrelay/cluster.secret",
}
HEADER = """\
# pinkrelay settings: every setting at its default, commented out. § numbers are sections of
# docs/operations.md, whose §4.3 explains each setting in full. Copy this file, uncomment what you
# change and start the relay with 'pinkrelay serve --config FILE'. Environment variables
# (PINKRELAY_<NAME>) and command-line flags override the file (§4.1).
# Written by scripts/write-example-config.py; tests/test_docs_match_code.py checks every value.

[relay]
"""


def toml_value(value: object) -> str:
    if isinstance(value, (Address, Path, str)):
        return json.dumps(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict) and not value:
        return "{}"
    raise TypeError(f"no TOML form for {value!r}")


def descriptions(operations: str) -> dict[str, tuple[str, str]]:
    section = operations[operations.index("### 4.3 Settings"):]
    section = section[: section.index("\n## ")]
    found = {}
    for row in re.finditer(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \| ([^|]*) \| ([^|]*) \| (.*) \|$", section, re.M):
        first = re.split(r"(?<=\.)\s", row.group(4).replace("\\|", "|"), maxsplit=1)[0].rstrip(".")
        for name in re.findall(r"`([a-z_]+)`", row.group(1)):
            found[name] = (first, row.group(3).strip())
    return found


def main() -> None:
    meaning = descriptions((ROOT / "docs" / "operations.md").read_text())
    defaults = RelayConfig()
    lines = [HEADER.rstrip("\n")]
    for name in _FIELDS:
        text, form = meaning[name]
        form = "" if form.startswith("—") else f" [{form.strip('`')}]"
        value = getattr(defaults, name)
        lines += ["", f"# {text}.{form}"]
        if value is None:
            lines.append(f"# {name}: unset by default; e.g. {name} = {json.dumps(EXAMPLES[name])}")
        elif name == "data_threads":
            lines.append("# data_threads: one per core by default (the cores the relay may run on); "
                         "e.g. data_threads = 0 for the trio path")
        elif name == "sinks":
            lines.append("# sinks: none by default; each sink is a [[sinks]] table at the top level of the file (§20).")
        else:
            lines.append(f"# {name} = {toml_value(value)}")
    (ROOT / "examples" / "pinkrelay.toml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
