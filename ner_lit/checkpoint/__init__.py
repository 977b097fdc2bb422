"""What a trained tagger is, and the files that carry it.

Owns the typed, versioned record of a tagger (``spec``: pure data plus its JSON file), the
checkpoint's ``ner_lit`` section and the checks run before anything is built from a file
(``format``), tokenizers carried as text (``tokenizer``), checkpoints written atomically and
resumed exactly (``io``) and run folders, ``best`` and ``last`` (``runs``).
May import: ``ner_lit.alignment`` (for its constants), ``ner_lit.resources`` and the top-level helpers.
"""
