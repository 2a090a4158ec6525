"""``python -m fastconv.bench``: the ``fastconv-bench`` command; exits with :func:`main`'s code."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
