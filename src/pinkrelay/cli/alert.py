"""``pinkrelay alert ack|dispatch|resolve|false-alarm ID``: act on one alert from a shell.

It signs in over the console protocol with the operator's credential, the
same way as ``pinkrelay console`` (``--operator``, ``--token-file`` or
``$PINKRELAY_CONSOLE_TOKEN``), finds the alert among the open alerts the relay
sends at sign-in (a unique prefix of its id is enough), sends the
``alert_update`` and waits for the relay's answer: the recorded step,
broadcast to every console, or its refusal (``bad-transition``, ``journal``).
Exit 0: recorded; 1: refused or not answered; 2: no such open alert, or the
relay could not be reached.

``ACTIONS`` is shared with the interactive keys of ``pinkrelay console``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import trio

from ..alerts.lifecycle import FALSE_CATEGORIES
from ..alerts.lifecycle import OUTCOMES as OUTCOME_KINDS
from ..clients import ConsoleClient
from ..logs import setup_logging
from ..protocol import Alert, AlertUpdate, Error
from .common import (
    DEFAULT_CONSOLES_PORT,
    CommandError,
    add_relay_option,
    add_secret_dir_option,
    client_tls_of,
    relay_address,
    run_trio,
    say_goodbye,
)

#: Seconds after sign-in within which the relay's snapshot of open alerts has arrived.
SNAPSHOT_WAIT = 0.5
#: Seconds to wait for the relay to record or refuse the step.
ANSWER_TIMEOUT = 10.0
#: What ``--outcome`` takes: the lifecycle's outcomes, a category after a colon.
OUTCOMES = ("genuine:CATEGORY", *(f"false:{c.replace('_', '-')}" for c in FALSE_CATEGORIES), "test")
OPEN_STATES = ("raised", "acknowledged", "dispatched", "on_scene")


@dataclass(frozen=True, slots=True)
class Action:
    """One command word, the lifecycle state it asks for, and what it needs."""

    word: str
    state: str
    needs_unit: bool = False
    needs_outcome: bool = False


ACTIONS = {
    action.word: action
    for action in (
        Action("ack", "acknowledged"),
        Action("dispatch", "dispatched", needs_unit=True),
        Action("resolve", "resolved", needs_outcome=True),
        Action("false-alarm", "false_alarm", needs_outcome=True),
    )
}


def parse_outcome(text: str) -> tuple[str, str]:
    """``genuine:harassment``, ``false:device-fault`` or ``test`` as the (outcome, category) sent."""
    outcome, _, category = text.partition(":")
    category = category.replace("-", "_") if outcome == "false" else category
    if outcome not in OUTCOME_KINDS or (outcome == "false" and category not in FALSE_CATEGORIES) \
            or (outcome == "genuine" and not category) or (outcome == "test" and category):
        raise CommandError(f"--outcome {text!r}: use one of {', '.join(OUTCOMES)}")
    return outcome, category


def match_alert(alerts: dict[str, Alert], prefix: str) -> Alert:
    """The one open alert whose id starts with ``prefix``; CommandError naming the candidates otherwise."""
    found = [alert for alert_id, alert in alerts.items() if alert_id.startswith(prefix)
             and alert.state in OPEN_STATES]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CommandError(f"no open alert with id {prefix!r}; 'pinkrelay alerts list --open' lists them")
    raise CommandError(f"alert id {prefix!r} is ambiguous: {', '.join(a.alert_id for a in found)}; give more of it")


def add_parser(subparsers: Any) -> None:
    from .console import DEFAULT_OPERATOR, TOKEN_ENV

    parser = subparsers.add_parser(
        "alert",
        allow_abbrev=False,
        help="acknowledge, dispatch, resolve or close as false alarm one alert",
        description="Act on one open alert as an operator, over the console protocol. Exit status 0: "
        "recorded; 1: refused by the relay or no answer; 2: no such open alert or no relay.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action in ACTIONS.values():
        sub = actions.add_parser(action.word, help=f"ask for state {action.state}")
        sub.add_argument("alert_id", metavar="ID", help="the alert id (a unique prefix of an open alert)")
        add_relay_option(sub, DEFAULT_CONSOLES_PORT, "console")
        sub.add_argument("--operator", default=DEFAULT_OPERATOR, metavar="NAME",
                         help=f"operator name (default {DEFAULT_OPERATOR})")
        sub.add_argument("--token-file", metavar="FILE",
                         help=f"file with the operator's secret (else ${TOKEN_ENV}, else var/OPERATOR.secret)")
        add_secret_dir_option(sub)
        sub.add_argument("--note", default="", metavar="TEXT", help="text recorded with the step")
        if action.needs_unit:
            sub.add_argument("--unit", required=True, metavar="UNIT", help="the unit or team sent")
        if action.needs_outcome:
            sub.add_argument("--outcome", required=True, metavar="OUTCOME",
                             help=f"how it ended (required): {', '.join(OUTCOMES)}")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    setup_logging("text", "error")
    return int(run_trio(_main, args))


async def _main(args: argparse.Namespace) -> int:
    from .console import read_token

    action = ACTIONS[args.action]
    outcome, category = parse_outcome(args.outcome) if action.needs_outcome else ("", "")
    relay = relay_address(args.relay)
    client = ConsoleClient(relay, args.operator, read_token(args.token_file, args.operator, data_dir=args.data_dir),
                           reconnect=False,
                           tls=client_tls_of(args))
    alerts: dict[str, Alert] = {}
    answer: list[Any] = []
    target: Alert | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        sent = trio.Event()

        async def listen() -> None:
            async for event in client.events():
                if isinstance(event, Alert):
                    alerts[event.alert_id] = event
                elif target is not None and sent.is_set() and (isinstance(event, Error) or (
                        isinstance(event, AlertUpdate) and event.alert_id == target.alert_id
                        and event.state == action.state)):
                    answer.append(event)
                    return

        nursery.start_soon(listen)
        await trio.sleep(SNAPSHOT_WAIT)
        try:
            target = match_alert(alerts, args.alert_id)
        except CommandError:
            await say_goodbye([client.link], "nothing to do")
            nursery.cancel_scope.cancel()
            raise
        client.update_alert(target.alert_id, action.state, note=args.note, unit=getattr(args, "unit", ""),
                            outcome=outcome, category=category)
        sent.set()
        with trio.move_on_after(ANSWER_TIMEOUT):
            while not answer:
                await trio.sleep(0.01)
        await say_goodbye([client.link], "done")
        nursery.cancel_scope.cancel()
    if not answer:
        print(f"FAILED: the relay did not answer within {ANSWER_TIMEOUT:g} s; "
              f"'pinkrelay alerts show {target.alert_id}' says whether it was recorded")
        return 1
    reply = answer[0]
    if isinstance(reply, Error):
        print(f"REFUSED: {reply.message} ({reply.code})")
        return 1
    unit = f", unit {reply.unit}" if reply.unit else ""
    print(f"OK: alert {target.alert_id} ({target.button}) is {reply.state}{unit}, by {reply.operator}")
    return 0
