import sys

from gatelang.cli import main

sys.exit(main())
