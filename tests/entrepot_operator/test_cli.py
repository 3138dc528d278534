"""The operator's command line contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from entrepot_operator.crd import all_crds_yaml, crd_yaml
from entrepot_operator.kinds import MODULE_MIRROR, NPM_MIRROR


def test_crds_prints_the_generated_crds() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "entrepot_operator.cli", "crds"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == all_crds_yaml()
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(done.stdout)]
    assert names == ["modulemirrors.entrepot.dev", "npmmirrors.entrepot.dev"]


def test_crds_out_writes_one_file_per_kind(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "entrepot_operator.cli", "crds", "--out", str(tmp_path / "crds")],
        capture_output=True,
        check=True,
        timeout=60,
    )
    tmp_path /= "crds"  # made when missing
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "entrepot.dev_modulemirrors.yaml",
        "entrepot.dev_npmmirrors.yaml",
    ]
    assert (tmp_path / "entrepot.dev_npmmirrors.yaml").read_text() == crd_yaml(NPM_MIRROR)
    assert (tmp_path / "entrepot.dev_modulemirrors.yaml").read_text() == crd_yaml(MODULE_MIRROR)


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
