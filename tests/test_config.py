"""RelayConfig: defaults, TOML, environment and flags, and the errors that name what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pinkrelay.config import ENV_PREFIX, OTHER_VARIABLES, Address, RelayConfig, load_config
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


@pytest.mark.parametrize(
    "text, words",
    [
        ("chunk_size = true\n", ["chunk_size", "boolean", "True"]),
        ("max_tracks = false\n", ["max_tracks", "boolean", "False"]),
        ("heartbeat_interval = true\n", ["heartbeat_interval", "boolean", "True"]),
        ("audio_hold = false\n", ["audio_hold", "boolean", "False"]),
        ("chunk_size = 1000.9\n", ["chunk_size must be a whole number", "1000.9"]),
        ("gop_cache_bytes = 1e400\n", ["gop_cache_bytes must be a whole number", "inf"]),
        ("max_video_queue_bytes = -1\n", ["max_video_queue_bytes -1", "positive"]),
        ("max_audio_queue_bytes = -262144\n", ["max_audio_queue_bytes -262144", "positive"]),
        ("max_video_queue_bytes = 0\n", ["max_video_queue_bytes 0", "positive"]),
        ("max_control_queue_bytes = -1\n", ["max_control_queue_bytes -1", "one control frame"]),
        ("max_control_queue_bytes = 1000\n", ["max_control_queue_bytes 1000", "at least 16408"]),
        ("gop_cache_bytes = -1\n", ["gop_cache_bytes -1", "zero or more"]),
        ("join_keyframe_age = -0.5\n", ["join_keyframe_age", "-0.5", "zero or more"]),
        ("stall_timeout = nan\n", ["stall_timeout must be a finite number", "nan"]),
        ("supervision_window = inf\n", ["supervision_window must be a finite number", "inf"]),
    ],
)
def test_numbers_of_the_wrong_kind_or_sign_name_key_and_value(tmp_path, text, words):
    """A boolean, a fraction of a byte, a negative size or an infinity is a mistake, never a value."""
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_whole_floats_and_zero_sizes_that_mean_something_are_accepted(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text("chunk_size = 16384.0\ngop_cache_bytes = 0\njoin_keyframe_age = 0\n")
    config = load_config(path, environ={})
    assert config.chunk_size == 16384 and type(config.chunk_size) is int
    assert (config.gop_cache_bytes, config.join_keyframe_age) == (0, 0.0)


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("PINKRELAY_CHUNK_SIZE", "1000.9", ["environment: chunk_size must be a whole number", "'1000.9'"]),
        ("PINKRELAY_GOP_CACHE_BYTES", "-1", ["gop_cache_bytes -1"]),
        ("PINKRELAY_JOIN_KEYFRAME_AGE", "-1", ["join_keyframe_age", "-1.0"]),
        ("PINKRELAY_HANDSHAKE_TIMEOUT", "inf", ["handshake_timeout must be a finite number", "'inf'"]),
    ],
)
def test_environment_numbers_are_as_strict_as_the_file(variable, value, words):
    with pytest.raises(ConfigError) as caught:
        load_config(environ={variable: value})
    for word in words:
        assert word in str(caught.value), f"{word!r} missing from: {caught.value}"


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"chunk_size": True}, ["chunk_size must be a whole number, not True"]),
        ({"max_tracks": 8.0}, ["max_tracks must be a whole number, not 8.0"]),
        ({"stall_timeout": False}, ["stall_timeout must be a finite number of seconds, not False"]),
        ({"max_audio_queue_bytes": -1}, ["max_audio_queue_bytes -1"]),
        ({"join_keyframe_age": float("nan")}, ["join_keyframe_age", "nan"]),
    ],
)
def test_relay_config_built_in_code_is_checked_the_same_way(changes, words):
    """Services that embed the relay build RelayConfig directly, without load_config."""
    with pytest.raises(ConfigError) as caught:
        RelayConfig(**changes)
    for word in words:
        assert word in str(caught.value), f"{word!r} missing from: {caught.value}"


def test_a_misspelt_environment_setting_is_an_error_naming_it_and_the_settings():
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"PINKRELAY_SUPERVISION_WINDOWS": "60"})
    message = str(caught.value)
    assert "PINKRELAY_SUPERVISION_WINDOWS is not a pinkrelay setting" in message
    assert "did you mean PINKRELAY_SUPERVISION_WINDOW?" in message
    assert "PINKRELAY_BUTTONS_LISTEN" in message and "PINKRELAY_GOP_CACHE_BYTES" in message
    with pytest.raises(ConfigError, match="PINKRELAY_XYZZY is not a pinkrelay setting; unset"):
        load_config(environ={"PINKRELAY_XYZZY": "1"})


def test_variables_that_are_not_settings_are_left_alone():
    environ = {name: "1" for name in OTHER_VARIABLES}
    environ |= {"PINKRELAY_DATA_DIR": "/srv/pinkrelay", "PATH": "/bin"}
    assert load_config(environ=environ).data_dir == Path("/srv/pinkrelay")


ROOT = Path(__file__).resolve().parents[1]


def test_every_pinkrelay_variable_the_code_reads_is_a_setting_or_listed():
    """A new PINKRELAY_* variable read anywhere must be added to OTHER_VARIABLES, or serve refuses it."""
    names: set[str] = set()
    for folder in ("src", "tests", "benchmarks", "scripts", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh") and path.resolve() != Path(__file__).resolve():
                names.update(re.findall(r"\bPINKRELAY_[A-Z][A-Z0-9_]*", path.read_text(errors="replace")))
    names.update(re.findall(r"\bPINKRELAY_[A-Z][A-Z0-9_]*", (ROOT / "Makefile").read_text()))
    assert "PINKRELAY_PUREPYTHON" in names, "the scan found nothing: did the layout change?"
    settings = {ENV_PREFIX + name.upper() for name in RelayConfig.__dataclass_fields__}
    unknown = sorted(names - settings - set(OTHER_VARIABLES))
    assert not unknown, f"add these to pinkrelay.config.OTHER_VARIABLES (or make them settings): {unknown}"


def test_cluster_settings_from_a_cluster_table_and_their_bad_values(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[relay]\nrelay_name = "pesh-relay-2"\n[cluster]\n'
                    'nats_urls = ["nats://10.40.0.1:4222", "nats://10.40.0.2:4222"]\nreplicas = 3\n')
    config = load_config(path, environ={})
    assert config.cluster_nats_urls == ("nats://10.40.0.1:4222", "nats://10.40.0.2:4222")
    assert load_config(environ={"PINKRELAY_CLUSTER_NATS_URLS": "nats://a:1, tls://b:2"}).cluster_nats_urls == (
        "nats://a:1", "tls://b:2")
    for overrides, message in (
        ({"cluster_nats_urls": "http://10.40.0.1:4222"}, "is not nats://HOST:PORT"),
        ({"cluster_nats_urls": "nats://10.40.0.1"}, "is not HOST:PORT"),
        ({"cluster_namespace": "Pesh.Relay"}, "cluster_namespace 'Pesh.Relay'"),
        ({"cluster_replicas": 7}, "outside 1..5"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(environ={}, overrides=overrides)
    secret = tmp_path / "hook.secret"
    secret.write_text("a-webhook-secret-of-enough-bytes\n")
    path.write_text(f'[cluster]\nnats_urls = ["nats://10.40.0.1:4222"]\n[[sinks]]\nkind = "webhook"\n'
                    f'name = "x"\nurl = "https://example.org/hook"\nsecret_file = "{secret}"\n')
    with pytest.raises(ConfigError, match="sinks"):
        load_config(path, environ={})
