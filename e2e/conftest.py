"""End-to-end fixtures: a real Kubernetes API, from a kubeconfig or started here.

With ``ENTREPOT_E2E_KUBECONFIG`` set, the suite runs against that cluster (for example a kind
cluster, see e2e/kind/). Otherwise it builds (once, cached) and starts the local control plane
of e2e/cluster/ for the session, and stops it by PID afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "cluster"))

import controlplane  # noqa: E402
import toolchain  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[controlplane.ControlPlane | None]:
    """The control plane this session started, or None for an external cluster."""
    if os.environ.get("ENTREPOT_E2E_KUBECONFIG"):
        yield None
        return
    if toolchain.missing():
        subprocess.run([sys.executable, str(HERE / "cluster" / "toolchain.py")], check=True)
    started = time.monotonic()
    plane = controlplane.start()
    plane_start_seconds = time.monotonic() - started
    os.environ["ENTREPOT_E2E_START_SECONDS"] = f"{plane_start_seconds:.1f}"
    try:
        yield plane
    finally:
        plane.stop()
        alive = [name for name, pid in plane.pids.items() if controlplane._alive(pid)]
        assert not alive, f"control plane processes left behind: {alive}"


@pytest.fixture(scope="session")
def kubeconfig(control_plane: controlplane.ControlPlane | None) -> str:
    if control_plane is None:
        return os.environ["ENTREPOT_E2E_KUBECONFIG"]
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def bins() -> Path:
    """kubectl and helm: ours when built, else from PATH (for kind users)."""
    return toolchain.bin_dir()


Kube = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kube(kubeconfig: str, bins: Path) -> Kube:
    """The real kubectl (strict field validation, its default) as the cluster's admin; raises
    AssertionError with kubectl's stderr on failure, unless ``check=False``."""

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kubectl = str(bins / "kubectl") if (bins / "kubectl").exists() else "kubectl"
        done = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    return run
