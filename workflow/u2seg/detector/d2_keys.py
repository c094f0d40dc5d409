"""detectron2 <-> u2seg parameter names, written once and used in both directions (torch-free).

Each :class:`KeyRule` pairs a detectron2 name template with a u2seg one, e.g.
``backbone.fpn_lateral{l}.{p}`` <-> ``fpn.inner_blocks.{l}.0.{p}``: a field is a regex (``FIELDS``) and
an integer field may carry a shift (u2seg value = detectron2 value + shift: FPN level 2 is block 0).
``import-d2`` reads names left to right (:func:`d2_to_u2seg`), ``export-d2`` right to left
(:func:`u2seg_to_d2`); the ResNet names (detectron2 ``stem``/``res2..res5`` vs timm
``conv1``/``layer1..layer4``) are one more table of the same kind.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

BOTTOM_UP = "backbone.bottom_up."
U2SEG_BODY = "backbone.body."

#: the regex of each template field
FIELDS = {
    "p": r"weight|bias",  # a parameter
    "n": r"\w+",  # a norm parameter or buffer
    "d": r"\d",  # a one-digit index (levels, stages, convs)
    "i": r"\d+",  # an index (blocks, cascade stages)
    "fc": r"fc\d",
    "out": r"cls_score|bbox_pred",
    "lvl": r"p\d",
    "sp": r"weight|bias|norm\.weight|norm\.bias",
}
_PLACEHOLDER = re.compile(r"\{(\w+?)(\d?)\}")  # {name} or {name<k>} (several fields of one kind)


@lru_cache(maxsize=None)
def _compile(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}{m.group(2)}>{FIELDS[m.group(1)]})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class KeyRule:
    """One name pattern in both conventions; ``shift``: u2seg index = detectron2 index + shift."""

    d2: str
    ours: str
    shift: dict[str, int] = field(default_factory=dict)

    def convert(self, key: str, to_ours: bool) -> str | None:
        """The other convention's name of ``key``, None when the rule does not match it."""
        src, dst = (self.d2, self.ours) if to_ours else (self.ours, self.d2)
        m = _compile(src).fullmatch(key)
        if m is None:
            return None
        values = {k: (str(int(v) + (1 if to_ours else -1) * self.shift[k]) if k in self.shift else v)
                  for k, v in m.groupdict().items()}
        return _PLACEHOLDER.sub(lambda p: values[p.group(1) + p.group(2)], dst)


#: detectron2 ResNet (without ``backbone.bottom_up.``) <-> timm ResNet
RESNET_RULES = (
    KeyRule("stem.conv1.{p}", "conv1.{p}"),
    KeyRule("stem.conv1.norm.{n}", "bn1.{n}"),
    KeyRule("res{d}.{i}.conv{d2}.weight", "layer{d}.{i}.conv{d2}.weight", {"d": -1}),
    KeyRule("res{d}.{i}.conv{d2}.norm.{n}", "layer{d}.{i}.bn{d2}.{n}", {"d": -1}),
    KeyRule("res{d}.{i}.shortcut.weight", "layer{d}.{i}.downsample.0.weight", {"d": -1}),
    KeyRule("res{d}.{i}.shortcut.norm.{n}", "layer{d}.{i}.downsample.1.{n}", {"d": -1}),
)

#: detectron2 PanopticFPN + CascadeROIHeads <-> u2seg's model (everything but the ResNet body)
MODEL_RULES = (
    KeyRule("backbone.fpn_lateral{d}.{p}", "fpn.inner_blocks.{d}.0.{p}", {"d": -2}),
    KeyRule("backbone.fpn_lateral{d}.norm.{n}", "fpn.inner_blocks.{d}.1.{n}", {"d": -2}),
    KeyRule("backbone.fpn_output{d}.{p}", "fpn.layer_blocks.{d}.0.{p}", {"d": -2}),
    KeyRule("backbone.fpn_output{d}.norm.{n}", "fpn.layer_blocks.{d}.1.{n}", {"d": -2}),
    KeyRule("proposal_generator.rpn_head.conv.{p}", "rpn.head.conv.0.0.{p}"),
    KeyRule("proposal_generator.rpn_head.objectness_logits.{p}", "rpn.head.cls_logits.{p}"),
    KeyRule("proposal_generator.rpn_head.anchor_deltas.{p}", "rpn.head.bbox_pred.{p}"),
    KeyRule("roi_heads.box_head.{i}.{fc}.{p}", "roi_heads.box_heads.{i}.{fc}.{p}"),
    KeyRule("roi_heads.box_predictor.{i}.{out}.{p}", "roi_heads.box_predictors.{i}.{out}.{p}"),
    KeyRule("roi_heads.mask_head.mask_fcn{d}.{p}", "roi_heads.mask_head.{d}.0.{p}", {"d": -1}),
    KeyRule("roi_heads.mask_head.deconv.{p}", "roi_heads.mask_predictor.conv5_mask.{p}"),
    KeyRule("roi_heads.mask_head.predictor.{p}", "roi_heads.mask_predictor.mask_fcn_logits.{p}"),
    KeyRule("sem_seg_head.{lvl}.{i}.{sp}", "sem_head.scale_heads.{lvl}.{i}.{sp}"),
    KeyRule("sem_seg_head.predictor.{p}", "sem_head.predictor.{p}"),
)


def _first(rules: tuple[KeyRule, ...], key: str, to_ours: bool) -> str | None:
    for rule in rules:
        new = rule.convert(key, to_ours)
        if new is not None:
            return new
    return None


def d2_resnet_key_to_timm(key: str) -> str | None:
    """detectron2 ResNet key (without ``backbone.bottom_up.``) -> timm ResNet key; None if not one."""
    return _first(RESNET_RULES, key, to_ours=True)


def timm_resnet_key_to_d2(key: str) -> str | None:
    """timm ResNet key -> detectron2 ResNet key (without ``backbone.bottom_up.``); None if not one."""
    return _first(RESNET_RULES, key, to_ours=False)


def d2_to_u2seg(key: str) -> str | None:
    """detectron2 key -> u2seg key (None when the key has no counterpart)."""
    if key.startswith(BOTTOM_UP):
        new = d2_resnet_key_to_timm(key[len(BOTTOM_UP):])
        return U2SEG_BODY + new if new else None
    return _first(MODEL_RULES, key, to_ours=True)


def u2seg_to_d2(key: str) -> str | None:
    """u2seg key -> detectron2 key (None when detectron2's model has no place for it)."""
    if key.startswith(U2SEG_BODY):
        new = timm_resnet_key_to_d2(key[len(U2SEG_BODY):])
        return BOTTOM_UP + new if new else None
    return _first(MODEL_RULES, key, to_ours=False)
