"""`python -m wrapperlens ...` runs the command line (also what `torchrun -m wrapperlens` starts)."""

import sys

from wrapperlens.cli import main

sys.exit(main())
