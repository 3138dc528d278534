"""The container image, built and run with whatever the machine has: a Docker engine when one
answers, else buildah to build and podman (with runc) to run, from Debian's packages.

    python3 tests/support/image.py install   # make test: buildah, podman, runc, debootstrap
    python3 tests/support/image.py build     # make image: entrepot:<version> from the Dockerfile

The ``Dockerfile`` is the one Docker users build; its build arguments are the only seam.
``PYTHON_IMAGE`` and ``GO_IMAGE`` name the official bases; when those cannot be pulled (no
registry of container images is reached from here), local bases stand in for them, made once:

- ``localhost/entrepot-base-python:bookworm``: Debian bookworm by ``debootstrap --variant=minbase
  --include=python3,python3-venv`` from the Debian mirror in the machine's apt sources (never
  named here), slimmed as Debian's own container images are (no docs but copyrights, no man
  pages, no locales), with that mirror in its apt sources;
- ``localhost/entrepot-base-go:<version>``: the machine's Go toolchain (``go env GOROOT``) at
  /usr/local/go, as in the official Go image.

``ENTREPOT_IMAGE_BASES`` = ``official`` | ``local`` skips the choice (default ``auto``: local
bases when a pull of the official ones fails; a failed pull is not tried again for a day).
``ENTREPOT_IMAGE_ENGINE`` = ``docker`` | ``buildah`` picks the tool.

pip inside the build reaches the machine's package index with the machine's settings: a
``pip.conf`` with its index settings and the CA bundle it trusts, both passed as build secrets
(they are in no layer). Everything else lives in ``$ENTREPOT_CACHE`` (or ``~/.cache/entrepot``)
``/image``: buildah's and podman's own storage (images, the layer cache) under ``storage/``,
never the machine's, so a second build reuses every unchanged layer and takes seconds.

:class:`Engine` also runs the image for the tests (:meth:`Engine.run_command`): the pod's
settings (user, read-only root filesystem, dropped capabilities, volumes) as the engine's
flags, on the host's network so that the server inside serves on 127.0.0.1.
This file runs as a script under the system python3: standard library only.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script (make image / make test-image)
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent.parent))

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.debian import apt_install

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
NAME = "entrepot"
LOCAL_PYTHON = "localhost/entrepot-base-python:bookworm"
LOCAL_GO_REPOSITORY = "localhost/entrepot-base-go"
SUITE = "bookworm"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# buildah builds; podman runs (buildah run cannot make the root filesystem read-only); runc
# because crun refuses the hybrid cgroup layout of some machines (this one); debootstrap for
# the local Debian base.
PACKAGES = {"buildah": "buildah", "podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
BUILD_TIMEOUT = 1800.0
PROCESSES = 4096
PULL_TIMEOUT = 300.0
PULL_RETRY_AFTER = 24 * 3600.0
# What Debian's own slim images leave out (dpkg keeps leaving it out in later installs).
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
"""


class Unavailable(Exception):
    """No image can be built or run here; the message says why and what would fix it."""


def say(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / "image"


def project_version() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return str(project["project"]["version"])


def dockerfile_args() -> dict[str, str]:
    """The Dockerfile's ``ARG NAME=default`` lines (the official bases among them)."""
    found = re.findall(r"^ARG\s+([A-Za-z_]+)=(\S+)\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    return dict(found)


def _run(
    cmd: Sequence[str],
    *,
    timeout: float = 600.0,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and done.returncode != 0:
        raise Unavailable(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr.strip()}")
    return done


# --- engines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


@dataclass
class Container:
    """One container as a pod would run it (the fields a Kubernetes container spec sets)."""

    image: str
    args: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None  # Kubernetes `command`: replaces the image's ENTRYPOINT
    user: str | None = None  # "uid:gid"
    read_only_root: bool = False
    drop_all_capabilities: bool = False
    no_new_privileges: bool = False
    mounts: list[Mount] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Engine:
    """Docker, or buildah + podman sharing one storage under the cache folder."""

    kind: str  # "docker" | "buildah"

    def storage(self) -> list[str]:
        root = cache_dir()
        return ["--root", str(root / "storage"), "--runroot", str(root / "run")]

    def builder(self) -> list[str]:
        if self.kind == "docker":
            return ["docker"]
        return ["buildah", *self.storage()]

    def runner(self) -> list[str]:
        if self.kind == "docker":
            return ["docker"]
        # cgroupfs: no systemd here to ask for a scope.
        return ["podman", *self.storage(), "--cgroup-manager", "cgroupfs"]

    def reference(self, tag: str) -> str:
        """How the engine names a locally built ``name:tag`` (buildah prefixes localhost/)."""
        if self.kind == "docker" or "/" in tag.split(":", 1)[0]:
            return tag
        return f"localhost/{tag}"

    def exists(self, image: str) -> bool:
        if self.kind == "docker":
            cmd = ["docker", "image", "inspect", image]
        else:
            cmd = [*self.runner(), "image", "exists", image]
        return _run(cmd, check=False, timeout=60).returncode == 0

    def inspect(self, image: str) -> dict[str, Any]:
        done = _run([*self.runner(), "image", "inspect", image], timeout=60)
        data: list[dict[str, Any]] = json.loads(done.stdout)
        return data[0]

    def size(self, image: str) -> int:
        return int(self.inspect(image)["Size"])

    def labels(self, image: str) -> dict[str, str]:
        labels = self.inspect(image)["Config"].get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def pull(self, image: str) -> str | None:
        """None when ``image`` is here after the pull, else what the engine said."""
        cmd = [*self.builder(), "pull", "--quiet" if self.kind == "buildah" else "-q", image]
        try:
            done = _run(cmd, check=False, timeout=PULL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"no answer within {PULL_TIMEOUT:.0f}s"
        return None if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip())

    def import_tar(self, tar: Path, image: str, changes: Sequence[str]) -> None:
        cmd = [*self.runner(), "import"]
        if self.kind == "buildah":
            cmd.append("--quiet")  # podman's; docker import prints only the id anyway
        for change in changes:
            cmd += ["--change", change]
        _run([*cmd, str(tar), image], timeout=900)

    def build_command(
        self, *, tag: str, build_args: dict[str, str], secrets: dict[str, Path]
    ) -> list[str]:
        if self.kind == "docker":
            cmd = ["docker", "build"]
        else:
            # chroot isolation: no OCI runtime needed, the host's network (loopback too).
            cmd = [*self.builder(), "build", "--isolation", "chroot", "--layers"]
        for key, value in build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        for name, path in secrets.items():
            cmd += ["--secret", f"id={name},src={path}"]
        return [*cmd, "--tag", tag, "--file", str(DOCKERFILE), str(REPO)]

    def run_command(self, container: Container) -> list[str]:
        """``run`` with the pod's settings; the host's network, so 127.0.0.1 is the host's."""
        cmd = [*self.runner(), "run", "--rm", "--network", "host", "--pull", "never"]
        if self.kind == "buildah":
            cmd += ["--runtime", "runc"]
            # podman's default limits (1048576 files and processes) may exceed what may be
            # granted here (no CAP_SYS_RESOURCE): the caller's own open-files limit, and a
            # process limit (per uid on the host; 65532 runs nothing else) under conmon's.
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            cmd += ["--ulimit", f"nofile={_limit(soft)}:{_limit(hard)}"]
            cmd += ["--ulimit", f"nproc={PROCESSES}:{PROCESSES}"]
        if container.name:
            cmd += ["--name", container.name]
        if container.user:
            cmd += ["--user", container.user]
        if container.read_only_root:
            cmd += ["--read-only"]
            if self.kind == "buildah":
                # podman would add tmpfs on /tmp, /var/tmp and /run; a pod gets none.
                cmd += ["--read-only-tmpfs=false"]
        if container.drop_all_capabilities:
            cmd += ["--cap-drop", "ALL"]
        if container.no_new_privileges:
            cmd += ["--security-opt", "no-new-privileges"]
        for mount in container.mounts:
            cmd += [
                "--volume",
                f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}",
            ]
        for key, value in container.env.items():
            cmd += ["--env", f"{key}={value}"]
        if container.entrypoint is not None:
            cmd += ["--entrypoint", container.entrypoint[0]]
            return [*cmd, container.image, *container.entrypoint[1:], *container.args]
        return [*cmd, container.image, *container.args]

    def build_containers(self) -> set[str]:
        """The working containers of buildah's builds (none with Docker)."""
        if self.kind == "docker":
            return set()
        listed = [*self.builder(), "containers", "--all", "--quiet", "--notruncate"]
        return set(_run(listed, check=False, timeout=120).stdout.split())

    def remove_build_containers(self, ids: set[str]) -> None:
        if ids:
            _run([*self.builder(), "rm", *sorted(ids)], check=False, timeout=300)

    def remove_container(self, name: str) -> None:
        _run([*self.runner(), "rm", "--force", name], check=False, timeout=120)


def _limit(value: int) -> str:
    return "-1" if value == resource.RLIM_INFINITY else str(value)


def docker_engine_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return _run(["docker", "info"], check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def engine() -> Engine:
    """The engine to use: ``ENTREPOT_IMAGE_ENGINE``, else Docker when its engine answers, else
    buildah and podman (see :func:`unavailable_reason`)."""
    chosen = os.environ.get("ENTREPOT_IMAGE_ENGINE", "")
    if chosen not in ("", "docker", "buildah"):
        raise Unavailable(f"ENTREPOT_IMAGE_ENGINE={chosen!r}: use docker or buildah")
    if chosen == "docker" or (not chosen and docker_engine_runs()):
        return Engine("docker")
    return Engine("buildah")


def missing_tools(kind: str) -> list[str]:
    if kind == "docker":
        return [] if docker_engine_runs() else ["a running Docker engine"]
    return [tool for tool in PACKAGES if shutil.which(tool) is None]


def unavailable_reason() -> str | None:
    """Why no image can be built and run here, or None when it can."""
    try:
        chosen = engine()
    except Unavailable as e:
        return str(e)
    missing = missing_tools(chosen.kind)
    if not missing:
        return None
    if chosen.kind == "docker":
        return "ENTREPOT_IMAGE_ENGINE=docker, but no Docker engine answers (`docker info` fails)"
    return (
        f"no Docker engine answers, and {', '.join(missing)} (for the buildah route) not"
        " installed: run `python3 tests/support/image.py install` as root on Debian"
        " (make test does)"
    )


def install() -> int:
    """Install what the buildah route needs, when no Docker engine answers (idempotent)."""
    if engine().kind == "docker":
        return 0
    for tool, package in PACKAGES.items():
        if shutil.which(tool) is None:
            apt_install(package, what="image", without="the image tests will fail with the reason")
    return 0


# --- bases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bases:
    python: str
    go: str
    local: bool
    why: str  # why these (a failed pull, a setting)


def choose_bases(chosen: Engine) -> Bases:
    official = dockerfile_args()
    python, go = official["PYTHON_IMAGE"], official["GO_IMAGE"]
    mode = os.environ.get("ENTREPOT_IMAGE_BASES", "auto")
    if mode not in ("auto", "official", "local"):
        raise Unavailable(f"ENTREPOT_IMAGE_BASES={mode!r}: use auto, official or local")
    if mode == "local":
        return _local_bases(chosen, "ENTREPOT_IMAGE_BASES=local")
    if all(chosen.exists(image) for image in (python, go)):
        return Bases(python, go, local=False, why="the official bases are here")
    marker = cache_dir() / f"pull-failed-{chosen.kind}.json"
    if (
        mode == "auto"
        and marker.exists()
        and time.time() - marker.stat().st_mtime < PULL_RETRY_AFTER
    ):
        said = json.loads(marker.read_text())["error"]
        return _local_bases(chosen, f"the official bases could not be pulled (today): {said}")
    for image in (python, go):
        if chosen.exists(image):
            continue
        say(f"pulling {image}")
        error = chosen.pull(image)
        if error is None:
            continue
        if mode == "official":
            raise Unavailable(f"cannot pull {image}: {error}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"image": image, "error": error}))
        return _local_bases(chosen, f"{image} could not be pulled: {error}")
    return Bases(python, go, local=False, why="the official bases were pulled")


def _local_bases(chosen: Engine, why: str) -> Bases:
    return Bases(local_python_base(chosen), local_go_base(chosen), local=True, why=why)


def debian_sources() -> tuple[str, str | None]:
    """The machine's Debian mirror and security mirror (URIs), from its apt sources: the
    ``ENTREPOT_DEBIAN_MIRROR`` variable, else the first URI ending in /debian (and
    /debian-security) of the deb822 ``*.sources`` files and the one-line lists."""
    uris: list[str] = []
    apt = Path("/etc/apt")
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                uris += fields.get("URIs", "").split()
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 2 and words[0] == "deb":
                    uris.append(words[1])
    mirror = os.environ.get("ENTREPOT_DEBIAN_MIRROR") or next(
        (u for u in uris if u.rstrip("/").endswith("/debian")), None
    )
    if mirror is None:
        raise Unavailable(
            "no Debian mirror in the apt sources (a URI ending in /debian) for a local"
            " bookworm base: set ENTREPOT_DEBIAN_MIRROR, or make the official bases pullable"
        )
    security = next((u for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    return mirror, security


def _base_sources(mirror: str, security: str | None) -> str:
    key = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    text = f"Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n{key}"
    if security:
        text += f"\nTypes: deb\nURIs: {security}\nSuites: {SUITE}-security\n"
        text += f"Components: main\n{key}"
    return text


def _slim(rootfs: Path) -> None:
    """What Debian's slim images do: no docs but copyrights, no man pages or locales, no
    package lists or archives; and dpkg told to keep it so."""
    (rootfs / "etc/dpkg/dpkg.cfg.d/entrepot-slim").write_text(DPKG_EXCLUDES)
    share = rootfs / "usr/share"
    for folder in ("man", "groff", "info", "locale", "lintian", "linda"):
        for child in (share / folder).glob("*"):
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for path in (share / "doc").rglob("*"):
        if path.is_file() and path.name != "copyright":
            path.unlink()
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / folder).glob("*"):
            if path.is_file():
                path.unlink()
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()


def _tar(folder: Path, tar: Path, *, under: str = "") -> None:
    """GNU tar, for what a root filesystem holds (device nodes, hard links, extended
    attributes), with numeric owners; ``under``: the folder's path in the archive."""
    cmd = ["tar", "--create", "--file", str(tar), "--numeric-owner", "--xattrs"]
    if under:
        cmd += ["--transform", f"s,^\\.,{under},"]
    _run([*cmd, "--directory", str(folder), "."], timeout=900)


def local_python_base(chosen: Engine) -> str:
    """Debian bookworm with python3 and python3-venv, made once with debootstrap."""
    if chosen.exists(LOCAL_PYTHON):
        return LOCAL_PYTHON
    if os.geteuid() != 0:
        raise Unavailable("the local Debian base is made with debootstrap, which needs root")
    if shutil.which("debootstrap") is None:
        raise Unavailable(
            "debootstrap is not installed: run `python3 tests/support/image.py install`"
        )
    mirror, security = debian_sources()
    work = cache_dir() / "work"
    work.mkdir(parents=True, exist_ok=True)
    say(f"making {LOCAL_PYTHON} with debootstrap (about a minute or two)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=work, prefix="python-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv"]
        _run([*cmd, SUITE, str(rootfs), mirror], timeout=1800)
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(
            _base_sources(mirror, security)
        )
        _slim(rootfs)
        tar = Path(tmp) / "rootfs.tar"
        _tar(rootfs, tar)
        changes = [
            f"ENV PATH={SYSTEM_PATH}",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL org.opencontainers.image.description=Debian {SUITE} minbase with python3"
            " (debootstrap, by tests/support/image.py)",
        ]
        chosen.import_tar(tar, LOCAL_PYTHON, changes)
    say(f"{LOCAL_PYTHON} made in {time.monotonic() - started:.0f}s")
    return LOCAL_PYTHON


def local_go_version() -> tuple[str, Path]:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise Unavailable("no go command here to make the local Go base from")
    env = {**os.environ, "GOTOOLCHAIN": "local"}
    done = _run([go, "env", "GOVERSION", "GOROOT"], env=env, timeout=60)
    version, goroot = done.stdout.split()
    return version.removeprefix("go"), Path(goroot)


def local_go_base(chosen: Engine) -> str:
    """The machine's Go toolchain at /usr/local/go, as in the official Go image."""
    version, goroot = local_go_version()
    image = f"{LOCAL_GO_REPOSITORY}:{version}"
    if chosen.exists(image):
        return image
    wanted = dockerfile_args()["GO_IMAGE"].split(":", 1)[-1].split("-", 1)[0]
    if not (version == wanted or version.startswith(wanted + ".")):
        say(f"the local Go is {version}, the Dockerfile's official Go image {wanted}")
    work = cache_dir() / "work"
    work.mkdir(parents=True, exist_ok=True)
    say(f"making {image} from {goroot}")
    with tempfile.TemporaryDirectory(dir=work, prefix="go-") as tmp:
        tar = Path(tmp) / "go.tar"
        _tar(goroot, tar, under="usr/local/go")
        changes = [
            f"ENV PATH=/usr/local/go/bin:{SYSTEM_PATH}",
            "ENV GOTOOLCHAIN=local",
        ]
        chosen.import_tar(tar, image, changes)
    return image


# --- the build -------------------------------------------------------------------------------


def ca_bundle() -> Path | None:
    """The CA bundle the machine's pip trusts: PIP_CERT, pip's ``cert``, SSL_CERT_FILE, or
    Debian's bundle."""
    candidates = [os.environ.get("PIP_CERT"), pip_settings().get("cert")]
    candidates += [os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def pip_settings() -> dict[str, str]:
    """The machine's pip configuration (every scope, the environment's last), by key."""
    pip = [sys.executable, "-m", "pip"]
    try:
        done = _run([*pip, "config", "list"], check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    settings = {}
    for line in done.stdout.splitlines():
        match = re.match(r"^[^.]*\.([a-z-]+)='(.*)'$", line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    return settings


# Settings of the machine's pip that mean the same inside the build: where the index is and
# how to reach it (paths such as find-links do not).
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries")


def build_secrets(folder: Path) -> dict[str, Path]:
    """``pip.conf`` (the index settings, and ``cert`` pointing at the secret ``ca.crt``)."""
    settings = pip_settings()
    lines = ["[global]"]
    lines += [f"{key} = {settings[key]}" for key in PIP_KEYS if key in settings]
    secrets = {}
    bundle = ca_bundle()
    if bundle is not None:
        secrets["ca.crt"] = bundle
        lines.append("cert = /run/secrets/ca.crt")
    conf = folder / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    return {"pip.conf": conf, **secrets}


@dataclass(frozen=True)
class Built:
    engine: Engine
    image: str  # the reference to run
    bases: Bases
    seconds: float
    log: Path


def default_tag() -> str:
    return f"{NAME}:{project_version()}"


def build(tag: str | None = None, *, log: Path | None = None, echo: bool = True) -> Built:
    """Build the image (each unchanged layer comes from the cache); raise :class:`Unavailable`
    with the reason when it cannot be built here."""
    started = time.monotonic()
    reason = unavailable_reason()
    if reason:
        raise Unavailable(reason)
    chosen = engine()
    tag = tag or default_tag()
    bases = choose_bases(chosen)
    say(f"bases: {bases.python}, {bases.go} ({bases.why})")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log = log or folder / "build.log"
    build_args = {
        "PYTHON_IMAGE": bases.python,
        "GO_IMAGE": bases.go,
        "VERSION": project_version(),
    }
    before = chosen.build_containers()
    with tempfile.TemporaryDirectory(dir=folder, prefix="secrets-") as tmp:
        cmd = chosen.build_command(tag=tag, build_args=build_args, secrets=build_secrets(Path(tmp)))
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        say(f"building {tag} with {chosen.kind} (log: {log})")
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            assert proc.stdout is not None
            deadline = time.monotonic() + BUILD_TIMEOUT
            for line in proc.stdout:
                out.write(line)
                if echo:
                    sys.stdout.write(line)
                if time.monotonic() > deadline:
                    proc.kill()
            code = proc.wait()
    # buildah 1.28 leaves the working container of a stage that is only a FROM (the go stage)
    # mounted after each build; a failed build may leave others.
    chosen.remove_build_containers(chosen.build_containers() - before)
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        over = f", stopped after {BUILD_TIMEOUT:.0f}s" if time.monotonic() > deadline else ""
        raise Unavailable(f"{chosen.kind} build failed ({code}{over}); the end of {log}:\n{tail}")
    if chosen.kind == "buildah":
        prune(chosen, used=build_ids(log.read_text(errors="replace")))
    seconds = time.monotonic() - started
    image = chosen.reference(tag)
    say(f"{image}: {chosen.size(image) / 1e6:.0f} MB, built in {seconds:.0f}s")
    if chosen.kind == "buildah":
        say(f"push: buildah {' '.join(chosen.storage())} push {image} docker://REGISTRY/{tag}")
    return Built(chosen, image, bases, seconds, log)


def build_ids(log: str) -> set[str]:
    """The image ids a build printed: each step's (``--> 0123abcd``, ``--> Using cache ...``)
    and the image's own (its last line)."""
    ids = set(re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})\s*$", log, re.MULTILINE))
    ids.update(re.findall(r"^([0-9a-f]{64})\s*$", log, re.MULTILINE))
    return ids


def prune(chosen: Engine, *, used: set[str]) -> None:
    """Remove the images earlier builds left without a name (each source change leaves a
    venv layer of some 250 MB), keeping every step of the build that just ran: its layer
    cache. Removing an image can leave its parent step nameless: repeat until none is left."""
    if not used:
        return
    for _ in range(50):
        dangling = ["images", "--filter", "dangling=true", "--noheading", "--no-trunc"]
        listed = _run(
            [*chosen.runner(), *dangling, "--format", "{{.ID}}"], check=False, timeout=120
        ).stdout.split()
        stale = [i.removeprefix("sha256:") for i in listed]
        stale = [i for i in stale if not any(i.startswith(u) for u in used)]
        if not stale:
            return
        _run([*chosen.runner(), "rmi", *stale], check=False, timeout=600)


def main(argv: list[str]) -> int:
    if argv == ["install"]:
        return install()
    if argv[:1] == ["build"] and len(argv) in (1, 3) and argv[1:2] in ([], ["--tag"]):
        try:
            build(argv[2] if len(argv) == 3 else None)
        except Unavailable as e:
            print(f"image: {e}", file=sys.stderr)
            return 1
        return 0
    print("usage: python3 tests/support/image.py install | build [--tag NAME:TAG]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
