"""The Hugging Face token classifier of a tagger spec, and the spec completed with its config.

Three ways to a network, first that applies: the spec's own model config (a checkpoint's
tagger: no hub, no download, its weights load next); ``--model.pretrained`` (an encoder from
the hub or a directory, with a new head); a BERT from scratch, sized by
:class:`~ner_lit.training.settings.NetworkSettings`, over the tokenizer's vocabulary.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

from ner_lit.checkpoint.spec import TaggerSpec
from ner_lit.training.settings import ModelError, NetworkSettings

#: A scratch BERT's hidden and attention dropout when ``--model.dropout`` is not given (BERT's own).
SCRATCH_DROPOUT = 0.1
#: The config fields that hold an encoder's hidden and attention dropout, by family: BERT, RoBERTa,
#: XLM-R, ELECTRA, DeBERTa (``hidden_dropout_prob``, ``attention_probs_dropout_prob``), DistilBERT
#: (``dropout``, ``attention_dropout``). The token-classification head's own ``classifier_dropout``
#: is left as the config has it (BERT's falls back to ``hidden_dropout_prob`` when unset).
DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


def set_dropout(config: Any, p: float, name: str) -> None:
    """Set every dropout field ``config`` has to ``p``; an encoder with none of them is refused rather
    than trained at a dropout the user did not ask for."""
    fields = [f for f in DROPOUT_FIELDS if type(getattr(config, f, None)) in (int, float)]
    if not fields:
        raise ModelError(f"--model.dropout {p}: the {name} config ({type(config).__name__}) has none of the dropout "
                         f"fields ner_lit sets ({', '.join(DROPOUT_FIELDS)}); leave --model.dropout unset")
    for f in fields:
        setattr(config, f, p)


def build_network(spec: TaggerSpec, settings: NetworkSettings, tokenizer: Callable[[], Any]) -> tuple[Any, TaggerSpec]:
    """The network for ``spec`` and the spec that records it (its config, name and where its weights came from).

    ``tokenizer`` is called only for a scratch network, which takes its vocabulary size and padding id.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    id2label = spec.id2label  # under char tagging, a row of labels per character slot
    label2id = {v: k for k, v in id2label.items()}
    if spec.model_config is not None:
        model = AutoModelForTokenClassification.from_config(spec.hf_config())
    elif settings.pretrained is not None:
        try:
            config = AutoConfig.from_pretrained(settings.pretrained, num_labels=spec.num_outputs, id2label=id2label,
                                                label2id=label2id)
            if settings.dropout is not None:
                set_dropout(config, settings.dropout, settings.pretrained)
            model = AutoModelForTokenClassification.from_pretrained(settings.pretrained, config=config,
                                                                    ignore_mismatched_sizes=True)
        except OSError as exc:
            raise ModelError(
                f"--model.pretrained {settings.pretrained!r}: neither a local model directory nor reachable on the "
                f"Hugging Face hub ({str(exc).splitlines()[0][:200]})"
            ) from None
    else:
        from ner_lit.data.scratch import scratch_bert_config

        tok = tokenizer()
        config = scratch_bert_config(
            vocab_size=len(tok), labels=[id2label[i] for i in range(spec.num_outputs)],
            hidden_size=settings.hidden_size, num_layers=settings.num_layers,
            num_heads=settings.num_heads, intermediate_size=settings.intermediate_size,
            pad_token_id=tok.pad_token_id or 0,
        )
        set_dropout(config, SCRATCH_DROPOUT if settings.dropout is None else settings.dropout, "scratch-bert")
        model = AutoModelForTokenClassification.from_config(config)
    if model.config.num_labels != spec.num_outputs:
        raise ModelError(f"the model has {model.config.num_labels} outputs, the data's labels and tagging "
                         f"need {spec.num_outputs}")
    if spec.model_config is None:  # a new network: the spec records it, and where its weights came from
        spec = replace(spec.with_model_config(json.loads(model.config.to_json_string()), settings.pretrained or "scratch-bert"),
                       provenance=replace(spec.provenance, pretrained=settings.pretrained))
    return model, spec
