"""Data: readers for the on-disk layouts, the synthetic cohort, the prepared cache, slice sets."""
