"""torchrun with a wall-clock stamp on its log lines.

Runs torch.distributed.run.main, the function /usr/bin/torchrun calls,
unchanged; it only gives the root logger a handler whose lines start with
unix milliseconds, so that the bench can tell from an agent's log when it
noticed a failed worker or a new node and when it re-formed its group.
Use it as torchrun: python3 launch.py --nnodes=3:4 ... train.py ARGS.
"""

import logging
import sys

from torch.distributed.run import main


class StampFormatter(logging.Formatter):
    def format(self, record):
        return "%d %s %s: %s" % (int(record.created * 1000), record.levelname, record.name, record.getMessage())


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StampFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    sys.exit(main())
