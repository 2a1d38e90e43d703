"""Value types of command-line options, shared by every parser (the CLI's commands and the
benchmarks' own options), and the one way a command prints its JSON summary line.

Each type raises :class:`argparse.ArgumentTypeError` with one line, which argparse shows as a
usage error naming the option.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from edgecl.config import RULES


class StoreOnce(argparse.Action):
    """argparse's ``store``, refusing an option given twice with two values: argparse keeps the
    last of two silently, so ``--config broken.yaml --config empty.yaml`` ran on the defaults and
    ``--frames 5 --frames 50`` ran 50 frames without a word. Every parser of the CLI takes it
    as its default action; a positional argument is stored as by ``store``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None:
            given = getattr(namespace, "_options_given", None)
            if given is None:
                given = {}
                setattr(namespace, "_options_given", given)
            if self.dest in given and given[self.dest] != values:  # the same value: taken, as
                # a key set twice to one value is (a wrapper's --state-dir given again)
                parser.error(f"{option_string} given twice ({_shown(given[self.dest])}, then "
                             f"{_shown(values)}): give it once")
            given[self.dest] = values
        setattr(namespace, self.dest, values)


def _shown(value: object) -> str:
    """An option's value as a usage error quotes it."""
    return repr(value) if isinstance(value, str) else repr(str(value))


def print_json_line(obj: object) -> None:
    """Print one compact JSON object as the last stdout line: strict JSON, a figure that is not
    a number (NaN, an infinity) as ``null`` (``jq`` refused the bare ``NaN`` of a score that
    could not be computed)."""
    from edgecl.atomic import json_safe

    print(json.dumps(json_safe(obj), sort_keys=True, allow_nan=False), file=sys.stdout,
          flush=True)


def output_path(text: str) -> str:
    """argparse type: a path to write to (``--out``), not empty or blank: ``--out ''`` (an
    unset shell variable) wrote into the current folder.

    Raises:
        argparse.ArgumentTypeError: an empty or blank path.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a file or folder to write, got {text!r}")
    return text


def input_path(text: str) -> str:
    """argparse type: a file or folder to read, not empty or blank: ``dataset import ''`` (an
    unset shell variable) read the current folder.

    Raises:
        argparse.ArgumentTypeError: an empty or blank path.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a file or folder to read, got {text!r}")
    return text


def scenario_only_options(args: argparse.Namespace, defaults: dict[str, object]) -> None:
    """Fill the options that shape the built-in scenario (``None``: not given) with their
    defaults, and refuse one given beside a ``--data`` of the user's own, which brings its own
    tasks and images (``--tasks 5`` was dropped without a word).

    Args:
        args: parsed options, with ``data``.
        defaults: option attribute -> its default.

    Raises:
        ConfigError: such an option given with ``--data`` other than ``scenario``.
    """
    from edgecl.errors import ConfigError

    given = [name for name in defaults if getattr(args, name) is not None]
    if args.data != "scenario" and given:
        option = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{option} shapes the built-in scenario (--data scenario); --data "
                          f"{args.data} brings its own tasks and images: leave {option} out")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a usage error, one line, otherwise).

    Raises:
        argparse.ArgumentTypeError: not an integer, or below 1.
    """
    return _int_at_least(text, 1)


def _int_at_least(text: str, low: int) -> int:
    """Parse ``text`` as an integer of at least ``low``.

    Raises:
        argparse.ArgumentTypeError: not an integer, or below ``low``.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def image_size(text: str) -> int:
    """argparse type: an image size in pixels, a positive multiple of 32 (the YOLO stride) no
    larger than the config's ``model.imgsz`` rule allows (4096: a larger input does not fit in
    memory, and the command would fail only once it allocated it).

    Raises:
        argparse.ArgumentTypeError: not a positive multiple of 32, or over the bound.
    """
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"expected a multiple of 32 (the model stride), got {value}")
    high = int(RULES["model.imgsz"].hi)
    if value > high:
        raise argparse.ArgumentTypeError(f"expected at most {high}, got {value}")
    return value


def train_image_size(text: str) -> int:
    """argparse type: an image size to train at, a multiple of 32 and at least 64 pixels (at 32
    a batch of one image leaves BatchNorm 1 x 1 maps and training fails).

    Raises:
        argparse.ArgumentTypeError: not a multiple of 32, or below 64.
    """
    value = image_size(text)
    if value < 64:
        raise argparse.ArgumentTypeError(f"expected at least 64 to train at, got {value}")
    return value


def torch_device(text: str) -> str:
    """argparse type: where to train, as ``learner.device`` accepts it (``auto``, ``cpu``,
    ``cuda`` or ``cuda:<index>``), checked before any work starts.

    Raises:
        argparse.ArgumentTypeError: any other text.
    """
    problem = RULES["learner.device"].problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def byte_size(text: str) -> int:
    """argparse type: a size in bytes, written as a whole number or with its unit as the
    config's ``*_bytes`` keys accept it (``512MiB``, ``1.5 GiB``, ``10GB``).

    Raises:
        argparse.ArgumentTypeError: neither, or a unit without its ``B``.
    """
    from edgecl.config import size_from_text
    from edgecl.errors import ConfigError

    try:
        size = size_from_text(text, "size", "the option")
    except ConfigError:
        size = None
    if size is None:
        try:
            return _int_at_least(text, 0)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected a size in bytes (e.g. 500000000, 512MiB or "
                                             f"1.5GB), got {text!r}") from None
    return size


MAX_SEEDS = 1000
"""Most seeds a benchmark takes (each is a whole run; a billion asked for planned a list that
filled the memory before anything ran)."""


def seed_count(text: str) -> int:
    """argparse type: a number of seeds, 1 to :data:`MAX_SEEDS`.

    Raises:
        argparse.ArgumentTypeError: not an integer, or outside 1..1000.
    """
    value = _int_at_least(text, 1)
    if value > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SEEDS} seeds, got {value}")
    return value


def thread_count(text: str) -> int:
    """argparse type: a number of threads, 1 to the config's ``learner.torch_threads`` bound
    (256): ``--threads 100000`` made torch's thread pool crash the process.

    Raises:
        argparse.ArgumentTypeError: not an integer, or outside 1..256.
    """
    return _threads(text, 1)


def thread_count_or_default(text: str) -> int:
    """argparse type: as :func:`thread_count`, or 0 for the library's default.

    Raises:
        argparse.ArgumentTypeError: not an integer, or outside 0..256.
    """
    return _threads(text, 0)


def _threads(text: str, low: int) -> int:
    value = _int_at_least(text, low)
    high = int(RULES["learner.torch_threads"].hi)
    if value > high:
        raise argparse.ArgumentTypeError(f"expected at most {high} threads, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a usage error, one line, otherwise).

    Raises:
        argparse.ArgumentTypeError: not an integer, or below 0.
    """
    return _int_at_least(text, 0)


def _finite_float(text: str, wanted: str, valid) -> float:
    """Parse ``text`` as a finite float that ``valid`` accepts (``nan`` and ``inf`` never are).

    Args:
        text: the option's value.
        wanted: what the option accepts, in words (for the error).
        valid: ``callable(float) -> bool``, the option's range.

    Raises:
        argparse.ArgumentTypeError: not a finite number, or outside the range.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if not (math.isfinite(value) and valid(value)):
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def finite_positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``nan``, ``inf``, 0 and negatives are usage errors).

    Raises:
        argparse.ArgumentTypeError: not a finite number above 0.
    """
    return _finite_float(text, "a finite number > 0", lambda v: v > 0)


def finite_non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``nan``, ``inf`` and negatives are usage errors).

    Raises:
        argparse.ArgumentTypeError: not a finite number at or above 0.
    """
    return _finite_float(text, "a finite number >= 0", lambda v: v >= 0)


def percentage(text: str) -> float:
    """argparse type: a percentage in (0, 100] (a share of something that cannot be empty).

    Raises:
        argparse.ArgumentTypeError: not a finite number in (0, 100].
    """
    return _finite_float(text, "a percentage in (0, 100]", lambda v: 0 < v <= 100)


def pixel_side(text: str) -> int:
    """argparse type: the side of a synthetic square image in pixels, within the bounds of the
    config's ``model.imgsz`` rule (32..4096) but of any value in between (no stride to respect).

    Raises:
        argparse.ArgumentTypeError: not an integer in the bounds.
    """
    rule = RULES["model.imgsz"]
    low, high = int(rule.lo), int(rule.hi)
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {value}")
    return value
