"""RelayConfig: defaults, TOML, environment and flags, and the errors that name what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pinkrelay.config import Address, RelayConfig, load_config
from pinkrelay.errors import ConfigError


def test_embedded_defaults_are_the_documented_ones():
    config = load_config(environ={})
    assert config == RelayConfig()
    assert str(config.buttons_listen) == "127.0.0.1:7400"
    assert str(config.consoles_listen) == "127.0.0.1:7401"
    assert config.data_dir == Path("var")
    assert (config.heartbeat_interval, config.supervision_window) == (10.0, 20.0)
    assert config.audio_hold == 0.035


def test_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\nbuttons_listen = "0.0.0.0:9400"\nsupervision_window = 30\nlog_format = "json"\n')
    config = load_config(
        path,
        environ={"PINKRELAY_SUPERVISION_WINDOW": "40", "PINKRELAY_PUREPYTHON": "1"},
        overrides={"log_format": "text", "consoles_listen": None},
    )
    assert config.buttons_listen == Address("0.0.0.0", 9400)
    assert config.supervision_window == 40.0
    assert config.log_format == "text"
    assert config.consoles_listen == Address("127.0.0.1", 7401)


@pytest.mark.parametrize(
    "text, words",
    [
        ("colour = 'pink'\n", ["unknown setting 'colour'", "known settings"]),
        ("buttons_listen = '127.0.0.1:99999'\n", ["buttons_listen", "99999", "0..65535"]),
        ("buttons_listen = 'localhost'\n", ["not HOST:PORT"]),
        ("consoles_listen = '127.0.0.1:http'\n", ["port 'http' is not a number"]),
        ("heartbeat_interval = -1\n", ["heartbeat_interval must be a positive number"]),
        ("heartbeat_interval = 30\nsupervision_window = 10\n", ["shorter than heartbeat_interval"]),
        ("chunk_size = 10\n", ["chunk_size 10"]),
        ("log_format = 'xml'\n", ["log_format 'xml'"]),
        ("relay_name = '" + "r" * 70 + "'\n", ["relay_name", "1-64"]),
        ("heartbeat_interval = 0.01\n", ["heartbeat_interval 0.01 s outside 0.1..3600"]),
        ("supervision_window = 100000\n", ["above a day"]),
        ("max_control_bytes = 10\n", ["max_control_bytes 10 must be at least 256"]),
        ("escalation_levels = [60, 15]\n", ["escalation_levels", "increasing"]),
        ("audio_hold = 0.9\n", ["audio_hold must be 0 to 0.5 seconds", "0.9"]),
        ("audio_hold = -0.01\n", ["audio_hold must be 0 to 0.5 seconds"]),
        ("this is not toml\n", ["not valid TOML"]),
    ],
)
def test_bad_settings_name_the_problem(tmp_path, text, words):
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message or "command line" in message
    for word in words:
        assert word in message


def test_unreadable_and_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, environ={})
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(binary, environ={})


def test_environment_values_are_checked_too():
    with pytest.raises(ConfigError, match="environment: stall_timeout must be a number"):
        load_config(environ={"PINKRELAY_STALL_TIMEOUT": "soon"})


def test_buttons_and_consoles_cannot_share_a_port():
    with pytest.raises(ConfigError, match="cannot share"):
        load_config(environ={}, overrides={"buttons_listen": "127.0.0.1:7000", "consoles_listen": "127.0.0.1:7000"})
