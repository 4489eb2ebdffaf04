"""One way to run something in the background: a function every few seconds in a daemon
thread, until stopped. The worker's heartbeat and step writer and the API's sweeper use it."""

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("trainserve")


class Periodic:
    """Calls `function` every `seconds` (the first call one interval after `start`) until
    `stop`. An exception the function lets out is logged and the next call goes ahead: a
    background thread must not die silently. The function may call `stop` to end the loop."""

    def __init__(self, function: Callable[[], object], seconds: float, name: str):
        self.function, self.seconds, self.name = function, seconds, name
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "Periodic":
        self._thread.start()
        return self

    def stop(self) -> None:
        """No call starts after this returns; from another thread, it waits for one under way."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Periodic":
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stopped.wait(self.seconds):
            try:
                self.function()
            except Exception:
                log.exception("%s failed", self.name)
