"""Logging set-up shared by the workflow scripts: everything goes to the rule's log file."""

from __future__ import annotations

import logging
import sys


def setup(log_file: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Route logging, prints, tqdm progress, warnings and uncaught tracebacks to `log_file`.

    Snakemake's `script:` does not redirect stderr, so without this a rule's `log:` stays empty.
    """
    if log_file:
        sys.stderr = open(log_file, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stdout = sys.stderr  # Trainer prints its loss lines to stdout
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logger = logging.getLogger("cotdistill")

    def excepthook(kind, value, tb):  # noqa: ANN001
        logger.error("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))
        sys.__stderr__.write(f"{kind.__name__}: {value}\n")

    sys.excepthook = excepthook
    return logger
