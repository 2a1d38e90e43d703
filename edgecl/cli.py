"""The ``edgecl`` command: ``run | demo | learn | bench | models | memory | labels | scenario | monitor``.

Dotted ``section.key=value`` arguments anywhere on the line override the config file (a
command that reads no config refuses them; an option's value is never one).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import re
import signal
import sys

from edgecl import __version__
from edgecl.errors import EdgeclError, describe_os_error
from edgecl.logs import basic_config, one_line
from edgecl.stop_signals import HANGUP_SIGNALS, SigtermExit, stop_received

# INVARIANT: each name is a module in edgecl.commands exposing add_parser(subparsers).
COMMAND_MODULES = ("run", "demo", "status", "learn", "bench", "models", "memory", "labels",
                   "scenario", "monitor", "classes", "dataset", "fleet")

OVERRIDE_RE = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*=")
"""A ``section.key=value`` word (hyphens too: the config names ``learner.max-steps`` as unknown
and suggests ``learner.max_steps``)."""


def split_overrides(argv: list[str], parser: argparse.ArgumentParser | None = None
                    ) -> tuple[list[str], list[str]]:
    """Separate ``section.key=value`` overrides from ordinary arguments.

    Args:
        argv: command-line arguments (without the program name).
        parser: with it, an option's value stays an argument even when it looks like an
            override (``--config v=2.yaml``, ``--out run=1.jsonl``).

    Returns:
        ``(arguments, overrides)``.
    """
    args, overrides = [], []
    value_next = False
    for token in argv:
        if value_next:
            args.append(token)
            value_next = False
        elif OVERRIDE_RE.match(token) and _names_a_setting(token.split("=", 1)[0]):
            overrides.append(token)
        else:
            args.append(token)
            if parser is not None:
                parser, value_next = _follow(parser, token)
    return args, overrides


def _names_a_setting(key: str) -> bool:
    """Whether ``key`` (the text before ``=``) can be a config key: dotted (``learner.lr``) or a
    top-level field (``state_dir``, a section's name). A file argument such as ``m=1.onnx`` or
    ``ds=v2`` is then not taken for a setting."""
    import dataclasses

    from edgecl.config import Config

    return "." in key or key in {f.name for f in dataclasses.fields(Config)}


def _follow(parser: argparse.ArgumentParser, token: str) -> tuple[argparse.ArgumentParser, bool]:
    """The parser that reads the arguments after ``token`` (a sub-command's, when ``token``
    names one), and whether ``token`` is an option whose value is the next argument."""
    if token.startswith("-") and "=" not in token:
        options = parser._option_string_actions
        action = options.get(token)
        if action is None and token.startswith("--"):  # argparse accepts a unique prefix
            found = {a for name, a in options.items() if name.startswith(token)}
            action = found.pop() if len(found) == 1 else None
        return parser, action is not None and action.nargs != 0
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and token in action.choices:
            return action.choices[token], False
    return parser, False


def _command_parser(parser: argparse.ArgumentParser, args: list[str]) -> argparse.ArgumentParser:
    """The (sub-)parser of the command that ``args`` (overrides removed) name."""
    value_next = False
    for token in args:
        if value_next:
            value_next = False
        else:
            parser, value_next = _follow(parser, token)
    return parser


PATH_OPTIONS = ("config", "state_dir", "model", "out", "save_video", "cache_dir", "work_dir",
                "boxes", "data", "initial_model")
"""Options that name a file or folder: a leading ``~`` is the home folder, as a shell makes it of
``--out ~/x`` but not of ``--out=~/x`` (which made a folder named ``~``)."""


class UsageExit(SystemExit):
    """argparse's exit on a usage error (code 2), carrying its one-line message.

    Attributes:
        message: the line printed on stderr, without ``error: ``.
    """

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), like every other
    user mistake: ``error: <what>; see 'edgecl labels import --help'``, and whose options are
    taken once (:class:`edgecl.arguments.StoreOnce`). Sub-parsers inherit it.

    Raises:
        UsageExit: on a usage error, after the line is printed (a ``SystemExit`` as argparse's).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from edgecl.arguments import StoreOnce

        self.register("action", None, StoreOnce)  # an option given twice is refused
        self.register("action", "store", StoreOnce)

    def parse_known_args(self, args=None, namespace=None):  # noqa: D102 - argparse's
        self._given = list(sys.argv[1:] if args is None else args)  # for error()'s hint
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # noqa: D102 - argparse's hook
        message += self._dash_value_hint(message)
        line = one_line(f"{message}; see '{self.prog} --help'")
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise UsageExit(line)

    def _dash_value_hint(self, message: str) -> str:
        """How to give a value that starts with '-' (``--ratios -1,1,1``: argparse takes
        ``-1,1,1`` for an option and says only "expected one argument"), or ``""``."""
        wanted = re.fullmatch(r"argument (-[\w-]+)(?:/-\w)?: expected one argument", message)
        given = getattr(self, "_given", [])
        if not wanted or wanted.group(1) not in given:
            return ""
        after = given[given.index(wanted.group(1)) + 1:][:1]
        if not after or not after[0].startswith("-") or after[0] == "--" or \
                after[0].split("=")[0] in self._option_string_actions:  # an option: no value
            return ""
        return f" (a value that starts with '-' is written {wanted.group(1)}={after[0]})"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available command group.

    Returns:
        The top-level parser.
    """
    from edgecl.commands.common import OVERRIDES_HELP

    parser = OneLineParser(
        prog="edgecl", description="On-device continual learning for YOLO detectors.",
        epilog=OVERRIDES_HELP)
    parser.add_argument("--version", action="version", version=f"edgecl {__version__}")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"edgecl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"edgecl.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def _report_error(args, message: str) -> None:
    """One ``error: ...`` line on stderr; with ``--json`` also ``{"error": ...}`` as the last
    stdout line, as ``--json`` promises a JSON object there (unless stdout itself failed)."""
    print(f"error: {one_line(message)}", file=sys.stderr)  # JSON escapes line breaks itself
    if getattr(args, "json", False) and not _stdout_failed():
        try:
            print(json.dumps({"error": message}), flush=True)
        except OSError:  # stdout is what failed (a full disk under a redirect): said on stderr
            _stdout_to_devnull()


class _WatchedStdout:
    """``sys.stdout`` of the command line, remembering a write that failed (a redirect to a file
    on a full card, ``/dev/full``): the error then says stdout, not a path the user named, and
    writes no JSON line to the stream that just refused one (before: two tracebacks)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        """Write ``text``; raises the stream's own error, remembered."""
        try:
            return self._stream.write(text)
        except OSError as exc:
            self.failed = exc
            raise

    def flush(self) -> None:
        """Flush; raises the stream's own error, remembered."""
        try:
            self._stream.flush()
        except OSError as exc:
            self.failed = exc
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_failed() -> bool:
    """Whether a write to stdout failed in this command (see :class:`_WatchedStdout`)."""
    return getattr(sys.stdout, "failed", None) is not None


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null: what stdout still holds goes nowhere, and the interpreter's own
    flush at exit raises nothing ('Exception ignored ... No space left on device')."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgecl`` console script.

    Run as the process's own command line (``argv`` None), one of edgecl's own threads still
    alive at the end (a sink blocked past its shutdown deadline, logged by the runtime) no
    longer decides how the process ends: a daemon thread inside native code (OpenVINO,
    onnxruntime, torch) aborted the interpreter's shutdown ("terminate called without an active
    exception", exit 134). Then the output is flushed and the process exits at once with the
    command's code. Idle worker threads of libraries' pools are left to the interpreter.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit code: 0 success, 1 failure reported by a command, 2 usage or input
        error, 130 interrupted.
    """
    if argv is None:
        _stop_cleanly_on_signals()
        _never_fail_on_characters()
        _quiet_video_library()
        if sys.stdout is not None:
            sys.stdout = _WatchedStdout(sys.stdout)
    try:
        code = _main(argv)
    except (SigtermExit, KeyboardInterrupt):
        if argv is None:
            _ignore_later_stop_signals()
        raise
    finally:
        if argv is None:
            # the interpreter's last garbage collection walks every object that torch,
            # ultralytics and Flower made: 4 s of a stop of 'fleet join', with nothing to free
            # that the process's end does not free; objects frozen now are left out of it
            gc.freeze()
    if argv is None:
        if code in (129, 130, 143):
            _ignore_later_stop_signals()
        _exit_past_left_behind_threads(code)
    return code


def _ignore_later_stop_signals() -> None:
    """A command stopped by SIGTERM or Ctrl-C has unwound: a second signal now changes nothing.
    Before, one arriving while the interpreter shut down found the default action again
    (Python restores it for signals with a Python handler) and killed the process by the
    signal, so that its parent saw "killed by SIGTERM" instead of exit code 143. An ignored
    signal stays ignored through the shutdown."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread: nothing to do
            pass


def _never_fail_on_characters() -> None:
    """Print what the terminal's encoding cannot show as escapes (``Fahrrad_\\xfc``), as
    Python already does on stderr: under a C locale with Python's UTF-8 mode off (an
    ``LC_ALL=C`` cron job or service), stdout is ASCII and a class name such as ``Fahrrad_ü``
    made ``edgecl classes list`` fail with an internal error."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


FFMPEG_LOG_ENV = "OPENCV_FFMPEG_LOGLEVEL"
"""OpenCV reads FFmpeg's log level from this variable when it loads; a user's own value wins."""
OPENCV_LOG_ENV = "OPENCV_LOG_LEVEL"
"""OpenCV's own log level, read when it loads; a user's own value wins."""


def _quiet_video_library() -> None:
    """Silence FFmpeg's own lines (``[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55f3...] moov atom not
    found``) before OpenCV is first imported: a broken video printed one before edgecl's error,
    which says what and where, and a stream of damaged MJPEG frames one per frame (FFmpeg logs
    ``No JPEG data found in image`` at its fatal level) for as long as it ran; edgecl counts
    the frames it skips. ``OPENCV_FFMPEG_LOGLEVEL=24`` shows FFmpeg's warnings again.
    OpenCV's own warnings go too (``[ WARN:1@30.027] global cap_ffmpeg_impl.hpp:435
    _opencv_ffmpeg_interrupt_callback Stream timeout triggered`` for a stalled RTSP stream,
    which edgecl reports as a failed read and a reconnect); ``OPENCV_LOG_LEVEL=WARNING`` shows
    them again."""
    os.environ.setdefault(FFMPEG_LOG_ENV, "-8")  # AV_LOG_QUIET
    os.environ.setdefault(OPENCV_LOG_ENV, "ERROR")


def _stop_cleanly_on_signals() -> None:
    """Make SIGTERM (``timeout``, a service stop) end a command as Ctrl-C does: by unwinding,
    so that its temporary files (private copies of a state directory's databases, half-written
    exports) are removed; the default action killed the process where it stood. A second stop
    signal is ignored while the first unwinds (:mod:`edgecl.stop_signals`). ``edgecl run``
    installs its own handler (a clean shutdown of the runtime) on top of this one."""
    import signal

    from edgecl.stop_signals import unwind_once_on_stop_signals

    sigint = signal.getsignal(signal.SIGINT)
    if (signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            and sigint in (signal.default_int_handler, signal.SIG_IGN)):
        # a command started in the background ('cmd &' in a script, nohup) ignores SIGINT:
        # it keeps ignoring it, and still unwinds on SIGTERM (before, it was killed where it
        # stood, leaving its temporary files)
        unwind_once_on_stop_signals(ignore_sigint=sigint is signal.SIG_IGN)


def _exit_past_left_behind_threads(code: int) -> None:
    """``os._exit(code)`` after flushing, when one of edgecl's threads (``edgecl-*``) is alive."""
    import threading

    left = [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and t.name.startswith("edgecl-")]
    if not left:
        return
    logging.getLogger("edgecl").warning("exiting past %d thread(s) still running: %s",
                                        len(left), ", ".join(left[:5]))
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said
            pass
    os._exit(code)


def _parse(parser: argparse.ArgumentParser, args_list: list[str],
           overrides: list[str]) -> argparse.Namespace:
    """Parse the ordinary arguments and attach the overrides.

    Raises:
        UsageExit: a usage error (printed); also words that the benchmarks' ``overrides``
            positional caught but are no ``section.key=value`` setting (a typo such as
            ``learner.max_steps 3`` would otherwise be dropped and the run go on without it),
            and overrides given to a command that reads no config, or two settings of one
            key with two values.
    """
    args, unknown = parser.parse_known_args(args_list)
    if unknown:  # named by the command's own parser, whose --help lists what it takes
        command = _command_parser(parser, args_list)
        first = next((k for k, a in enumerate(args_list) if not a.startswith("-")
                      and (k == 0 or args_list[k - 1] != "--log-level")), len(args_list))
        where = ""
        if any(a.split("=")[0] == "--json" for a in args_list[:first]):
            where = " (--json goes after the command's name: 'edgecl status --json')"
        elif command is not parser and any(u.split("=")[0] == "--log-level" for u in unknown):
            where = (" (--log-level goes before the command's name: 'edgecl --log-level DEBUG "
                     "status')")
        command.error(f"unrecognized arguments: {' '.join(unknown)}{where}")
    stray = getattr(args, "overrides", None)
    if stray:
        shown = " ".join(stray[:4]) + (" ..." if len(stray) > 4 else "")
        _command_parser(parser, args_list).error(
            f"unrecognized arguments: {shown} (a setting is written section.key=value)")
    if overrides and getattr(args, "func", None) and not hasattr(args, "config"):
        shown = ", ".join(o if len(o) <= 60 else o[:57] + "..." for o in overrides[:3])
        _command_parser(parser, args_list).error(
            f"{shown}{', ...' if len(overrides) > 3 else ''}: this command reads no config, so "
            f"section.key=value settings do not apply to it")
    given: dict[str, str] = {}
    for text in overrides:  # the last of two settings of one key won without a word
        key, _, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if given.get(key, value) != value:
            _command_parser(parser, args_list).error(
                f"{key} set twice ({given[key]!r}, then {value!r}): give it once")
        given[key] = value
    args.overrides = overrides
    for name in PATH_OPTIONS:  # '--out=~/x': no shell expands a ~ after '='
        value = getattr(args, name, None)
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, name, os.path.expanduser(value))
    return args


def _main(argv: list[str] | None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
    except KeyboardInterrupt:  # Ctrl-C while the commands' modules load (~1 s): no traceback
        print("interrupted", file=sys.stderr)
        if any(len(a) > 2 and "--json".startswith(a) for a in words):
            print(json.dumps({"error": "interrupted"}), flush=True)
        return 130
    except SigtermExit:
        if any(len(a) > 2 and "--json".startswith(a) for a in words):
            print(json.dumps({"error": "stopped by SIGTERM"}), flush=True)
        raise
    args_list, overrides = split_overrides(words, parser)
    try:
        args = _parse(parser, args_list, overrides)
    except UsageExit as exc:
        # --json (or a prefix argparse takes for it, '--js') promises a JSON last stdout line
        if any(len(a) > 2 and "--json".startswith(a) for a in args_list):
            print(json.dumps({"error": exc.message}), flush=True)
        raise
    basic_config(getattr(logging, str(args.log_level).upper(), logging.INFO),
                 "%(asctime)s %(levelname)s %(name)s: %(message)s", sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeclError as exc:
        _report_error(args, str(exc))
        return 2
    except BrokenPipeError:  # output piped into a reader that stopped (head, less): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if _stdout_failed():  # its output, not a path the user named (before: two tracebacks)
            _stdout_to_devnull()
            print(f"error: cannot write the output to stdout: {exc.strerror or exc} (what the "
                  f"command did is done; only its report is lost)", file=sys.stderr)
            return 1
        _report_error(args, describe_os_error(exc))  # a path: missing, not writable, disk full
        return 2
    except KeyboardInterrupt:
        return _interrupted(args)
    except SigtermExit:  # its handler logged the stop
        _say_sigterm(args)
        raise
    except Exception as exc:  # the last line of defence: a fault of edgecl's own, not the user's
        logging.getLogger("edgecl").debug("internal error", exc_info=True)
        if stop_received() == signal.SIGINT:  # Ctrl-C that a library turned into its own error
            return _interrupted(args)
        if stop_received() in HANGUP_SIGNALS:
            _say_sigterm(args)
            raise SigtermExit(128 + stop_received()) from None
        _report_error(args, f"internal error ({type(exc).__name__}: {exc}); run with "
                            f"--log-level DEBUG for the traceback, and please report it")
        return 1


def _interrupted(args: argparse.Namespace) -> int:
    """Say that a command was interrupted (Ctrl-C): ``interrupted`` on stderr and, with
    ``--json``, a last stdout line saying it did not finish.

    Returns:
        130, the exit code of a command stopped by SIGINT.
    """
    print("interrupted", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": "interrupted"}), flush=True)
    return 130


def _say_sigterm(args: argparse.Namespace) -> None:
    """With ``--json``, a last stdout line saying that SIGTERM (or SIGHUP) stopped the
    command."""
    if getattr(args, "json", False):
        name = signal.Signals(stop_received() or signal.SIGTERM).name
        print(json.dumps({"error": f"stopped by {name}"}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
