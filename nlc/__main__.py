import sys

from nlc.cli import main

sys.exit(main())
