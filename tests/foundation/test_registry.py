"""The spec records (u2seg.registry) are the one list: the schema enums, the README / docs backbone
table, the ingest kinds, the detector's pixel statistics and the model code all agree with them, and a
new ViT backbone is one record."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import timm
import torch
import yaml

from tests.conftest import REPO
from u2seg import preflight, registry
from u2seg.detector.params import SELFTRAIN_METHODS
from u2seg.registry import BACKBONES, DATASET_KINDS, DETECTOR_BACKBONES, OPT_IN_PROTOCOLS


def _schema() -> dict:
    return yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


# --------------------------------------------------------------------------------- schema enums
def test_schema_enums_are_the_records():
    props = _schema()["properties"]
    assert props["backbone"]["enum"] == list(BACKBONES)
    assert props["backbone"]["default"] in BACKBONES
    assert props["model"]["properties"]["backbone"]["enum"] == list(DETECTOR_BACKBONES)
    assert props["model"]["properties"]["backbone"]["default"] in DETECTOR_BACKBONES
    named = props["datasets"]
    assert named["additionalProperties"]["properties"]["protocols"]["items"]["enum"] == list(OPT_IN_PROTOCOLS)
    # a `datasets` name may not shadow a built-in dataset or one of their keys
    reserved = set(named["propertyNames"]["not"]["enum"])
    assert set(registry.BUILTIN_DATASETS) | set(registry.DATASET_KEYS) <= reserved
    method = props["selftrain"]["properties"]["method"]
    assert method["enum"] == list(SELFTRAIN_METHODS) and method["default"] == SELFTRAIN_METHODS[0]


# ------------------------------------------------------------------------ README / docs table
def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of ``text`` as rows of cells (separator rows dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def backbone_tables() -> list[tuple[Path, list[str], list[list[str]]]]:
    """(file, header, rows) of each backbone table: header starting `backbone` with a `licence` column, in
    README.md or docs/*.md (wherever the docs keep it)."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for table in _tables(path.read_text()):
            header = [c.lower() for c in table[0]]
            if header[0].strip("`") == "backbone" and "licence" in header:
                found.append((path, header, table[1:]))
    return found


def _braces(token: str) -> list[str]:
    """`dinov2_vit{s,b,l}14_reg` -> its three names (several brace groups vary together)."""
    groups = [g.split(",") for g in re.findall(r"\{([^}]*)\}", token)]
    if not groups:
        return [token]
    parts = re.split(r"\{[^}]*\}", token)  # len(groups) + 1 literal pieces around the groups
    return ["".join(p + v for p, v in zip(parts, (*values, ""))) for values in zip(*groups)]


def table_names(cell: str) -> list[str]:
    """Backbone names of a first cell: `a` / `b`, `dinov2_vits14` / `_vitb14` (suffix of the first name's
    family), `dinov2_vit{s,b,l}14`."""
    names: list[str] = []
    for token in re.findall(r"`([^`]+)`", cell):
        if token.startswith("_"):
            token = names[0].split("_", 1)[0] + token
        names += _braces(token)
    return names


def _url_patterns(cell: str) -> list[re.Pattern]:
    """Backticked URLs of a cell as patterns: `...` = any prefix, `{s,b,l}` = one of them."""
    out = []
    for token in re.findall(r"`([^`]+)`", cell):
        if token.startswith(("https://", "http://", "...")):
            pattern = re.escape(token).replace(re.escape("..."), ".*")
            pattern = re.sub(r"\\\{([^}]*)\\\}", lambda m: "(?:" + m.group(1).replace(",", "|") + ")", pattern)
            out.append(re.compile(pattern))
    return out


def _column(header: list[str], *words: str) -> int:
    (i,) = [i for i, h in enumerate(header) if any(w in h for w in words)]
    return i


def test_table_parsing_helpers():
    assert table_names("`dinov2_vits14` / `_vitb14` / `_vitl14`") == ["dinov2_vits14", "dinov2_vitb14",
                                                                        "dinov2_vitl14"]
    assert table_names("`dinov2_vit{s,b,l}14_reg`") == ["dinov2_vits14_reg", "dinov2_vitb14_reg", "dinov2_vitl14_reg"]
    assert _braces("a{1,2}b{x,y}") == ["a1bx", "a2by"]  # groups vary together, not as a product
    (pat,) = _url_patterns("`https://x.org/d/m_vit{s,b}14/m_vit{s,b}14_p.pth`")
    assert pat.fullmatch("https://x.org/d/m_vitb14/m_vitb14_p.pth") and not pat.fullmatch("https://x.org/d/m.pth")


def test_backbone_table_rows_are_the_records():
    tables = backbone_tables()
    assert tables, "no backbone table (header `backbone | ... | licence | ...`) in README.md or docs/*.md"
    listed = [n for n, b in BACKBONES.items() if not b.tests_only]
    for path, header, rows in tables:
        weights_col, licence_col = _column(header, "weights"), _column(header, "licence")
        dim_col = _column(header, "feature dim")
        patch_cols = [i for i, h in enumerate(header) if h == "patch"]
        seen = []
        for row in rows:
            names = table_names(row[0])
            assert names and all(n in BACKBONES for n in names), (path, row[0])
            seen += names
            dims = [int(m) for m in re.findall(r"(?:^|/)\s*(\d+)", row[dim_col])]
            for i, name in enumerate(names):
                spec = BACKBONES[name]
                assert spec.licence in row[licence_col], (path, name)
                assert (dims[i] if len(dims) == len(names) else dims[0]) == spec.feature_dim, (path, name)
                patterns = _url_patterns(row[weights_col])
                if spec.weights_url:
                    assert any(p.fullmatch(spec.weights_url) for p in patterns), (path, name, spec.weights_url)
                else:  # no public URL: the row names none
                    assert not patterns, (path, name)
                if spec.weights_package:
                    assert spec.weights_package.split("==")[0] in row[weights_col], (path, name)
                for col in patch_cols:
                    assert str(spec.patch_size) in row[col], (path, name)
        assert sorted(seen) == sorted(listed), path


# ------------------------------------------------------------------------- backbone records
@pytest.mark.parametrize("name", [n for n, b in BACKBONES.items() if b.architecture.startswith("vit_")])
def test_vit_records_match_their_timm_architecture(name):
    spec = BACKBONES[name]
    with torch.device("meta"):  # no memory, no weights: the architecture's own numbers
        vit = timm.create_model(spec.architecture, pretrained=False, num_classes=0, depth=1)
    assert int(vit.patch_embed.patch_size[0]) == spec.patch_size
    assert int(vit.embed_dim) == spec.feature_dim == spec.global_dim


def test_efficientnet_record_matches_timm():
    spec = BACKBONES["efficientnet_lite2"]
    with torch.device("meta"):
        net = timm.create_model(spec.architecture, pretrained=False)
    (stage,) = [f for f in net.feature_info if f["module"] == "blocks.4"]  # the dense map u2seg takes
    assert (stage["num_chs"], stage["reduction"]) == (spec.feature_dim, spec.patch_size)
    assert int(net.num_features) == spec.global_dim


def test_record_properties():
    assert [n for n, b in BACKBONES.items() if b.needs_weights] == ["dinov3_vits16", "dinov3_vitb16", "dinov3_vitl16"]
    assert all(b.takes_weights_file == b.family.startswith("dino") for b in BACKBONES.values())
    assert {n for n, b in BACKBONES.items() if b.supervised} == {"efficientnet_lite2"}
    assert BACKBONES["dinov2_vitb14"].grid(476) == 34
    assert BACKBONES["dinov2_vitb14"].size_problem("features.input_size", 480).endswith("(e.g. 476 or 490)")
    assert BACKBONES["dino_vitb8"].size_problem("features.input_size", 480) is None
    with pytest.raises(KeyError, match="unknown backbone 'nope'"):
        registry.backbone("nope")


def _tiny_vit_file(path: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1)
    torch.save(vit.state_dict(), path)
    return path


def test_a_new_vit_backbone_is_one_record(tmp_path, monkeypatch):
    """One record (a DINO-layout ViT-Tiny/16) is all the builder, the preflight and the grid checks need."""
    from u2seg.backbones import build_backbone

    new = registry.Backbone("my_vit_tiny16", "dino", "vit_tiny_patch16_224", 16, 192, 192, "MIT", "dino",
                            weights_url=None, description="a new ViT")
    monkeypatch.setitem(registry.BACKBONES, new.name, new)
    weights = _tiny_vit_file(tmp_path / "w.pth")
    bb = build_backbone(new.name, str(weights), arch={"depth": 1})
    dense, glob = bb(bb.preprocess([torch.zeros(64, 48, 3, dtype=torch.uint8).numpy()], 64))
    assert (bb.stride, bb.feature_dim) == (16, 192) and dense.shape == (1, 192, 4, 4) and glob.shape == (1, 192)
    cfg = {"backbone": new.name, "weights": str(tmp_path / "missing.pth"), "features": {"input_size": 100}}
    assert preflight.backbone_stride(new.name) == 16
    assert "not an existing file" in preflight.check_backbone(cfg)[0]
    assert "not a multiple of the my_vit_tiny16 patch size 16 (e.g. 96 or 112)" in preflight.check_patch_grid(cfg)[0]


def test_preflight_reads_the_records():
    for name, spec in BACKBONES.items():
        assert preflight.backbone_stride(name) == spec.patch_size
    cfg = {"backbone": "dinov3_vitb16", "weights": "/nonexistent/dinov3.pth"}
    assert "is not an existing file" in preflight.check_backbone(cfg)[0]
    assert preflight.check_backbone({"backbone": "efficientnet_lite2", "weights": "/nonexistent"}) == []  # wheel


def test_builders_cover_every_layout():
    from u2seg.backbones import BUILDERS, REGISTRY

    assert {b.checkpoint_layout for b in BACKBONES.values()} <= set(BUILDERS)
    assert list(REGISTRY) == list(BACKBONES)


# ---------------------------------------------------------------------------- dataset kinds
def test_ingest_kinds_are_the_records():
    from u2seg import ingest

    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    (kind,) = [a for a in parser._actions if a.dest == "kind"]
    assert list(kind.choices) == list(DATASET_KINDS)
    assert ingest.COCO_FORMAT in DATASET_KINDS and not DATASET_KINDS[ingest.COCO_FORMAT].keys
    assert registry.BUILTIN_DATASETS == ("samples", "images", "coco")
    assert registry.EVALUATION_KEYS == ("coco-train", "coco-val")


def test_preflight_dataset_names_follow_the_kinds():
    cfg = {"dataset": "coco", "zero_shot": {"train": "images", "eval": ["coco-val", "samples"]}}
    (problem,) = preflight.check_dataset_names(cfg)
    assert "'samples' is not coco-val" in problem  # samples has no ground truth
    assert "dataset=" in preflight.check_dataset_names({"dataset": "coco-val"})[0]


# ------------------------------------------------------------------------ detector backbones
def test_detector_code_reads_the_records():
    from u2seg.detector import d2_export, d2_import
    from u2seg.detector.model import PIXEL_STATS, ModelConfig

    assert set(PIXEL_STATS) == set(DETECTOR_BACKBONES)
    for name, spec in DETECTOR_BACKBONES.items():
        cfg = ModelConfig(backbone=name)
        assert (tuple(cfg.pixel_mean), tuple(cfg.pixel_std)) == (spec.pixel_mean, spec.pixel_std)
    assert d2_import.RESNET_DEPTHS == {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}
    assert d2_export.RESNET_DEPTH == {"resnet50": 50, "resnet101": 101}
    assert [n for n, b in DETECTOR_BACKBONES.items() if b.bundled_weights] == ["efficientnet_lite2"]


@pytest.mark.parametrize("name", list(DETECTOR_BACKBONES))
def test_detector_backbones_give_strides_4_to_32(name):
    with torch.device("meta"):
        body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    assert list(body.feature_info.reduction()) == [4, 8, 16, 32]
    blocks = DETECTOR_BACKBONES[name].resnet_blocks
    if blocks:
        assert tuple(len(getattr(body, f"layer{i}")) for i in range(1, 5)) == blocks


def test_no_torch_for_the_records():
    import subprocess
    import sys

    code = "import sys, u2seg.registry, u2seg.preflight; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

