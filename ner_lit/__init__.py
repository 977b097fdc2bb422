"""ner_lit: Korean named-entity recognition with Lightning."""
__version__ = "0.1.0"
