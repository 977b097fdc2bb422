"""``ner_lit`` (``python -m ner_lit``): LightningCLI's fit/validate/test/predict plus ``serve``.

The command starts in :mod:`ner_lit.cli.command`, which answers ``--help`` and usage errors
without importing Lightning; ``serve`` runs from :mod:`ner_lit.serving.cli`.

Every option comes from a typed signature (``NERModel``, ``NERDataModule``, the callbacks,
``ner_lit.serve.serve``); nothing is parsed by hand. What this module adds to LightningCLI:

* the project's defaults (ModelCheckpoint on ``val_F1c`` in max mode, ``last.ckpt`` at every
  epoch end, best files without optimizer state, LearningRateMonitor, TensorBoard and CSV
  logs in one ``version_N`` directory per run, seed 7);
* checkpoints written atomically and with the RNG states for an exact resume
  (:mod:`ner_lit.checkpoint.io`), in every run; SIGTERM or Ctrl-C during training writes
  ``last.ckpt`` after the step under way and exits with status 75
  (:mod:`ner_lit.training.preemption`), from which ``--ckpt_path last`` resumes mid-epoch;
* ``test``/``validate``/``predict`` writing beside the checkpoint they use, not in a new run,
  and a failed command leaving no folders behind (:mod:`ner_lit.runs`);
* ``--ckpt_path best|last`` resolved in a new process from the runs under
  ``trainer.default_root_dir`` (the choice printed on stderr), the checkpoint checked
  (digest, labels, tokenizer) and its :class:`~ner_lit.spec.TaggerSpec` handed to the
  datamodule (``use_spec``), which hands it on to the model with its tokenizer, so evaluating
  needs no training data and no hub;
* user errors (bad files, bad settings) end as one line on stderr and exit status 2;
* what its parser answers for each subcommand's ``--help`` and for unknown options, recorded
  once per setting so the light front can replay it without Lightning (:mod:`ner_lit.cli.cache`).
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ner_lit.checkpoint.format import CheckpointError, load_checkpoint
from ner_lit.checkpoint.io import AtomicCheckpointIO, ExactResume, NERModelCheckpoint, remove_stale_temps_under
from ner_lit.checkpoint.runs import choose_checkpoint, evaluation_dir, new_folders, remove_if_unneeded, run_dirs
from ner_lit.checkpoint.spec import SECTION, TaggerSpec
from ner_lit.checkpoint.tokenizer import default_cache_dir
from ner_lit.cli import cache as cli_cache
from ner_lit.data.datamodule import NERDataModule
from ner_lit.data.files import check_writable_dir
from ner_lit.errors import UserError
from ner_lit.serving.cli import SERVE_HELP, run_serve, serve_parser
from ner_lit.training.callbacks import ExportBestModel, PredictionWriter, ReleaseFreedMemory
from ner_lit.training.curve import TrainingClock
from ner_lit.training.int8 import Int8Evaluation
from ner_lit.training.model import NERModel
from ner_lit.training.preemption import EXIT_PREEMPTED, Preempted, Preemption

DEFAULT_ROOT = "runs"
_VERSION_ENV = "NER_LIT_RUN_VERSION"


def _skip_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip:")


def quiet() -> None:
    """Silence what a normal run would print that tells the user nothing about their run.

    Called at every start (pytest resets warning filters between tests). Each filter is
    precise, with its reason:
    """
    # TensorBoard and CSV logs share one run directory on purpose; the CSV logger's warning about it is noise.
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # Evaluation batches are whole sentences from our own sampler, which never drops any.
    warnings.filterwarnings("ignore", message=r"You are using a custom batch sampler")
    # Lightning 2.6's CombinedLoader builds torch's LeafSpec, which torch 2.13 deprecated: not ours, harmless.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
    # The model summary's parameter counts are right under bf16; only its size estimate assumes 32 bits.
    warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
    # Lightning's advertisements for its cloud services (litlogger, litmodels), logged on every run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_skip_tips)


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


#: Subcommands that evaluate a checkpoint and write beside it, not in a new run.
EVALUATIONS = ("validate", "test", "predict")
#: Folders this process's command created, removed again if the command fails (see ner_lit.runs).
_CREATED: list[Path] = []
#: The loggers this process's command made: closed before a failed command's folders are removed,
#: or TensorBoard's writer thread would flush into a folder that is gone (a traceback at exit).
_LOGGERS: list[Any] = []
#: Callbacks that act only while training; an evaluation without them restores no training state.
_FIT_ONLY_CALLBACKS = (ModelCheckpoint, LearningRateMonitor, ExportBestModel, ExactResume, ReleaseFreedMemory, Preemption,
                       TrainingClock)


class NERCLI(LightningCLI):
    _ner_prog = "ner_lit"  # the command's name in usage lines, set by main

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(NERModelCheckpoint, "checkpoint")
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
        parser.add_argument("--quantize", type=Literal["none", "int8", "int8-small"], default="none",
                            help="test, validate, predict: run the checkpoint's network under ONNX Runtime with int8 "
                                 "weights, as serve --quantize does (after the same answer check; where it "
                                 "refuses, the float network runs and stderr says why). fit trains in float only.")

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Listed here for `--help`; `main` runs it before LightningCLI is involved.
        parser._subcommands_action.add_subcommand("serve", serve_parser(self._ner_prog), help=SERVE_HELP)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Before this line's own parse, which may end the process (its --help, its error).
        cli_cache.record(parser, self._ner_prog)
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        spec = cfg.get("ckpt_path")
        if spec in ("best", "last"):
            choice = choose_checkpoint(spec, cfg.trainer.default_root_dir or DEFAULT_ROOT)
            cfg.ckpt_path = str(choice.path)
            print(choice.describe(spec), file=sys.stderr)
        self._ner_spec = checked_spec(cfg.ckpt_path, resume=sub == "fit") if cfg.get("ckpt_path") else None

    def after_instantiate_classes(self) -> None:
        """A checkpoint's spec goes to the datamodule: the data is encoded as that tagger's, and the model
        gets the spec with the data (:mod:`ner_lit.training.handover`), so its network is that tagger's."""
        if getattr(self, "_ner_spec", None) is not None:
            self.datamodule.use_spec(self._ner_spec)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        config["use_distributed_sampler"] = False  # NERDataModule shards by rank itself
        config["plugins"] = with_atomic_checkpoints(config.get("plugins"))
        callbacks = [*callbacks, ExactResume(), ReleaseFreedMemory(), Preemption(), TrainingClock()]
        precision = str(config.get("precision") or "")
        if precision.startswith("bf16") and runs_on_cpu(config.get("accelerator")) and not cpu_supports_bf16():
            # Emulated bf16 is slower than fp32: a recipe that asks for bf16 for speed falls back.
            print(f"ner_lit: this CPU has no native bf16 support: precision {precision} -> 32-true", file=sys.stderr)
            config["precision"] = "32-true"
        if config.get("default_root_dir") is None:
            config["default_root_dir"] = DEFAULT_ROOT
        remove_stale_temps_under(config["default_root_dir"])
        quantize = (self.config[self.subcommand] if self.subcommand else self.config).get("quantize", "none")
        if quantize != "none" and self.subcommand not in EVALUATIONS:
            raise UserError(f"--quantize {quantize} is for test, validate and predict; {self.subcommand} trains in float")
        if self.subcommand in EVALUATIONS:
            callbacks = self._evaluate_beside_checkpoint(config, callbacks)
            if quantize != "none":
                callbacks.append(Int8Evaluation(quantize, cache=default_cache_dir() / "runtimes"))
        elif config.get("logger") in (None, True):
            check_writable_dir(config["default_root_dir"], "the runs root (--trainer.default_root_dir)")
            root = config["default_root_dir"]
            # DDP children re-run the CLI; they must land in the run directory rank 0 chose.
            version = int(os.environ.get(_VERSION_ENV) or next_version(root))
            os.environ[_VERSION_ENV] = str(version)
            _CREATED.extend(new_folders(Path(root) / f"version_{version}")[:1])
            config["logger"] = [
                TensorBoardLogger(root, name="", version=version, default_hp_metric=False),
                CSVLogger(root, name="", version=version),
            ]
        if isinstance(config.get("logger"), list):
            _LOGGERS.extend(config["logger"])
        return super()._instantiate_trainer(config, callbacks)

    def _evaluate_beside_checkpoint(self, config: dict[str, Any], callbacks: list) -> list:
        """Point test/validate/predict at their folder beside the checkpoint; drop the training-only callbacks.

        Without ModelCheckpoint there is no saved checkpoint state to restore into a callback
        whose directory differs (Lightning's "dirpath has changed" warning), and no default
        ModelCheckpoint is added either.
        """
        stage = self.subcommand
        ckpt = self.config[stage].get("ckpt_path")
        target = evaluation_dir(stage, ckpt, self.datamodule.corpus.name(stage), config["default_root_dir"])
        _CREATED.extend(new_folders(target)[:1])
        check_writable_dir(target, f"the {stage} folder beside the checkpoint")
        config["default_root_dir"] = str(target)
        config["enable_checkpointing"] = False
        if config.get("logger") in (None, True):
            config["logger"] = [
                TensorBoardLogger(str(target), name="", version="", default_hp_metric=False),
                CSVLogger(str(target), name="", version=""),
            ]
        self.save_config_kwargs["overwrite"] = True  # the folder is this evaluation's own: a rerun replaces it
        # Lightning asks for the training callbacks whose state the checkpoint holds; an evaluation needs none.
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint")
        return [c for c in callbacks if not isinstance(c, _FIT_ONLY_CALLBACKS)]


def close_quietly(logger: Any) -> None:
    """Stop a logger's writing (TensorBoard's writer thread included) without raising: its run failed."""
    try:
        logger.finalize("failed")
    except Exception:  # noqa: BLE001 - the command's own error is the one to report
        pass


def checked_spec(path: str, resume: bool) -> TaggerSpec:
    """The checkpoint's tagger spec, after checking the whole file (and, to resume, that it can)."""
    ckpt = load_checkpoint(path)
    if resume and "optimizer_states" not in ckpt:
        raise CheckpointError(
            f"{path}: holds the weights only (a best checkpoint), not the optimizer state training needs to "
            "resume; resume with --ckpt_path last (or that run's last.ckpt)"
        )
    return TaggerSpec.from_dict(ckpt[SECTION], path)


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The trainer's plugins, with :class:`AtomicCheckpointIO` unless one writing checkpoints is given."""
    given = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in given):
        given.append(AtomicCheckpointIO())
    return given


def main(argv: Optional[Sequence[str]] = None, prog: str = "ner_lit") -> None:
    """Run LightningCLI on ``argv`` (default ``sys.argv[1:]``); ``prog`` is the command's name in usage lines."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Set by a DDP parent for its children; a run that chose its own version forgets it after,
    # or the next in-process run would write into the same directory.
    inherited_version = _VERSION_ENV in os.environ
    quiet()
    _CREATED.clear()
    _LOGGERS.clear()
    failed = True
    try:
        if args and args[0] == "serve":
            run_serve(args[1:], prog)
            failed = False
            return
        NERCLI._ner_prog = prog
        NERCLI(
            NERModel,
            NERDataModule,
            seed_everything_default=7,
            save_config_kwargs={"overwrite": False},
            auto_configure_optimizers=False,
            parser_kwargs={"prog": prog, "description": "Korean NER with Lightning: fit, validate, test, predict, serve."},
            args=None if argv is None else args,
        )
        failed = False
    except UserError as exc:
        print(f"ner_lit: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Preempted as exc:
        failed = False  # the run's folder holds the checkpoint to resume from
        if exc.rank == 0:
            print(f"ner_lit: {exc}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except SIGTERMException:
        # Lightning's own handling, before training started (setup, sanity check): nothing to resume from.
        print("ner_lit: stopped by SIGTERM before training started; nothing was saved", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except KeyboardInterrupt:
        print("ner_lit: interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        if failed:
            for logger in _LOGGERS:
                close_quietly(logger)
            for folder in _CREATED:
                remove_if_unneeded(folder)
        if not inherited_version:
            os.environ.pop(_VERSION_ENV, None)


#: The names the command is run by (the console script, the module), each with answers of its own.
PROGS = ("ner_lit", "python -m ner_lit")


def warm_cache(progs: Sequence[str] = PROGS) -> list[Path]:
    """Record the real parser's answers for each name now, so the first ``--help`` later is a replay.

    What the first real run after an install or a source change would record anyway
    (:mod:`ner_lit.cli.cache`); ``make install`` runs it once, ``ner_lit --warm-cache``.
    Returns the entries that exist afterwards (none when the cache is off).
    """
    import contextlib
    import io

    for prog in progs:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["fit", "--help"], prog=prog)
    return [p for p in (cli_cache.entry_path(cli_cache.cache_key(prog)) for prog in progs) if p.is_file()]

