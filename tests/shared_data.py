"""Where the tests find the project's shared data, and the reason they skip without it.

A developer's checkout has ``../shared`` beside it (the study's split files, the real ACDC scans);
a user's clone does not, and every test that reads it skips with the reason below.
"""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
UPSTREAM_SPLITS = SHARED / "data" / "upstream-splits"
REAL_ACDC = SHARED / "data" / "real" / "acdc" / "training"

UPSTREAM_MISSING = "the study's split files are not present (../shared is absent in a user's clone)"
REAL_ACDC_MISSING = "real ACDC scans not present (../shared/data/real is absent in a user's clone)"
