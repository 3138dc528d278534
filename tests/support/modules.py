"""Fixture modules written in GOPROXY file layout (what ``GOPROXY=file://DIR`` serves)."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from entrepot.gomod.module import escape_path, escape_version


@dataclass
class FixtureModule:
    path: str
    version: str
    files: dict[str, str] = field(default_factory=dict)  # relative name → content
    time: str = "2024-01-02T03:04:05Z"
    go_mod: str | None = None  # None: taken from files["go.mod"], or synthesized

    def mod_bytes(self) -> bytes:
        if self.go_mod is not None:
            return self.go_mod.encode()
        if "go.mod" in self.files:
            return self.files["go.mod"].encode()
        return f"module {self.path}\n".encode()

    def zip_bytes(self) -> bytes:
        buf = io.BytesIO()
        prefix = f"{self.path}@{self.version}/"
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, content in sorted(self.files.items()):
                # A fixed timestamp: the same module always has the same bytes (and h1).
                info = zipfile.ZipInfo(prefix + name, date_time=(2024, 1, 2, 3, 4, 6))
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, content)
        return buf.getvalue()


def write_module(root: Path, mod: FixtureModule, *, listed: bool = True) -> None:
    base = root / escape_path(mod.path) / "@v"
    base.mkdir(parents=True, exist_ok=True)
    v = escape_version(mod.version)
    (base / f"{v}.info").write_text(json.dumps({"Version": mod.version, "Time": mod.time}))
    (base / f"{v}.mod").write_bytes(mod.mod_bytes())
    (base / f"{v}.zip").write_bytes(mod.zip_bytes())
    if listed:
        with open(base / "list", "a") as f:
            f.write(mod.version + "\n")


def simple(path: str, version: str, *, body: str = "", deps: str = "") -> FixtureModule:
    """A module with one package whose Hello() returns its path@version."""
    pkg = path.rsplit("/", 1)[-1].replace(".", "_").replace("-", "_")
    if pkg.startswith("v") and pkg[1:].isdigit():
        pkg = path.rsplit("/", 2)[-2].replace(".", "_").replace("-", "_")
    go_mod = f"module {path}\n\ngo 1.21\n{deps}"
    code = body or (f'package {pkg}\n\nfunc Hello() string {{ return "{path}@{version}" }}\n')
    return FixtureModule(path, version, {"go.mod": go_mod, f"{pkg}.go": code})


def universe(root: Path) -> list[FixtureModule]:
    """The standard fixture set used by the integration tests."""
    mods = [
        simple("example.com/hello", "v1.0.0"),
        simple("example.com/hello", "v1.1.0"),
        simple("example.com/hello", "v1.2.0-rc.1"),
        simple("example.com/Upper/Case", "v0.1.0"),
        simple("example.com/multi/v2", "v2.0.1"),
        # A module without go.mod, at a +incompatible major version.
        FixtureModule(
            "example.com/legacy",
            "v2.0.0+incompatible",
            {"legacy.go": 'package legacy\n\nfunc Hello() string { return "legacy" }\n'},
        ),
    ]
    for m in mods:
        write_module(root, m)
    # A pseudo-version that must never appear in a list the mirror serves.
    pseudo = simple("example.com/hello", "v1.1.1-0.20240102030405-abcdefabcdef")
    write_module(root, pseudo, listed=True)
    return mods
