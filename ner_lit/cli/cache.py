"""What the subcommands' parsers answer before running anything, cached so it needs no Lightning import.

``fit --help`` (and validate/test/predict), a line of options none of which exist
(``fit --model.learnig_rate 1``) and a plain word given to one numeric or boolean option
(``fit --trainer.max_epochs abc``) are answered by the parser LightningCLI builds from the
signatures of Trainer, NERModel, NERDataModule and the callbacks; building it means importing
Lightning, torch and transformers, which takes seconds. Those answers depend on nothing but
the code and the setting, so a process that built the real parser records them
(:func:`record`, called by ``NERCLI.parse_arguments``) and the light front
(:mod:`ner_lit.cli.command`) replays them (:func:`answer`).

The real parser stays the source of truth:

* an entry holds only what that parser printed, captured (``--help``; the error for one
  unknown option, whose text becomes a template for the unknown arguments), never a re-rendering;
* an entry is used only under the key it was recorded with: Python, every installed
  distribution (name, version, install time), a hash of ner_lit's own source files, the
  command's name, the terminal width, the locale and jsonargparse's environment variables;
* an error is replayed only for a line whose every argument the parser would certainly refuse
  (:func:`surely_unrecognized`); a line with any known option (whose value the parser checks
  first, and may report instead) goes to the real parser;
* a bad value is replayed only for a line of one option (``--key VALUE`` or ``--key=VALUE``)
  whose type is a plain numeric or boolean one (``int``, ``Optional[float]``, ``bool`` ...), and
  only for a VALUE no such type accepts: a word of letters, digits and ``_`` starting with a
  letter that YAML and ``float()`` read as nothing but a string (not ``true``, ``null``,
  ``inf`` ...), and never as a file to read the value from. The error of one option per type
  was captured with a sentinel word, and the same type's last option was captured with
  another, to check that the error is the subcommand's usage, then
  ``error: Parser key "KEY":``, then a text that depends on the type and the value only
  (:func:`value_errors`);
* any failure to read an entry, or a missing one, means the real path; a failure to write one
  is ignored (the command it is part of carries on).

Entries live in ``$NER_LIT_CACHE/cli`` (else ``$XDG_CACHE_HOME/ner_lit/cli``, else
``~/.cache/ner_lit/cli``), one JSON file per key, written atomically; ``NER_LIT_CLI_CACHE=0``
turns the cache off.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ner_lit.files import write_text_atomic
from ner_lit.resources import PACKAGE, cache_root

FORMAT = 1
#: The subcommands whose parser is LightningCLI's (serve has a light parser of its own).
SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: An option no parser has: the error the real parser gives for it is the template of every such error.
SENTINEL = "--ner-lit-cache-sentinel"
HELP_FLAGS = ("-h", "--help")
#: Entries kept: one per setting (terminal width, command name ...) a user switches between.
KEEP = 8
_ENV_PREFIXES = ("JSONARGPARSE_",)
_ENV_NAMES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG", "NO_COLOR", "FORCE_COLOR", "PYTHON_COLORS")
_OPTION_NAME = re.compile(r"[A-Za-z0-9_]+(?:[.-][A-Za-z0-9_]+)*")
#: The bad value the value errors are captured with; replaced by the user's value on replay.
SENTINEL_VALUE = "nerLitCacheSentinelValue"
#: A second one, long, to check that the error holds the value as given, wherever it is and however long.
_CHECK_VALUE = "anotherSentinel" + "_x" * 60
_PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: Words YAML 1.1 (PyYAML, which jsonargparse loads values with) or float() read as something else than a string.
_SPECIAL_WORDS = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null", "none", "nan", "inf", "infinity"})


def enabled() -> bool:
    # jsonargparse's own variables (debug mode, options from the environment) change what a parse does.
    return os.environ.get("NER_LIT_CLI_CACHE", "1") != "0" and not any(k.startswith(_ENV_PREFIXES) for k in os.environ)


def cache_dir() -> Path:
    return cache_root() / "cli"


def source_digest(package: Optional[Path] = None) -> str:
    """sha256 over ner_lit's Python files (relative names and bytes, in name order)."""
    package = package or PACKAGE
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def installed_digest() -> str:
    """sha256 over the installed distributions' metadata folders (name, version) and their install times."""
    h = hashlib.sha256()
    # Only the folders packages are installed into: sys.path[0] is the current directory under `python -m`.
    for entry in sys.path:
        if os.path.basename(entry) not in ("site-packages", "dist-packages"):
            continue
        try:
            items = sorted(os.scandir(entry), key=lambda e: e.name)
        except OSError:
            continue
        h.update(entry.encode() + b"\0")
        for item in items:
            if item.name.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")):
                h.update(f"{item.name}\0{item.stat().st_mtime_ns}\0".encode())
    return h.hexdigest()


def cache_key(prog: str, package: Optional[Path] = None) -> str:
    """Everything the recorded answers depend on, as one digest."""
    package = package or PACKAGE
    parts = {
        "format": FORMAT,
        "python": [sys.version, sys.executable, sys.prefix],
        "package": [str(package), source_digest(package)],
        "installed": installed_digest(),
        "prog": prog,
        "columns": shutil.get_terminal_size().columns,  # what argparse wraps help text to
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def entry_path(key: str) -> Path:
    return cache_dir() / f"{key[:32]}.json"


# --- replaying -------------------------------------------------------------------------------


def surely_unrecognized(arg: str, names: set[str], typed: set[str], options: Sequence[str]) -> bool:
    """Whether the parser refuses ``arg`` whatever else the line holds, and checks nothing of it.

    True for a plain word (the subcommands take no positional argument), and for ``--name`` or
    ``--name=value`` when ``name`` is no option, no abbreviation of one (argparse accepts
    those), and no key below a typed option (``--trainer.logger.save_dir``: jsonargparse
    resolves those against the option's type, and may report that instead). Anything unusual (``-x``, ``--``, ``+=``, spaces) is
    left to the real parser.
    """
    if not arg.startswith("-"):
        return True
    if not arg.startswith("--"):
        return False
    name = arg[2:].split("=", 1)[0]
    if not _OPTION_NAME.fullmatch(name) or " " in arg:
        return False
    if name in names or any(option.startswith("--" + name) for option in options):
        return False
    parts = name.split(".")
    return not any(".".join(parts[:n]) in typed for n in range(1, len(parts) + 1))


def load(prog: str) -> Optional[dict[str, Any]]:
    """The entry recorded for this setting, or None (none recorded, unreadable, or another setting's)."""
    try:
        key = cache_key(prog)
        entry = json.loads(entry_path(key).read_text(encoding="utf-8"))
        if entry.get("format") != FORMAT or entry.get("key") != key or not isinstance(entry.get("subcommands"), dict):
            return None
        return entry
    except Exception:  # noqa: BLE001 - whatever keeps an entry from being read, the real parser answers
        return None


def answer(args: Sequence[str], prog: str) -> Optional[tuple[str, str, int]]:
    """(stdout, stderr, exit status) the real parser gives ``args``, if recorded for this setting; else None."""
    if len(args) < 2 or args[0] not in SUBCOMMANDS or not enabled():
        return None
    entry = load(prog)
    sub = ((entry or {}).get("subcommands") or {}).get(args[0])
    if not isinstance(sub, dict):
        return None
    rest = list(args[1:])
    if len(rest) == 1 and rest[0] in HELP_FLAGS:
        text = sub.get("help")
        return (text, "", 0) if isinstance(text, str) else None
    names, typed, options = set(sub.get("names") or ()), set(sub.get("typed") or ()), list(sub.get("options") or ())
    template = sub.get("unrecognized")
    if isinstance(template, str) and names and options and all(surely_unrecognized(a, names, typed, options) for a in rest):
        return "", template.replace(SENTINEL, " ".join(rest)), 2
    return bad_value(rest, sub.get("values"))


def surely_bad_value(value: str) -> bool:
    """Whether every numeric or boolean type refuses ``value``: a plain word YAML reads as a string."""
    return bool(_PLAIN_WORD.fullmatch(value)) and value.lower() not in _SPECIAL_WORDS


def bad_value(rest: Sequence[str], values: Any) -> Optional[tuple[str, str, int]]:
    """The recorded error for ``--key VALUE`` (or ``--key=VALUE``), a recorded key and a value it surely refuses."""
    if len(rest) == 2 and rest[0].startswith("--") and "=" not in rest[0]:
        key, value = rest[0][2:], rest[1]
    elif len(rest) == 1 and rest[0].startswith("--") and "=" in rest[0]:
        key, value = rest[0][2:].split("=", 1)
    else:
        return None
    if not isinstance(values, dict) or not surely_bad_value(value):
        return None
    prefix, bodies, keys = values.get("prefix"), values.get("bodies"), values.get("keys")
    body = bodies.get(keys.get(key)) if isinstance(bodies, dict) and isinstance(keys, dict) else None
    if not isinstance(prefix, str) or not isinstance(body, str):
        return None
    return "", prefix + _value_head(key) + body.replace(SENTINEL_VALUE, value), 2


def _value_head(key: str) -> str:
    return f'error: Parser key "{key}":\n'


# --- recording -------------------------------------------------------------------------------


def _capture(parser: Any, args: list[str]) -> tuple[str, str, Any]:
    out, err = io.StringIO(), io.StringIO()
    status: Any = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            status = exc.code
    return out.getvalue(), err.getvalue(), status


def _resolves_keys_below(action: Any) -> bool:
    """Whether jsonargparse gives ``--<dest>.<key>`` to this action (typed ones: subclass init args ...)."""
    from jsonargparse import ActionFail

    return getattr(action, "_typehint", None) is not None or isinstance(action, ActionFail)


def recorded(parser: Any, prog: str) -> dict[str, Any]:
    """What the real (top-level LightningCLI) parser answers for each subcommand: help, the unknown-option error."""
    subparsers = parser._subcommands_action._name_parser_map
    subs: dict[str, Any] = {}
    for name in SUBCOMMANDS:
        sub = subparsers.get(name)
        if sub is None:
            continue
        item: dict[str, Any] = {}
        out, err, status = _capture(parser, [name, "--help"])
        if status == 0 and out and not err:
            item["help"] = out
        # What surely_unrecognized assumes: no positional arguments, "-" options, no @file arguments.
        plain = (not any(not a.option_strings for a in sub._actions) and sub.prefix_chars == parser.prefix_chars == "-"
                 and not sub.fromfile_prefix_chars and not parser.fromfile_prefix_chars)
        out, err, status = _capture(parser, [name, SENTINEL])
        if plain and status == 2 and not out and err.count(SENTINEL) == 1:
            item["unrecognized"] = err
            item["options"] = sorted(sub._option_string_actions)
            item["names"] = sorted({a.dest for a in sub._actions} | {o.lstrip("-") for o in sub._option_string_actions})
            item["typed"] = sorted(a.dest for a in sub._actions if _resolves_keys_below(a))
        values = value_errors(parser, name, sub)
        if values:
            item["values"] = values
        if item:
            subs[name] = item
    return subs


def _plain_types() -> set[Any]:
    """The type hints whose options refuse every :func:`surely_bad_value` word (numbers and booleans)."""
    from typing import Optional as Opt
    from typing import Union

    return {int, float, bool, Opt[int], Opt[float], Opt[bool], Union[int, float], Union[float, int],
            Union[int, float, None], Union[float, int, None], Union[bool, int], Union[int, bool]}


def value_errors(parser: Any, name: str, sub: Any) -> dict[str, Any]:
    """What the parser answers a bad value of each plain typed option of ``name``: a prefix, and a text per type.

    One capture per type (its first option), checked against a second (its last option, with
    another value): the answer must be the shared prefix, ``error: Parser key "KEY":`` and that
    type's text, with the value in the text only. A type whose captures differ otherwise is left
    out, and so is an option whose value may name a file to read it from (``_enable_path``).
    """
    plain = _plain_types()
    groups: dict[str, list[str]] = {}
    for action in sub._actions:
        hint = getattr(action, "_typehint", None)
        option = "--" + action.dest
        try:
            eligible = hint in plain
        except TypeError:  # an unhashable hint: not one of ours
            eligible = False
        if (eligible and getattr(action, "_enable_path", True) is False and action.option_strings == [option]
                and sub._option_string_actions.get(option) is action):
            groups.setdefault(f"{type(action).__name__}:{hint!r}", []).append(action.dest)
    prefix: Optional[str] = None
    bodies: dict[str, str] = {}
    keys: dict[str, str] = {}
    for group, dests in groups.items():
        captured = []
        for dest, value in ((dests[0], SENTINEL_VALUE), (dests[-1], _CHECK_VALUE)):
            out, err, status = _capture(parser, [name, f"--{dest}", value])
            head = _value_head(dest)
            if status != 2 or out or err.count(head) != 1:
                break
            before, body = err.split(head)
            if value in before or value not in body or dest in body or (prefix not in (None, before)):
                break
            prefix = before
            captured.append(body.replace(value, SENTINEL_VALUE))
        else:
            if len(set(captured)) == 1:
                bodies[group] = captured[0]
                keys.update((dest, group) for dest in dests)
    return {"prefix": prefix, "bodies": bodies, "keys": keys} if prefix is not None and keys else {}


def record(parser: Any, prog: str) -> None:
    """Record this setting's entry if it has none; never raises (the command goes on either way)."""
    if not enabled():
        return
    try:
        if load(prog) is not None:
            return
        key = cache_key(prog)
        path = entry_path(key)
        entry = {"format": FORMAT, "key": key, "prog": prog, "subcommands": recorded(parser, prog)}
        write_text_atomic(path, json.dumps(entry, ensure_ascii=False))
        prune(path.parent)
    except Exception:  # noqa: BLE001 - a cache that cannot be written only costs the next start its speed
        pass



def prune(folder: Path, keep: int = KEEP) -> None:
    """Remove all but the ``keep`` newest entries."""
    entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
