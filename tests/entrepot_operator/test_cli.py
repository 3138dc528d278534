"""The operator's command line contract."""

from __future__ import annotations

import subprocess
import sys

from entrepot_operator.crd import crd_yaml


def test_crds_prints_the_generated_crd() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entrepot_operator.cli", "crds"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == crd_yaml()


def test_run_without_a_cluster_fails_clearly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entrepot_operator.cli", "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "KUBECONFIG": "/nonexistent/kubeconfig",
            "HOME": "/nonexistent",
        },
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "kubeconfig" in done.stderr.lower()
