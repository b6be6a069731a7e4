"""`sensorlake`: one command for every service and tool.

User mistakes (bad flags, a taken port, a missing file) end with one clear line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from sensorlake import services
from sensorlake.logs import configure_logging
from sensorlake.settings import STACK_SETTINGS, Settings, SettingsError


def _local(args: argparse.Namespace) -> int:
    from sensorlake.local.install import install
    from sensorlake.local.stack import LocalStack

    settings = Settings.from_args(args)
    say = lambda m: print(m, flush=True)  # noqa: E731
    if args.action == "install":
        install(settings)
        return 0
    if args.action == "up":
        paths = install(settings)
        stack = LocalStack(settings, paths)
        stack.up(args.services or None, progress=say, with_apps=args.with_apps)
        s = stack.settings
        say(f"Flink dashboard: {s.flink_rest}\nMQTT: 127.0.0.1:{s.mqtt_port}   Kafka: {s.kafka_bootstrap}\n"
            f"Beam job server: {s.job_endpoint}   lake: {s.lake}\nlogs: {stack.home / 'logs'}\n"
            f"stop with: sensorlake local down")
        return 0
    stack = LocalStack(settings)
    if args.action == "down":
        stack.down(progress=say)
        return 0
    if args.action == "status":
        rows = stack.status()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                state = "ready" if r["ready"] else ("running" if r["running"] else "stopped")
                print(f"{r['service']:<18} {state:<8} pid={r['pid'] or '-':<8} ports={r['ports']}")
        return 0 if all(r["ready"] for r in rows) else 3
    if args.action == "logs":
        service = args.services[0] if args.services else "jobserver"
        path = stack.log_path(service)
        if not path.exists():
            raise SettingsError(f"no log for {service} yet ({path})")
        lines = path.read_text(errors="replace").splitlines()[-args.lines:]
        print("\n".join(lines))
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorlake", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = sub.add_parser("local", help="Run the platform's services as local processes (no Docker).")
    local.add_argument("action", choices=["install", "up", "down", "status", "logs"],
                       help="install: fetch what is missing; up: install and start (all services, or the "
                            "ones named and what they need); down: stop what up started; status: show each "
                            "service; logs: show a service's log")
    local.add_argument("services", nargs="*", metavar="SERVICE",
                       help=f"with `up`: start only these (and what they need); with `logs`: the service "
                            f"(default jobserver). One of: {', '.join(services.BY_LOCAL)}")
    local.add_argument("--lines", type=int, default=50, help="lines of log to show")
    local.add_argument("--json", action="store_true", help="status as JSON")
    local.add_argument("--with-apps", action="store_true",
                       help="with `up`: also start the bridge and the generator (what `make up` does)")
    Settings.add_arguments(local, STACK_SETTINGS)
    local.set_defaults(func=_local)

    # The apps (the same entry points docker-compose runs).
    _add_app(sub, "generate", "Publish simulated sensor readings to MQTT.", "iot_data_generator.cli")
    _add_app(sub, "bridge", "Forward MQTT readings to Kafka without losing any.", "connectors.mqtt_kafka.cli")
    _add_app(sub, "pipeline", "Run the Beam pipeline on Flink.", "pipelines.cli")

    # Tools for the people who use the data: SQL views, compaction, the data catalogue.
    from sensorlake import compact, sql
    from sensorlake.catalog import cli as catalog

    for name, mod in (("sql", sql), ("compact", compact), ("catalog", catalog)):
        p = sub.add_parser(name, help=mod.HELP, description=mod.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.configure_parser(p)
        p.set_defaults(func=mod.run)
    return parser


class BrokenInstall(RuntimeError):
    """A command's module cannot be imported: the installation is broken, not the user's input."""


def _add_app(sub, name: str, help: str, module: str) -> None:
    """A subcommand implemented by ``module`` (configure_parser, run). An import that fails ends
    every command with its cause, rather than silently hiding the subcommand."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BrokenInstall(f"`sensorlake {name}` cannot load {module}: {exc}. Reinstall with `make setup` "
                            f"(or pip install -e .)") from exc
    p = sub.add_parser(name, help=help, description=help)
    mod.configure_parser(p)
    p.set_defaults(func=mod.run)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except BrokenInstall as exc:
        print(f"sensorlake: error: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        configure_logging(Settings.from_args(args).log_level)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except KeyboardInterrupt:
        return 130
    except (SettingsError, OSError) as exc:
        print(f"sensorlake: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - known operational errors get one line
        from sensorlake.catalog.build import CatalogError
        from sensorlake.compact import CompactionError
        from sensorlake.local.install import InstallError
        from sensorlake.local.stack import StackError
        from sensorlake.sql import QueryError

        if isinstance(exc, (InstallError, StackError, QueryError, CompactionError, CatalogError)):
            print(f"sensorlake: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
