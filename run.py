#!/usr/bin/env python
"""``python run.py <command>``: the cmrssp command line (:mod:`cmrssp.cli`), the same as the
``cmrssp`` console script. ``python run.py --help`` lists the commands."""

import sys

from cmrssp.cli import main

if __name__ == "__main__":
    sys.exit(main())
