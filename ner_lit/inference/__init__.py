"""Texts in, entities out, without Lightning: what ``serve`` and exported models run.

Owns the ``Predictor`` facade (``predictor``), building a tagger from a checkpoint or an
exported directory (``loading``), running the network over windows with batching and packing
(``runner``) and the alternative runtimes with the checks that admit them (``runtimes``).
May import: corpus, alignment, checkpoint and the top-level helpers; never data, training or serving.
"""
