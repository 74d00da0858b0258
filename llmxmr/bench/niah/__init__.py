"""Needle in a haystack: needles hidden at chosen depths of a haystack of chosen lengths, one
pipeline run per cell, scored, resumable, drawn as a heatmap."""
