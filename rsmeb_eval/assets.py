"""Moved to `vlm2geovec.data.assets` (the data layer no single user owns). This name stays, as that very module,
until the benchmark's builder imports the new home; new code imports `vlm2geovec.data.assets`."""

import sys

from vlm2geovec.data import assets as _assets

# The module itself, not a copy of its names: private helpers and monkeypatched attributes stay one object.
sys.modules[__name__] = _assets
