import sys

from supervisor.cli.commands import main

sys.exit(main())
