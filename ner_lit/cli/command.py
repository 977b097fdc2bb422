"""The ``ner_lit`` command (and ``python -m ner_lit``): a light front for the CLI.

Importing Lightning takes seconds (torch, torch._dynamo, torchmetrics), so what can be
answered without it is answered here: the top-level ``--help``, a missing or unknown
subcommand, a ``--config`` that names nothing; a subcommand's ``--help``, a line of unknown
options and a bad word given to a numeric option are replayed from what the real parser
answered before (:mod:`ner_lit.cli.cache`), which ``--warm-cache`` records ahead of time.
``serve`` never needs Lightning either (:mod:`ner_lit.serving.cli`). Everything else goes to
:func:`ner_lit.cli.lightning.main`.

``--config`` takes a file or the name of a shipped recipe (``--config tiny``), see
:func:`ner_lit.resources.config_file`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ner_lit.errors import UserError
from ner_lit.resources import config_file, recipes

#: The subcommands and their one-line help, as LightningCLI (fit..predict) and serve_cli list them.
SUBCOMMANDS = {
    "fit": "Runs the full optimization routine.",
    "validate": "Perform one evaluation epoch over the validation set.",
    "test": "Perform one evaluation epoch over the test set.",
    "predict": "Run inference on your data.",
    "serve": "Serve a trained model over HTTP (an API and a web page).",
}
DESCRIPTION = "Korean NER with Lightning: fit, validate, test, predict, serve."
EXIT_USAGE = 2
#: Records the subcommands' parser answers now (a one-off step after an install or an upgrade).
WARM_CACHE = "--warm-cache"


class UsageError(UserError):
    """A command line that names no subcommand, or a --config that names nothing."""


def usage(prog: str) -> str:
    names = ",".join(SUBCOMMANDS)
    lines = [f"usage: {prog} [-h] {{{names}}} ...", "", DESCRIPTION, "", "subcommands:"]
    lines += [f"  {name:<10}{text}" for name, text in SUBCOMMANDS.items()]
    shipped = ", ".join(recipes()) or "none"
    lines += ["", f"`{prog} SUBCOMMAND --help` lists a subcommand's options.",
              f"--config takes a YAML file or a shipped recipe by name ({shipped}), e.g. `{prog} fit --config tiny`.",
              f"`{prog} {WARM_CACHE}` records what the subcommands' parser answers, for a fast start (run once after an install)."]
    return "\n".join(lines)


def expand_configs(args: Sequence[str]) -> list[str]:
    """Each ``--config VALUE`` with VALUE made a file path (a shipped recipe by name)."""
    out: list[str] = []
    take = False
    for arg in args:
        if take:
            out.append(_config_value(arg))
            take = False
        elif arg == "--config":
            out.append(arg)
            take = True
        elif arg.startswith("--config="):
            out.append("--config=" + _config_value(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def _config_value(value: str) -> str:
    found = config_file(value)
    # Inline YAML (`--config '{a: 1}'`) stays jsonargparse's; a bare word that is no file is a mistake.
    if found == value and not Path(value).exists() and not any(c in value for c in ":{}[]\n"):
        shipped = ", ".join(recipes()) or "none"
        raise UsageError(f"--config {value}: no such file in {os.getcwd()}, and not a shipped recipe ({shipped})")
    return found


def quick_answer(args: Sequence[str], prog: str) -> Optional[tuple[str, int]]:
    """(text, exit status) for a command line that needs no subcommand's parser, else None."""
    if not args or args[0] in ("-h", "--help"):
        return usage(prog), 0 if args else EXIT_USAGE
    first = args[0]
    if first.startswith("-"):
        return None  # a global option (--config, --print_config ...) before the subcommand: LightningCLI's
    if first not in SUBCOMMANDS:
        return f"{usage(prog)}\nner_lit: error: unknown subcommand {first!r}; choose one of {', '.join(SUBCOMMANDS)}", EXIT_USAGE
    return None


def warm(prog: str) -> None:
    """``--warm-cache``: build the real parser once, record its answers, say where; exit 0."""
    from ner_lit.cli import cache as cli_cache

    if not cli_cache.enabled():
        print("ner_lit: the CLI answer cache is off (NER_LIT_CLI_CACHE=0 or a JSONARGPARSE_ variable): nothing recorded",
              file=sys.stderr)
        sys.exit(0)
    from ner_lit.cli.lightning import PROGS, warm_cache

    written = warm_cache(tuple(dict.fromkeys((prog, *PROGS))))
    print(f"ner_lit: recorded the subcommands' parser answers: {', '.join(map(str, written)) or 'none (not writable)'}",
          file=sys.stderr)
    sys.exit(0)


def main(argv: Optional[Sequence[str]] = None, prog: str = "ner_lit") -> None:
    """Run one command line (``sys.argv[1:]`` by default)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = expand_configs(args)
    except UsageError as exc:
        print(f"ner_lit: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args == [WARM_CACHE]:
        warm(prog)
    answer = quick_answer(args, prog)
    if answer is not None:
        text, status = answer
        print(text, file=sys.stdout if status == 0 else sys.stderr)
        sys.exit(status)
    from ner_lit.cli import cache as cli_cache

    replay = cli_cache.answer(args, prog)
    if replay is not None:
        out, err, status = replay
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(status)
    if args[0] == "serve":
        from ner_lit.serving.cli import main as serve_main

        serve_main(args[1:], prog=prog)
        return
    from ner_lit.cli.lightning import main as cli_main

    if argv is None:
        sys.argv[1:] = args  # LightningCLI reads sys.argv itself (it warns when given args from a script)
    cli_main(None if argv is None else args, prog=prog)
