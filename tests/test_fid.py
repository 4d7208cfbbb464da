"""The standard FID feature space (ddcore.fid_inception, `--features fid`) against pytorch-fid.

pytorch-fid's network is built without its download: its constructor fetches the weights with
``load_state_dict_from_url``, replaced here by one that returns our random weights. Both
networks then get the same random weights, and each library reads the same image files with
its own preprocessing.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ddcore.errors import ConfigError, ModelNotFoundError
from ddcore.fid_inception import (FID_DIMS, FID_WEIGHTS_FILE, FID_WEIGHTS_URL, WEIGHTS_ENV, fid_inception_v3,
                                  fid_weights, load_fid_inception)
from ddcore.progress import SILENT
from ddcore.quality import fid_features
from ddcore.quality_report import SPACES, feature_space
from ddcore.records import Sample

SIZES = [(64, 48), (300, 300), (299, 299), (33, 17)]  # (width, height): odd shapes, and the native one


def _random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The FID network's state dict with random weights. Random batch-norm statistics would
    drown the input (every image gives the same features), so they are measured on a batch of
    noise instead, as training would; the batch-norm scales and shifts are random."""
    torch.manual_seed(seed)
    net = fid_inception_v3()  # convolutions: PyTorch's random default init
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.momentum = None  # running statistics: the plain average over the batch below
    with torch.no_grad():
        net.train()(torch.rand(2, 3, 224, 224) * 2 - 1)
    return net.state_dict()


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random FID weights under pytorch-fid's file name."""
    home = tmp_path_factory.mktemp("torch-home")
    weights = home / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    weights.parent.mkdir(parents=True)
    torch.save(_random_state_dict(), weights)
    return home


@pytest.fixture
def fid_env(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return torch_home / "hub" / "checkpoints" / FID_WEIGHTS_FILE


def _images(folder, sizes, seed=0):
    """Noise PNGs of the given sizes, each around its own colour (so their features differ)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (width, height) in enumerate(sizes):
        colour = rng.integers(0, 160, size=3)
        pixels = colour + rng.integers(0, 96, size=(height, width, 3))
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _pytorch_fid_network(monkeypatch, state):
    import pytorch_fid.inception as reference

    # Their constructor downloads the weights; hand it ours instead (and never reach the network).
    monkeypatch.setattr(reference, "load_state_dict_from_url", lambda *args, **kwargs: state)
    return reference.InceptionV3([reference.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True).eval()


@pytest.mark.slow
def test_features_equal_pytorch_fids_on_the_same_files(fid_env, monkeypatch, tmp_path):
    from pytorch_fid.fid_score import get_activations

    paths = _images(tmp_path / "images", SIZES)
    state = torch.load(fid_env, weights_only=True)
    # pytorch-fid batches images of one size only (its loader stacks them as they are): one at a time.
    theirs = get_activations([str(p) for p in paths], _pytorch_fid_network(monkeypatch, state), batch_size=1,
                             dims=2048, device="cpu", num_workers=0)
    ours = fid_features([Sample(p, 0, "x") for p in paths], load_fid_inception(fid_weights()), batch_size=3)
    assert ours.shape == theirs.shape == (len(SIZES), FID_DIMS)
    assert np.std(theirs, axis=0).mean() > 1e-3 * np.abs(theirs).max() > 0  # the images give different features
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


def test_the_weights_come_from_the_path_then_the_variable_then_the_torch_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / FID_WEIGHTS_FILE
    cached.parent.mkdir(parents=True)
    torch.save(fid_inception_v3().state_dict(), cached)  # random weights (untrained batch norms)
    assert fid_weights() == cached  # pytorch-fid's cache file under $TORCH_HOME
    network = load_fid_inception(fid_weights())
    assert isinstance(network.fc, torch.nn.Identity) and not network.training  # pool3 features, eval mode
    chosen = tmp_path / "mine.pth"
    chosen.write_bytes(b"")  # found by name only: nothing is read until it is loaded
    monkeypatch.setenv(WEIGHTS_ENV, str(chosen))
    assert fid_weights() == chosen
    other = tmp_path / "other.pth"
    other.write_bytes(b"")
    assert fid_weights(other) == other
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "typo.pth"))  # a named file that is missing: no fallback
    with pytest.raises(ModelNotFoundError, match=f"typo.pth \\({WEIGHTS_ENV}\\) does not exist"):
        fid_weights()


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert fid_weights() is None  # nothing is downloaded
    with pytest.raises(ModelNotFoundError) as missing:
        feature_space("fid")
    message = str(missing.value)
    assert "\n" not in message and FID_WEIGHTS_URL in message and WEIGHTS_ENV in message and "fid:PATH" in message
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in message
    with pytest.raises(ModelNotFoundError, match="nope.pth \\(fid:PATH\\) does not exist"):
        feature_space(f"fid:{tmp_path / 'nope.pth'}")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ModelNotFoundError, match="is not the FID Inception state dict") as wrong:
        feature_space(f"fid:{garbage}")
    assert "\n" not in str(wrong.value)
    torch.save({"fc.weight": torch.zeros(2, 2)}, garbage)  # a state dict, of another network
    with pytest.raises(ModelNotFoundError, match="is not the FID Inception state dict"):
        feature_space(f"fid:{garbage}")


def test_the_old_inception_name_names_the_new_ones():
    with pytest.raises(ConfigError) as old:
        feature_space("inception")
    assert "'fid'" in str(old.value) and "'inception-torchvision'" in str(old.value)
    assert {"fid", "fid:PATH", "inception-torchvision"} <= set(SPACES) and "inception" not in SPACES


@pytest.mark.slow
def test_dd_quality_and_compares_fid_in_the_standard_space(fid_env, tmp_path, run_dd):
    from ddcore.compare_report import standard_fid

    names = ("cat", "dog")
    for i, name in enumerate(names):  # a data set folder (train and test splits) and a synthetic set
        _images(tmp_path / "data" / "train" / name, [(40, 30)] * 2, seed=i)
        _images(tmp_path / "data" / "test" / name, [(40, 30)], seed=10 + i)
        _images(tmp_path / "synthetic" / name, [(50, 50)] * 2, seed=20 + i)
    result = run_dd("quality", str(tmp_path / "synthetic"), "--data", str(tmp_path / "data"), "--features", "fid",
                    "--out", str(tmp_path / "report"), "-q", env={"TORCH_HOME": str(fid_env.parents[2])})
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "report" / "quality.json").read_text())
    assert written["space"].startswith("FID Inception-v3 pool3 features")
    assert written["n_real"] == 4 and written["n_synthetic"] == 4
    assert all(written["classes"][name]["fd"] > 0 for name in (*names, "all"))
    # dd compare's all-classes FID (in another space's run) is the same number, computed here.
    reals, fakes = ([Sample(p, 0, "cat") for p in sorted((tmp_path / side).rglob("*.png"))]
                    for side in ("data/train", "synthetic"))
    quality = {"m": {"all": {}}}
    first = SimpleNamespace(context=SimpleNamespace(device="cpu"), dataset=SimpleNamespace(train=reals))
    note = standard_fid(quality, {"m": fakes}, first, reporter=SILENT)
    assert quality["m"]["all"]["fid"] == pytest.approx(written["classes"]["all"]["fd"], rel=1e-4)
    assert "FID (the standard FID Inception network, all classes, 4 real images" in note and "m " in note
