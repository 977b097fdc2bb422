"""The LightningModule and what a run adds around it.

Owns ``NERModel`` (``model``: the steps, metrics and checkpoint hooks) and what it is made of:
its typed settings groups (``settings``), building the network and completing the spec
(``network``), AdamW's groups, schedule and clipping (``optimization``), the checkpoint's
``ner_lit`` section (``section``), the hand-over of the data's tokenizer and aligner
(``handover``); the KLUE metrics as torchmetrics (``metrics``), the callbacks the CLI installs
(``callbacks``: predictions to JSONL, the best model exported, memory released), stopping on
SIGTERM or Ctrl-C with ``last.ckpt`` written (``preemption``), and what ``test`` writes: the
per-type report (``report``), the error analysis (``analysis``) and the learning curve with the
clock that times it (``curve``).
May import: corpus, alignment, checkpoint, data, inference and the top-level helpers.
"""
