"""pyxen — the xl-compatible command line."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from .toolstack.xlcfg import XlCfgError


def _console_writer(stream):
    out = stream.buffer if hasattr(stream, "buffer") else stream

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()
    return write


def _crlf(write):
    """In raw terminal mode a bare LF does not return the carriage."""
    def w(data: bytes) -> None:
        write(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return w


def cmd_create(args) -> int:
    from .build.errors import KernelImageError
    from .kvm import KvmUnavailable
    from .toolstack.domconfig import DomainConfig
    from .toolstack.runner import run_foreground, CreateError, EXIT_STATUS

    if not args.quiet:
        print(f"Parsing config from {args.config}", file=sys.stderr)
    try:
        cfg = DomainConfig.from_file(args.config, args.overrides)
    except XlCfgError as e:
        print(f"pyxen: {e}", file=sys.stderr)
        return 64
    except OSError as e:
        print(f"pyxen: cannot read {args.config}: {e.strerror}", file=sys.stderr)
        return 66
    for w in cfg.warnings:
        print(w, file=sys.stderr)
    if args.console:
        console = _console_writer(sys.stdout)
        log_file = None
    else:
        logdir = os.environ.get("PYXEN_LOG_DIR") or os.path.expanduser("~/.local/state/pyxen")
        os.makedirs(logdir, exist_ok=True)
        path = os.path.join(logdir, f"guest-{cfg.name}.log")
        log_file = open(path, "ab")
        console = _console_writer(log_file)
        if not args.quiet:
            print(f"pyxen: console of {cfg.name} is logged to {path}", file=sys.stderr)
    trace = open(args.trace, "w") if args.trace else None
    stdin = None
    saved_tty = None
    if args.console and not sys.stdin.closed:
        try:
            stdin = sys.stdin
            if sys.stdin.isatty():
                import termios
                import tty
                saved_tty = termios.tcgetattr(sys.stdin.fileno())
                tty.setraw(sys.stdin.fileno())
                console = _crlf(console)
        except (OSError, ValueError):
            stdin = None
    try:
        outcome = run_foreground(cfg, console=console, trace=trace, stdin=stdin)
    except KvmUnavailable as e:
        print(f"pyxen: {e}", file=sys.stderr)
        return 69
    except (KernelImageError, CreateError) as e:
        print(f"pyxen: {e}", file=sys.stderr)
        return 65
    finally:
        if saved_tty is not None:
            import termios
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved_tty)
        if trace:
            trace.close()
        if log_file:
            log_file.close()
    res = outcome.result
    if res.reason == "crash":
        print(f"\npyxen: domain {cfg.name} crashed: {res.message}", file=sys.stderr)
    elif not args.quiet:
        code = f" (code {res.code})" if res.code is not None else ""
        print(f"\npyxen: domain {cfg.name} shut down: {res.reason}{code}", file=sys.stderr)
    return outcome.exit_status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyxen", description="pyxen: Xen on KVM, with xl's commands.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("create", help="create a domain from an xl.cfg file",
                       description="Create a domain from an xl.cfg(5) file and run it. Without "
                       "a running pyxend it runs in the foreground until the domain is gone; "
                       "the exit status tells why: 0 poweroff, 1 crash, 2 reboot, 3 suspend, "
                       "4 watchdog, 5 soft_reset, 6 destroyed; 64 config error, 65 bad kernel, "
                       "69 no KVM.")
    c.add_argument("config", metavar="FILE.cfg")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings that override the file (xl syntax)")
    c.add_argument("-c", dest="console", action="store_true",
                   help="attach to the console (show it on this terminal)")
    c.add_argument("-q", dest="quiet", action="store_true", help="quiet")
    c.add_argument("-p", dest="paused", action="store_true",
                   help="leave the domain paused after creating it (with pyxend)")
    c.add_argument("--trace", metavar="FILE",
                   help="write a per-domain trace of hypercalls and traps to FILE")
    c.set_defaults(func=cmd_create)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * args.verbose,
                        format="%(name)s: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
