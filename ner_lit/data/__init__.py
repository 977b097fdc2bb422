"""Files to batches: the LightningDataModule and everything under it.

Owns ``NERDataModule`` (``datamodule``: the Lightning seam) and what it is made of: its typed
settings groups (``settings``), which file each stage reads (``files``), digests, label sets,
tokenizers and encodings, cached by content (``preparation``), what a model needs of the data
(``tagger_data``), its batch samplers (``samplers``), the training loader that resumes
mid-epoch (``resumable``), the encoded corpus kept as flat memory-mapped arrays (``cache``) and
the datasets over it (``datasets``), the chunked stream ``predict`` reads (``stream``) and
tokenizers built from scratch (``scratch``).
May import: corpus, alignment, checkpoint and the top-level helpers.
"""
