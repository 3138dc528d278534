"""Command line: ``entrepot serve [--config FILE] [--listen HOST:PORT] [--data DIR]``.

Exit codes: 0 after a clean shutdown, 2 for bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from entrepot import __version__
from entrepot.config import load_settings, reference_markdown
from entrepot.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entrepot", description="Entrepôt: a verifying, caching Go module mirror."
    )
    parser.add_argument("--version", action="version", version=f"entrepot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mirror server")
    serve.add_argument("--config", type=Path, help="YAML or JSON config file")
    serve.add_argument("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    serve.add_argument("--data", type=Path, help="cache directory (default ./data)")
    commands.add_parser("config-reference", help="print the configuration reference (Markdown)")
    check = commands.add_parser("check-config", help="validate a configuration and print it")
    check.add_argument("--config", type=Path, help="YAML or JSON config file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-reference":
        sys.stdout.write(reference_markdown())
        return 0
    overrides: dict[str, Any] = {}
    if getattr(args, "listen", None):
        overrides["listen"] = args.listen
    if getattr(args, "data", None):
        overrides["data_dir"] = str(args.data)
    try:
        settings = load_settings(config_file=args.config, overrides=overrides)
    except ConfigError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
        return 0
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from entrepot.app import serve

    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run
    try:
        runner(serve(settings))
    except ConfigError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
