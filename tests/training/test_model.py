"""NERModel: the learning-rate schedule and what a saved checkpoint carries."""
from __future__ import annotations

import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, BertConfig

from ner_lit.checkpoint.tokenizer import materialize_tokenizer
from ner_lit.corpus.klue import read_klue_tsv
from ner_lit.corpus.records import derive_labels
from ner_lit.data.datamodule import NERDataModule
from ner_lit.training.model import ModelError, NERModel

from pipeline_fixtures import MAX_LENGTH, SAMPLE, STRIDE, TrainedRun, last_value

PEAK = 1e-3
TOTAL = 100  # optimizer steps; warmup_ratio 0.1 makes the first 10 the warmup


def small_bert(num_labels: int = 3, layers: int = 1) -> torch.nn.Module:
    config = BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, num_labels=num_labels)
    return AutoModelForTokenClassification.from_config(config)


def group_rates(total: int = TOTAL, **hparams) -> list[list[float]]:
    """The learning rate of every parameter group at every step 0..total, through the model's own
    configure_optimizers (the groups in the optimizer's order)."""
    model = NERModel(learning_rate=PEAK, warmup_ratio=0.1, **hparams)
    model.model = small_bert()
    model._trainer = SimpleNamespace(estimated_stepping_batches=total)
    configured = model.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "step"
    rates: list[list[float]] = [[] for _ in optimizer.param_groups]
    for _ in range(total + 1):
        for group, column in zip(optimizer.param_groups, rates):
            column.append(group["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def learning_rates(schedule: str = "linear", total: int = TOTAL) -> list[float]:
    """The learning rate of every step 0..total (of the first group; all groups share it)."""
    rates = group_rates(total, schedule=schedule)
    assert all(column == rates[0] for column in rates)
    return rates[0]


def test_linear_schedule_warms_up_linearly_to_the_peak() -> None:
    rates = learning_rates()
    assert rates[0] == pytest.approx(PEAK * 1 / 11)
    assert rates[4] == pytest.approx(PEAK * 5 / 11)
    assert rates[9] == pytest.approx(PEAK * 10 / 11)
    assert rates[10] == pytest.approx(PEAK)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))


def test_linear_schedule_decays_linearly_to_zero_at_the_last_step() -> None:
    rates = learning_rates()
    assert rates[55] == pytest.approx(PEAK * 45 / 90)
    assert rates[99] == pytest.approx(PEAK * 1 / 90)
    assert rates[100] == 0.0
    assert all(a > b for a, b in zip(rates[10:100], rates[11:101]))


def test_constant_schedule_keeps_the_peak_after_warmup() -> None:
    rates = learning_rates("constant")
    assert rates[5] == pytest.approx(PEAK * 6 / 11)
    assert rates[10:] == [pytest.approx(PEAK)] * (TOTAL + 1 - 10)


def test_cosine_schedule_decays_along_half_a_cosine_to_zero_at_the_last_step() -> None:
    rates, linear = learning_rates("cosine"), learning_rates()
    assert rates[:11] == linear[:11]  # the same warmup
    assert rates[55] == pytest.approx(PEAK / 2)  # half way down at half the decay
    assert rates[32] == pytest.approx(PEAK * 0.5 * (1 - math.cos(math.pi * 68 / 90)))
    assert rates[32] > linear[32] and rates[78] < linear[78]  # slower than linear early, faster late
    assert rates[100] == 0.0
    assert all(a > b for a, b in zip(rates[10:100], rates[11:101]))


def test_biases_and_layernorm_weights_get_no_weight_decay() -> None:
    model = NERModel(weight_decay=0.05)
    model.model = small_bert()
    model._trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = model.configure_optimizers()["optimizer"].param_groups
    names = {id(p): n for n, p in model.model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert all(n.endswith("bias") or "LayerNorm" in n for n in plain)
    assert "classifier.weight" in decayed


# --------------------------------------------------------------------------- the head's learning rate
def test_head_learning_rate_follows_the_same_schedule_from_its_own_peak() -> None:
    encoder, encoder_plain, head, head_plain = group_rates(head_learning_rate=PEAK * 20)
    assert encoder == encoder_plain and head == head_plain
    assert encoder == learning_rates()
    assert head[10] == pytest.approx(PEAK * 20) and head[100] == 0.0
    assert all(h == pytest.approx(20 * e) for h, e in zip(head, encoder))


def test_head_learning_rate_puts_exactly_the_head_in_groups_of_its_own() -> None:
    model = NERModel(weight_decay=0.05, head_learning_rate=1e-2)
    model.model = small_bert()
    model._trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = model.configure_optimizers()["optimizer"].param_groups
    names = {id(p): n for n, p in model.model.named_parameters()}
    members = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert members["head"] == {"classifier.weight"} and members["head_no_decay"] == {"classifier.bias"}
    assert [(g["name"], g["initial_lr"], g["weight_decay"]) for g in groups] == [  # initial_lr: the peak
        ("encoder", 5e-5, 0.05), ("encoder_no_decay", 5e-5, 0.0), ("head", 1e-2, 0.05), ("head_no_decay", 1e-2, 0.0)]
    assert set().union(*members.values()) == set(names.values())


# --------------------------------------------------------------------------- layer-wise decay
def layer_decay_groups(**hparams) -> tuple[list[dict], dict[int, str]]:
    model = NERModel(learning_rate=PEAK, weight_decay=0.05, layer_decay=0.5, **hparams)
    model.model = small_bert(layers=3)
    model._trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = model.configure_optimizers()["optimizer"].param_groups
    return groups, {id(p): n for n, p in model.model.named_parameters()}


def test_layer_decay_runs_each_layer_at_the_decay_times_the_rate_of_the_one_above() -> None:
    groups, _ = layer_decay_groups(head_learning_rate=1e-2)
    peaks = {g["name"]: g["initial_lr"] for g in groups}
    assert peaks == pytest.approx({
        "embeddings": PEAK / 8, "embeddings_no_decay": PEAK / 8, "layer_0": PEAK / 4, "layer_0_no_decay": PEAK / 4,
        "layer_1": PEAK / 2, "layer_1_no_decay": PEAK / 2, "layer_2": PEAK, "layer_2_no_decay": PEAK,
        "head": 1e-2, "head_no_decay": 1e-2})
    assert [g["name"] for g in groups][:2] == ["embeddings", "embeddings_no_decay"]  # bottom to top


def test_layer_decay_puts_every_parameter_in_the_group_of_its_own_layer() -> None:
    groups, names = layer_decay_groups()
    members = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert set().union(*members.values()) == set(names.values())
    assert sum(len(m) for m in members.values()) == len(names)
    for group, params in members.items():
        layer = group.removesuffix("_no_decay")
        expected = {"embeddings": "bert.embeddings.", "head": "classifier."}.get(layer, f"bert.encoder.layer.{layer[6:]}.")
        assert all(n.startswith(expected) for n in params), (group, params)
    assert {g["name"]: g["initial_lr"] for g in groups}["head"] == PEAK  # no head rate: the top layer's


def test_layer_decay_rates_follow_the_schedule_from_their_own_peaks() -> None:
    columns = group_rates(layer_decay=0.5)  # one layer: the embeddings at half its rate, the head at its rate
    base = learning_rates()
    assert sorted(round(column[10] / PEAK, 6) for column in columns) == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    for column in columns:
        assert column == [pytest.approx(r * column[10] / PEAK) for r in base]


def noise_driven(name: str) -> bool:
    """Attention key biases: their exact gradient is zero (a softmax over keys ignores a shift shared by all
    of a query's scores), so theirs is rounding noise, which Adam scales up to full-size steps; the
    implementations round differently, so those weights differ between them by design."""
    return name.endswith("attention.self.key.bias")


# --------------------------------------------------------------------------- AdamW's implementation
def configured_optimizer(net: torch.nn.Module, **hparams) -> tuple[torch.optim.Optimizer, object]:
    model = NERModel(learning_rate=PEAK, weight_decay=0.05, warmup_ratio=0.1, **hparams)
    model.model = net
    model._trainer = SimpleNamespace(estimated_stepping_batches=TOTAL)
    configured = model.configure_optimizers()
    return configured["optimizer"], configured["lr_scheduler"]["scheduler"]


@pytest.mark.parametrize("adamw, fused, foreach", [(None, True, None), ("fused", True, None),
                                                   ("foreach", None, True), ("for_loop", None, False)])
def test_adamw_runs_the_implementation_asked_for(adamw, fused, foreach) -> None:
    optimizer, _ = configured_optimizer(small_bert(), **({} if adamw is None else {"adamw": adamw}))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (optimizer.defaults["fused"], optimizer.defaults["foreach"]) == (fused, foreach)
    assert all((g["fused"], g["foreach"]) == (fused, foreach) for g in optimizer.param_groups)


def test_adamw_implementations_make_the_same_updates() -> None:
    """Same start, same gradients, same schedule: every implementation ends at the same weights
    (up to float rounding), and far from where they started."""
    torch.manual_seed(0)
    start = small_bert()
    ids = torch.randint(0, 20, (4, 9))
    labels = torch.randint(0, 3, (4, 9))
    ends = {}
    for adamw in ("for_loop", "foreach", "fused"):
        net = small_bert()
        net.load_state_dict(start.state_dict())
        net.train(False)  # no dropout: the gradients depend on the weights alone
        optimizer, scheduler = configured_optimizer(net, adamw=adamw, head_learning_rate=PEAK * 10)
        for _ in range(15):
            net(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        ends[adamw] = {k: v.clone() for k, v in net.state_dict().items()}
    moved = max((ends["for_loop"][k] - v).abs().max().item() for k, v in start.state_dict().items())
    assert moved > 1e-3
    for adamw in ("foreach", "fused"):
        for name, value in ends["for_loop"].items():
            if not noise_driven(name):
                torch.testing.assert_close(ends[adamw][name], value, rtol=1e-5, atol=1e-6, msg=f"{adamw}: {name}")


def test_an_unknown_adamw_implementation_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"--model.adamw 'fast': expected one of fused, foreach, for_loop"):
        NERModel(adamw="fast")


# --------------------------------------------------------------------------- the checkpoint
@pytest.fixture(scope="module")
def checkpoint(trained_run: TrainedRun) -> dict:
    return torch.load(trained_run.best, map_location="cpu", weights_only=True)


def test_checkpoint_loads_with_weights_only(trained_run: TrainedRun, checkpoint: dict) -> None:
    assert "state_dict" in checkpoint and "ner_lit" in checkpoint
    last = torch.load(trained_run.last, map_location="cpu", weights_only=True)
    assert last["ner_lit"]["labels"] == checkpoint["ner_lit"]["labels"]


def test_checkpoint_section_holds_the_labels_of_the_training_file(trained_run: TrainedRun, checkpoint: dict) -> None:
    section = checkpoint["ner_lit"]
    assert section["labels"] == derive_labels(read_klue_tsv(trained_run.data_dir / "train.tsv"))
    assert section["format"] == 3 and section["crf"] is None and section["name"] == "scratch-bert"  # no CRF: format 3


def test_checkpoint_section_holds_the_window_settings(checkpoint: dict) -> None:
    section = checkpoint["ner_lit"]
    assert (section["max_length"], section["stride"], section["label_rule"]) == (MAX_LENGTH, STRIDE, "first_char")


def test_checkpoint_model_config_rebuilds_the_network(checkpoint: dict) -> None:
    section = checkpoint["ner_lit"]
    config = AutoConfig.for_model(**section["model_config"])
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 1, 2)
    assert config.hidden_dropout_prob == config.attention_probs_dropout_prob == 0.1  # a scratch BERT's, --model.dropout unset
    slots, labels = section["char_slots"], section["labels"]  # a char tagger: a row of labels per character slot
    assert [config.id2label[i] for i in range(config.num_labels)] == [f"{lab}@{k}" for k in range(slots) for lab in labels]
    model = AutoModelForTokenClassification.from_config(config)
    state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert [k for k in missing if not k.endswith("position_ids")] == [] and unexpected == []


def test_checkpoint_tokenizer_files_rebuild_the_tokenizer(checkpoint: dict, tmp_path) -> None:
    files = checkpoint["ner_lit"]["tokenizer_files"]
    assert "tokenizer.json" in files
    tokenizer = AutoTokenizer.from_pretrained(materialize_tokenizer(files, tmp_path))
    assert tokenizer.is_fast
    config = AutoConfig.for_model(**checkpoint["ner_lit"]["model_config"])
    assert len(tokenizer) == config.vocab_size
    ids = tokenizer("서울에서 왔다", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6  # syllables: one token each


def test_checkpoint_scores_are_the_logged_validation_scores(trained_run: TrainedRun, checkpoint: dict) -> None:
    scores = checkpoint["ner_lit"]["scores"]
    for key in ("val_F1c", "val_F1e"):
        assert scores[key] == pytest.approx(float(last_value(trained_run.run_dir, key)), abs=1e-9)


# --------------------------------------------------------------------------- train mode
class _ModesAtFirstStep(pl.Callback):
    """Records which modules of the model are in eval mode when the first training batch runs."""

    def __init__(self) -> None:
        self.in_eval: list[str] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.in_eval is None:
            self.in_eval = [name for name, m in pl_module.named_modules() if not m.training]


def fit_tiny_pretrained(model_dir, tmp_path, callback: pl.Callback, steps: int = 2, gradient_clip_val=None,
                        precision: str = "32-true", **hparams) -> tuple[NERModel, pl.Trainer]:
    """Two (or ``steps``) optimizer steps of the tiny pretrained model on the sample corpus."""
    data = NERDataModule(data_dir=str(SAMPLE), tokenizer=str(model_dir), max_length=32, stride=8,
                         batch_size=4, cache_dir=str(tmp_path / "cache"))
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                         default_root_dir=str(tmp_path), gradient_clip_val=gradient_clip_val, precision=precision)
    model = NERModel(pretrained=str(model_dir), learning_rate=1e-2, **hparams)
    trainer.fit(model, datamodule=data)
    return model, trainer


def test_a_pretrained_model_is_fine_tuned_in_train_mode(tiny_model_dir, tmp_path) -> None:
    """from_pretrained returns eval mode; fine-tuning with dropout off would be a silent regression."""
    probe = _ModesAtFirstStep()
    fit_tiny_pretrained(tiny_model_dir, tmp_path, probe)
    assert probe.in_eval == []


@pytest.mark.parametrize("dropout", [None, 0.3])
def test_model_dropout_sets_a_pretrained_encoders_hidden_and_attention_dropout(tiny_model_dir, tmp_path, dropout) -> None:
    own = AutoConfig.from_pretrained(tiny_model_dir)
    model, _ = fit_tiny_pretrained(tiny_model_dir, tmp_path, pl.Callback(), steps=1, dropout=dropout)
    expected = own.hidden_dropout_prob if dropout is None else dropout  # unset: the encoder's own
    config = model.model.config
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob) == (
        expected, own.attention_probs_dropout_prob if dropout is None else dropout)
    layer = model.model.base_model.encoder.layer[0]
    assert layer.output.dropout.p == expected and layer.attention.output.dropout.p == expected
    assert model.spec.model_config["hidden_dropout_prob"] == expected  # what the tagger record rebuilds


def test_model_dropout_on_an_encoder_config_without_dropout_fields_is_refused() -> None:
    from transformers import PretrainedConfig

    from ner_lit.training.network import set_dropout

    with pytest.raises(ModelError, match=r"--model.dropout 0.2: the enc config \(\w+\) has none of the dropout fields"):
        set_dropout(PretrainedConfig(), 0.2, "enc")


def test_checkpoint_section_records_the_monitored_score_and_the_weights_digest(
        trained_run: TrainedRun, checkpoint: dict) -> None:
    from ner_lit.checkpoint.format import weights_digest

    section = checkpoint["ner_lit"]
    assert section["monitor"] == {"name": "val_F1c", "mode": "max", "score": section["scores"]["val_F1c"]}
    assert section["weights_sha256"] == weights_digest(checkpoint["state_dict"])
    changed = dict(checkpoint["state_dict"])
    name = next(iter(changed))
    changed[name] = changed[name].clone()
    changed[name].view(-1)[0] += 1
    assert weights_digest(changed) != section["weights_sha256"]


# --------------------------------------------------------------------------- frozen word embeddings
class _GradientsAtStep(pl.Callback):
    """Records, before each optimizer step, which parameters have a gradient."""

    def __init__(self) -> None:
        self.with_grad: list[set[str]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.with_grad.append({n for n, p in pl_module.model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_word_embeddings_get_no_gradient_no_state_and_stay_as_loaded(tiny_model_dir, tmp_path, freeze) -> None:
    before = AutoModelForTokenClassification.from_pretrained(tiny_model_dir).state_dict()
    probe = _GradientsAtStep()
    model, trainer = fit_tiny_pretrained(tiny_model_dir, tmp_path, probe, freeze_word_embeddings=freeze)
    word = "bert.embeddings.word_embeddings.weight"
    after = model.model.state_dict()
    optimizer = trainer.optimizers[0]
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    embedding = model.model.get_input_embeddings().weight
    assert len(probe.with_grad) == 2
    assert all((word in names) is not freeze for names in probe.with_grad)
    assert all("bert.embeddings.position_embeddings.weight" in names for names in probe.with_grad)
    assert torch.equal(after[word], before[word]) is freeze
    assert (id(embedding) in optimized) is not freeze and (embedding in optimizer.state) is not freeze
    assert not torch.equal(after["bert.encoder.layer.0.attention.self.query.weight"],
                           before["bert.encoder.layer.0.attention.self.query.weight"])


def test_fused_adamw_trains_as_the_loop_does_under_lightning_with_gradient_clipping(tiny_model_dir, tmp_path) -> None:
    """The recipe's setting (clipping at norm 1, frozen word embeddings, a head rate): fused and
    for_loop AdamW end a few Lightning steps at the same weights, up to float rounding."""
    ends, start = {}, None
    for adamw in ("for_loop", "fused"):
        pl.seed_everything(3, verbose=False)
        model, trainer = fit_tiny_pretrained(tiny_model_dir, tmp_path / adamw, pl.Callback(), steps=4, gradient_clip_val=1.0,
                                             adamw=adamw, freeze_word_embeddings=True, head_learning_rate=5e-2)
        assert bool(trainer.optimizers[0].defaults["fused"]) == (adamw == "fused")
        ends[adamw] = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    start = AutoModelForTokenClassification.from_pretrained(tiny_model_dir).state_dict()
    assert max((ends["fused"][k] - v).abs().max().item() for k, v in start.items() if k in ends["fused"]
               and not k.startswith("classifier")) > 1e-4  # it trained
    for name, value in ends["for_loop"].items():
        if not noise_driven(name):
            torch.testing.assert_close(ends["fused"][name], value, rtol=1e-5, atol=1e-6, msg=name)


class _GradientNorms(pl.Callback):
    """The total gradient norm each optimizer step used: read after the step (Lightning clips after
    ``on_before_optimizer_step``; the gradients are zeroed only when the next step begins)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        optimizer = trainer.optimizers[0]
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def test_fused_adamw_clips_gradients_under_bf16_mixed(tiny_model_dir, tmp_path) -> None:
    """The me5 recipe's combination (bf16-mixed where the CPU has it, fused AdamW, clipping at 1):
    Lightning refuses to clip for a fused optimizer under mixed precision; bf16 has no loss
    scaler, so ner_lit clips itself, and every step sees a gradient norm of at most 1."""
    norms = {}
    for clip in (None, 1.0):
        probe = _GradientNorms()
        pl.seed_everything(3, verbose=False)
        _, trainer = fit_tiny_pretrained(tiny_model_dir, tmp_path / str(clip), probe, steps=3, gradient_clip_val=clip,
                                         adamw="fused", precision="bf16-mixed")
        assert trainer.global_step == 3 and len(probe.norms) == 3
        norms[clip] = probe.norms
    assert max(norms[None]) > 1.0  # unclipped, the gradients are larger than the limit
    assert max(norms[1.0]) <= 1.0 + 1e-4, norms


# --------------------------------------------------------------------------- word embeddings trained row by row
class _BatchesAndRates(pl.Callback):
    """The token ids each training batch used, and each step's embedding rates (the table's and AdamW's)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.rates: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ids |= set(batch["input_ids"].unique().tolist())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.adamw = next(g for g in optimizer.param_groups if g["name"] == "embeddings")["lr"]  # this step's

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sparse = next(c for c in trainer.callbacks if type(c).__name__ == "SparseWordEmbeddings")
        self.rates.append((sparse.optimizer.param_groups[0]["lr"], self.adamw))


def test_sparse_word_embeddings_move_exactly_the_rows_the_batches_used(tiny_model_dir, tmp_path) -> None:
    before = AutoModelForTokenClassification.from_pretrained(tiny_model_dir).get_input_embeddings().weight.detach()
    probe = _BatchesAndRates()
    model, trainer = fit_tiny_pretrained(tiny_model_dir, tmp_path, probe, steps=3, sparse_word_embeddings=True, layer_decay=0.5)
    table = model.model.get_input_embeddings()
    moved = {int(i) for i in torch.nonzero((table.weight.detach() != before).any(dim=1)).flatten()}
    assert moved and moved <= probe.ids and len(moved) >= 0.9 * len(probe.ids - {model.tokenizer.pad_token_id})
    assert all(id(table.weight) not in {id(p) for p in g["params"]} for g in trainer.optimizers[0].param_groups)
    assert len(probe.rates) == 3 and all(r == pytest.approx(a) for r, a in probe.rates)  # AdamW's rate for the layer
    assert probe.rates[0][0] > probe.rates[1][0] > probe.rates[2][0]  # decaying, as the schedule says
    assert table.sparse is False  # the trained network is the plain one


def test_sparse_word_embeddings_keep_their_optimizer_state_in_the_checkpoint(tiny_model_dir, tmp_path) -> None:
    from ner_lit.training.sparse_embeddings import SparseWordEmbeddings

    model, trainer = fit_tiny_pretrained(tiny_model_dir, tmp_path, pl.Callback(), sparse_word_embeddings=True)
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    saved = torch.load(tmp_path / "s.ckpt", weights_only=False)["callbacks"]["SparseWordEmbeddings"]["optimizer"]
    (state,) = saved["state"].values()
    assert state["exp_avg"].shape == model.model.get_input_embeddings().weight.shape and int(state["step"]) == 2
    again = SparseWordEmbeddings()
    again.load_state_dict({"optimizer": saved})
    again.on_fit_start(SimpleNamespace(world_size=1), model)  # a resumed fit: the moments go on from the file
    assert torch.equal(next(iter(again.optimizer.state.values()))["exp_avg"], state["exp_avg"])


def test_sparse_and_frozen_word_embeddings_together_are_refused() -> None:
    with pytest.raises(ModelError, match="either frozen or trained row by row"):
        NERModel(freeze_word_embeddings=True, sparse_word_embeddings=True)
