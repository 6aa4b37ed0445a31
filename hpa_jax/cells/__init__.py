"""Cells: finding each cell and nucleus of a field (an embedded segmentation, or the user's own
masks) and scoring instances against a known truth."""
