"""Acting as a ServiceAccount from a test: a kubeconfig with a TokenRequest token."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

Kube = Callable[..., subprocess.CompletedProcess[str]]


def service_account_kubeconfig(
    kube: Kube, kubeconfig: str, folder: Path, *, account: str, namespace: str
) -> str:
    """A kubeconfig that acts as that ServiceAccount (a TokenRequest token): neither kopf nor
    the Python client honours a kubeconfig's impersonation fields."""
    token = kube("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(Path(kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path = folder / "operator.kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": account, "context": {"cluster": cluster["name"], "user": account}}
                ],
                "current-context": account,
            }
        )
    )
    return str(path)
