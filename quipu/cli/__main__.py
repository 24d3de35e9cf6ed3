"""``python -m quipu.cli``: the same command line as the ``quipu`` script."""

from quipu.cli import main

main()
