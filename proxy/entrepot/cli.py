"""Command line: ``entrepot serve [--config FILE] [--listen HOST:PORT] [--data DIR]``, and
maintenance commands (``purge``, ``verify``, ``sumdb reset``, ``user add``).

Exit codes: 0 after a clean shutdown, 2 for bad configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import shutil
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from entrepot import __version__
from entrepot.config import (
    Settings,
    load_settings,
    reference_markdown,
    settings_warnings,
    split_host_port,
)
from entrepot.errors import ConfigError, InvalidRequestError, UnavailableError, redact
from entrepot.gomod.upstream import quiet_http_loggers


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
    serve.add_argument("--workers", type=int, help="server processes (default: one per CPU)")
    ref = commands.add_parser(
        "config-reference", help="print the configuration reference (Markdown)"
    )
    ref.add_argument(
        "--update", type=Path, help="rewrite the generated block of this Markdown file instead"
    )
    check = commands.add_parser("check-config", help="validate a configuration and print it")
    check.add_argument("--config", type=Path, help="YAML or JSON config file")
    purge = commands.add_parser(
        "purge",
        help="remove cached entries: MODULE@VERSION (its .info/.mod/.zip) or MODULE (its list"
        " and @latest); running servers drop their in-memory copies within a minute",
    )
    purge.add_argument("--config", type=Path, help="YAML or JSON config file")
    purge.add_argument("--data", type=Path, help="cache directory (default ./data)")
    purge.add_argument("targets", nargs="+", metavar="MODULE[@VERSION]")
    verify = commands.add_parser(
        "verify",
        help="check every cached .mod and .zip against its checksum database and report"
        " (exit 1 on a mismatch)",
    )
    verify.add_argument("--config", type=Path, help="YAML or JSON config file")
    verify.add_argument("--data", type=Path, help="cache directory (default ./data)")
    verify.add_argument("--remove", action="store_true", help="remove the files that mismatch")
    sumdb = commands.add_parser("sumdb", help="checksum-database maintenance")
    sumdb_commands = sumdb.add_subparsers(dest="sumdb_command", required=True)
    reset = sumdb_commands.add_parser(
        "reset",
        help="forget a database's stored tree head, fork evidence and cached lookups/tiles"
        " (after a fork was investigated, or a key rotation): the next head is trusted anew",
    )
    reset.add_argument("name", help="the database name, e.g. sum.example.com")
    reset.add_argument("--config", type=Path, help="YAML or JSON config file")
    reset.add_argument("--data", type=Path, help="cache directory (default ./data)")
    user = commands.add_parser("user", help="users of the private npm registry")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser(
        "add",
        help="create a user on the server's database (its password read twice from the"
        " terminal or from stdin, or once with --password-stdin)",
    )
    add.add_argument("name", help="the user name (lower case, as npm wants it)")
    add.add_argument("--email", default="", help="the user's email address")
    add.add_argument("--admin", action="store_true", help="an administrator")
    add.add_argument(
        "--update-password",
        action="store_true",
        help="set the password of an existing user instead of refusing",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password once, from the first line of stdin (for scripts)",
    )
    add.add_argument("--config", type=Path, help="YAML or JSON config file")
    add.add_argument("--data", type=Path, help="data directory (default ./data)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config-reference":
        if args.update is None:
            sys.stdout.write(reference_markdown())
            return 0
        return _update_reference(args.update)
    overrides: dict[str, Any] = {}
    if getattr(args, "listen", None):
        overrides["listen"] = args.listen
    if getattr(args, "data", None):
        overrides["data_dir"] = str(args.data)
    if getattr(args, "workers", None):
        overrides["workers"] = args.workers
    try:
        settings = load_settings(config_file=args.config, overrides=overrides)
    except ConfigError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    if args.command == "purge":
        return _purge(settings, args.targets)
    if args.command == "verify":
        return _verify(settings, remove=args.remove)
    if args.command == "sumdb":
        return _sumdb_reset(settings.data_dir, args.name)
    if args.command == "user":
        return _user_add(settings, args)
    if args.command == "check-config":
        for warning in settings_warnings(settings):
            print(f"entrepot: warning: {warning}", file=sys.stderr)
        sys.stdout.write(redact(settings.model_dump_json(indent=2)) + "\n")
        return 0
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_http_loggers()
    for warning in settings_warnings(settings):
        logging.getLogger("entrepot").warning("configuration: %s", warning)
    try:
        return run(settings)
    except ConfigError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"entrepot: cannot listen on {settings.listen}: {e.strerror}", file=sys.stderr)
        return 1


def _purge(settings: Settings, targets: Sequence[str]) -> int:
    from entrepot.gomod.module import canonical_version, check_path
    from entrepot.gomod.service import purge_keys
    from entrepot.maintenance import forget_removed
    from entrepot.storage.base import check_key

    data_dir = settings.data_dir
    code = 0
    zips: list[tuple[str, str]] = []  # purged module zips, for the stats inventory
    for target in targets:
        module, at, version = target.partition("@")
        if at and not version:
            print(f"entrepot: {target}: give MODULE or MODULE@VERSION", file=sys.stderr)
            code = 2
            continue
        try:
            check_path(module)
        except InvalidRequestError as e:
            print(f"entrepot: {target}: {e.message}", file=sys.stderr)
            code = 2
            continue
        if version and canonical_version(version) != version:
            print(f"entrepot: {target}: give a canonical version such as v1.2.3", file=sys.stderr)
            code = 2
            continue
        removed = 0
        for key in purge_keys(module, version):
            check_key(key)
            with contextlib.suppress(FileNotFoundError):
                (data_dir / key).unlink()
                print(f"removed {data_dir / key}")
                removed += 1
                if key.endswith(".zip"):
                    zips.append((module, version))
        if not removed:
            print(f"{target}: nothing cached")
    failed = forget_removed(settings, zips)
    if failed is not None:
        print(
            f"entrepot: warning: the statistics inventory was not updated ({failed}); the"
            " mirror corrects it when it next starts",
            file=sys.stderr,
        )
    return code


def _verify(settings: Settings, *, remove: bool) -> int:
    from entrepot.maintenance import forget_removed, verify_cache

    if not settings.go.sumdb.databases:
        print("entrepot: no checksum database configured (go.sumdb)", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(verify_cache(settings, remove=remove))
    except ConfigError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    for line in report.lines:
        print(line)
    print(", ".join(f"{n} {outcome}" for outcome, n in report.counts.items()))
    failed = forget_removed(settings, report.removed_zips)
    if failed is not None:
        print(
            f"entrepot: warning: the statistics inventory was not updated ({failed}); the"
            " mirror corrects it when it next starts",
            file=sys.stderr,
        )
    return 1 if report.counts["mismatch"] else 0


def _sumdb_reset(data_dir: Path, name: str) -> int:
    from entrepot.maintenance import reset_sumdb

    try:
        removed = reset_sumdb(data_dir, name)
    except InvalidRequestError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    if not removed:
        print(f"{name}: nothing stored for this checksum database in {data_dir}")
        return 0
    for path in removed:
        print(f"removed {path}")
    print(
        f"{name}: the next tree head the database signs is trusted as new; running servers"
        " notice within a second"
    )
    return 0


def _read_password(*, once: bool) -> str | None:
    """The new password: twice (they must match) from the terminal, or from stdin's first
    lines when it is not one; once with ``once``. None when they differ or none was given."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        second = first if once else getpass.getpass("password again: ")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
        second = first if once else sys.stdin.readline().rstrip("\r\n")
    if first != second:
        print("entrepot: the two passwords differ", file=sys.stderr)
        return None
    if not first:
        print("entrepot: no password given", file=sys.stderr)
        return None
    return first


def _user_add(settings: Settings, args: argparse.Namespace) -> int:
    """``entrepot user add NAME``: on the database the server uses (``stats.database``, the
    SQLite file in the data directory by default), migrated first as ``serve`` does."""
    from datetime import UTC, datetime

    from entrepot.errors import ConflictError
    from entrepot.npm.registrystore import open_registry_store
    from entrepot.npm.users import check_email, check_user_name, set_user
    from entrepot.sql.migrate import migrate

    try:
        check_user_name(args.name)
        if args.email:
            check_email(args.email)
    except InvalidRequestError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2
    password = _read_password(once=args.password_stdin)
    if password is None:
        return 2

    async def add() -> str:
        store = open_registry_store(settings.stats.database, settings.data_dir)
        try:
            return await set_user(
                store,
                args.name,
                password,
                now=datetime.now(UTC),
                email=args.email,
                admin=args.admin,
                update=args.update_password,
            )
        finally:
            await store.close()

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate(settings.stats.database, settings.data_dir)
        done = asyncio.run(add())
    except ConflictError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 1
    except (InvalidRequestError, UnavailableError) as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 2 if isinstance(e, InvalidRequestError) else 1
    print(f"user {args.name}: {done}{' (administrator)' if args.admin else ''}")
    return 0


BEGIN, END = "<!-- BEGIN GENERATED -->\n", "<!-- END GENERATED -->"


def _update_reference(path: Path) -> int:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"entrepot: {path} has no {BEGIN.strip()} / {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + BEGIN + reference_markdown() + END + tail)
    return 0


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run


def run(settings: Settings) -> int:
    """Serve in this process, or in N pre-forked workers (see entrepot.workers)."""
    from entrepot.npm.users import prepare_admin
    from entrepot.stats.sqlstore import prepare_stats
    from entrepot.storage.filesystem import remove_stale_staging
    from entrepot.web.server import raise_fd_limit
    from entrepot.workers import default_workers

    workers = settings.workers or default_workers()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Other instances may share this data directory: only folders nobody uses are removed.
    remove_stale_staging(settings.data_dir)
    # Once, here in the parent, before workers fork: they find the schema ready.
    try:
        prepare_stats(settings)
        admin = prepare_admin(settings)
    except UnavailableError as e:
        print(f"entrepot: {e.message}", file=sys.stderr)
        return 1
    if admin is not None:
        logging.getLogger("entrepot").info("%s", admin)
    raise_fd_limit()
    loop_run = _event_loop_runner()
    if workers == 1:
        from entrepot.app import serve

        with contextlib.suppress(KeyboardInterrupt):
            loop_run(serve(settings))
        return 0
    # Metrics of all workers are summed from files on local disk (never the shared data
    # volume, where another instance's files would be summed in or deleted); prometheus_client
    # reads this variable when it is first imported, so it is set before anything imports it.
    metrics_dir = Path(tempfile.mkdtemp(prefix="entrepot-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return _run_workers(settings, workers, metrics_dir, loop_run)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_workers(
    settings: Settings,
    workers: int,
    metrics_dir: Path,
    loop_run: Callable[[Coroutine[Any, Any, None]], None],
) -> int:
    from prometheus_client import multiprocess

    from entrepot.app import announce, serve
    from entrepot.workers import listening_socket, reserve_port, supervise

    host, port = split_host_port(settings.listen)
    reserved = reserve_port(host, port)
    port = reserved.getsockname()[1]
    ready_r, ready_w = os.pipe()

    def run_worker(index: int) -> int:
        os.close(ready_r)
        sock = listening_socket(host, port)

        def ready() -> None:
            os.write(ready_w, b"+")

        loop_run(serve(settings, sock=sock, worker=index, on_ready=ready))
        return 0

    def wait_ready() -> None:
        got = 0
        while got < workers and select.select([ready_r], [], [], 60)[0]:
            got += len(os.read(ready_r, workers))
        announce(settings, host, port, workers=workers)

    return supervise(
        workers,
        run_worker,
        after_start=wait_ready,
        on_exit=lambda pid: multiprocess.mark_process_dead(pid, str(metrics_dir)),  # type: ignore[no-untyped-call]
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
