"""Files that ship with ner_lit: the page template, the recipes, the sample corpus.

In the source tree the page template lives in ``templates/`` and the recipes in
``configs/`` at the top level (their source of truth); a built wheel carries copies inside
the package (``ner_lit/templates``, ``ner_lit/recipes``, see pyproject.toml). Every lookup
tries the package first and the source tree second, so the same code works installed,
editable and from a checkout.

A value written ``ner_lit:<path>`` names a path inside the package, wherever it is
installed: ``ner_lit:sample`` (the sample corpus), ``ner_lit:recipes/tiny.yaml``.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SCHEME = "ner_lit:"
#: Folders of the package whose source of truth lies at the top of the source tree.
_SOURCE_DIRS = {"templates": "templates", "recipes": "configs"}


def package_path(relative: str) -> Path:
    """``relative`` inside the installed package, or its source-tree original where the package has no copy."""
    inside = PACKAGE / relative
    head, _, rest = relative.replace("\\", "/").partition("/")
    if inside.exists() or head not in _SOURCE_DIRS:
        return inside
    source = PACKAGE.parent / _SOURCE_DIRS[head] / rest
    return source if source.exists() else inside


def expand(value: str) -> str:
    """``ner_lit:<path>`` as a real path; any other value unchanged."""
    return str(package_path(value[len(SCHEME):].lstrip("/"))) if value.startswith(SCHEME) else value


def template() -> Path:
    """The demo page served at ``/``."""
    return package_path("templates/index.html")


def recipes() -> dict[str, Path]:
    """The shipped recipes by name (``tiny`` -> .../recipes/tiny.yaml)."""
    folder = package_path("recipes")
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def config_file(value: str) -> str:
    """What ``--config VALUE`` reads: an existing file as given, else a shipped recipe.

    ``tiny`` and ``tiny.yaml`` name the shipped recipe when no such file exists in the current
    directory; ``ner_lit:recipes/tiny.yaml`` always does. Anything else is returned unchanged,
    for jsonargparse to read (or to report).
    """
    if value.startswith(SCHEME):
        return expand(value)
    if Path(value).exists() or "/" in value or "\\" in value:
        return value
    found = recipes().get(value.removesuffix(".yaml"))
    return str(found) if found is not None else value


def cache_root() -> Path:
    """Where ner_lit keeps what it can rebuild (KLUE downloads, tokenizers, encoded windows, CLI answers):
    ``$NER_LIT_CACHE``, else ``$XDG_CACHE_HOME/ner_lit``, else ``~/.cache/ner_lit``, as the XDG base
    directory rules ask, so one variable moves every cache of a user's tools."""
    if os.environ.get("NER_LIT_CACHE"):
        return Path(os.environ["NER_LIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ner_lit"
