"""`sensorlake pipeline run`: submit the streaming job to Flink and keep its Python workers."""

from __future__ import annotations

import argparse
import sys

from pipelines import main
from sensorlake.registry import RegistryError
from sensorlake.settings import Settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_action", required=True, metavar="ACTION")
    run_p = sub.add_parser("run", help="submit the lake job and wait (Ctrl-C cancels it)")
    main.parser(run_p)


def run(args: argparse.Namespace) -> int:
    try:
        result = main.submit(args, Settings.from_args(args))
    except RegistryError as exc:
        print(f"sensorlake pipeline: error: {exc}", file=sys.stderr)
        return 2
    print(f"submitted {args.job_name}; Ctrl-C cancels it", flush=True)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
        return 130
    return 0
