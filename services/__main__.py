"""``python -m services COMMAND ...``: the ``shopstream`` command, for processes started by another."""
import sys

from services.cli import main

sys.exit(main())
