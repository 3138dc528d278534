#!/usr/bin/env python3
"""Start and stop a real Kubernetes control plane on 127.0.0.1, without Docker.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods
become Ready without running anything), all on free loopback ports, with a self-made PKI,
data in a temporary folder, and a kubeconfig for an admin in ``system:masters``. Fake Nodes
and a pool of PersistentVolumes are registered, so Deployments roll out and PVC-backed pods
schedule. Processes are stopped by the PIDs this module started.

    python3 e2e/cluster/controlplane.py up      # start in the background; last line: kubeconfig
    python3 e2e/cluster/controlplane.py down    # stop exactly what `up` started

The pytest fixture (e2e/conftest.py) uses :func:`start` / :meth:`ControlPlane.stop` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolchain

STATE = Path(os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")) / (
    "cluster-state.json"
)
NODES = 3
PERSISTENT_VOLUMES = 30


def say(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# PKI


def _pki(folder: Path) -> None:
    """A CA, the apiserver's serving cert, client certs, and the service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(name: str, k: ec.EllipticCurvePrivateKey) -> None:
        (folder / name).write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("entrepot-e2e-ca"))
        .issuer_name(name("entrepot-e2e-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_key("ca.key", ca_key)
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, subject: x509.Name, *, server: bool) -> None:
        k = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        write_key(f"{stem}.key", k)
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    issue("apiserver", name("kube-apiserver"), server=True)
    issue("admin", name("entrepot-e2e-admin", "system:masters"), server=False)
    issue("controller-manager", name("system:kube-controller-manager"), server=False)
    issue("scheduler", name("system:kube-scheduler"), server=False)
    write_key("sa.key", key())
    sa = serialization.load_pem_private_key((folder / "sa.key").read_bytes(), None)
    (folder / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def kubeconfig(folder: Path, server: str, user: str) -> str:
    """A kubeconfig with embedded (inline) credentials, so it can be copied anywhere."""
    import base64

    def b64(name: str) -> str:
        return base64.b64encode((folder / name).read_bytes()).decode()

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "entrepot-e2e",
                    "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(f"{user}.crt"),
                        "client-key-data": b64(f"{user}.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "entrepot-e2e", "context": {"cluster": "entrepot-e2e", "user": user}}
            ],
            "current-context": "entrepot-e2e",
        },
        indent=2,
    )


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class ControlPlane:
    folder: str
    kubeconfig: str
    server: str
    pids: dict[str, int] = field(default_factory=dict)
    owns_folder: bool = True

    def stop(self, timeout: float = 10) -> None:
        """Stop every process we started, newest first, one at a time: the apiserver must be
        gone before etcd, or its graceful shutdown hangs on a missing etcd. SIGTERM, then
        SIGKILL after ``timeout``; children are reaped so nothing is left, not even a zombie."""
        for name, pid in reversed(list(self.pids.items())):
            if not _alive(pid):
                continue
            say(f"stopping {name} (pid {pid})")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _gone_within(pid, timeout):
                say(f"{name} ignored SIGTERM for {timeout:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _gone_within(pid, 10)
        if self.owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids.values():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that is not our child
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _die_with_parent() -> None:
    """Child side: die when the process that started us dies (pytest killed hard).

    SIGKILL, not SIGTERM: all of them get it at once, and an apiserver shutting down
    gracefully while etcd vanishes hangs. A throwaway cluster needs no graceful end.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(plane: ControlPlane, name: str, args: list[str], *, tie: bool) -> None:
    log = open(Path(plane.folder) / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for pytest reaches us, then we stop them
        preexec_fn=_die_with_parent if tie else None,  # noqa: PLW1509
        cwd=plane.folder,
    )
    log.close()
    plane.pids[name] = proc.pid
    say(f"started {name} (pid {proc.pid})")


def _wait(
    what: str, probe: Callable[[], object], timeout: float, plane: ControlPlane, name: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(plane.pids[name]):
            log = (Path(plane.folder) / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; the end of its log:\n{log}")
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.2)
    log = (Path(plane.folder) / f"{name}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s; the end of {name}'s log:\n{log}")


def _https_ok(url: str, pki: Path, *, client: bool) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # kcm/scheduler serve a self-signed cert of their own
    with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
        return bool(r.status == 200)


def start(folder: Path | None = None, *, tie_to_parent: bool = True) -> ControlPlane:
    """Start everything, wait until it is ready, register nodes and volumes."""
    missing = toolchain.missing()
    if missing:
        raise RuntimeError(
            f"not built: {' '.join(missing)}; run `python3 e2e/cluster/toolchain.py` first"
        )
    bins = toolchain.bin_dir()
    root = folder or Path(tempfile.mkdtemp(prefix="entrepot-cluster-"))
    pki = root / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    _pki(pki)
    ports = {n: free_port() for n in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok")}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    for user in ("admin", "controller-manager", "scheduler"):
        (root / f"{user}.kubeconfig").write_text(kubeconfig(pki, server, user))
    plane = ControlPlane(folder=str(root), kubeconfig=str(root / "admin.kubeconfig"), server=server)
    started = time.monotonic()
    try:
        _spawn(
            plane,
            "etcd",
            [
                str(bins / "etcd"),
                "--name=e2e",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=e2e=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
            tie=tie_to_parent,
        )
        _wait(
            "etcd",
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{ports['etcd']}/health", timeout=2).status
                == 200
            ),
            30,
            plane,
            "etcd",
        )
        _spawn(
            plane,
            "kube-apiserver",
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
            tie=tie_to_parent,
        )
        _wait(
            "kube-apiserver",
            lambda: _https_ok(f"{server}/readyz", pki, client=True),
            90,
            plane,
            "kube-apiserver",
        )
        allow = "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"
        _spawn(
            plane,
            "kube-controller-manager",
            [
                str(bins / "kube-controller-manager"),
                f"--kubeconfig={root / 'controller-manager.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kcm']}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--use-service-account-credentials=true",
                f"--cert-dir={root / 'kcm-certs'}",
                allow,
                "--v=1",
            ],
            tie=tie_to_parent,
        )
        _spawn(
            plane,
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={root / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                f"--cert-dir={root / 'scheduler-certs'}",
                allow,
                "--v=1",
            ],
            tie=tie_to_parent,
        )
        stages = toolchain.stages_dir()
        _spawn(
            plane,
            "kwok",
            [
                str(bins / "kwok"),
                f"--kubeconfig={plane.kubeconfig}",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                # Heartbeat through node Leases, or the node controller marks every node
                # NotReady after its grace period (~50 s) and their pods unready.
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                *[f"--config={p}" for p in sorted(stages.glob("*.yaml"))],
            ],
            tie=tie_to_parent,
        )
        _wait(
            "kube-controller-manager",
            lambda: _https_ok(f"https://127.0.0.1:{ports['kcm']}/healthz", pki, client=False),
            60,
            plane,
            "kube-controller-manager",
        )
        _wait(
            "kube-scheduler",
            lambda: _https_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", pki, client=False),
            60,
            plane,
            "kube-scheduler",
        )
        _register(plane)
    except BaseException:
        plane.stop()
        raise
    say(f"control plane ready in {time.monotonic() - started:.1f}s at {server}")
    return plane


def _register(plane: ControlPlane) -> None:
    """Fake nodes for kwok, a default StorageClass and a pool of volumes for PVCs."""
    kubectl = [str(toolchain.bin_dir() / "kubectl"), f"--kubeconfig={plane.kubeconfig}"]
    objects: list[dict[str, object]] = []
    for i in range(NODES):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{i}",
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": f"kwok-node-{i}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                        "topology.kubernetes.io/zone": f"zone-{i % 3}",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
        )
    objects.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "standard",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "Immediate",
        }
    )
    for i in range(PERSISTENT_VOLUMES):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"pv-{i:03d}"},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": "standard",
                    "hostPath": {"path": f"/tmp/entrepot-e2e-pv/{i:03d}"},
                },
            }
        )
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--field-manager=entrepot-e2e", "-f", "-"],
        input=manifest,
        text=True,
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            [*kubectl, "get", "nodes", "-o", "json"], capture_output=True, text=True, check=True
        ).stdout
        ready = [
            n
            for n in json.loads(out)["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        if len(ready) == NODES:
            return
        time.sleep(0.2)
    raise RuntimeError("kwok did not mark the fake nodes Ready within 30s")


# ---------------------------------------------------------------------------------------------
# Command line (make cluster-up / cluster-down)


def up() -> int:
    if STATE.exists():
        state = json.loads(STATE.read_text())
        if all(_alive(pid) for pid in state["pids"].values()):
            say("already running")
            print(state["kubeconfig"])
            return 0
        ControlPlane(**state).stop()
        STATE.unlink()
    if toolchain.missing():
        say("building what is missing (minutes on a cold cache)")
        subprocess.run([sys.executable, str(Path(toolchain.__file__))], check=True)
    plane = start(tie_to_parent=False)
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(asdict(plane)))
    say(f"memory of the control plane: {plane.rss_bytes() / 2**20:.0f} MiB RSS")
    print(plane.kubeconfig)
    return 0


def down() -> int:
    if not STATE.exists():
        say("nothing to stop")
        return 0
    ControlPlane(**json.loads(STATE.read_text())).stop()
    STATE.unlink()
    say("stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="a local Kubernetes control plane")
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args()
    return up() if args.action == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
