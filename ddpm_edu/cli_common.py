"""What every command of `python -m ddpm_edu` shares (plumbing, not generated): the one-line error, the parser
that raises it, and the argparse types that check numbers before any work starts."""

from __future__ import annotations

import argparse
import math


EXIT_USAGE = 2  # a wrong flag or value
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class CliError(Exception):
    """A user error to be printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage block) and shows every flag's default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise CliError(f"{self.prog}: {message} (see --help)")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append '(default: X)' to the help of every option that has a default other than None or False."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def number(text: str, kind=float):
    """Parse an int or a finite float; argparse's error otherwise ('nan' and 'inf' are refused)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= minimum, described as `what` in the error."""
    def parse(text: str) -> int:
        value = number(text, int)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


def float_in(low: float, high: float, what: str, low_open: bool = False, high_open: bool = False):
    """An argparse type: a float in [low, high] (open at either end on request), described as `what`."""
    def parse(text: str) -> float:
        value = number(text, float)
        above_low = low < value if low_open else low <= value
        below_high = value < high if high_open else value <= high
        if not (above_low and below_high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")
unit_float = float_in(0.0, 1.0, "a number in [0, 1]")
finite_float = number

