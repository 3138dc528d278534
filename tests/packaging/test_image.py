"""The image recipe: the Dockerfile's contract with the chart and the operator, and a build
context that holds what `pip install .` needs.

No Docker engine runs here, so the Dockerfile is read, not built; docs/helm.md says how to
build it elsewhere.
"""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml
from helmchart import CHART, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
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
    assert user == "65532:65532"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    assert values["securityContext"]["runAsUser"] == 65532
    assert values["podSecurityContext"]["runAsGroup"] == 65532


def test_the_stages() -> None:
    steps = instructions(DOCKERFILE)
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    assert args["GO_IMAGE"] == "golang:1.26-bookworm"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms == ["${GO_IMAGE} AS go", "${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = final_stage(DOCKERFILE)
    copies = [rest for word, rest in final if word == "COPY"]
    assert "--from=go /usr/local/go /usr/local/go" in copies
    assert "--from=build /opt/entrepot /opt/entrepot" in copies
    run = " ".join(rest for word, rest in final if word == "RUN")
    assert re.search(r"apt-get install .*\bgit\b", run)
    assert re.search(r"apt-get install .*\btini\b", run)
    env = only(final, "ENV")
    assert "/opt/entrepot/bin" in env
    assert "/usr/local/go/bin" in env
    assert "GOTOOLCHAIN=local" in env


def test_the_project_is_installed_from_the_context_not_in_editable_mode() -> None:
    install = [
        rest for word, rest in instructions(DOCKERFILE) if word == "RUN" and "pip install" in rest
    ]
    assert len(install) == 1
    assert re.search(r"pip install --constraint constraints\.txt \.(\s|$)", install[0])
    assert " -e " not in install[0]
    assert "--editable" not in install[0]


def test_the_commands_the_image_and_chart_run_are_console_scripts() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["entrepot"] == "entrepot.cli:main"
    if not (REPO / "operator" / "entrepot_operator").is_dir():
        pytest.skip("the operator package does not exist yet")
    assert "entrepot-operator" in scripts
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert "operator/entrepot_operator" in packages
    dependencies = " ".join(project["project"]["dependencies"])
    assert "kopf" in dependencies
    assert "kubernetes" in dependencies


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
