"""STEGO's inference with an official checkpoint (``stuff.model: stego_checkpoint``), as STEGO's
``eval_segmentation.py`` does it (mhamilton723/STEGO at eb4d6b5), in two views of the image.

Per image: the checkpoint's ViT tokens -> the head's code; with ``flip`` the code of the horizontally
flipped image is flipped back and averaged with it (``(code1 + code2.flip(3)) / 2``); the code is
upsampled bilinearly (``align_corners=False``) to the output size; the cluster probe scores it by cosine;
labels = argmax, or with the CRF: softmax(alpha * cosine) refined by STEGO's dense CRF at the output size.

* ``crop="full"`` (the pipeline's default): the whole image, LANCZOS square-resized to the features'
  input size; the output size is the image size, so every pixel gets a label (pseudo-labels must cover
  the whole image); the CRF sees the original image.
* ``crop="center"`` (STEGO's evaluation view): the image's shorter side resized to ``crop_size`` with
  nearest neighbour (torchvision ``Resize(res, NEAREST)``), centre crop ``crop_size`` x ``crop_size``
  (``CenterCrop``); labels and CRF at the crop; the CRF image is STEGO's (the normalised crop
  un-normalised and truncated to uint8, ``to_pil_image``). The crop's labels are put back on the image
  grid (nearest); pixels outside the crop are void (255), so this view is for comparing with STEGO's
  evaluation, not for pseudo-labels (which must cover the whole image).

In both views the CRF gets the image in BGR order, as STEGO's ``dense_crf``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from u2seg.backbones import IMAGENET_MEAN, IMAGENET_STD
from u2seg.crf import CRFParams, refine_scores
from u2seg.errors import UserError
from u2seg.pseudo.stuff.model import nearest_indices
from u2seg.pseudo.stuff.stego.checkpoint import CheckpointTokens, tokens_backbone_stub
from u2seg.pseudo.stuff.stego.model import StegoStuffModel
from u2seg.pseudo.stuff.stego.params import StegoInferenceParams

#: Label of the pixels outside STEGO's centre crop.
VOID = 255


# ------------------------------------------------------------------------------ STEGO's image view
def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after torchvision's ``Resize(size)``: the shorter side becomes ``size``, the longer side
    ``int(size * long / short)`` (truncated)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_crop_offset(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of torchvision's ``CenterCrop(size)`` in a (height, width) image (no padding case)."""
    if height < size or width < size:
        raise ValueError(f"a {height}x{width} image is smaller than the {size} px centre crop")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def center_view(image: np.ndarray, size: int) -> np.ndarray:
    """STEGO's evaluation view of an (H, W[, C]) array: nearest resize of the shorter side to ``size``
    (PIL, as torchvision on PIL images), then the centre ``size`` x ``size`` crop."""
    rh, rw = resized_shape(image.shape[0], image.shape[1], size)
    resized = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.NEAREST))
    top, left = center_crop_offset(rh, rw, size)
    return resized[top:top + size, left:left + size]


def paste_center_view(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (size, size) label map of :func:`center_view` put back on the (height, width) image grid:
    each image pixel takes the label of the view pixel it resizes to (nearest); outside the crop: 255."""
    size = labels.shape[0]
    rh, rw = resized_shape(height, width, size)
    top, left = center_crop_offset(rh, rw, size)
    ys = nearest_indices(height, rh) - top
    xs = nearest_indices(width, rw) - left
    out = np.full((height, width), VOID, dtype=np.uint8)
    iy, ix = (ys >= 0) & (ys < size), (xs >= 0) & (xs < size)
    out[np.ix_(iy, ix)] = labels[np.ix_(ys[iy], xs[ix])]
    return out


def normalise(rgb: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) ToTensor + ImageNet normalisation of a uint8 RGB image (STEGO's ``normalize``)."""
    x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def crf_image(x: torch.Tensor) -> np.ndarray:
    """The uint8 RGB image STEGO's ``dense_crf`` sees of a normalised (1, 3, H, W) input: un-normalised,
    times 255, truncated (torchvision ``to_pil_image`` on a float tensor)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (x[0].cpu() * std + mean).mul(255).byte()
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


# ---------------------------------------------------------------------------------------- labels
@torch.no_grad()
def checkpoint_code(model: StegoStuffModel, tokens: CheckpointTokens, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """(B, D, h, w) code of normalised images (B, 3, H, W); ``flip``: averaged with the flipped image's."""
    device = next(tokens.parameters()).device
    x = x.to(device)
    code = model.head.code(tokens(x))
    if flip:
        code = (code + model.head.code(tokens(x.flip(dims=[3]))).flip(dims=[3])) / 2
    return code


@torch.no_grad()
def code_scores(model: StegoStuffModel, code: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Cosine scores (S, height, width) of one image's (1, D, h, w) code upsampled bilinearly."""
    code = F.interpolate(code, size=(height, width), mode="bilinear", align_corners=False)
    return model.probe.cosine(code)[0].float().cpu().numpy()


def labels_of(scores: np.ndarray, image: np.ndarray | None, crf: CRFParams | None) -> np.ndarray:
    """uint8 labels of (S, H, W) scores: argmax, or the dense CRF over the (H, W, 3) RGB image, given to
    pydensecrf in BGR order as STEGO's ``dense_crf`` does (the permutohedral lattice is not symmetric in
    the feature order: RGB changes 0.3-0.6 % of the labels)."""
    if crf is None:
        return scores.argmax(axis=0).astype(np.uint8)
    if image is None or image.shape[:2] != scores.shape[1:]:
        raise ValueError("the CRF needs the RGB image at the scores' size")
    return refine_scores(np.ascontiguousarray(image[:, :, ::-1]), scores, crf).astype(np.uint8)


def center_labels(model: StegoStuffModel, tokens: CheckpointTokens, rgb: np.ndarray, params: StegoInferenceParams,
                  crf: CRFParams | None = None) -> np.ndarray:
    """(crop_size, crop_size) uint8 labels of STEGO's centre-crop view of one RGB image (STEGO's output)."""
    if params.crop_size % tokens.patch:
        raise UserError(f"stuff.stego_inference.crop_size {params.crop_size} is not a multiple of the STEGO ViT "
                        f"patch size {tokens.patch}")
    x = normalise(center_view(rgb, params.crop_size))
    scores = code_scores(model, checkpoint_code(model, tokens, x, params.flip), params.crop_size, params.crop_size)
    return labels_of(scores, crf_image(x) if crf is not None else None, crf)


def checkpoint_stuff_map(model: StegoStuffModel, tokens: CheckpointTokens, rgb: np.ndarray, input_size: int,
                         params: StegoInferenceParams, crf: CRFParams | None = None) -> np.ndarray:
    """Stuff label map (H, W) uint8 of one RGB image with an official STEGO checkpoint (see module doc);
    ``input_size``: the square input of ``crop="full"`` (features.input_size)."""
    height, width = rgb.shape[:2]
    if params.crop == "center":
        return paste_center_view(center_labels(model, tokens, rgb, params, crf), height, width)
    from u2seg.backbones import Backbone

    x = Backbone.preprocess(tokens_backbone_stub(tokens.patch), [rgb], input_size)
    scores = code_scores(model, checkpoint_code(model, tokens, x, params.flip), height, width)
    return labels_of(scores, rgb, crf)


def center_view_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """A full-image label map seen as STEGO's evaluation sees its labels (nearest resize + centre crop),
    to compare any map with STEGO's ``crop_size`` x ``crop_size`` output."""
    return center_view(np.asarray(labels, dtype=np.uint8), size)
