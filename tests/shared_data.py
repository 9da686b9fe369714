"""Where the tests find the project's shared data, and how they skip without it.

A developer's checkout has ``../shared`` beside it (the study's split files, the real ACDC scans);
a user's clone does not. Nothing here reads the folder: ``needs_upstream`` / ``needs_real_acdc``
mark a test, and ``skip_module_without_real_acdc()`` skips a whole module, each with a reason
that says the data are absent, so the test command passes on a fresh clone.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UPSTREAM_SPLITS = SHARED / "data" / "upstream-splits"
REAL_ACDC = SHARED / "data" / "real" / "acdc" / "training"

UPSTREAM_MISSING = "the study's split files are not present (../shared is absent in a user's clone)"
REAL_ACDC_MISSING = "real ACDC scans not present (../shared/data/real is absent in a user's clone)"

needs_upstream = pytest.mark.skipif(not UPSTREAM_SPLITS.is_dir(), reason=UPSTREAM_MISSING)
needs_real_acdc = pytest.mark.skipif(not REAL_ACDC.is_dir(), reason=REAL_ACDC_MISSING)


def skip_module_without_real_acdc() -> None:
    """Call at the top of a test module that needs the real scans everywhere."""
    if not REAL_ACDC.is_dir():
        pytest.skip(REAL_ACDC_MISSING, allow_module_level=True)
