import sys

from ghn.cli import main

sys.exit(main())
