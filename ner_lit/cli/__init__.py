"""The ``ner_lit`` command: a light front, LightningCLI behind it, cached parser answers.

``command`` answers ``--help`` and usage errors without importing Lightning (from ``cache``);
``lightning`` is the LightningCLI that runs fit/validate/test/predict; ``serve`` is handed to
``ner_lit.serving.cli``.
May import: every other package (nothing imports cli).
"""
