"""``python -m medevents`` is the ``medevents`` command."""

import sys

from medevents.cli import main

sys.exit(main())
