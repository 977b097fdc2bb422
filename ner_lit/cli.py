"""``python -m ner_lit``: LightningCLI's fit/validate/test/predict plus ``serve``.

Every option comes from a typed signature (``NERModel``, ``NERDataModule``, the callbacks,
``ner_lit.serve.serve``); nothing is parsed by hand. What this module adds to LightningCLI:

* the project's defaults (ModelCheckpoint on ``val_F1c`` in max mode, LearningRateMonitor,
  TensorBoard and CSV logs in one ``version_N`` directory per run, seed 7);
* ``--ckpt_path best|last`` resolved in a new process from the runs under
  ``trainer.default_root_dir``, and the checkpoint's own labels, tokenizer and model config
  handed to the datamodule and the model, so evaluating needs no training data and no hub;
* user errors (bad files, bad settings) end as one line on stderr and exit status 2.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ner_lit.alignment import AlignmentError
from ner_lit.callbacks import ExportBestModel, PredictionWriter
from ner_lit.checkpoint import CheckpointError, payload, resolve_checkpoint, run_dirs
from ner_lit.corpus import CorpusError
from ner_lit.data import DataError, NERDataModule, check_writable_dir
from ner_lit.model import ModelError, NERModel

USER_ERRORS = (CorpusError, AlignmentError, CheckpointError, DataError, ModelError)
DEFAULT_ROOT = "runs"
SERVE_HELP = "Serve a trained model over HTTP (an API and a web page)."
_VERSION_ENV = "NER_LIT_RUN_VERSION"

# TensorBoard and CSV logs share one run directory on purpose; the CSV logger's warning about it is noise.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
# Evaluation batches are whole sentences from our own sampler, which never drops any.
warnings.filterwarnings("ignore", message=r"You are using a custom batch sampler")


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 matrix work natively (AVX512-BF16 or AMX), through oneDNN."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def runs_on_cpu(accelerator: Any) -> bool:
    import torch

    name = str(accelerator or "auto")
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


def next_version(root: str | Path) -> int:
    runs = run_dirs(root)
    return int(runs[-1].name.split("_")[1]) + 1 if runs else 0


class NERCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val_F1c",
            "checkpoint.mode": "max",
            "checkpoint.save_top_k": 1,
            "checkpoint.save_last": True,
            "checkpoint.filename": "epoch{epoch:02d}-step{step}-F1c{val_F1c:.2f}-F1e{val_F1e:.2f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(ExportBestModel, "export")

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Listed here for `--help`; `main` runs it before LightningCLI is involved.
        parser._subcommands_action.add_subcommand("serve", serve_parser(), help=SERVE_HELP)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        spec = cfg.get("ckpt_path")
        if spec in ("best", "last"):
            root = cfg.trainer.default_root_dir or DEFAULT_ROOT
            cfg.ckpt_path = str(resolve_checkpoint(spec, root))
            print(f"--ckpt_path {spec}: {cfg.ckpt_path}", file=sys.stderr)
        if cfg.get("ckpt_path"):
            self._ner_payload = payload(cfg.ckpt_path)
        else:
            self._ner_payload = None

    def after_instantiate_classes(self) -> None:
        if getattr(self, "_ner_payload", None) is not None:
            self.datamodule.adopt_checkpoint(self._ner_payload)
            self.model.adopt_checkpoint(self._ner_payload)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        config["use_distributed_sampler"] = False  # NERDataModule shards by rank itself
        precision = str(config.get("precision") or "")
        if precision.startswith("bf16") and runs_on_cpu(config.get("accelerator")) and not cpu_supports_bf16():
            # Emulated bf16 is slower than fp32: a recipe that asks for bf16 for speed falls back.
            print(f"ner_lit: this CPU has no native bf16 support: precision {precision} -> 32-true", file=sys.stderr)
            config["precision"] = "32-true"
        if config.get("default_root_dir") is None:
            config["default_root_dir"] = DEFAULT_ROOT
        check_writable_dir(config["default_root_dir"], "the runs root (--trainer.default_root_dir)")
        if config.get("logger") in (None, True):
            root = config["default_root_dir"]
            # DDP children re-run the CLI; they must land in the run directory rank 0 chose.
            version = int(os.environ.get(_VERSION_ENV) or next_version(root))
            os.environ[_VERSION_ENV] = str(version)
            config["logger"] = [
                TensorBoardLogger(root, name="", version=version, default_hp_metric=False),
                CSVLogger(root, name="", version=version),
            ]
        return super()._instantiate_trainer(config, callbacks)


def serve_parser() -> ArgumentParser:
    from ner_lit.serve import serve

    parser = ArgumentParser(prog="python -m ner_lit serve", description=SERVE_HELP, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="A serve config, or the training config of the run to serve (its trainer.default_root_dir locates --ckpt_path best|last).")
    parser.add_function_arguments(serve, skip={"ckpt_path"})
    parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                        help="A checkpoint file, or best/last: the newest run under trainer.default_root_dir (from --config) or --run_dir.")
    parser.add_argument("--run_dir", type=Optional[str], default=None, help="Run directory (or the directory of runs) for --ckpt_path best|last.")
    # A training config may be given as --config: its sections are accepted and only
    # trainer.default_root_dir is used.
    for section in ("trainer", "model", "data", "checkpoint", "lr_monitor", "prediction_writer", "export", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{section}", type=Optional[dict], default=None, help="(from a training config; ignored)")
    parser.add_argument("--seed_everything", type=Any, default=None, help="(from a training config; ignored)")
    return parser


def run_serve(argv: Sequence[str]) -> None:
    from ner_lit.serve import serve

    parser = serve_parser()
    cfg = parser.parse_args(list(argv))
    spec = cfg.ckpt_path
    if spec in ("best", "last"):
        root = cfg.run_dir or ((cfg.trainer or {}).get("default_root_dir")) or DEFAULT_ROOT
        spec = str(resolve_checkpoint(spec, root))
    kwargs = {k: v for k, v in vars(cfg).items() if k in serve.__code__.co_varnames[: serve.__code__.co_argcount]}
    kwargs["ckpt_path"] = spec
    serve(**kwargs)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # Set by a DDP parent for its children; a run that chose its own version forgets it after,
    # or the next in-process run would write into the same directory.
    inherited_version = _VERSION_ENV in os.environ
    try:
        if args and args[0] == "serve":
            run_serve(args[1:])
            return
        NERCLI(
            NERModel,
            NERDataModule,
            seed_everything_default=7,
            save_config_kwargs={"overwrite": False},
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "python -m ner_lit", "description": "Korean NER with Lightning: fit, validate, test, predict, serve."},
            args=None if argv is None else args,
        )
    except USER_ERRORS + _serve_errors() as exc:
        print(f"ner_lit: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        if not inherited_version:
            os.environ.pop(_VERSION_ENV, None)


def _serve_errors() -> tuple[type[BaseException], ...]:
    try:
        from ner_lit.serve import ServeError
    except ImportError:
        return ()
    return (ServeError,)
