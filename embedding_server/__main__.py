"""``python -m embedding_server serve ...`` is the same as the ``embedding-server`` command."""

import sys

from .cli import main

sys.exit(main())
