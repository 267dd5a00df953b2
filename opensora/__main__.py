import sys

from opensora.cli import main

sys.exit(main())
