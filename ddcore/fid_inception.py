"""The FID Inception network: the feature space of the standard Fréchet Inception Distance.

Published FIDs (Heusel et al. 2017, computed with the TTUR TensorFlow code) use the
Inception-v3 graph of ``inception-2015-12-05.tgz``, not torchvision's ImageNet Inception-v3:
other weights (1008 classes) and four blocks that pool differently. pytorch-fid, torch-fidelity
and clean-fid run that graph in PyTorch from one weights file,
``pt_inception-2015-12-05-6726825d.pth``; this module builds the same network on torchvision's
Inception-v3 blocks, so that file loads as it is, and only ever reads it from disk.

The features (:func:`fid_transform`, then :func:`load_fid_inception`'s network): an image as RGB
in [0, 1], resized to 299 x 299 (bilinear, no antialiasing), scaled to [-1, 1], through the
network up to its last average pool ("pool3"): 2048 numbers. Where the weights are looked for:
:func:`fid_weights`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from .errors import ModelNotFoundError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
WEIGHTS_ENV = "DD_FID_WEIGHTS"  # an explicit path to the weights file
FID_SIZE = 299  # the network's input side
FID_DIMS = 2048  # the pool3 features


# --------------------------------------------------------------------------- the weights


def fid_weights_cache() -> Path:
    """Where pytorch-fid caches the weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def fid_weights(path: str | Path | None = None) -> Path | None:
    """The weights file: ``path`` if given, else ``$DD_FID_WEIGHTS`` if set, else pytorch-fid's
    cache file if it exists, else None (nothing is downloaded). A path the user named that is
    not a file is an error, not a fallback: silently using another file would hide the typo."""
    named = str(path) if path else os.environ.get(WEIGHTS_ENV, "")
    if named:
        chosen = Path(named).expanduser()
        if not chosen.is_file():
            source = "fid:PATH" if path else WEIGHTS_ENV
            raise ModelNotFoundError(f"the FID Inception weights file {chosen} ({source}) does not exist; "
                                     f"{_where_from()}")
        return chosen
    cached = fid_weights_cache()
    return cached if cached.is_file() else None


def require_fid_weights(path: str | Path | None = None) -> Path:
    """:func:`fid_weights`, or a one-line :class:`ModelNotFoundError` saying where to put them."""
    found = fid_weights(path)
    if found is None:
        raise ModelNotFoundError(f"the fid feature space needs the FID Inception weights, not found offline; "
                                 f"{_where_from()}")
    return found


def _where_from() -> str:
    return (f"download {FID_WEIGHTS_URL} (pytorch-fid's release) into {fid_weights_cache().parent}, "
            f"or name the file with {WEIGHTS_ENV}=PATH or the feature space fid:PATH")


# --------------------------------------------------------------------------- the network
# TensorFlow's graph differs from torchvision's blocks in the pool of each block's pool branch:
# its average pools leave the zero padding out of the mean (count_include_pad=False), and the
# last block (Mixed_7c) takes a max pool instead. The branches are otherwise torchvision's.


def _tf_average_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class TFInceptionA(InceptionA):
    """Mixed_5b-5d: torchvision's InceptionA with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x),
                          self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_tf_average_pool(x))], 1)


class TFInceptionC(InceptionC):
    """Mixed_6b-6e: torchvision's InceptionC with TensorFlow's average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            double = conv(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_tf_average_pool(x))], 1)


class TFInceptionE(InceptionE):
    """Mixed_7b: torchvision's InceptionE with TensorFlow's average pool (``pool`` is the pool
    branch's pooling; :class:`TFInceptionEMaxPool` swaps it)."""

    pool = staticmethod(_tf_average_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        three = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(three), self.branch3x3_2b(three),
                          self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
                          self.branch_pool(self.pool(x))], 1)


class TFInceptionEMaxPool(TFInceptionE):
    """Mixed_7c: the TensorFlow graph max-pools here (most likely a slip in that graph, but the
    one every published FID was computed with)."""

    pool = staticmethod(_max_pool)


def fid_inception_v3() -> Inception3:
    """The FID Inception-v3 with untrained weights: torchvision's Inception3 for 1008 classes,
    no auxiliary head, with the blocks that differ swapped (state-dict keys are unchanged)."""
    net = Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = TFInceptionA(192, 32), TFInceptionA(256, 64), TFInceptionA(288, 64)
    net.Mixed_6b, net.Mixed_6c = TFInceptionC(768, 128), TFInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = TFInceptionC(768, 160), TFInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = TFInceptionE(1280), TFInceptionEMaxPool(2048)
    return net


def load_fid_inception(weights: Path) -> Inception3:
    """The FID Inception-v3 with ``weights`` (its state dict), in eval mode, returning the
    2048-d pool3 features: the classifier is replaced by the identity (the dropout before it
    is off in eval mode). A file that is not that state dict is a one-line error."""
    net = fid_inception_v3()
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"{weights} is not the FID Inception state dict ({FID_WEIGHTS_FILE}, "
                                 f"{FID_WEIGHTS_URL}): {reason}") from None
    net.fc = torch.nn.Identity()
    return net.eval()


def fid_transform(image) -> torch.Tensor:
    """A PIL RGB image as the network's input: [0, 1], resized to 299 x 299 (bilinear, corners
    not aligned, no antialiasing: pytorch-fid resizes the [0, 1] tensor this way), then
    scaled to [-1, 1]. Per image, so images of any sizes batch together."""
    from torchvision.transforms.functional import to_tensor

    x = F.interpolate(to_tensor(image)[None], size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
    return 2 * x[0] - 1
