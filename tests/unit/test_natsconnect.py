"""The worker's NATS credentials and TLS settings: files in, connect options out."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import nats.errors
import pytest

from coordshard_client import credentials
from coordshard_client.credentials import NatsFiles, refused
from coordshard_client.errors import CoordinateCredentialsError
from coordshard_operator.testing.certs import TestCa
from coordshard_service.__main__ import main
from coordshard_service.errors import ConfigError
from coordshard_service.natsconnect import connect_options
from coordshard_service.settings import ServiceSettings


def test_no_files_no_options() -> None:
    assert connect_options(ServiceSettings()) == {}


def test_files_become_options(tmp_path: Path) -> None:
    ca = TestCa()
    pair = ca.issue("worker")
    files = {"user.creds": b"-", "ca.crt": ca.cert, "tls.crt": pair.cert, "tls.key": pair.key}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    options = connect_options(
        ServiceSettings(
            nats_creds=str(tmp_path / "user.creds"),
            nats_tls_ca=str(tmp_path / "ca.crt"),
            nats_tls_cert=str(tmp_path / "tls.crt"),
            nats_tls_key=str(tmp_path / "tls.key"),
        )
    )
    assert options["user_credentials"] == str(tmp_path / "user.creds")
    assert isinstance(options["tls"], ssl.SSLContext)


def test_an_unreadable_file_names_the_setting_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nats_nkey_seed: cannot read .*nope"):
        connect_options(ServiceSettings(nats_nkey_seed=str(tmp_path / "nope")))
    (tmp_path / "bad.key").write_bytes(b"SUSECRET")
    (tmp_path / "ca.crt").write_bytes(TestCa().cert)
    with pytest.raises(ConfigError, match="not a PEM key pair") as e:
        connect_options(
            ServiceSettings(
                nats_tls_ca=str(tmp_path / "ca.crt"),
                nats_tls_cert=str(tmp_path / "ca.crt"),
                nats_tls_key=str(tmp_path / "bad.key"),
            )
        )
    assert "SUSECRET" not in str(e.value)


def test_a_certificate_without_its_key_is_an_invalid_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--nats-tls-cert", "/tls.crt"]) == 2
    assert "nats_tls_cert and nats_tls_key go together" in capsys.readouterr().err


def test_refusals_are_told_from_outages() -> None:
    assert refused(nats.errors.Error("nats: 'Authorization Violation'"))
    assert refused(nats.errors.AuthorizationError())
    assert refused(ssl.SSLCertVerificationError("certificate verify failed"))
    assert not refused(ConnectionRefusedError(111, "Connection refused"))
    assert not refused(nats.errors.NoServersError())


def test_an_nkey_without_the_nkeys_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user.nk").write_bytes(b"SU")
    monkeypatch.setitem(sys.modules, "nkeys", None)  # as if not installed: import fails
    files = NatsFiles(nkey_seed=str(tmp_path / "user.nk"))
    with pytest.raises(CoordinateCredentialsError, match="pip install nkeys") as e:
        credentials.connect_options(files)
    assert e.value.setting == "nkey_seed"
    with pytest.raises(ConfigError, match=r"nats_creds: .*needs the nkeys package"):
        connect_options(ServiceSettings(nats_creds=str(tmp_path / "user.nk")))
