"""`tune`: search the deployment space for the fastest candidate that keeps accuracy, measured
(`search`), its space of passes, precisions and batches (`space`), and its report (`report`).
Imports any layer below it; never pipeline."""
