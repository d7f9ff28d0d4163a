"""A deployment's private certificates: one CA, the relay's certificate, one per device.

``pinkrelay certs init DIR`` calls ``init_deployment``. Everything a police IT
team needs to run TLS without a public CA, made with ``cryptography``:

    DIR/ca.pem, ca.key          the deployment's CA (keep ca.key offline once devices are issued)
    DIR/relay.pem, relay.key    the relay's server certificate, for every --host name and address
    DIR/devices/ID.pem, ID.key  one client certificate per button (CN = button id)

Keys are ECDSA P-256 (cheap handshakes on small devices), written 0600;
nothing that exists is overwritten, so running it again after the registry
grew issues certificates only for the new buttons, under the same CA. A
certificate's identity is checked by the relay against the registry; the
file names and the CN say which device a certificate belongs to.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError

CA_DAYS = 3650
RELAY_DAYS = 825
DEVICE_DAYS = 1825


@dataclass
class Issued:
    """What ``init_deployment`` made (paths), and what it found already there."""

    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def init_deployment(
    directory: Path | str,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    devices: Iterable[str] = (),
    organisation: str = "pinkrelay deployment",
    now: datetime.datetime | None = None,
) -> Issued:
    """Make (or complete) a deployment's CA, relay certificate and device certificates."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"certificate directory {root} is a file; name a directory")
    if not hosts:
        raise ConfigError("the relay certificate needs at least one --host (a DNS name or an IP address)")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    issued = Issued()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / "devices").mkdir(exist_ok=True, mode=0o700)
    except OSError as error:
        raise ConfigError(f"certificate directory {root}: {error.strerror or error}") from None
    ca_cert_path, ca_key_path = root / "ca.pem", root / "ca.key"
    if ca_cert_path.exists() != ca_key_path.exists():
        raise ConfigError(f"{root} has only one of ca.pem and ca.key; restore the other or start a new directory")
    if ca_cert_path.exists():
        ca_key = _read_key(ca_key_path)
        ca_cert = _read_cert(ca_cert_path)
        issued.kept.append(ca_cert_path)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} CA")])
        ca_cert = (
            _builder(name, name, ca_key.public_key(), now, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(ca_key_path, _key_pem(ca_key), private=True)
        _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
        issued.created.append(ca_cert_path)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    _issue(root / "relay", ca_cert, ca_key, hosts[0], organisation, now, RELAY_DAYS,
           ExtendedKeyUsageOID.SERVER_AUTH, names, issued)
    for device in devices:
        _issue(root / "devices" / device, ca_cert, ca_key, device, organisation, now, DEVICE_DAYS,
               ExtendedKeyUsageOID.CLIENT_AUTH, [], issued)
    return issued


def _issue(stem: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
           organisation: str, now: datetime.datetime, days: int, usage: x509.ObjectIdentifier,
           alt_names: list[x509.GeneralName], issued: Issued) -> None:
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    if cert_path.exists():
        issued.kept.append(cert_path)
        return
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    issued.created.append(cert_path)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little behind still accept it
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not a readable unencrypted PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: the CA key must be an EC key, as 'pinkrelay certs init' makes it")
    return key


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: not a readable PEM certificate ({error})") from None


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
