"""The real go command, isolated: its own GOPATH/GOMODCACHE/HOME, no toolchain downloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GO = shutil.which("go") or "/usr/local/go/bin/go"


@dataclass
class GoClient:
    """A user of the mirror with an empty module cache."""

    home: Path
    proxy: str
    extra_env: dict[str, str] | None = None

    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "GOPATH": str(self.home / "gopath"),
            "GOMODCACHE": str(self.home / "modcache"),
            "GOCACHE": str(self.home / "gocache"),
            "GOENV": "off",
            "GOPROXY": self.proxy,
            "GOSUMDB": "off",
            "GOFLAGS": "-mod=mod",
            "GOTOOLCHAIN": "local",
            "GONOSUMDB": "",
            "GOPRIVATE": "",
            # Anything that tried to leave the machine would fail here, not go out.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost,::1",
        }
        env.update(self.extra_env or {})
        return env

    def run(
        self, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        workdir = cwd or self.home / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [GO, *args],
            cwd=workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"go {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done

    def download_json(self, *targets: str) -> list[dict[str, Any]]:
        out = self.run("mod", "download", "-json", *targets).stdout
        decoder, objs, i = json.JSONDecoder(), [], 0
        while i < len(out):
            if out[i].isspace():
                i += 1
                continue
            obj, i = decoder.raw_decode(out, i)
            objs.append(obj)
        return objs

    def new_module(self, name: str = "example.com/app") -> Path:
        work = self.home / "work"
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(f"module {name}\n\ngo 1.21\n")
        return work
