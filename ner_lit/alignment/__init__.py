"""Where characters meet tokens: KLUE scores characters, models score tokens.

Owns the records handed on (``windows``), which characters a token owns (``tokenizers``),
encoding sentences into windows (``aligner``), decoding logits back to character tags
(``decoding``, which the aligner holds), the constrained IOB2 search (``viterbi``), batching
windows into model inputs (``collate``) and the one shape of an answer (``answers``).
Training, evaluation, predict and serve all go through it, so they cannot disagree about a
boundary.
May import: ``ner_lit.corpus`` and the top-level helpers; never data, training, inference or serving.
"""
