"""TLS 1.3 on the button and console listeners: real certificates from ``pinkrelay certs init``, real clients.

Every case runs the real relay on 127.0.0.1 with TLS on and real
ButtonClient/ConsoleClient over TLS, with real H.264 + Opus where media matters.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from trio.testing import trio_test

from pinkrelay.certs import init_deployment
from pinkrelay.clients.link import Link
from pinkrelay.errors import ConnectionRefused
from pinkrelay.media import encode_clip
from pinkrelay.protocol import Alert, ButtonConnection, Media
from pinkrelay.tls import client_tls, fingerprint

from relay_helpers import (
    button_client,
    button_ids,
    collect_events,
    console_client,
    running_relay,
    secret_for,
    stream_clip,
    wait_until,
)

BUTTONS = button_ids(3)


@pytest.fixture(scope="module")
def clip():
    return encode_clip(1, width=320, height=240, fps=30, bitrate=300_000, label="tls")


@pytest.fixture
def pki(tmp_path) -> Path:
    directory = tmp_path / "pki"
    init_deployment(directory, hosts=("127.0.0.1",), devices=BUTTONS)
    return directory


def tls_relay(tmp_path: Path, pki: Path, **changes):
    return running_relay(tmp_path / "var", tls_cert=pki / "relay.pem", tls_key=pki / "relay.key", **changes)


def relay_pin(pki: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((pki / "relay.pem").read_bytes())
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


@trio_test
async def test_alerts_and_media_over_tls_on_both_listeners(tmp_path, pki, clip):
    trusted = client_tls(ca=pki / "ca.pem")
    async with tls_relay(tmp_path, pki) as relay, trio.open_nursery() as nursery:
        console = console_client(relay, tls=trusted)
        await nursery.start(console.run)
        seen: list = []
        nursery.start_soon(collect_events, console, seen)
        button = button_client(relay, BUTTONS[0], [clip.video.to_dict(), clip.audio.to_dict()], tls=trusted)
        await nursery.start(button.run)
        console.subscribe(BUTTONS[0])
        sent = await stream_clip(button, clip, seconds=1.0)
        receipt = await button.press(timeout=5)
        await wait_until(lambda: any(isinstance(e, Alert) and e.alert_id == receipt.alert_id for e in seen))
        await wait_until(lambda: sum(isinstance(e, Media) for e in seen) >= sent - 2, what="media over TLS")
        assert relay.tls_stats["ok"] == 2
        assert {s.certificate for s in relay.sessions} == {""}  # TLS, no client certificates asked for
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_pinned_certificate_needs_no_ca_and_a_wrong_pin_is_refused(tmp_path, pki):
    async with tls_relay(tmp_path, pki) as relay, trio.open_nursery() as nursery:
        pinned = button_client(relay, BUTTONS[0], tls=client_tls(pin=relay_pin(pki)))
        await nursery.start(pinned.run)
        assert (await pinned.press(timeout=5)).alert_id
        wrong = button_client(relay, BUTTONS[1], tls=client_tls(pin="00" * 32))
        with pytest.raises(ConnectionRefused, match="has SHA-256 .*, not the pinned 0000"):
            await wrong.run()
        nursery.cancel_scope.cancel()


@trio_test
async def test_wrong_ca_expired_certificate_plaintext_and_tls_on_a_plaintext_port(tmp_path, pki, caplog):
    caplog.set_level(logging.WARNING, "pinkrelay.relay")
    other = tmp_path / "other"
    init_deployment(other, hosts=("127.0.0.1",))
    async with tls_relay(tmp_path, pki) as relay:
        with pytest.raises(ConnectionRefused, match="TLS certificate is not trusted: .*--ca"):
            await button_client(relay, BUTTONS[0], tls=client_tls(ca=other / "ca.pem")).run()
        await wait_until(lambda: relay.tls_stats["handshake"] == 1, what="the failed handshake counted")
        assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)
        # A device not set up for TLS gets an error it can read, and stops (retrying cannot help).
        with pytest.raises(ConnectionRefused, match="speaks TLS 1.3 only"):
            await button_client(relay, BUTTONS[0]).run()
        assert relay.tls_stats["plaintext"] == 1
        from pinkrelay.ops.metrics import RelayMetrics

        text = RelayMetrics(relay).exposition().decode()
        assert 'pinkrelay_tls_handshakes_total{result="plaintext"} 1.0' in text
        assert 'pinkrelay_tls_handshakes_total{result="handshake"} 1.0' in text
        # The relay still serves a correct client.
        async with trio.open_nursery() as nursery:
            good = button_client(relay, BUTTONS[0], tls=client_tls(ca=pki / "ca.pem"))
            await nursery.start(good.run)
            assert (await good.press(timeout=5)).alert_id
            nursery.cancel_scope.cancel()

    expired = tmp_path / "expired"
    init_deployment(expired, hosts=("127.0.0.1",),
                    now=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=900))
    async with running_relay(tmp_path / "var2", tls_cert=expired / "relay.pem", tls_key=expired / "relay.key") as relay:
        with pytest.raises(ConnectionRefused, match="certificate has expired"):
            await button_client(relay, BUTTONS[0], tls=client_tls(ca=expired / "ca.pem")).run()

    async with running_relay(tmp_path / "var3") as plaintext:
        with pytest.raises(OSError, match="does the relay serve TLS on this port"):
            await Link.open(plaintext.buttons_address, ButtonConnection(BUTTONS[0], secret_for(BUTTONS[0])),
                            tls=client_tls(ca=pki / "ca.pem"))


@trio_test
async def test_client_certificates_are_required_and_must_name_the_button(tmp_path, pki):
    async with tls_relay(tmp_path, pki, tls_client_ca=pki / "ca.pem") as relay, trio.open_nursery() as nursery:
        devices = pki / "devices"
        own = client_tls(ca=pki / "ca.pem", cert=devices / f"{BUTTONS[0]}.pem", key=devices / f"{BUTTONS[0]}.key")
        button = button_client(relay, BUTTONS[0], tls=own)
        await nursery.start(button.run)
        assert (await button.press(timeout=5)).alert_id
        assert relay.sessions_by_button[BUTTONS[0]].certificate == BUTTONS[0]
        # Another button's certificate: the TLS handshake passes, the sign-in does not.
        borrowed = client_tls(ca=pki / "ca.pem", cert=devices / f"{BUTTONS[2]}.pem", key=devices / f"{BUTTONS[2]}.key")
        with pytest.raises(ConnectionRefused, match="authentication failed"):
            await button_client(relay, BUTTONS[1], tls=borrowed).run()
        assert relay.counters["auth_failures"] == 1
        # No certificate at all: the relay ends the TLS handshake.
        bare = button_client(relay, BUTTONS[1], tls=client_tls(ca=pki / "ca.pem"), reconnect=False)
        with pytest.raises((ConnectionRefused, OSError)):
            await bare.run()
        await wait_until(lambda: relay.tls_stats["handshake"] >= 1, what="the refused handshake")
        # Consoles sign in with their operator's secret; no client certificate is asked of them.
        console = console_client(relay, tls=client_tls(ca=pki / "ca.pem"))
        await nursery.start(console.run)
        nursery.cancel_scope.cancel()


@trio_test
async def test_reloaded_certificates_serve_new_handshakes_and_keep_open_sessions(tmp_path, pki, caplog):
    async with tls_relay(tmp_path, pki) as relay, trio.open_nursery() as nursery:
        first = button_client(relay, BUTTONS[0], tls=client_tls(ca=pki / "ca.pem"))
        await nursery.start(first.run)
        renewed = tmp_path / "renewed"
        init_deployment(renewed, hosts=("127.0.0.1",))
        shutil.copy(renewed / "relay.pem", pki / "relay.pem")
        shutil.copy(renewed / "relay.key", pki / "relay.key")
        relay.reload_certificates()
        second = button_client(relay, BUTTONS[1], tls=client_tls(ca=renewed / "ca.pem"))
        await nursery.start(second.run)
        assert (await second.press(timeout=5)).alert_id
        assert (await first.press(timeout=5)).alert_id  # its session was not dropped
        assert first.reconnects == 0
        with pytest.raises(ConnectionRefused, match="not trusted"):
            await button_client(relay, BUTTONS[2], tls=client_tls(ca=pki / "ca.pem")).run()
        # A broken file: the previous certificate stays in use.
        (pki / "relay.key").write_text("not a key")
        relay.reload_certificates()
        assert any("not reloaded, the previous ones stay in use" in r.getMessage() for r in caplog.records)
        third = button_client(relay, BUTTONS[2], tls=client_tls(ca=renewed / "ca.pem"))
        await nursery.start(third.run)
        nursery.cancel_scope.cancel()


def test_serve_and_the_button_command_over_tls(tmp_path):
    """The commands an operator and a device maker run: serve with TLS from a config file, button --ca."""
    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    root = Path(__file__).resolve().parents[1]
    example = root / "examples" / "peshawar-buttons.csv"
    button_id = "kp-pesh-002"
    pki = tmp_path / "pki"
    assert subprocess.run([sys.executable, "-m", "pinkrelay", "certs", "init", str(pki), "--host", "127.0.0.1",
                           "--registry", str(example)], capture_output=True, timeout=120).returncode == 0
    buttons, consoles = free_port(), free_port()
    config = tmp_path / "relay.toml"
    config.write_text(f'tls_cert = "{pki / "relay.pem"}"\ntls_key = "{pki / "relay.key"}"\n'
                      f'tls_client_ca = "{pki / "ca.pem"}"\n')
    relay = subprocess.Popen(
        [sys.executable, "-m", "pinkrelay", "serve", "--no-web", "--config", str(config), "--registry",
         str(example), "--data-dir", str(tmp_path / "var"), "--buttons-listen", f"127.0.0.1:{buttons}",
         "--consoles-listen", f"127.0.0.1:{consoles}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        secret = tmp_path / "secret"
        secret.write_text(next(line.split(",")[1] for line in example.read_text().splitlines()
                               if line.startswith(button_id + ",")) + "\n")
        device = pki / "devices" / button_id
        command = [sys.executable, "-m", "pinkrelay", "button", "--relay", f"127.0.0.1:{buttons}", "--id", button_id,
                   "--secret-file", str(secret), "--video", "320x240@15", "--press-after", "0.5", "--duration", "2",
                   "--json"]
        deadline = time.monotonic() + 20
        while True:  # the relay may still be starting
            result = subprocess.run([*command, "--ca", str(pki / "ca.pem"), "--cert", f"{device}.pem", "--key",
                                     f"{device}.key"], capture_output=True, text=True, timeout=60,
                                    stdin=subprocess.DEVNULL)
            if result.returncode == 0 or time.monotonic() > deadline:
                break
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert [e["event"] for e in events][0] == "connected" and events[-1]["acks"] == 1
        assert events[-1]["video_frames"] >= 25
        plaintext = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert plaintext.returncode != 0
        assert "speaks TLS 1.3 only" in plaintext.stderr + plaintext.stdout
    finally:
        relay.send_signal(signal.SIGTERM)
        _, stderr = relay.communicate(timeout=15)
    assert relay.returncode == 0, stderr
    assert "sent plaintext to a TLS listener" in stderr


@trio_test
async def test_plaintext_on_a_network_address_must_be_stated_twice(tmp_path, pki):
    from pinkrelay import Relay, RelayConfig
    from pinkrelay.config import Address, load_config
    from pinkrelay.errors import ConfigError

    # The rule is checked before binding, so an address no interface has shows it (loopback is always allowed).
    exposed = Address("192.0.2.10", 7400)  # TEST-NET-1: never bound, the check refuses first
    config = RelayConfig(buttons_listen=exposed, consoles_listen=Address("127.0.0.1", 0), data_dir=tmp_path / "v")
    with pytest.raises(ConfigError, match=r"buttons_listen 192\.0\.2\.10:7400 is not a loopback address and has no "
                                          r"TLS: set tls_cert.*allow_plaintext = \[\"192\.0\.2\.10:7400\"\]"):
        await Relay(config).serve()
    stated = load_config(environ={"PINKRELAY_ALLOW_PLAINTEXT": "192.0.2.10:7400"},
                         overrides={"buttons_listen": "192.0.2.10:7400", "consoles_listen": "127.0.0.1:0",
                                    "data_dir": str(tmp_path / "w")})
    assert stated.allow_plaintext == ("192.0.2.10:7400",)
    with pytest.raises(ConfigError, match="cannot listen for buttons on 192.0.2.10:7400"):
        await Relay(stated).serve()  # past the rule: only the bind fails, since no interface has it
    with pytest.raises(ConfigError, match="allow_plaintext"):
        load_config(environ={"PINKRELAY_ALLOW_PLAINTEXT": "not-an-address"})
    tls = RelayConfig(buttons_listen=exposed, consoles_listen=Address("127.0.0.1", 0), data_dir=tmp_path / "x",
                      tls_cert=pki / "relay.pem", tls_key=pki / "relay.key")
    with pytest.raises(ConfigError, match="cannot listen for buttons"):
        await Relay(tls).serve()  # with TLS the rule does not apply
