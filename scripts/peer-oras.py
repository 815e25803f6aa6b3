"""Run oras-py's own test suite (it ships in the oras wheel) against pocketkube's registry.

Usage (from the repository): .venv/bin/python scripts/peer-oras.py [pytest args...]
                              e.g. `make peer-oras ARGS="-k push -x"`

oras-py's CI runs its tests twice against one registry: anonymous over plain HTTP, and with basic auth
over TLS (a self-signed certificate: the tests pass tls_verify=False). This does the same with two fresh
`pocketkube registry` processes on loopback, the second with an htpasswd file (bcrypt) and a certificate
for 127.0.0.1. oras, pytest and pytest-timeout are installed into ORAS_DIR (default /tmp/oras) on first use.

Left out, and why:
- tests that talk to ghcr.io (this machine has no internet access);
- test_chunked_push: after a small chunked push (which the plain-HTTP pass covers through the other
  chunked tests) it pushes a 16 GB sparse file, which takes longer than the suite's timeout here;
- tests/auth: unit tests of oras's AWS ECR token helper (they need boto3 and no registry).
The exit code is the first failing pass's pytest exit code.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

from cluster import free_port  # noqa: E402

from selfsigned import self_signed  # noqa: E402

ORAS_VERSION = "0.2.43"
ORAS_DIR = Path(os.environ.get("ORAS_DIR", "/tmp/oras"))
USER, PASSWORD = "myuser", "mypass"  # oras's tests default to these
DESELECT = ["test_get_many_tags", "test_ssl_no_verify", "test_ssl_verify_fails_if_bad_ca",
            "test_ssl_verify_fails_fast_if_bad_ca", "test_chunked_push"]


def install_suite() -> Path:
    """The installed oras package's tests directory, in a virtualenv of their own."""
    python = ORAS_DIR / "v" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ORAS_DIR / "v")], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"oras=={ORAS_VERSION}", "pytest", "pytest-timeout"],
                   check=True)
    found = subprocess.run([str(python), "-c", "import oras.tests, os; print(os.path.dirname(oras.tests.__file__))"],
                           check=True, capture_output=True, text=True)
    return Path(found.stdout.strip())


def start_registry(work: Path, *extra: str, scheme: str = "http") -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pocketkube"), "registry", "--listen",
                               f"127.0.0.1:{port}", "--data-dir", str(work / "data"), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # the test certificate is self-signed
    while True:
        try:
            # 401 with auth on: the registry answers, which is all that is waited for
            urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/", timeout=1, context=context)
            return server, port
        except urllib.error.HTTPError:
            return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("pocketkube registry did not start") from None
            time.sleep(0.1)


def run_pass(tests: Path, port: int, auth: bool, args: list[str]) -> int:
    env = {**os.environ, "ORAS_HOST": "127.0.0.1", "ORAS_PORT": str(port)}
    if auth:
        env.update(ORAS_AUTH="true", ORAS_USER=USER, ORAS_PASS=PASSWORD)
    selection = " and ".join(f"not {name}" for name in DESELECT)
    print(f"--- oras {ORAS_VERSION} tests, {'basic auth over TLS' if auth else 'anonymous over HTTP'}", flush=True)
    return subprocess.run([str(ORAS_DIR / "v" / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider",
                           "-W", "ignore::pytest.PytestUnknownMarkWarning", "--timeout", "120", "-rfs",
                           "--ignore", str(tests / "auth"), "-k", selection, str(tests), *args],
                          cwd=tests, env=env).returncode


def main() -> int:
    tests = install_suite()
    codes = []
    with tempfile.TemporaryDirectory(prefix="pocketkube-oras-") as scratch:
        anonymous_dir, secured_dir = Path(scratch) / "anonymous", Path(scratch) / "secured"
        secured_dir.mkdir(parents=True)
        cert, key = self_signed(secured_dir)
        htpasswd = secured_dir / "htpasswd"
        htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt()).decode()}\n")
        for directory, extra, auth in (
                (anonymous_dir, [], False),
                (secured_dir, ["--htpasswd", str(htpasswd), "--tls-cert", str(cert), "--tls-key", str(key)], True)):
            server, port = start_registry(directory, *extra, scheme="https" if auth else "http")
            try:
                codes.append(run_pass(tests, port, auth, sys.argv[1:]))
            finally:
                server.terminate()
                server.wait(timeout=30)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
