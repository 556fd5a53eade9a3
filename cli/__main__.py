import sys

from embedstore.cli.app import main

sys.exit(main())
