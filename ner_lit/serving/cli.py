"""``ner_lit serve``: its parser and its run, without Lightning (serving needs none of it).

``--config`` takes a serve config (only serve's own keys, checked strictly) or the saved
config of a training run (``runs/<name>/version_N/config.yaml``, or the recipe it was
started with). A training config is recognised by its sections (``trainer``, ``model``,
``data`` ...); from it only ``trainer.default_root_dir`` is taken, as where
``--ckpt_path best|last`` looks for runs. Every other key a run's config can hold is
ignored, so new training options never break serving.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from ner_lit.resources import config_file

SERVE_HELP = "Serve a trained model over HTTP (an API and a web page)."
DEFAULT_ROOT = "runs"
#: Top-level keys that only a training config (LightningCLI's) holds.
TRAINING_KEYS = ("trainer", "model", "data", "seed_everything", "optimizer", "lr_scheduler", "checkpoint",
                 "lr_monitor", "prediction_writer", "export", "weights_only")


def serve_parser(prog: str = "ner_lit") -> ArgumentParser:
    from ner_lit.serving.launch import serve

    parser = ArgumentParser(prog=f"{prog} serve", description=SERVE_HELP, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="A serve config, or the saved config of a training run (or its recipe): from that only "
                             "trainer.default_root_dir is used, where --ckpt_path best|last looks.")
    parser.add_function_arguments(serve, skip={"ckpt_path"})
    parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                        help="A checkpoint file, or best/last: from the newest run under --run_dir, else the "
                             "training config's trainer.default_root_dir, else runs/.")
    parser.add_argument("--run_dir", type=Optional[str], default=None,
                        help="Run directory (or the directory of runs) for --ckpt_path best|last.")
    return parser


def is_training_config(cfg: Any) -> bool:
    return isinstance(cfg, dict) and any(key in cfg for key in TRAINING_KEYS)


def split_training_configs(args: Sequence[str]) -> tuple[list[str], Optional[str]]:
    """(the arguments without any training ``--config``, the last such config's default_root_dir).

    A serve config stays in the arguments, for jsonargparse to check strictly.
    """
    kept: list[str] = []
    root: Optional[str] = None
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        value = None
        if arg == "--config" and i + 1 < len(items):
            value, step = items[i + 1], 2
        elif arg.startswith("--config="):
            value, step = arg.split("=", 1)[1], 1
        if value is not None:
            cfg = _load(value)
            if is_training_config(cfg):
                root = (cfg.get("trainer") or {}).get("default_root_dir") or root
                i += step
                continue
        kept.append(arg)
        i += 1
    return kept, root


def _load(value: str) -> Any:
    path = Path(config_file(value))
    if not path.is_file():
        return None  # inline YAML or a missing file: jsonargparse parses or reports it
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def run_serve(argv: Sequence[str], prog: str = "ner_lit") -> None:
    from ner_lit.serving.launch import serve

    serve(**serve_arguments(argv, prog))


def serve_arguments(argv: Sequence[str], prog: str = "ner_lit") -> dict[str, Any]:
    """The keyword arguments for :func:`ner_lit.serve.serve` a command line asks for (best/last resolved)."""
    from ner_lit.serving.launch import serve

    args, config_root = split_training_configs(argv)
    cfg = serve_parser(prog).parse_args(args)
    spec = cfg.ckpt_path
    if spec in ("best", "last"):
        from ner_lit.checkpoint.runs import choose_checkpoint

        choice = choose_checkpoint(spec, cfg.run_dir or config_root or DEFAULT_ROOT)
        print(choice.describe(spec), file=sys.stderr)
        spec = str(choice.path)
    names = serve.__code__.co_varnames[: serve.__code__.co_argcount]
    kwargs = {k: v for k, v in vars(cfg).items() if k in names}
    kwargs["ckpt_path"] = spec
    return kwargs


def main(argv: Sequence[str], prog: str = "ner_lit") -> None:
    """``serve`` with user errors as one line on stderr and exit status 2."""
    try:
        run_serve(argv, prog)
    except ValueError as exc:
        # Imported here: checkpoint imports torch, which `serve --help` never needs.
        from ner_lit.checkpoint.format import CheckpointError
        from ner_lit.serving.app import ServeError

        if not isinstance(exc, (ServeError, CheckpointError)):
            raise
        print(f"ner_lit: error: {exc}", file=sys.stderr)
        sys.exit(2)
