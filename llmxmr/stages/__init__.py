"""The three stages of a run: map (one call per chunk), collapse (merge groups), reduce (answer).
Each builds its stage's messages and makes the decisions that need no task family; the task
families (``llmxmr.families``) sit above the stages and use them, never the other way round."""
