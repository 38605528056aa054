"""`python -m medklip.data.synthetic --out DIR --n N [--seed S] [--size P] [--workers W]`."""

import sys

from medklip.data.synthetic.generator import main

sys.exit(main())
