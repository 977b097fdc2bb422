"""Windows in, logits out: batching, packing and the runtime that runs the model.

:class:`ModelRunner` owns the network and whatever runs it: the eager module, a compiled
runtime (:mod:`ner_lit.inference.runtimes`), and a packed runner that puts several windows in one
model row. Once a compiled runtime is chosen for good, :meth:`ModelRunner.release_eager`
drops the eager module, so a server holds only the weights it runs.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

from ner_lit.alignment.collate import PackedBatch, pack_windows, pad_windows
from ner_lit.alignment.windows import Window
from ner_lit.inference.choice import EagerReleased, RuntimeRefused
from ner_lit.inference.runtimes import SAME_LOGITS, Compiler, PackedLogits, Runner, checked_compile, logit_tolerance

#: Tokens per packed row (a longer window gets a row of its own): long enough for efficient
#: matrix products over few rows, short enough that attention, quadratic in a row's length,
#: stays small next to the linear layers.
PACK_WIDTH = 128


class ModelRunner:
    """Runs a token classifier over windows, ``batch_size`` at a time, padded or packed."""

    def __init__(self, model, num_labels: int, pad_id: int, max_length: int, device: torch.device,
                 batch_size: int = 64) -> None:
        self.model = model
        self.config = model.config
        self.num_labels = num_labels
        self.pad_id = pad_id
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        self.compiled: Runner | None = None  # the model as a trace or an export, after compile()
        self.compiler: Compiler | None = None  # how that one was made: pack() makes its packed runner alike
        self.compiled_what = ""
        self.packed: Runner | None = None  # the model over packed rows, after pack()
        self.first_position = 0  # the position id a packed window starts from
        self.pack_width = PACK_WIDTH
        self.packed_only = False  # after release_eager with packing on: every batch through the packed runner

    @property
    def vocab_size(self) -> int:
        return int(getattr(self.config, "vocab_size", 0) or 100)

    # ------------------------------------------------------------------ runtimes
    def compile(self, make: Compiler, what: str, accept: Callable[[], None] | None = None) -> None:
        """Run the model as ``make`` makes it from now on, after :func:`checked_compile`'s check
        (:class:`RuntimeRefused` where it fails) and ``accept``'s, if given (called with the new
        runtime in use; where it raises, the runner is as it was). A packed runner of the previous
        runtime is dropped."""
        eager = self._eager()
        before = self._state()
        self.compiled = checked_compile(eager, make, what, vocab=self.vocab_size, pad_id=self.pad_id,
                                        limit=min(self.max_length, 64), device=self.device)
        self.compiler, self.compiled_what = make, what
        self.packed = None  # packed rows, if wanted, must be packed again with this runtime
        self._accept(accept, before)

    def _state(self) -> tuple:
        return (self.compiled, self.compiler, self.compiled_what, self.packed, self.first_position, self.pack_width,
                self.packed_only)

    def _accept(self, accept: Callable[[], None] | None, before: tuple) -> None:
        """``accept()`` with the new runtime in use; where it raises, the runner is put back as it was."""
        if accept is None:
            return
        try:
            accept()
        except BaseException:
            (self.compiled, self.compiler, self.compiled_what, self.packed, self.first_position,
             self.pack_width, self.packed_only) = before
            raise

    def release_eager(self) -> bool:
        """Drop the eager module once a compiled runtime runs every batch: its parameters are freed
        unless the runtime shares them. Where packing is on, the packed runner then runs every batch
        (a window alone in its row is a padded window), so the padded runner goes too: a runtime
        that copies the weights (ONNX Runtime) holds one copy, not two. Returns whether the eager
        module was dropped; an eager-only runner keeps its model."""
        if self.compiler is None:  # eager only: the model is what runs
            return False
        if self.packed is not None:
            self.compiled, self.packed_only = None, True
        self.model = None
        return True

    def _eager(self):
        if self.model is None:
            raise EagerReleased("the eager model was released after a compiled runtime was chosen")
        return self.model

    # ------------------------------------------------------------------ packing
    def pack(self, width: int = PACK_WIDTH, release: bool = False) -> None:
        """Put several windows in one model row from now on, if the model gives the same logits.

        Model families count positions differently (BERT from 0, RoBERTa from the pad id + 1),
        and some may not take a 4D mask or position ids at all, so both counts are checked
        against the padded forward on example windows, with the runtime in use. Where neither
        agrees, :class:`RuntimeRefused` says by how much. With ``release`` (a server's last
        step), the padded runner is freed before the packed one is made and the eager module
        after (:meth:`release_eager`), so start-up never holds two compiled copies of the weights.
        """
        width, windows, want, batch, first = self._packing(width)
        runner: Runner = PackedLogits(self._eager()).eval()
        if self.compiler is not None:
            if release:
                self.compiled = None  # freed now: the packed runner will run every batch
            try:
                runner = self._compiled_packed(windows, batch, width, first, want)
            except BaseException:
                if release:  # packing refused: the padded runner is wanted after all
                    self.compile(self.compiler, self.compiled_what)
                raise
        self.packed, self.first_position, self.pack_width = runner, first, width
        if release:
            self.release_eager()

    def compile_packed(self, make: Compiler, what: str, width: int = PACK_WIDTH,
                       accept: Callable[[], None] | None = None) -> None:
        """A server's one step: the runtime ``make`` makes, packed, and the eager module released.

        After :meth:`release_eager` only the packed runner runs (a window alone in its row is a
        padded window), so the padded graph that :meth:`compile` then :meth:`pack` would make
        first and free again is never made: one export instead of two. The packed runner is
        checked against the eager padded logits as :meth:`pack` checks it, then by ``accept``
        (if given), before the eager module goes. Where anything is refused,
        :class:`RuntimeRefused` says why and the runner is as it was.
        """
        before = self._state()
        width, windows, want, batch, first = self._packing(width)
        try:
            runner = self._compiled_packed(windows, batch, width, first, want, make, what)
        except RuntimeRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - a model the tracer or exporter can not follow: as compile() says
            raise RuntimeRefused(f"the packed {what} failed: {type(exc).__name__}") from None
        self.compiler, self.compiled_what, self.compiled = make, what, None
        self.packed, self.first_position, self.pack_width = runner, first, width
        self.packed_only = True  # as after release_eager: accept() sees every batch through the packed runner
        self._accept(accept, before)
        self.release_eager()

    def use_kept(self, runner: Runner, first_position: int, width: int) -> None:
        """Run every batch through ``runner``, a packed graph kept by an earlier start that passed
        its checks then (``first_position``, ``width``: how it was packed); no eager module is held."""
        self.compiler, self.compiled_what, self.compiled = None, "kept ONNX Runtime graph", None
        self.packed, self.first_position, self.pack_width, self.packed_only = runner, first_position, width, True
        self.model = None

    def _packing(self, width: int) -> tuple[int, list[Window], torch.Tensor, PackedBatch, int]:
        """(width, example windows, their padded eager logits, their packed batch, the first position id)
        for the position count the eager model agrees with packed; :class:`RuntimeRefused` where none does."""
        width = max(2, min(width, self.max_length))
        windows = self.example_windows(width)
        eager_model = self._eager()
        worst = float("inf")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values: the checks decide
            want = self.logits(windows, packed=False)
            eager = PackedLogits(eager_model).eval()
            config_pad = getattr(self.config, "pad_token_id", None)
            firsts = (0, self.pad_id + 1, None if config_pad is None else config_pad + 1)
            for first in dict.fromkeys(n for n in firsts if n is not None):
                batch = pack_windows(windows, self.pad_id, width, first)
                diff = self._packed_diff(eager, windows, batch, want)
                worst = min(worst, diff)
                if diff <= SAME_LOGITS:
                    return width, windows, want, batch, first
        raise RuntimeRefused(f"packed logits differ by {worst:.2g}")

    def _compiled_packed(self, windows: Sequence[Window], batch: PackedBatch, width: int, first: int,
                         want: torch.Tensor, make: Compiler | None = None, what: str = "") -> Runner:
        """The packed module made by ``make`` (default: the runtime in use), checked on other shapes
        than the one it was made from (more rows, narrower)."""
        make, what = make or self.compiler, what or self.compiled_what
        assert make is not None
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python values: the checks decide
            runner = make(PackedLogits(self._eager()).eval(), (batch.input_ids, batch.attention_mask, batch.position_ids))
            for check in (batch, pack_windows(windows, self.pad_id, max(2, width // 2), first)):
                diff = self._packed_diff(runner, windows, check, want)
                if not diff <= logit_tolerance(make):  # NaN never passes
                    raise RuntimeRefused(f"the packed {what} differs by {diff:.2g}")
        return runner

    def example_windows(self, width: int) -> list[Window]:
        """Windows of several lengths, some short enough to share a row of ``width`` tokens."""
        vocab = self.vocab_size
        # No pad id inside a window: RoBERTa-style models number a pad token's position apart.
        pads = {self.pad_id, getattr(self.config, "pad_token_id", None)} - {None}
        g = torch.Generator().manual_seed(0)
        lengths = sorted({max(2, n) for n in (width, width // 2, width // 3, 7, 5, 3, 2)}, reverse=True)
        windows = []
        for n in lengths:
            ids = [i if i not in pads else (i + 1) % vocab for i in torch.randint(0, vocab, (n,), generator=g).tolist()]
            windows.append(Window(0, ids, None))
        return windows

    def _packed_diff(self, runner: Runner, windows: Sequence[Window], batch: PackedBatch, want: torch.Tensor) -> float:
        logits = runner(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids)))
        got = torch.zeros_like(want)
        unpack(windows, batch, logits.float().cpu(), got, range(len(windows)))
        # Only each window's own positions: beyond them ``want`` holds the padding's logits.
        return max(float((got[k, : len(w.input_ids)] - want[k, : len(w.input_ids)]).abs().max()) for k, w in enumerate(windows))

    # ------------------------------------------------------------------ running
    @torch.inference_mode()
    def logits(self, windows: Sequence[Window], packed: bool = True) -> torch.Tensor:
        """``[windows, longest, labels]`` logits (float32, CPU) in the order given.

        Run over at most ``batch_size`` windows at a time, taken longest first: after
        :meth:`pack` (and unless ``packed`` is false) several to a row where two or more
        fit in one, else each its own row, padded to the longest of its batch. Rows shorter
        than the longest window are zero-padded, which decoding never reads.
        """
        longest = max((len(w.input_ids) for w in windows), default=0)
        out = torch.zeros(len(windows), longest, self.num_labels)
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            chunk = [windows[i] for i in rows]
            if self.packed is not None and (self.packed_only or (packed and len(chunk) > 1)):
                batch = pack_windows(chunk, self.pad_id, self.pack_width, self.first_position)
                # Unless the packed runner is the only one, only where some windows share a row: worth the 4D mask.
                if self.packed_only or len(batch.input_ids) < len(chunk):
                    logits = self.packed(*(t.to(self.device) for t in (batch.input_ids, batch.attention_mask, batch.position_ids)))
                    unpack(chunk, batch, logits.float().cpu(), out, rows)
                    continue
            padded = pad_windows(chunk, self.pad_id)
            ids, mask = padded["input_ids"].to(self.device), padded["attention_mask"].to(self.device)
            if self.compiled is not None:
                logits = self.compiled(ids, mask)
            else:
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            out[torch.tensor(rows), : logits.shape[1]] = logits.float().cpu()
        return out


def unpack(windows: Sequence[Window], batch: PackedBatch, logits: torch.Tensor, out: torch.Tensor, rows: Sequence[int]) -> None:
    """Each window's logits from its packed row into ``out[rows[k]]`` (window k of the batch)."""
    for k, w in enumerate(windows):
        n, a = len(w.input_ids), batch.start[k]
        out[rows[k], :n] = logits[batch.row[k], a : a + n]
