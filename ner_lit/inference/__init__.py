"""Texts in, entities out, without Lightning: what ``serve`` and exported models run.

Owns the ``Predictor`` facade (``predictor``), building a tagger from a checkpoint or an
exported directory (``loading``), running the network over windows with batching and packing
(``runner``), the alternative runtimes with the checks that admit them (``runtimes``) and
the choice among them with its typed status, ``RuntimeStatus``/``PackingStatus`` (``choice``,
which imports no torch, so ``serve --help`` stays light).
May import: corpus, alignment, checkpoint and the top-level helpers; never data, training or serving.
"""
