"""pytest --nbval book: turn off progress bars in the kernels so stored outputs never hold timings."""

import os

os.environ["PDLIB_PROGRESS"] = "0"
