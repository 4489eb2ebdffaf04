"""torch's launcher (torchrun) as the worker starts a job's ranks: the same arguments, but a
rank that fails is one log line, not torch's traceback in the worker's log.

    python -m workers.launch --standalone --nproc-per-node 2 -m workers.rank …
"""

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        for rank, failure in sorted(exc.failures.items()):
            print(f"rank {rank} failed with exit code {failure.exitcode}", file=sys.stderr)
        return 1
    except SignalException as exc:  # the worker stops the group: its ranks were stopped too
        print(f"stopped by {exc.sigval.name}", file=sys.stderr)
        return 128 + exc.sigval
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
