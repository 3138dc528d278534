"""The image: built from the Dockerfile and run as the chart and the operator run it.

The Dockerfile is built by tests/support/image.py with what this machine has (a Docker engine,
else buildah with local bases; the layer cache makes a second build take seconds). Its
containers get what their pod specs say, rendered by the chart (``helm template``) and by the
operator's own render functions: the command and arguments, the user, a read-only root
filesystem, no capabilities, no privilege escalation, and a folder per volume. One deviation:
the host's network, so the mirror listens on 127.0.0.1 (its config's ``listen`` is rewritten)
and reaches the fixture upstream and git server there.

The first tests read the Dockerfile and .dockerignore as text (fast, no build).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helmchart import CHART, REPO, Manifest, one, render

import entrepot
from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.kinds import MODULE_MIRROR
from entrepot_operator.render import Owner
from support import image
from support.githttp import MOD, git_http_server, make_repo
from support.gocmd import GoClient
from support.servers import Server, stop_process

DOCKERFILE = (REPO / "Dockerfile").read_text()
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RUN_AS = 65532
MODFETCH = "/usr/local/go/src/cmd/go/internal/modfetch"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined (runs of blanks as one),
    comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def only(steps: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in steps if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def test_the_image_runs_the_mirror_by_default() -> None:
    steps = final_stage(DOCKERFILE)
    # tini as PID 1: orphaned git processes of a killed go command are reaped, not left to
    # the mirror's supervisor (an unknown child once crashed it, and every worker with it).
    assert json.loads(only(steps, "ENTRYPOINT")) == ["tini", "--", "entrepot"]
    assert json.loads(only(steps, "CMD")) == [
        "serve",
        "--listen",
        "0.0.0.0:8080",
        "--data",
        "/var/cache/entrepot",
    ]
    assert only(steps, "VOLUME") == "/var/cache/entrepot"
    assert only(steps, "EXPOSE") == "8080"
    assert "org.opencontainers.image.title" in only(steps, "LABEL")


def test_the_image_user_is_the_chart_user() -> None:
    user = only(final_stage(DOCKERFILE), "USER")
    assert user == f"{RUN_AS}:{RUN_AS}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == RUN_AS
    assert values["securityContext"]["runAsUser"] == RUN_AS
    assert values["podSecurityContext"]["runAsGroup"] == RUN_AS


def test_the_stages() -> None:
    steps = instructions(DOCKERFILE)
    args = image.dockerfile_args()
    assert args["GO_IMAGE"] == "golang:1.26-bookworm"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["${GO_IMAGE} AS go", "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = final_stage(DOCKERFILE)
    copies = [rest for word, rest in final if word == "COPY"]
    # The go command alone: the compilers of the toolchain (pkg/tool) stay out.
    assert copies == [
        "--from=go /usr/local/go/bin/go /usr/local/go/bin/go",
        "--from=go /usr/local/go/go.env /usr/local/go/VERSION /usr/local/go/",
        f"--from=go {MODFETCH}/key.go {MODFETCH}/sumdb.go {MODFETCH}/",
        "--from=build /opt/entrepot /opt/entrepot",
    ]
    run = " ".join(rest for word, rest in final if word == "RUN")
    assert re.search(r"apt-get install .*\bgit\b", run)
    assert re.search(r"apt-get install .*\btini\b", run)
    assert "rm -rf /var/lib/apt/lists/*" in run
    assert "mkdir -p /usr/local/go/pkg/tool" in run
    env = only(final, "ENV")
    assert "/opt/entrepot/bin" in env
    assert "/usr/local/go/bin" in env
    assert "GOTOOLCHAIN=local" in env


def test_the_project_is_installed_from_the_context_not_in_editable_mode() -> None:
    """Two steps: the dependencies (a layer that a source change keeps), then the project."""
    install = [
        rest for word, rest in instructions(DOCKERFILE) if word == "RUN" and "pip install" in rest
    ]
    assert len(install) == 2
    assert re.search(r"pip install --constraint constraints\.txt \.(\s|$)", install[0])
    assert re.search(r"pip install --no-deps --constraint constraints\.txt \.(\s|$)", install[1])
    assert "pip uninstall --yes pip setuptools" in install[1]
    for step in install:
        assert " -e " not in step
        assert "--editable" not in step
        # The machine's index settings reach pip as build secrets, in no layer.
        assert "--mount=type=secret,id=pip.conf,target=/etc/pip.conf" in step
    copied = [rest for word, rest in instructions(DOCKERFILE) if word == "COPY"]
    assert "pyproject.toml constraints.txt README.md ./" in copied
    assert {"proxy proxy", "operator operator"} <= set(copied)


def test_the_commands_the_image_and_chart_run_are_console_scripts() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["entrepot"] == "entrepot.cli:main"
    assert scripts["entrepot-operator"] == "entrepot_operator.cli:main"
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert packages == ["proxy/entrepot", "operator/entrepot_operator"]
    dependencies = " ".join(project["project"]["dependencies"])
    assert "kopf" in dependencies
    assert "kubernetes" in dependencies


def test_the_chart_default_image_tag_is_the_project_version(tmp_path: Path) -> None:
    """One version: pyproject.toml, the packages, the chart's appVersion (the image tag when
    `image.tag` is empty, its default), the Dockerfile's label and the tag make image gives."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert entrepot.__version__ == VERSION
    assert chart["appVersion"] == VERSION
    assert values["image"]["tag"] == ""
    assert values["image"]["digest"] == ""
    assert image.dockerfile_args()["VERSION"] == VERSION
    assert image.default_tag() == f"entrepot:{VERSION}"
    deployment = one(render(tmp_path), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{values['image']['repository']}:{VERSION}"


# --- .dockerignore -----------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: Go's filepath.Match per segment, plus `**` for any depth."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
            continue
        char = pattern[i]
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, with /) out of the build context. A pattern
    that matches a folder excludes what is in it; the last matching pattern wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if any(_regex(pattern).fullmatch(p) for p in prefixes):
            result = not negate
    return result


NEEDED = [
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "proxy/entrepot/__init__.py",
    "proxy/entrepot/cli.py",
    "proxy/entrepot/gomod/direct.py",
    "operator/entrepot_operator/__init__.py",
    "operator/entrepot_operator/render/deployment.py",
]
LEFT_OUT = [
    ".venv/bin/python",
    "data/go/example.com/@v/list",
    "tests/conftest.py",
    "tests/packaging/test_image.py",
    "bench/results/run.json",
    "proxy/entrepot/__pycache__/cli.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/CACHEDIR.TAG",
    ".hypothesis/examples/x",
    ".git/HEAD",
]


def test_the_matcher() -> None:
    assert ignored("a/b/__pycache__/c.pyc", ["**/__pycache__"])
    assert ignored("x.pyc", ["**/*.pyc"])
    assert not ignored("bench/run.sh", ["bench/results"])
    assert not ignored("data/keep", ["data", "!data/keep"])
    assert not ignored("database.py", ["data"])


@pytest.mark.parametrize("path", NEEDED)
def test_the_build_context_keeps_what_pip_install_needs(path: str) -> None:
    assert not ignored(path, dockerignore_patterns())


@pytest.mark.parametrize("path", LEFT_OUT)
def test_the_build_context_leaves_out_local_state(path: str) -> None:
    assert ignored(path, dockerignore_patterns())


def test_readme_is_in_the_context_because_pyproject_names_it() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["readme"] == "README.md"
    assert not ignored("README.md", dockerignore_patterns())


def test_no_source_file_of_the_packages_is_left_out() -> None:
    patterns = dockerignore_patterns()
    for root in ("proxy", "operator"):
        for path in (REPO / root).rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            assert not ignored(relative, patterns), relative


# --- the built image, run as its pods run it -------------------------------------------------

# What the image may weigh (510 MB on the local bases, see docs/image.md); a jump
# past this is a build tool, a cache or a toolchain that got in.
MAX_SIZE = 560_000_000
OWNER = Owner(name="gomods", namespace="builds", uid="1234-uid")
# The contents, as seen from inside by the image's own python: no compiler or build tool on
# PATH, the go command without the toolchain's compilers, no installer in the venv, no caches
# or package lists, and a root filesystem that refuses writes.
CONTENTS = r"""
import json, os, shutil, subprocess
from entrepot.config import go_env, parse_gosumdb, toolchain_sumdb_keys
def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else None
try:
    open("/write-probe", "w")
    root = "writable"
except OSError as e:
    root = e.strerror
print(json.dumps({
    "caches": {p: listing(p) for p in (
        "/root/.cache", "/var/lib/apt/lists", "/var/cache/apt/archives", "/src", "/tmp",
        "/var/cache/entrepot")},
    "uid": os.getuid(), "gid": os.getgid(), "root": root,
    "tools": {t: shutil.which(t) for t in (
        "gcc", "cc", "c++", "g++", "clang", "make", "cmake", "ld", "as", "cpp", "rustc",
        "pip", "pip3", "git", "go", "tini", "ssh", "entrepot", "entrepot-operator")},
    "goroot": listing("/usr/local/go"), "gotools": listing("/usr/local/go/pkg/tool"),
    "go": subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip(),
    "go_env": subprocess.run(["go", "env", "GOROOT", "GOTOOLCHAIN"], capture_output=True,
                             text=True, env={**os.environ, "HOME": "/tmp"}).stdout.split(),
    "venv": listing("/opt/entrepot/bin"),
    "modfetch": listing("/usr/local/go/src/cmd/go/internal/modfetch"),
    "sumdb": parse_gosumdb(go_env("GOSUMDB", os.environ), toolchain_sumdb_keys(os.environ)),
}))
"""


@pytest.fixture(scope="module")
def built() -> image.Built:
    """The image of this checkout (cached layers: seconds when nothing changed)."""
    reason = image.unavailable_reason()
    if reason:
        pytest.fail(f"the image cannot be built here: {reason}")
    try:
        return image.build(echo=False)
    except image.Unavailable as e:
        pytest.fail(f"the image was not built: {e}")


def container_of(
    pod: Manifest,
    *,
    image_ref: str,
    volumes: dict[str, Path],
    command: list[str] | None = None,
    args: list[str] | None = None,
) -> image.Container:
    """The pod's one container as the engine runs it: its command and arguments (unless
    replaced), its security context over the pod's, and each volume mount from the folder
    ``volumes`` gives for its volume (a ``subPath`` is a file or folder in it)."""
    [spec] = pod["containers"]
    security = {**pod.get("securityContext", {}), **spec.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    user = str(security["runAsUser"])
    if "runAsGroup" in security:
        user += f":{security['runAsGroup']}"
    mounts = [
        image.Mount(
            volumes[m["name"]] / m.get("subPath", ""),
            m["mountPath"],
            read_only=bool(m.get("readOnly")),
        )
        for m in spec.get("volumeMounts", [])
    ]
    mounted = {m["name"] for m in spec.get("volumeMounts", [])}
    assert mounted == {v["name"] for v in pod.get("volumes", [])}
    return image.Container(
        image=image_ref,
        entrypoint=command if command is not None else spec.get("command"),
        args=args if args is not None else list(spec.get("args", [])),
        user=user,
        read_only_root=bool(security["readOnlyRootFilesystem"]),
        drop_all_capabilities=security["capabilities"]["drop"] == ["ALL"],
        no_new_privileges=security["allowPrivilegeEscalation"] is False,
        mounts=mounts,
    )


def volume_folder(path: Path, *, mode: int = 0o777, owner: int | None = None) -> Path:
    """An emptyDir: world-writable as the kubelet makes it; or owned by ``owner`` (fsGroup)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner, owner)
    return path


def run_once(built: image.Built, container: image.Container) -> subprocess.CompletedProcess[str]:
    cmd = built.engine.run_command(container)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done


def operator_pod(tmp_path: Path) -> Manifest:
    """The chart's operator pod spec (helm template with the default values)."""
    deployment = one(render(tmp_path / "helm"), "Deployment")
    pod: Manifest = deployment["spec"]["template"]["spec"]
    return pod


@pytest.mark.integration
def test_the_image_is_this_version_and_small(built: image.Built) -> None:
    labels = built.engine.labels(built.image)
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == "entrepot"
    assert built.engine.size(built.image) < MAX_SIZE


@pytest.mark.integration
def test_the_commands_run_as_the_chart_runs_the_operator(
    built: image.Built, tmp_path: Path
) -> None:
    """The chart's operator container (uid and gid 65532, read-only root, /tmp an emptyDir)
    with its command replaced by --help; the mirror's entrypoint the same way."""
    pod = operator_pod(tmp_path)
    [spec] = pod["containers"]
    assert spec["command"] == ["entrepot-operator", "run"]
    volumes = {"tmp": volume_folder(tmp_path / "tmp")}
    operator = container_of(
        pod, image_ref=built.image, volumes=volumes, command=["entrepot-operator"], args=["--help"]
    )
    assert operator.read_only_root
    assert operator.user == f"{RUN_AS}:{RUN_AS}"
    assert "usage: entrepot-operator" in run_once(built, operator).stdout
    # The image's own entrypoint (tini -- entrepot), as the mirror pods have it.
    mirror = dataclasses.replace(operator, entrypoint=None, args=["--version"])
    assert run_once(built, mirror).stdout.strip() == f"entrepot {VERSION}"


@pytest.mark.integration
def test_the_image_holds_what_it_runs_and_nothing_to_build_with(
    built: image.Built, tmp_path: Path
) -> None:
    pod = operator_pod(tmp_path)
    volumes = {"tmp": volume_folder(tmp_path / "tmp")}
    probe = container_of(
        pod, image_ref=built.image, volumes=volumes, command=["python3"], args=["-c", CONTENTS]
    )
    report = json.loads(run_once(built, probe).stdout)
    assert (report["uid"], report["gid"]) == (RUN_AS, RUN_AS)
    assert report["root"] == "Read-only file system"
    tools = report["tools"]
    for tool in ("gcc", "cc", "c++", "g++", "clang", "make", "cmake", "ld", "as", "cpp", "rustc"):
        assert tools[tool] is None, f"{tool} in the image: {tools[tool]}"
    assert tools["pip"] is None
    assert tools["pip3"] is None
    assert tools["git"] == "/usr/bin/git"
    assert tools["ssh"] == "/usr/bin/ssh"
    assert tools["tini"] == "/usr/bin/tini"
    assert tools["go"] == "/usr/local/go/bin/go"
    assert tools["entrepot"] == "/opt/entrepot/bin/entrepot"
    assert tools["entrepot-operator"] == "/opt/entrepot/bin/entrepot-operator"
    # The go command alone: no compile, link, asm or vet; no sources.
    assert report["goroot"] == ["VERSION", "bin", "go.env", "pkg", "src"]
    assert report["gotools"] == []
    assert report["modfetch"] == ["key.go", "sumdb.go"]
    # The go command's default checksum database is known by name, with its key, as the
    # mirror reads it at start (the trimmed toolchain once lacked the file: no start at all).
    [sumdb] = report["sumdb"]
    assert sumdb["key"].startswith(sumdb["name"] + "+")
    assert report["go_env"] == ["/usr/local/go", "local"]
    if built.bases.local:
        version, _ = image.local_go_version()
        assert report["go"] == f"go version go{version} linux/amd64"
    else:
        assert report["go"].startswith("go version go1.26")
    assert not {"pip", "pip3", "easy_install"} & set(report["venv"])
    caches = report["caches"]
    assert caches["/root/.cache"] is None
    assert caches["/src"] is None
    assert caches["/var/lib/apt/lists"] in ([], ["partial"], ["auxfiles", "partial"])
    assert [f for f in caches["/var/cache/apt/archives"] or [] if f.endswith(".deb")] == []
    assert caches["/tmp"] == []  # the emptyDir, as the pod has it
    assert caches["/var/cache/entrepot"] == []


# --- the mirror pod --------------------------------------------------------------------------


def mirror_pod_files(
    tmp_path: Path, *, upstream: str, git_url: str, image_ref: str
) -> tuple[Manifest, dict[str, Path], int]:
    """The operator's ConfigMap and Deployment of a ModuleMirror with the fixture upstream and a
    private route to `direct`, written out as the kubelet would: the config file, the Secret's
    file (the git config that sends example.com's git to the local git server), empty cache
    and /tmp folders. Returns the pod spec, the folder of each volume and the port."""
    spec = ModuleMirrorSpec.model_validate(
        {
            "go": {
                "proxy": upstream,
                "routes": [{"patterns": "example.com/private", "proxy": "direct"}],
                # The fixture modules are in no checksum database, and the go command's
                # default one is out of reach from here.
                "sumdb": {"databases": []},
            },
            "credentials": {"gitConfig": {"secretName": "entrepot-git", "key": "gitconfig"}},
            "storage": {"emptyDir": {}},
        }
    )
    children = MODULE_MIRROR.render(spec, OWNER, image=image_ref, service_monitor_available=False)
    deployment, configmap = children["Deployment"], children["ConfigMap"]
    assert deployment is not None
    assert configmap is not None
    pod: Manifest = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == image_ref

    port = free_port()
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    assert config["listen"] == "0.0.0.0:8080"
    config["listen"] = f"127.0.0.1:{port}"  # the host's network: loopback only
    # Anything the go command or git meant for elsewhere fails here instead of going out.
    config["go"]["direct"]["env"] = {
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1",
    }
    folders = {
        "config": volume_folder(tmp_path / "config", mode=0o755),
        "credentials": volume_folder(tmp_path / "credentials", mode=0o750),
        "cache": volume_folder(tmp_path / "cache", mode=0o775, owner=RUN_AS),
        "tmp": volume_folder(tmp_path / "tmp", mode=0o1777),
    }
    (folders["config"] / "config.yaml").write_text(yaml.safe_dump(config))
    (folders["config"] / "config.yaml").chmod(0o644)
    [source] = next(v for v in pod["volumes"] if v["name"] == "credentials")["projected"]["sources"]
    [item] = source["secret"]["items"]
    secret = folders["credentials"] / item["path"]
    schemes = ("https", "http", "git+ssh", "ssh", "git")
    secret.write_text(
        f'[url "{git_url}/"]\n' + "".join(f"\tinsteadOf = {s}://example.com/\n" for s in schemes)
    )
    secret.chmod(0o440)  # defaultMode 0400, group-readable through fsGroup
    if os.geteuid() == 0:
        os.chown(folders["credentials"], 0, RUN_AS)
        os.chown(secret, 0, RUN_AS)
    return pod, folders, port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the mirror's container exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the mirror in the image was not ready within {timeout:.0f}s:\n{log.read_text()}")


@dataclasses.dataclass
class MirrorInImage:
    url: str
    cache: Path  # the cache volume's folder
    log: Path  # what the container printed
    proc: subprocess.Popen[bytes]  # the engine's client, which the container's life follows

    def stop(self) -> int:
        """SIGTERM to the engine's client is passed to the container: tini hands it to
        entrepot, which shuts down gracefully (exit 0)."""
        return stop_process(self.proc, sig=signal.SIGTERM, timeout=60)


@pytest.fixture
def mirror_in_image(
    built: image.Built, tmp_path: Path, upstream_server: Server
) -> Iterator[MirrorInImage]:
    """The mirror pod's container, serving on 127.0.0.1 with the host's git server behind
    its private route."""
    repo = make_repo(tmp_path)
    with git_http_server(repo.root) as git:
        pod, folders, port = mirror_pod_files(
            tmp_path, upstream=upstream_server.url, git_url=git.url, image_ref=built.image
        )
        container = container_of(pod, image_ref=built.image, volumes=folders)
        container.name = f"entrepot-test-{uuid.uuid4().hex[:12]}"
        assert container.args == ["serve", "--config", "/etc/entrepot/config.yaml"]
        log = tmp_path / "mirror.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                built.engine.run_command(container), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log)
            yield MirrorInImage(url, folders["cache"], log, proc)
        finally:
            stop_process(proc, timeout=60)
            built.engine.remove_container(container.name)


@pytest.mark.integration
def test_the_mirror_pod_serves_the_go_command_from_the_image(
    mirror_in_image: MirrorInImage, tmp_path: Path
) -> None:
    mirror = mirror_in_image
    go = GoClient(tmp_path / "user", mirror.url)

    # Through the fixture upstream (another entrepot on the host).
    [hello] = go.download_json("example.com/hello@v1.1.0")
    assert hello["Version"] == "v1.1.0"
    stored = mirror.cache / "go" / "example.com" / "hello" / "@v" / "v1.1.0.zip"
    assert stored.is_file()
    assert stored.stat().st_uid == RUN_AS

    # `direct`: the go command and git inside the image, to the git server on the host.
    versions = go.run("list", "-m", "-versions", MOD).stdout.split()
    assert versions == [MOD, "v1.0.0", "v1.1.0"]
    [private] = go.download_json(f"{MOD}@v1.1.0")
    assert private["Version"] == "v1.1.0"
    ziphash = mirror.cache / "go" / MOD / "@v" / "v1.1.0.ziphash"
    assert private["Sum"] == ziphash.read_text()
    assert (mirror.cache / ".direct").stat().st_uid == RUN_AS

    assert mirror.stop() == 0
    text = mirror.log.read_text(errors="replace")
    assert "Read-only file system" not in text
    assert "Permission denied" not in text
