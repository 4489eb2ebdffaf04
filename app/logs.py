"""The one logging set-up of the API and the worker: one line per event, at INFO."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=FORMAT)
