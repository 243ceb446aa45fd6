"""``python -m app.cli``: the same command as ``repic``."""

from app.cli import main

main()
