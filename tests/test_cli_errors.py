"""Every mistake a user can make on the command line: exit non-zero with one clear line.

The commands run as real processes, all at once (each is mostly interpreter
start-up), against one relay on free loopback ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"
COMMAND = [sys.executable, "-m", "pinkrelay"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def example_secret(button_id: str) -> str:
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{button_id},"):
            return line.split(",")[1]
    raise KeyError(button_id)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("relay")
    buttons, consoles = free_port(), free_port()
    process = subprocess.Popen(
        [
            *COMMAND,
            "serve",
            "--registry",
            str(EXAMPLE),
            "--data-dir",
            str(base / "var"),
            "--buttons-listen",
            f"127.0.0.1:{buttons}",
            "--consoles-listen",
            f"127.0.0.1:{consoles}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PINKRELAY_WEB_LISTEN": f"127.0.0.1:{free_port()}"},
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", consoles), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "relay did not start"
            time.sleep(0.05)
    try:
        yield {"buttons": f"127.0.0.1:{buttons}", "consoles": f"127.0.0.1:{consoles}", "base": base}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def cases(relay: dict) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, words the one-line message must contain)."""
    base: Path = relay["base"]
    good = base / "good-secret"
    good.write_text(example_secret("kp-pesh-001") + "\n")
    wrong = base / "wrong-secret"
    wrong.write_text("this-is-not-the-secret-of-any-button\n")
    bad_token = base / "bad-token"
    bad_token.write_text("not-the-operator-token-at-all\n")
    unknown_key = base / "unknown-key.toml"
    unknown_key.write_text("bogus_setting = 1\n")
    closed = f"127.0.0.1:{free_port()}"
    button = ["button", "--duration", "3", "--video", "160x120@10"]
    return {
        "button relay not reachable": (
            [*button, "--relay", closed, "--id", "kp-pesh-001", "--secret-file", str(good)],
            ["relay not reachable", closed, "Connection refused"],
        ),
        "button wrong secret": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(wrong),
            ],
            ["kp-pesh-001", "refused", "authentication failed", "secret"],
        ),
        "button unknown id": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-999",
                "--secret-file",
                str(good),
            ],
            ["kp-pesh-999", "refused", "registry"],
        ),
        "button unreadable secret file": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(base / "nope"),
            ],
            ["secret file", "does not exist"],
        ),
        "button secret file is a directory": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(base),
            ],
            ["secret file", "is a directory"],
        ),
        "button unreadable source file": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(good),
                "--source",
                str(base / "missing.mp4"),
            ],
            ["media file", "missing.mp4", "not found"],
        ),
        "button source not a video": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(good),
                "--source",
                str(unknown_key),
            ],
            ["media file", "cannot be read as audio/video"],
        ),
        "button camera not there": (
            [
                *button,
                "--relay",
                relay["buttons"],
                "--id",
                "kp-pesh-001",
                "--secret-file",
                str(good),
                "--source",
                "/dev/video9",
            ],
            ["camera /dev/video9 not found"],
        ),
        "simulate relay not reachable": (
            [
                "simulate",
                "--relay",
                closed,
                "--registry",
                str(EXAMPLE),
                "--buttons",
                "2",
                "--duration",
                "2",
            ],
            ["relay not reachable", closed],
        ),
        "simulate too many buttons": (
            [
                "simulate",
                "--relay",
                relay["buttons"],
                "--registry",
                str(EXAMPLE),
                "--buttons",
                "69",
            ],
            ["--buttons 69", "only 68 buttons"],
        ),
        "console unreadable token file": (
            [
                "console",
                "--relay",
                relay["consoles"],
                "--token-file",
                str(base / "no-token"),
                "--duration",
                "2",
            ],
            ["console token file", "does not exist"],
        ),
        "console wrong token": (
            [
                "console",
                "--relay",
                relay["consoles"],
                "--token-file",
                str(bad_token),
                "--duration",
                "2",
            ],
            ["duty-officer", "refused", "authentication failed"],
        ),
        "console relay not reachable": (
            ["console", "--relay", closed, "--token-file", str(bad_token), "--duration", "2"],
            ["relay not reachable", closed],
        ),
        "serve unknown config key": (
            ["serve", "--config", str(unknown_key)],
            ["unknown setting 'bogus_setting'", str(unknown_key)],
        ),
        "serve bad port": (
            ["serve", "--buttons-listen", "127.0.0.1:99999"],
            ["buttons_listen", "99999", "outside 0..65535"],
        ),
        "serve unreadable config file": (
            ["serve", "--config", str(base / "missing.toml")],
            ["config file", "missing.toml", "does not exist"],
        ),
        "serve unreadable registry": (
            [
                "serve",
                "--registry",
                str(base / "missing.csv"),
                "--buttons-listen",
                "127.0.0.1:0",
                "--consoles-listen",
                "127.0.0.1:0",
                "--data-dir",
                str(base / "serve-data"),
            ],
            ["registry file", "missing.csv", "does not exist"],
        ),
    }


def test_user_errors_exit_non_zero_with_one_clear_line(relay: dict, tmp_path: Path) -> None:
    table = cases(relay)
    processes = {
        name: subprocess.Popen(
            [*COMMAND, *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=tmp_path,
        )
        for name, (arguments, _) in table.items()
    }
    failures = []
    for name, process in processes.items():
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            failures.append(f"{name}: still running after 30 s")
            continue
        words = table[name][1]
        lines = stderr.strip().splitlines()
        if process.returncode == 0:
            failures.append(f"{name}: exit status 0")
        elif len(lines) != 1:
            failures.append(f"{name}: expected one line on stderr, got {stderr!r}")
        elif not lines[0].startswith("pinkrelay ") or not all(word in lines[0] for word in words):
            failures.append(f"{name}: {lines[0]!r} lacks {words}")
        elif "Traceback" in stderr or "[Errno" in stderr:
            failures.append(f"{name}: {stderr!r}")
    assert not failures, "\n".join(failures)


def test_console_without_any_token_says_where_to_get_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [*COMMAND, "console", "--relay", "127.0.0.1:7401", "--duration", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "no secret for operator 'duty-officer'" in result.stderr
    assert "PINKRELAY_CONSOLE_TOKEN" in result.stderr and "--token-file FILE" in result.stderr
    assert "looked for var/duty-officer.secret" in result.stderr


def test_console_has_no_token_flag() -> None:
    result = subprocess.run(
        [*COMMAND, "console", "--token", "secret"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["button", "--id", "a", "--secret-file", "f", "--video", "641x360@30"], "must be even"),
        (["button", "--id", "a", "--secret-file", "f", "--video", "big"], "WIDTHxHEIGHT@FPS"),
        (["simulate", "--registry", "r", "--buttons", "0"], "at least 1"),
        (["button", "--id", "a", "--secret-file", "f", "--bitrate", "fast"], "bit rate"),
    ],
)
def test_bad_option_values_are_usage_errors(arguments: list[str], words: str) -> None:
    result = subprocess.run(
        [*COMMAND, *arguments], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert words in result.stderr
