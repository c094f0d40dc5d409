"""The one ``--device`` resolution of every stage (torch is imported when called)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from u2seg.errors import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str, local_rank: int | None = None) -> "torch.device":
    """'auto' -> CUDA when present, else CPU; 'cuda' without a GPU is a UserError.

    ``local_rank`` (the detector under torchrun) picks this process's GPU for 'auto' / 'cuda'.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} requested but no CUDA device is available")
    if device == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(device)
