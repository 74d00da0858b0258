"""The three stages of a run: map (one call per chunk), collapse (merge groups), reduce (answer)."""
