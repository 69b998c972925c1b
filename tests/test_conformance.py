"""Every built-in backbone, and the tiny test ones, pass the conformance suite."""

import pytest
import torch

import autotransfer as at
from autotransfer.testing import BackboneConformance, tiny_text_backbone


class TestEfficientNetLite0(BackboneConformance):
    backbone = at.TimmBackbone("efficientnet_lite0", timm_name="efficientnet_lite0",
                               image_size=64)


class TestMiniLM(BackboneConformance):
    @property
    def backbone(self):
        return at.get_backbone("minilm_l6")


class TestTinyCNN(BackboneConformance):
    backbone = at.TimmBackbone("tiny_cnn", timm_name="test_efficientnet", image_size=32)


class TestTinyResNet(BackboneConformance):
    backbone = at.TimmBackbone("tiny_resnet", timm_name="test_resnet", image_size=32)


class TestTinyViT(BackboneConformance):
    """ViT's forward is no plain chain of children: it runs as one stage, still conformant."""

    backbone = at.TimmBackbone("tiny_vit", timm_name="test_vit")


class TestTinyConvNeXt(BackboneConformance):
    backbone = at.TimmBackbone("tiny_convnext", timm_name="test_convnext", image_size=32)


class TestTinyBert(BackboneConformance):
    backbone = tiny_text_backbone()


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_resnet", "efficientnet_lite0",
                                  "efficientnet_lite1", "efficientnet_lite2", "tiny_bert",
                                  "minilm_l6"])
def test_frozen_prefix_covers_every_frozen_group(name):
    """For chain-like bodies the no-grad prefix reaches the freeze boundary exactly, so a
    trial with k frozen groups never runs those groups with autograd (and can cache them)."""
    b = at.get_backbone(name)
    body = b.build(pretrained=False)
    model = at.TransferModel(body, torch.nn.Identity(), b.layer_groups(body), b.stages(body))
    for k in range(model.n_groups + 1):
        model.freeze(k)
        in_prefix = set().union(*(s.params for s in model._stages[: model.n_prefix]))
        assert in_prefix == {n for g in model.groups[:k] for n in g}
    assert model.n_prefix == len(model._stages), "a linear probe caches the whole body"
