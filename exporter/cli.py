"""Command line: argument parsing and exit codes; the only module that calls ``sys.exit``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from exporter import __version__
from exporter._config_errors import echoable
from exporter.config import (
    ConfigReport,
    DeploymentSettings,
    IngestSettings,
    build_institutional_ingest_config,
    build_redactor,
    explain_configuration,
    world_readable_secret_files,
)
from exporter.errors import ConfigError, ExporterError, ListenError
from exporter.redaction import Redactor

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_LISTEN",
    "EXIT_OK",
    "main",
]

#: Success (``probe``: every check ok).
EXIT_OK = 0
#: A runtime failure (``probe``: some check not ok).
EXIT_FAILURE = 1
#: Bad usage or configuration: nothing was started.
EXIT_CONFIG = 2
#: The HTTP listener could not bind its address.
EXIT_LISTEN = 3
#: Interrupted: a second SIGINT while ``run`` stops, or Ctrl-C during another command.
EXIT_INTERRUPTED = 130

#: How long the process may take to end once a command is done. What follows it is not
#: bounded by itself: ``asyncio.run`` waits for every cancelled task (one that swallows the
#: cancellation never ends) and interpreter exit joins every worker thread (a synchronous
#: probe stuck past its timeout cannot be interrupted).
_EXIT_GRACE = 1.0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors never quote what was typed: it may be a credential."""

    #: The command line as typed; every word of it is hidden from error messages.
    typed: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        """Print the usage and the message with every typed word hidden; exit 2."""
        known = {*self._option_string_actions, *_choices(self)}
        for token in sorted(self.typed, key=len, reverse=True):
            option, eq, value = token.partition("=")
            hidden = value if eq and option in known else token
            if not hidden or hidden in known:
                continue
            message = message.replace(repr(hidden), "(not shown)")
            if len(hidden) >= 3:
                pattern = rf"(?<![\w-]){re.escape(hidden)}(?![\w-])"
                message = re.sub(pattern, "(not shown)", message)
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    """Return the sub-command names and option choices ``parser`` knows (safe to show)."""
    found: set[str] = set()
    for action in parser._actions:  # argparse keeps them private; read-only here
        found.update(str(choice) for choice in action.choices or ())
    return found


def _parser(typed: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ingest-exporter",
        description="Prometheus exporter and health daemon for a Timescale + Redis + Kafka stack.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--config.file", dest="config_file", metavar="FILE", help="YAML config")
    common.add_argument("--log.level", dest="log_level", metavar="LEVEL", help="debug|info|...")
    common.add_argument("--log.format", dest="log_format", metavar="FMT", help="auto|json|console")
    common.add_argument(
        "--config.strict",
        dest="config_strict",
        action="store_true",
        help="an unknown INGEST_/TIMESCALE_/REDIS_/KAFKA_ variable is an error, not a warning",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser("run", parents=[common], help="run the daemon (serves /metrics)")
    check = commands.add_parser("check-config", parents=[common], help="validate the configuration")
    for command in (run, check):
        command.add_argument("--web.listen-address", dest="listen_address", metavar="HOST:PORT")
        command.add_argument(
            "--web.config.file",
            dest="web_config_file",
            metavar="FILE",
            help="TLS and basic-auth config (Prometheus exporter-toolkit format)",
        )
    manifest = commands.add_parser("manifest", parents=[common], help="print the manifest")
    manifest.add_argument("--deployment", help="only this deployment")
    probe = commands.add_parser("probe", parents=[common], help="probe once and print the report")
    probe.add_argument("--format", choices=("table", "json"), default=None)
    probe.add_argument("--deployment", help="only this deployment")
    probe.add_argument(
        "--wide", action="store_true", help="table: show each check's whole detail (not cut)"
    )
    drill = commands.add_parser("drill", parents=[common], help="run one failover drill")
    drill.add_argument(
        "--scenario", choices=("fallback", "switchover", "kill", "observe"), default="fallback"
    )
    drill.add_argument("--dimension", action="append", default=[], help="repeatable")
    drill.add_argument("--deployment", help="the deployment to drill (default: the first)")
    drill.add_argument("--format", choices=("markdown", "json"), default=None)
    for each in (parser, run, check, manifest, probe, drill):
        each.typed = typed
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "listen_address", None):
        overrides["web.listen_address"] = args.listen_address
    if getattr(args, "web_config_file", None):
        overrides["web.config_file"] = args.web_config_file
    if args.log_level:
        overrides["log.level"] = args.log_level
    if args.log_format:
        overrides["log.format"] = args.log_format
    return overrides


def _settings(args: argparse.Namespace) -> tuple[IngestSettings, ConfigReport]:
    """Build the settings and the report on them; ``--config.strict`` refuses unknown names."""
    overrides = _overrides(args)
    settings = build_institutional_ingest_config(config_file=args.config_file, overrides=overrides)
    report = explain_configuration(settings, config_file=args.config_file, overrides=overrides)
    if args.config_strict and report.unknown:
        first = report.unknown[0]
        raise ConfigError(first.name, first.explain().replace(", ignored", " (--config.strict)"))
    return settings, report


def _fail(code: int, message: str) -> NoReturn:
    print(f"ingest-exporter: {message}", file=sys.stderr)
    sys.exit(code)


def _exit_soon(code: int) -> None:
    """Make sure the process ends with ``code`` at the latest :data:`_EXIT_GRACE` from now.

    Only for a command that ran probes (``run``, ``probe``), once its work is done.
    """
    # Ending already: a Ctrl-C now means "at once", not a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, lambda *_: _exit_now(EXIT_INTERRUPTED))
    timer = threading.Timer(_EXIT_GRACE, _exit_now, args=(code,))
    timer.daemon = True  # never what keeps the process alive
    timer.start()


def _exit_now(code: int) -> NoReturn:
    """End the process at once, skipping cleanup that could hang; output is flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # Closed or broken: nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit with one of the documented codes."""
    typed = sys.argv[1:] if argv is None else list(argv)
    args = _parser(typed).parse_args(typed)  # exits 2 on bad usage, like every argparse program
    try:
        settings, report = _settings(args)
        code = _dispatch(args, settings, report)
    except ConfigError as exc:
        _fail(EXIT_CONFIG, f"invalid configuration: {exc}")
    except ExporterError as exc:
        _fail(EXIT_LISTEN if isinstance(exc, ListenError) else EXIT_FAILURE, str(exc))
    except KeyboardInterrupt:
        # `run` handles SIGINT itself; this one came before its handler was installed or
        # after its stop finished, so it stopped. Any other command was cut short.
        sys.exit(EXIT_OK if args.command == "run" else EXIT_INTERRUPTED)
    sys.exit(code)


def _dispatch(args: argparse.Namespace, settings: IngestSettings, report: ConfigReport) -> int:
    # A secret in a file every user may read is worth a warning, not a refusal.
    exposed = world_readable_secret_files()
    if args.command in ("check-config", "manifest"):
        for name in exposed:
            print(
                f"ingest-exporter: warning: {name} names a file every user may read",
                file=sys.stderr,
            )
    if args.command == "check-config":
        _check_operator_probes(settings)
        if settings.web.config_file is not None:
            from exporter.telemetry.webconfig import load_web_config

            load_web_config(settings.web.config_file)
        _print_unknown(report)
        print("endpoints (source):")
        print("\n".join(report.lines()))
        names = ", ".join(d.name for d in settings.deployments)
        print(f"configuration ok: deployments {names}; {len(settings.dimensions)} dimension(s)")
        return EXIT_OK
    if args.command == "manifest":
        _print_unknown(report)
        return _manifest(settings, _chosen(settings, args.deployment))
    # The one redactor of the process: logs, spans and every job scrub with it.
    redactor = build_redactor(settings)
    _configure_logs(settings, redactor)
    # `run` and `probe` are where a forgotten default harms; `drill` keeps stderr for its verdict.
    _log_report(report, defaults=args.command in ("run", "probe"))
    if exposed:
        import structlog

        for name in exposed:
            structlog.get_logger(__name__).warning("secret_file_world_readable", variable=name)
    if args.command == "probe":
        chosen = _chosen(settings, args.deployment)
        code = asyncio.run(_probe(settings, chosen, args.format, redactor, wide=args.wide))
        _exit_soon(code)  # the report is out: a probe thread still stuck must not hold the exit
        return code
    if args.command == "drill":
        code = _drill(args, settings, redactor)
        _exit_soon(code)
        return code
    return _run(settings, redactor, report, exposed)


def _print_unknown(report: ConfigReport) -> None:
    for unknown in report.unknown:
        print(f"ingest-exporter: warning: {unknown.name}: {unknown.explain()}", file=sys.stderr)


def _log_report(report: ConfigReport, *, defaults: bool) -> None:
    """Warn about unknown variables and (with ``defaults``) endpoints left at the defaults."""
    import structlog

    log = structlog.get_logger("exporter.cli")
    for unknown in report.unknown:
        log.warning("config_variable_unknown", variable=unknown.name, closest=unknown.closest)
    if defaults and (in_use := report.defaults_in_use()):
        # The embedded defaults point at the local development stack: say so once, loudly.
        log.warning("config_defaults_used", endpoints=in_use)


def _drill(args: argparse.Namespace, settings: IngestSettings, redactor: Redactor) -> int:
    """Run ``drill``: 0 when the result is ok; 1 for warn, fail or aborted; 2 when refused."""
    from exporter.drills.command import exit_ok, run_drill_command
    from exporter.errors import DrillRefused

    try:
        snapshot = asyncio.run(
            run_drill_command(
                settings,
                redactor,
                scenario=args.scenario,
                dimensions=args.dimension,
                deployment=args.deployment,
                fmt=args.format,
            )
        )
    except DrillRefused as exc:
        _fail(EXIT_CONFIG, f"drill refused: {exc}")
    return EXIT_OK if exit_ok(snapshot) else EXIT_FAILURE


def _check_operator_probes(settings: IngestSettings) -> None:
    from exporter.probes.operator import load_operator_probes

    load_operator_probes(settings.probes.operator)


def _configure_logs(settings: IngestSettings, redactor: Redactor) -> None:
    from exporter.telemetry.logs import configure_logging

    configure_logging(level=settings.log.level, fmt=settings.log.format, redactor=redactor)


def _chosen(settings: IngestSettings, deployment: str | None) -> list[DeploymentSettings]:
    """Return the deployment named by ``--deployment``, or every one when it is not given."""
    chosen = [d for d in settings.deployments if deployment in (None, d.name)]
    if not chosen:
        names = ", ".join(d.name for d in settings.deployments)
        got = f", got {deployment!r}" if deployment is not None and echoable(deployment) else ""
        raise ConfigError("--deployment", f"expected one of {names}{got}")
    return chosen


def _manifest(settings: IngestSettings, chosen: list[DeploymentSettings]) -> int:
    from exporter.manifest import build_manifest, failover_metadata

    manifests = [build_manifest(settings, d).model_dump(mode="json") for d in chosen]
    out = {"deployments": manifests, "failover": failover_metadata(settings)}
    print(json.dumps(out, indent=2))
    return EXIT_OK


async def _probe(
    settings: IngestSettings,
    chosen: list[DeploymentSettings],
    fmt: str | None,
    redactor: Redactor,
    *,
    wide: bool = False,
) -> int:
    from exporter.probes.report import render_table
    from exporter.provisioner import InstitutionalIngestProvisioner
    from exporter.telemetry.metrics import EXPOSED_NAMES

    provisioner = InstitutionalIngestProvisioner(settings, redactor=redactor)
    reports = []
    for deployment in chosen:
        services = provisioner.provision(deployment=deployment.name)
        await services.start(supervise=False)
        try:
            reports.append(await services.connectivity_report())
        finally:
            await services.stop()
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        print(json.dumps({"reports": [r.as_dict(EXPOSED_NAMES) for r in reports]}, indent=2))
    else:
        print(render_table(reports, wide=wide))
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILURE


def _run(
    settings: IngestSettings, redactor: Redactor, report: ConfigReport, exposed: Sequence[str]
) -> int:
    from exporter.daemon import Daemon
    from exporter.telemetry.status_view import config_warnings

    # The status page repeats the start's configuration warnings for whoever opens it later.
    warnings = config_warnings(report, exposed)

    async def serve() -> None:
        daemon = Daemon(settings, redactor=redactor, config_warnings=warnings)
        await daemon.run(force_exit=lambda: _exit_now(EXIT_INTERRUPTED))
        # The stop is bounded; asyncio.run's clean-up of what it left behind is not.
        _exit_soon(EXIT_OK)

    asyncio.run(serve())
    return EXIT_OK
