"""detectron2's anchor, pasting and resize rules without detectron2 (the parity tests compare with it)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from u2seg.detector.data import output_size, resize_image
from u2seg.detector.model import D2AnchorGenerator, ModelConfig, build_model
from u2seg.detector.predict import paste_masks


def test_anchors_unrounded_with_fpn_strides_at_a_padded_side_of_800():
    gen = D2AnchorGenerator([32, 64, 128, 256, 512], [0.5, 1.0, 2.0])
    cell = gen.cell_anchors[0]
    w = math.sqrt(32 ** 2 / 0.5)
    assert torch.allclose(cell[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))  # [-22.63, -11.31, ...]
    assert not torch.equal(cell, cell.round())
    # padded 800 x 1216: P6 is 13 x 19 cells; torchvision's stride would be 800 // 13 = 61, detectron2's is 64
    grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    p6 = gen.grid_anchors(grids, torch.device("cpu"))[4]
    centres = (p6[:, :2] + p6[:, 2:]) / 2
    assert p6.shape == (13 * 19 * 3, 4)
    assert float(centres[:, 1].max()) == 12 * 64 and float(centres[:, 0].max()) == 18 * 64
    assert torch.equal(centres[3], torch.tensor([64.0, 0.0]))  # location-major: (0, 1) after 3 cell anchors


def test_model_uses_detectron2_anchors():
    model = build_model(ModelConfig(num_classes=2, num_stuff=0, backbone_weights=None), load_pretrained=False)
    assert isinstance(model.rpn.anchor_generator, D2AnchorGenerator)
    assert model.rpn.anchor_generator.strides == [4, 8, 16, 32, 64]


def test_paste_constant_mask_is_the_box_of_pixel_centres():
    box = torch.tensor([[10.3, 5.2, 30.7, 20.1]])
    mask = paste_masks(torch.ones(1, 28, 28), box, (40, 50))[0].numpy()
    ys, xs = np.mgrid[0:40, 0:50] + 0.5
    inside = (xs >= 10.3) & (xs <= 30.7) & (ys >= 5.2) & (ys <= 20.1)
    assert np.array_equal(mask, inside)  # torchvision's paste (integer box, +1 px padding) is larger
    assert not paste_masks(torch.full((1, 28, 28), 0.49), box, (40, 50)).any()
    assert paste_masks(torch.full((1, 28, 28), 0.5), box, (40, 50)).any()  # p >= 0.5, as detectron2


def test_resize_follows_resize_shortest_edge_with_pil_bilinear():
    assert output_size(480, 640, 800, 1333) == (800, 1067)
    assert output_size(427, 640, 800, 1333) == (800, 1199)
    assert output_size(100, 1000, 800, 1333) == (133, 1333)
    img = np.random.default_rng(0).integers(0, 256, size=(427, 640, 3), dtype=np.uint8)
    out = resize_image(img, (800, 1199))
    assert np.array_equal(out, np.asarray(Image.fromarray(img).resize((1199, 800), Image.BILINEAR)))
    assert out.flags.writeable
