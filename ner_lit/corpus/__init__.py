"""Sentences and the files they live in: the one record every other package speaks.

Owns the sentence and entity records (``records``), reading lines with errors that name the
file and line (``lines``), and one reader/writer per format: KLUE TSV and its download
(``klue``), JSON Lines (``jsonl``), plain text (``text``), chosen by ``formats``.
May import: the standard library, ``ner_lit.errors``, ``ner_lit.files``. Nothing else of ner_lit.
"""
