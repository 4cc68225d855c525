"""Throwaway X.509 material for TLS tests: a CA and certificates it signs.

Needs the ``cryptography`` package (a dev dependency). Keys are EC P-256,
valid for a day; enough for a test's nats-server and its clients, and for a
test session's kube-apiserver (its client certificates name a user and, in the
organisations, its groups, as Kubernetes reads them).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Issued", "KeyPair", "TestCa", "server_tls", "signing_key"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM."""

    cert: bytes
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyPair:
    """A key pair without a certificate, PEM (public: SubjectPublicKeyInfo)."""

    public: bytes
    private: bytes = field(repr=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TestCa:
    """A self-signed CA; ``issue`` signs a certificate for 127.0.0.1."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordshard test CA")])
        self._cert = (
            self._builder(self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(
        self, common_name: str = "127.0.0.1", *, organizations: tuple[str, ...] = ()
    ) -> Issued:
        """A certificate for 127.0.0.1 (and ``localhost``); ``organizations`` are its O=
        attributes, which kube-apiserver reads as the user's groups."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
            ]
        )
        cert = (
            self._builder(subject, key.public_key())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(cert=cert.public_bytes(serialization.Encoding.PEM), key=_key_pem(key))


def signing_key() -> KeyPair:
    """A bare EC key pair, e.g. the key service-account tokens are signed with."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public=public, private=_key_pem(key))


def server_tls(ca: TestCa, directory: Path, *, verify: bool) -> str:
    """A nats-server ``tls`` block with a certificate ``ca`` signs for 127.0.0.1.

    ``verify``: demand a client certificate signed by ``ca`` (mutual TLS).
    The PEM files are written into ``directory``.
    """
    issued = ca.issue()
    cert, key, trust = directory / "server.crt", directory / "server.key", directory / "ca.crt"
    cert.write_bytes(issued.cert)
    key.write_bytes(issued.key)
    trust.write_bytes(ca.cert)
    mutual = f', ca_file: "{trust}", verify: true' if verify else ""
    return f'tls {{ cert_file: "{cert}", key_file: "{key}"{mutual} }}'
