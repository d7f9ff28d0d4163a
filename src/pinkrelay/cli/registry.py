"""``pinkrelay registry check FILE``: validate a button registry before the relay loads it.

Prints ``OK: N buttons (...)`` with the count per site kind, or every problem
with its file, line and field, and exits 1 when there are problems.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from ..errors import RegistryError
from ..registry import SITE_KINDS, load_registry


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("registry", help="check a button registry file")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="validate a registry (CSV or TOML) and report every problem",
        description="Validate a button registry. Exit status 0: valid; 1: problems (all listed).",
    )
    check.add_argument(
        "file", metavar="FILE", help="registry file (.csv, or .toml with [[button]] tables)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        registry = load_registry(args.file)
    except RegistryError as error:
        print(f"FAILED: {error}")
        return 1
    if not registry:
        print(f"FAILED: {args.file} lists no buttons")
        return 1
    kinds = Counter(button.site.kind for button in registry.values())
    order = sorted(kinds, key=lambda kind: (-kinds[kind], SITE_KINDS.index(kind)))
    summary = ", ".join(f"{kinds[kind]} {kind}" for kind in order)
    print(f"OK: {len(registry)} buttons ({summary})")
    return 0
