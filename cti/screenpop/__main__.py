"""``python -m cti.screenpop``: the same as ``cti screenpop``."""

import sys

from cti.cli import main

sys.exit(main(["screenpop", *sys.argv[1:]]))
