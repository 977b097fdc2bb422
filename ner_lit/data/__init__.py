"""Files to batches: the LightningDataModule and everything under it.

Owns ``NERDataModule`` (``datamodule``), its batch samplers (``samplers``), the encoded corpus
kept as flat memory-mapped arrays (``cache``) and the datasets over it (``datasets``), the
chunked stream ``predict`` reads (``stream``) and tokenizers built from scratch (``scratch``).
May import: corpus, alignment, checkpoint and the top-level helpers.
"""
