"""The LightningModule and what a run adds around it.

Owns ``NERModel`` (``model``), the KLUE metrics as torchmetrics (``metrics``), the callbacks
the CLI installs (``callbacks``: predictions to JSONL, the best model exported, memory released)
and the per-type report ``test`` writes (``report``).
May import: corpus, alignment, checkpoint, data, inference and the top-level helpers.
"""
