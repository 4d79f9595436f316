"""``python -m trainer.pretrain``: see :mod:`trainer.pretrain.main`."""

import sys

from trainer.pretrain.main import main

sys.exit(main())
