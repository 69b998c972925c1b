"""After the quickstart: refit, test, report, export.

    autotransfer run studies/quickstart.toml        # the search (scores its test set too)
    python examples/quickstart_results.py           # this script, about two minutes

Refits the best strategy on train + validation digits, scores it on the held-out test set
next to the searched models, writes the HTML report, exports the study's model (the
ensemble of the kept trials, or the best trial) to ONNX (run in onnxruntime) and the best
trial to a timm folder (loaded back with ``timm.create_model``; a timm folder holds one
backbone, not an ensemble).
"""

from __future__ import annotations

import json

import numpy as np
import torch

import autotransfer as at
from autotransfer.config import load_study_file


def main() -> None:
    kwargs, train, valid = load_study_file("studies/quickstart.toml")
    test = kwargs["test"]
    study = at.Study.load("studies/quickstart.db")
    model = study.load_best()  # the study's model: the ensemble search(final=) made, or a trial
    best = at.load(study.model_path(trial=study.best_trial.number))
    study.refit(train, valid)  # the best strategy on all 600 labelled digits
    scores = study.evaluate(test, record=True)
    print(scores[["model", "kind", "accuracy", "accuracy_se", "n"]].to_string(index=False))
    print(f"report: {study.report('studies/quickstart.html')}")

    try:
        onnx = model.export("studies/quickstart-best.onnx", format="onnx")
        print(f"onnx: {onnx['path']}, max abs diff to torch {onnx['max_abs_diff']:.2e}")
    except at.ExportError as exc:  # onnx is an extra: pip install -e ".[export]"
        print(f"onnx: skipped: {exc}")
    folder = best.export("studies/quickstart-best-timm", format="timm")["path"]
    print(f"timm: {folder}, same logits as the predictor: {_timm_logits_match(best, folder)}")


def _timm_logits_match(model: at.Predictor, folder: str) -> str:
    """Load the export into plain timm and compare logits on digits."""
    import timm
    from safetensors.torch import load_file

    config = json.loads(open(f"{folder}/config.json").read())
    net = timm.create_model(config["architecture"], num_classes=config["num_classes"])
    net.load_state_dict(load_file(f"{folder}/model.safetensors"))
    x = at.data.demo("digits", image_size=32, per_class=2)[0].inputs[:8]
    with torch.no_grad():
        ours = model.model(model.preprocessing.normalize(x))
        theirs = net.eval()(model.preprocessing.normalize(x))
    diff = float((ours - theirs).abs().max())
    return f"{np.allclose(ours, theirs, atol=1e-4)} (max abs diff {diff:.2e})"


if __name__ == "__main__":
    main()
