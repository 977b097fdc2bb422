"""``ner_lit serve``: the HTTP API and demo page over one Predictor.

Owns the Flask app (``app``), the waitress server with its limits (``server``), the
micro-batcher that turns concurrent requests into one model call (``batching``), the start-up
(``launch``) and serve's own parser, which needs no Lightning (``cli``).
May import: alignment (answers), checkpoint (choosing a checkpoint), inference and the top-level helpers.
"""
