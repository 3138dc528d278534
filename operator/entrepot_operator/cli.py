"""``entrepot-operator``: ``run`` the operator, print the ``crds`` it serves, or write the
Grafana ``dashboards``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="entrepot-operator",
        description="ModuleMirror and NpmMirror resources become Go module and npm mirrors.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    crds = commands.add_parser("crds", help="print the CustomResourceDefinitions (YAML)")
    crds.add_argument("--out", default=None, help="write one file per CRD into this folder instead")
    boards = commands.add_parser("dashboards", help="write the Grafana dashboards (JSON)")
    boards.add_argument("--out", required=True, help="folder for the JSON files")
    run = commands.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch this namespace (repeatable; default: ENTREPOT_WATCH_NAMESPACES, else all)",
    )
    args = parser.parse_args(argv)
    if args.command == "crds":
        from entrepot_operator.crd import all_crds_yaml, crd_yaml, file_name
        from entrepot_operator.kinds import KINDS

        if args.out is None:
            sys.stdout.write(all_crds_yaml())
            return 0
        from pathlib import Path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            path = Path(args.out) / file_name(kind)
            path.write_text(crd_yaml(kind))
            sys.stdout.write(f"{path}\n")
        return 0
    if args.command == "dashboards":
        from pathlib import Path

        from entrepot_operator.dashboards import write

        for path in write(Path(args.out)):
            sys.stdout.write(f"{path}\n")
        return 0
    from entrepot_operator.runner import run_operator

    return run_operator(namespaces=args.namespace)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
