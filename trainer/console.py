"""What ``make train`` prints: the run's own lines, not Ray's, Serve's or Train's chatter.

By default the driver shows the run folder, one progress bar, the summary and where the
outputs are. Ray's workers do not forward their logs to the driver (``log_to_driver``), and
the loggers of Ray, Serve, Train, transformers and diffusers only pass errors. Their full
logs stay in Ray's session folder; ``--verbose`` (``logging.verbose=true``) shows them all.
"""

from __future__ import annotations

import logging
import os
import warnings

CHATTY_LOGGERS = ("ray", "ray.serve", "ray.train", "ray.data", "transformers", "diffusers")


def wants_verbose(args: list[str]) -> tuple[bool, list[str]]:
    """``--verbose`` taken out of the command line as ``logging.verbose=true``."""
    verbose = "--verbose" in args or "logging.verbose=true" in args
    rest = [a for a in args if a != "--verbose"]
    if "--verbose" in args:
        rest.append("logging.verbose=true")
    return verbose, rest


def configure_console(verbose: bool) -> None:
    """Our loggers at INFO; the libraries' at ERROR unless ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries(verbose)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


def quiet_libraries(verbose: bool) -> None:
    """Set the libraries' loggers to INFO (``verbose``) or ERROR. Called again after Ray and
    Serve start: each installs its own handler and level when it first runs."""
    level = library_level(verbose)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def library_level(verbose: bool) -> int:
    """The level of the libraries' loggers (also ``ray.init(logging_level=...)``)."""
    return logging.INFO if verbose else logging.ERROR
