"""Acting as a ServiceAccount from a test: a kubeconfig with a TokenRequest token."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "entrepot"
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


def get(kube: Kube, *args: str) -> dict[str, Any]:
    """``kubectl get … -o json``, parsed."""
    found: dict[str, Any] = json.loads(kube("get", *args, "-o", "json").stdout)
    return found


def wait(probe: Callable[[], Any], timeout: float, what: str, *, every: float = 0.2) -> Any:
    """The first truthy answer of ``probe`` within ``timeout`` seconds; an AssertionError it
    raises (kubectl failing, an object not there yet) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as e:
            last = e
        if last and not isinstance(last, AssertionError):
            return last
        time.sleep(every)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last})")


def helm_install(
    kubeconfig: str, bins: Path, home: Path, values: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`helm upgrade --install --wait` of the chart as the release ``entrepot`` in
    ``entrepot-system``, the one the e2e modules share: each installs the values it needs
    (values not given are the chart's defaults)."""
    helm = str(bins / "helm") if (bins / "helm").exists() else "helm"
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "HELM_CACHE_HOME": str(home / "c"),
        "HELM_CONFIG_HOME": str(home / "f"),
        "HELM_DATA_HOME": str(home / "d"),
    }
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    return subprocess.run(
        [
            helm,
            "upgrade",
            "--install",
            "entrepot",
            str(CHART),
            "-n",
            "entrepot-system",
            "--create-namespace",
            *sets,
            "--wait",
            "--timeout",
            "90s",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
