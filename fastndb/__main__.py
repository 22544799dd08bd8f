"""``python -m fastndb``: the same as the ``fastndb`` console script."""

import sys

from fastndb.cli import main

if __name__ == "__main__":
    sys.exit(main())
