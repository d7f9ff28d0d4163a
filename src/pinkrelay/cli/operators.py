"""``pinkrelay operators add|list|disable|enable``: the control room's accounts.

``add`` prints the new account's secret once; only a scrypt-derived hash is
stored (see pinkrelay/operators.py). A running relay notices changes within
a second: a disabled operator's open consoles are disconnected at once.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..alerts.routing import DEFAULT_ROOM
from ..operators import ROLES, OperatorStore
from .common import add_location_options, data_dir_of


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("operators", help="manage operator accounts")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="create an account and print its secret once")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="operator")
    add.add_argument("--room", default=DEFAULT_ROOM,
                     help="the control room this operator works in (default main): the consoles of a room "
                          "see the alerts of the buttons it answers (registry column control_rooms)")
    listing = actions.add_parser("list", help="list accounts")
    listing.add_argument("--json", action="store_true")
    toggles = []
    for action in ("disable", "enable"):
        toggles.append(actions.add_parser(action, help=f"{action} an account"))
        toggles[-1].add_argument("name")
    add_location_options(parser, (add, listing, *toggles))
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    store = OperatorStore.in_data_dir(data_dir_of(args))
    if args.action == "add":
        secret = store.add(args.name, args.role, room=args.room)
        print(f"operator {args.name} ({args.role}, room {args.room}) created in {store.path}")
        print(f"secret (shown once, store it safely): {secret}")
        return 0
    if args.action in ("disable", "enable"):
        store.set_disabled(args.name, args.action == "disable")
        print(f"operator {args.name} {args.action}d")
        return 0
    operators = store.load()
    if args.json:
        for operator in operators.values():
            print(json.dumps({"name": operator.name, "role": operator.role, "room": operator.room,
                              "disabled": operator.disabled, "created_at": operator.created_at}))
        return 0
    if not operators:
        print(f"no operators in {store.path}")
    for operator in operators.values():
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(operator.created_at))
        state = "DISABLED" if operator.disabled else "active"
        print(f"{operator.name:24} {operator.role:11} {operator.room:16} {state:9} created {created} UTC")
    return 0
