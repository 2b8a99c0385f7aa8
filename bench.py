#!/usr/bin/env python
"""MissBench entry point: `python bench.py --protocol non_dedicated --methods shaspec,zero_fill`."""

import sys

from missbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
