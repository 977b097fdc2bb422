"""``python -m ner_lit fit`` with a NERDataModule subclass, for the ablations the CLI has no switch for.

    python bench/_fit_variant.py pad_as_o fit --config configs/reference.yaml ...

``pad_as_o``: the original system's training batches: every window padded to 128 tokens,
special and padding tokens labelled ``O`` and trained (evaluation unchanged).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ner_lit.cli.lightning import NERCLI
from ner_lit.data.datamodule import NERDataModule
from ner_lit.training.model import NERModel


class PadAsODataModule(NERDataModule):
    def collate_train(self, windows):
        from bench.systems import fixed_collate

        return fixed_collate(self._pad_id(), self.aligner.outside_id, self.max_length)(windows)


VARIANTS = {"pad_as_o": PadAsODataModule}


def main() -> None:
    variant, argv = sys.argv[1], sys.argv[2:]
    NERCLI(NERModel, VARIANTS[variant], seed_everything_default=7, save_config_kwargs={"overwrite": False},
           auto_configure_optimizers=False, args=argv)


if __name__ == "__main__":
    main()
