"""Logging for the CLI and the app: our lines at INFO, third-party request logs kept quiet."""

import logging

# httpx logs every request URL at INFO (the refinement server's, with whatever credentials it
# carries); bitsandbytes warns at import about optional CPU kernels nobody here uses.
QUIET = {"httpx": logging.WARNING, "httpx2": logging.WARNING, "bitsandbytes": logging.ERROR}


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)
