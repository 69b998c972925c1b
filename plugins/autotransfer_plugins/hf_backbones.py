"""transformers encoders whose weights come from the Hugging Face Hub (they need a network)."""

from __future__ import annotations

import autotransfer as at

HUB_MODELS = {
    "bert_base": "google-bert/bert-base-uncased",
    "distilroberta": "distilbert/distilroberta-base",
}


@at.hookimpl
def register_backbones(register):
    for name, hf_name in HUB_MODELS.items():
        register(at.HFBackbone(name, hf_name=hf_name, weights="hub"))
