"""The `srsalvage` entry point: argparse over the command modules in app.commands.

Exit codes (shared/docs/cli-contract.md): 0 done, 1 failed (one line on stderr, no traceback),
2 bad usage, 3 refused as unsafe unless forced.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from core.errors import Cancelled, SrsalvageError, UnsafeError
from core.escape import terminal_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSAFE = 0, 1, 2, 3
EXIT_TERMINATED = 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM: raised in the main thread (also out of a wait on a hanging read) so every
    output's `.part` is removed on the way out (issue 11 item 8). A KeyboardInterrupt, not an
    Exception: no `except Exception` swallows it."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _install_sigterm():
    """Our SIGTERM handler for the duration of one command; returns the one to put back."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        try:
            return signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
    return None


def main(argv: list[str] | None = None) -> int:
    previous = _install_sigterm()
    try:
        return _main(argv)
    finally:
        if previous is not None:
            import signal
            signal.signal(signal.SIGTERM, previous)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("srsalvage")
    except Exception:  # not installed (run from a checkout)
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """`--version`, the package metadata read only when asked (importlib.metadata is a
    noticeable part of every command's start-up)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show program's version number and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import sys
        sys.stdout.write(f"srsalvage {_version()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srsalvage",
        description="Recovery workstation for damaged XenServer / XCP-ng LVM storage repositories. "
                    "The evidence is only ever opened read-only.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import app.commands as pkg

    modules = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"app.commands.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(sub)
    _add_mapfile_options(sub)
    return parser


def _add_mapfile_options(sub: argparse._SubParsersAction) -> None:
    """Every command that opens an IMAGE/SOURCE takes the ddrescue mapfile that goes with it."""
    for name, p in sub.choices.items():
        if any(a.dest in ("image", "source") for a in p._actions) and \
                not any(a.dest == "mapfile" for a in p._actions):
            p.add_argument("--mapfile", metavar="FILE", default=None,
                           help="GNU ddrescue mapfile of IMAGE: areas not marked finished (+) "
                                "are unreadable, not zeros (default: IMAGE.map / IMAGE.mapfile "
                                "/ IMAGE.log beside the image)")


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    try:
        return int(args.func(args) or 0)
    except UnsafeError as exc:
        print(terminal_line(f"srsalvage: refused: {exc}"), file=sys.stderr)
        return EXIT_UNSAFE
    except Cancelled as exc:
        print(f"srsalvage: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SrsalvageError as exc:
        print(terminal_line(f"srsalvage: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except Terminated:
        print("srsalvage: terminated (SIGTERM); partial outputs removed", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("srsalvage: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:          # the output side: ENOSPC, EROFS, EACCES, a bad -o path
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(terminal_line(f"srsalvage: {where}{exc.strerror or exc}"), file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line, unless the technician asks for more
        if os.environ.get("SRSALVAGE_DEBUG"):
            raise
        print(terminal_line(f"srsalvage: internal error: {type(exc).__name__}: {exc} "
                            f"(set SRSALVAGE_DEBUG=1 for a traceback)"), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
