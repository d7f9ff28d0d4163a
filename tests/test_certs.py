"""``pinkrelay certs init``: a private CA, the relay's and the devices' certificates, checked by OpenSSL.

The relay certificate is then used for real: the web control room serves
HTTPS with it and a client that trusts only the deployment's CA connects.
"""

from __future__ import annotations

import shutil
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from trio.testing import trio_test

import pinkrelay
from pinkrelay.certs import init_deployment
from pinkrelay.errors import ConfigError
from pinkrelay.web import serve_web

from relay_helpers import running_relay

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "peshawar-buttons.csv"


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("openssl")
    assert path, "openssl is not installed (make test installs it)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=30)


def test_certs_init_makes_a_ca_relay_and_device_certificates_openssl_accepts(tmp_path):
    directory = tmp_path / "pki"
    result = subprocess.run([sys.executable, "-m", "pinkrelay", "certs", "init", str(directory),
                             "--registry", str(EXAMPLE), "--host", "relay.kp-police.example",
                             "--host", "10.20.0.5", "--organisation", "KP Police IT"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    buttons = list(pinkrelay.load_registry(EXAMPLE))
    assert f"{len(buttons) + 2} certificates created, 0 already there" in result.stdout
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for key in [directory / "ca.key", directory / "relay.key", *directory.glob("devices/*.key")]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key

    ca = str(directory / "ca.pem")
    relay = openssl("verify", "-CAfile", ca, "-purpose", "sslserver", str(directory / "relay.pem"))
    assert relay.returncode == 0 and relay.stdout.strip().endswith(": OK"), relay.stderr
    text = openssl("x509", "-in", str(directory / "relay.pem"), "-noout", "-text").stdout
    assert "DNS:relay.kp-police.example" in text and "IP Address:10.20.0.5" in text
    assert "O = KP Police IT" in text and "TLS Web Server Authentication" in text
    device = directory / "devices" / f"{buttons[0]}.pem"
    client = openssl("verify", "-CAfile", ca, "-purpose", "sslclient", str(device))
    assert client.returncode == 0, client.stderr
    subject = openssl("x509", "-in", str(device), "-noout", "-subject").stdout
    assert f"CN = {buttons[0]}" in subject
    # A device certificate is no server certificate, and the relay's no client one.
    assert openssl("verify", "-CAfile", ca, "-purpose", "sslserver", str(device)).returncode != 0
    # Each certificate's key is its own.
    for stem in (directory / "relay", device.with_suffix("")):
        cert_key = openssl("x509", "-in", f"{stem}.pem", "-noout", "-pubkey").stdout
        key = openssl("pkey", "-in", f"{stem}.key", "-pubout").stdout
        assert cert_key == key and "BEGIN PUBLIC KEY" in key


def test_running_it_again_keeps_everything_and_issues_only_new_buttons(tmp_path):
    first = init_deployment(tmp_path, devices=["kp-a-001"])
    assert len(first.created) == 3
    ca_before = (tmp_path / "ca.pem").read_bytes()
    relay_before = (tmp_path / "relay.pem").read_bytes()
    second = init_deployment(tmp_path, devices=["kp-a-001", "kp-a-002"])
    assert second.created == [tmp_path / "devices" / "kp-a-002.pem"]
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "relay.pem").read_bytes() == relay_before
    added = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "devices" / "kp-a-002.pem"))
    assert added.returncode == 0, added.stderr


def test_bad_directories_are_one_clear_error(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("not a directory")
    with pytest.raises(ConfigError, match="is a file; name a directory"):
        init_deployment(afile)
    half = tmp_path / "half"
    init_deployment(half)
    (half / "ca.key").unlink()
    with pytest.raises(ConfigError, match="only one of ca.pem and ca.key"):
        init_deployment(half)
    broken = tmp_path / "broken"
    init_deployment(broken)
    (broken / "ca.key").write_text("garbage")
    with pytest.raises(ConfigError, match="not a readable unencrypted PEM private key"):
        init_deployment(broken, devices=["kp-a-001"])
    result = subprocess.run([sys.executable, "-m", "pinkrelay", "certs", "init", str(afile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is a file; name a directory" in result.stderr
    assert "Traceback" not in result.stderr


@trio_test
async def test_the_relay_certificate_serves_the_control_room_to_a_client_that_trusts_only_the_ca(tmp_path):
    pki = tmp_path / "pki"
    init_deployment(pki, hosts=("127.0.0.1",))
    async with running_relay(tmp_path / "var") as relay, trio.open_nursery() as nursery:
        room = await nursery.start(lambda task_status: serve_web(
            relay, pinkrelay.Address("127.0.0.1", 0), certfile=str(pki / "relay.pem"),
            keyfile=str(pki / "relay.key"), task_status=task_status))
        assert room.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with httpx.AsyncClient(verify=trusting) as client:
            response = await client.get(room.url + "/signin")
        assert response.status_code == 200
        stranger = tmp_path / "other"
        init_deployment(stranger, hosts=("127.0.0.1",))
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(stranger / "ca.pem"))) as client:
            with pytest.raises(httpx.ConnectError) as refused:
                await client.get(room.url + "/signin")
        causes = []
        error: BaseException | None = refused.value
        while error is not None:
            causes.append(error)
            error = error.__cause__ or error.__context__
        assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
        nursery.cancel_scope.cancel()
