"""Not a benchmark: a digest of the tensors in weight files, to tell whether two machines (or two
sessions) trained the same weights.

The digest covers each tensor's name, dtype, shape and bytes, in name order, and nothing of the
file's container, so two files with the same weights give the same digest whatever wrote them.
A study split over machines (``run.py results``) pretrains each method once per machine; equal
digests of ``pretrain-<method>/weights-transfer.pt`` show that every part fine-tuned from the
same pretrained network.

    python benchmarks/weights_digest.py runs/pretrain-*/weights-transfer.pt
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch


def tensors_digest(path: Path) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every tensor in a state-dict file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="weight files (state dicts)")
    for path in parser.parse_args().files:
        print(f"{tensors_digest(path)}  {path}")


if __name__ == "__main__":
    main()
