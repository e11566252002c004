import sys

from sepit.cli import main

sys.exit(main())
