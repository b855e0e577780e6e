import sys

from services.ingest.cli import main

sys.exit(main(sys.argv[1:]))
