"""``python -m quipu``: the same as the ``quipu`` script (``quipu.entry``)."""

from quipu.entry import main

main()
