import sys

from maskformer.cli import main

sys.exit(main())
