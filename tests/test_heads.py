"""Heads: labels that do not fit a task are refused; metrics are right."""

import numpy as np
import pytest
import torch

import autotransfer as at


def test_classification_encodes_names_and_checks_them():
    head = at.get_head("classification")
    y, info = head.encode(np.array(["dog", "cat", "dog"]))
    assert info["classes"] == ["cat", "dog"] and y.tolist() == [1, 0, 1]
    with pytest.raises(at.DataError, match="Label 'bird' is not among the training classes"):
        head.encode(["bird"], info)


@pytest.mark.parametrize("labels,match", [
    ([0.37, 1.2, 0.5], r"class ids or names, but got 0.37; for continuous targets use task='regression'"),
    ([3, 3, 3], "at least two classes, but every label is 3"),
    (np.zeros((3, 2)), r"1-D\), but got shape \(3, 2\); .*task='multilabel'"),
])
def test_classification_refuses(labels, match):
    with pytest.raises(at.DataError, match=match):
        at.get_head("classification").encode(labels)


def test_regression_refuses_text_labels_and_nan():
    head = at.get_head("regression")
    with pytest.raises(at.DataError, match="must be numbers.*task='classification'"):
        head.encode(np.array(["a", "b"]))
    with pytest.raises(at.DataError, match="1 non-finite"):
        head.encode([1.0, float("nan")])


def test_multilabel_accepts_lists_and_matrices_and_refuses_1d():
    head = at.get_head("multilabel")
    y, info = head.encode([["a", "b"], ["b"], []])
    assert info["classes"] == ["a", "b"] and y.tolist() == [[1, 1], [0, 1], [0, 0]]
    with pytest.raises(at.DataError, match="0/1 matrix.*shape \\(3,\\)"):
        head.encode([0, 1, 2])


def test_metrics():
    cls = at.get_head("classification")
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 1.0]])
    m = cls.metrics(out, torch.tensor([0, 1, 1, 1]), {"classes": [0, 1]})
    assert m["accuracy"] == 0.75

    reg = at.get_head("regression")
    y, info = reg.encode([1.0, 2.0, 3.0, 4.0])
    m = reg.metrics(y.clone(), y, info)  # perfect predictions
    assert m["r2"] == pytest.approx(1.0) and m["mae"] == pytest.approx(0.0)
    assert reg.decode(y, info) == pytest.approx([1.0, 2.0, 3.0, 4.0])

    ml = at.get_head("multilabel")
    y, info = ml.encode([[1, 0], [0, 1], [1, 1]])
    assert ml.metrics((y * 8 - 4), y, info)["map"] == pytest.approx(1.0)
