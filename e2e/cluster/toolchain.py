#!/usr/bin/env python3
"""Build the real Kubernetes control plane, etcd, kwok and helm from Go modules.

Idempotent: each tool is built once per pinned version into a cache folder outside the
repository (``$ENTREPOT_CACHE`` or ``~/.cache/entrepot``), ``k8s-<version>/bin``; a tool whose
binary and version stamp are present is skipped. Uses the machine's go toolchain
(``GOTOOLCHAIN=local``) and whatever module proxy the user's go is configured with.

    python3 e2e/cluster/toolchain.py            # build what is missing, print the bin folder
    python3 e2e/cluster/toolchain.py --check    # exit 1 if anything is missing, build nothing

The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs come the same way: its Go
module at PROMETHEUS_OPERATOR, copied out of the module cache (``monitoring_crds()``), so the
chart's monitoring objects are checked against the real schemas, not a copy kept in this repo.

Why wrapper modules: ``go install k8s.io/kubernetes/cmd/kube-apiserver@vX`` fails because
k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local folders.
A small module that requires k8s.io/kubernetes and replaces every staging module with its
published v0.X.Y builds the same code. etcd's server module has the same shape.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

KUBERNETES = "v1.36.3"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
HELM = "v3.21.4"
PROMETHEUS_OPERATOR = "v0.94.0"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
MONITORING_CRDS = (
    "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
    "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
)


def cache_root() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / f"k8s-{KUBERNETES}"


def bin_dir() -> Path:
    return cache_root() / "bin"


def stages_dir() -> Path:
    return cache_root() / "kwok-stages"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"})
    env.setdefault("GOWORK", "off")
    return env


def say(message: str) -> None:
    print(f"[toolchain] {message}", flush=True)


def run(cmd: list[str], *, cwd: Path | None = None, label: str) -> str:
    """Run a go command, printing a heartbeat (these builds take minutes on 2 cores)."""
    started = time.monotonic()
    say(f"{label}: {' '.join(cmd)}")
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            say(f"{label}: {time.monotonic() - started:.0f}s, {len(lines)} lines of output")

    threading.Thread(target=heartbeat, daemon=True).start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
    code = proc.wait()
    done.set()
    if code != 0:
        tail = "\n".join(lines[-40:])
        raise SystemExit(f"[toolchain] {label} failed (exit {code}):\n{tail}")
    say(f"{label}: done in {time.monotonic() - started:.0f}s")
    return "\n".join(lines)


def module_info(path: str, version: str) -> dict[str, str]:
    """``go mod download -json`` of one module version: its "Dir", "GoMod", ... (cached by go
    in its module cache; verified against the checksum database the user's go consults)."""
    cmd = ["go", "mod", "download", "-json", f"{path}@{version}"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    try:
        info: dict[str, str] = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        info = {"Error": out.stdout.strip()}
    if out.returncode != 0 or "Error" in info:
        raise SystemExit(
            f"[toolchain] cannot download {path}@{version}:"
            f" `GOTOOLCHAIN=local GOFLAGS=-mod=mod {' '.join(cmd)}`"
            f" exited {out.returncode}: {info.get('Error', '')}\n{out.stderr.strip()}".rstrip()
        )
    return info


def _stamp_ok(name: str, version: str) -> bool:
    stamp = bin_dir() / f".{name}.version"
    return (bin_dir() / name).is_file() and stamp.is_file() and stamp.read_text().strip() == version


def _stamp(name: str, version: str) -> None:
    (bin_dir() / f".{name}.version").write_text(version + "\n")


def wrapper_go_mod(*, module: str, requires: str, version: str, upstream_mod: str) -> str:
    """A go.mod requiring ``requires@version`` with every local replace of its own go.mod
    turned into a published version (derived, not hard-coded: the list changes by release)."""
    go_line = re.search(r"^go (\S+)$", upstream_mod, re.M)
    godebug = re.findall(r"^godebug .*$", upstream_mod, re.M)
    lines = [f"module {module}", "", f"go {go_line.group(1) if go_line else '1.26'}"]
    lines += godebug
    lines += ["", f"require {requires} {version}", ""]
    staging_version = (
        "v0." + version.removeprefix("v1.") if requires.startswith("k8s.io/") else version
    )
    for path, target in re.findall(
        r"^\s*(\S+)\s*=>\s*(\S+)\s*$", _replace_block(upstream_mod), re.M
    ):
        # Local sibling modules (k8s staging/, etcd ../api, ...), not guards such as etcd's
        # "=> ./FORBIDDEN_DEPENDENCY" for modules that must never be required.
        if target.startswith(("./staging/", "../")):
            lines.append(f"replace {path} => {path} {staging_version}")
    return "\n".join(lines) + "\n"


def _replace_block(text: str) -> str:
    out = []
    for block in re.findall(r"^replace \(\n(.*?)^\)", text, re.M | re.S):
        out.append(block)
    out += list(re.findall(r"^replace (\S+ => \S+)$", text, re.M))
    return "\n".join(out)


def wrapper_module(name: str, requires: str, version: str) -> Path:
    """Write the wrapper module for ``requires@version`` and return its folder."""
    upstream = Path(module_info(requires, version)["GoMod"]).read_text()
    src = cache_root() / "src" / name
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        wrapper_go_mod(
            module=f"entrepot.local/build/{name}",
            requires=requires,
            version=version,
            upstream_mod=upstream,
        )
    )
    return src


def build_kubernetes() -> None:
    if all(_stamp_ok(c, KUBERNETES) for c in KUBE_COMMANDS):
        say(f"kubernetes {KUBERNETES}: already built")
        return
    src = wrapper_module("kubernetes", "k8s.io/kubernetes", KUBERNETES)
    major, minor = KUBERNETES.removeprefix("v").split(".")[:2]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={date}",
        ]
    bin_dir().mkdir(parents=True, exist_ok=True)
    run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w " + " ".join(flags), "-o", str(bin_dir())]
        + [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS],
        cwd=src,
        label=f"kubernetes {KUBERNETES}",
    )
    for c in KUBE_COMMANDS:
        _stamp(c, KUBERNETES)


def build_etcd() -> None:
    if _stamp_ok("etcd", ETCD):
        say(f"etcd {ETCD}: already built")
        return
    src = wrapper_module("etcd", "go.etcd.io/etcd/server/v3", ETCD)
    bin_dir().mkdir(parents=True, exist_ok=True)
    run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(bin_dir() / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        cwd=src,
        label=f"etcd {ETCD}",
    )
    _stamp("etcd", ETCD)


def build_kwok() -> None:
    if _stamp_ok("kwok", KWOK) and all(
        (stages_dir() / Path(s).name).is_file() for s in KWOK_STAGES
    ):
        say(f"kwok {KWOK}: already built")
        return
    bin_dir().mkdir(parents=True, exist_ok=True)
    env_bin = ["env", f"GOBIN={bin_dir()}"]
    run(
        [*env_bin, "go", "install", "-trimpath", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}"],
        label=f"kwok {KWOK}",
    )
    info = module_info("sigs.k8s.io/kwok", KWOK)
    stages_dir().mkdir(parents=True, exist_ok=True)
    for stage in KWOK_STAGES:
        shutil.copyfile(Path(info["Dir"]) / stage, stages_dir() / Path(stage).name)
    _stamp("kwok", KWOK)


def build_helm() -> None:
    if _stamp_ok("helm", HELM):
        say(f"helm {HELM}: already built")
        return
    major, minor = KUBERNETES.removeprefix("v").split(".")[:2]
    flags = " ".join(
        f"-X helm.sh/helm/v3/{pkg}.k8sVersion{part}={value}"
        for pkg in ("pkg/chartutil", "pkg/lint/rules")
        for part, value in (("Major", major), ("Minor", minor))
    )
    flags += f" -X helm.sh/helm/v3/internal/version.version={HELM}"
    bin_dir().mkdir(parents=True, exist_ok=True)
    run(
        [
            "env",
            f"GOBIN={bin_dir()}",
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            f"-s -w {flags}",
            f"helm.sh/helm/v3/cmd/helm@{HELM}",
        ],
        label=f"helm {HELM}",
    )
    _stamp("helm", HELM)


def monitoring_crds_dir() -> Path:
    return cache_root() / f"prometheus-operator-{PROMETHEUS_OPERATOR}-crds"


def monitoring_crds() -> list[Path]:
    """The ServiceMonitor and PrometheusRule CRDs of the Prometheus Operator at
    PROMETHEUS_OPERATOR, downloaded (once) with the go command.

    Copied out of the module cache into the tools' cache folder, so a later call needs neither
    go nor the network. Raises SystemExit with the go command and its error when it cannot.
    """
    folder = monitoring_crds_dir()
    paths = [folder / Path(name).name for name in MONITORING_CRDS]
    if all(p.is_file() for p in paths):
        return paths
    module = "github.com/prometheus-operator/prometheus-operator"
    source = Path(module_info(module, PROMETHEUS_OPERATOR)["Dir"])
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in zip(MONITORING_CRDS, paths, strict=True):
        if not (source / name).is_file():
            raise SystemExit(f"[toolchain] {module}@{PROMETHEUS_OPERATOR} has no {name}")
        partial = target.with_suffix(".part")
        shutil.copyfile(source / name, partial)
        partial.replace(target)  # never a half-written CRD for the next caller
    return paths


def fetch_monitoring_crds() -> None:
    for path in monitoring_crds():
        say(f"prometheus-operator {PROMETHEUS_OPERATOR}: {path}")


STEPS = {
    "kwok": build_kwok,
    "helm": build_helm,
    "etcd": build_etcd,
    "kubernetes": build_kubernetes,
    "monitoring-crds": fetch_monitoring_crds,
}


def missing() -> list[str]:
    names = [*KUBE_COMMANDS]
    versions = dict.fromkeys(KUBE_COMMANDS, KUBERNETES) | {"etcd": ETCD, "kwok": KWOK, "helm": HELM}
    names += ["etcd", "kwok", "helm"]
    return [n for n in names if not _stamp_ok(n, versions[n])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="report what is missing, build nothing"
    )
    parser.add_argument("only", nargs="*", choices=[*STEPS, []], help="build only these")
    args = parser.parse_args()
    if args.check:
        gone = missing()
        print("missing: " + " ".join(gone) if gone else f"all built in {bin_dir()}")
        return 1 if gone else 0
    started = time.monotonic()
    for name in args.only or list(STEPS):
        STEPS[name]()
    say(f"all tools ready in {time.monotonic() - started:.0f}s")
    print(bin_dir())
    return 0


if __name__ == "__main__":
    sys.exit(main())
