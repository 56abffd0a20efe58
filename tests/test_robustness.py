"""Robustness: bad label maps (property-based), corrupt pipeline folders, training killed mid-way.

Contract checked here: every input either works (right shape, finite values) or raises the
documented error, ``ValueError`` (``FileNotFoundError`` for a folder that is not a pipeline),
with a message that names the problem, never an ``IndexError`` / ``RuntimeError`` /
``TypeError`` from deep inside torch. Corrupt and truncated *prior* files and the kill-safety of
``scpdiff reproduce`` are covered in ``test_priors.py`` and ``test_reproduce.py``; resume
equivalence after a clean stop in ``test_train.py``. Here: SIGKILL.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import scp_core  # noqa: F401  (before diffusers: the torchvision shim)
from scp_core.labels import downsample_labels
from scp_core.pipeline import SCPDiffPipeline
from scp_core.priors import NormalPrior, PriorAccumulator
from scp_core.training.finetune import finetune_controlnet
from scp_core.training.loop import TrainConfig

from test_sampling import K, SIZE, _tiny_pipeline
from test_train import TinySet, tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
LAT = (4, SIZE[0] // 4, SIZE[1] // 4)  # the tiny pipeline's latents: 4 x 8 x 16
DOCUMENTED = (ValueError, FileNotFoundError)

# derandomized: the same examples every run (no flaky CI); no example database on disk
FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW = settings(FAST, max_examples=60)


# ============================================================================ label-map strategy
INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
ALL_DTYPES = INT_DTYPES + ["bool", "float32", "float64"]


@st.composite
def label_maps(draw, fit_hw=None, num_classes=K, max_batch=3):
    """A label map of random dtype, rank, shape and ids, as a tensor or a numpy array.

    Three draws in four have the shape a consumer expects (``[B, *fit_hw]`` or ``fit_hw``) so
    that the success path is exercised too; half have only valid ids, the others 1 or 3
    ids that are negative, just out of range (``num_classes``, 255) or huge.
    """
    dtype = draw(st.sampled_from(ALL_DTYPES))
    if fit_hw is not None and draw(st.sampled_from([True, True, True, False])):
        shape = draw(st.sampled_from([(b, *fit_hw) for b in range(max_batch + 1)] + [tuple(fit_hw)]))
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ids = np.asarray(rng.integers(0, num_classes, size=shape), dtype=np.int64).reshape(shape)
    bad = st.sampled_from([-1, -7, num_classes, num_classes + 3, 255, 2**31 - 1, 2**40, 2**63 - 1])
    for _ in range(draw(st.sampled_from([0, 0, 1, 3])) if ids.size else 0):
        ids.flat[draw(st.integers(0, ids.size - 1))] = draw(bad)
    if dtype in INT_DTYPES:  # keep ids representable in the dtype (numpy refuses overflow)
        info = np.iinfo(dtype)
        ids = np.clip(ids, max(int(info.min), -2**63), min(int(info.max), 2**63 - 1))
    arr = np.array(ids, dtype=np.int64).astype(dtype)  # np.clip gives a scalar for 0-d input
    as_tensor = draw(st.booleans()) and dtype not in ("uint16", "uint32", "uint64")
    return torch.from_numpy(arr.copy()) if as_tensor else arr


def _facts(labels):
    """(is an integer dtype, shape, ids as int64 or None)."""
    t = torch.as_tensor(labels)
    integer = not (t.dtype == torch.bool or t.is_floating_point() or t.is_complex())
    ids = torch.from_numpy(np.asarray(labels).astype(np.int64)) if integer else None
    return integer, tuple(t.shape), ids


def _ids_ok(ids, num_classes, extra=()):
    if ids is None or ids.numel() == 0:
        return True
    ok = (ids >= 0) & (ids < num_classes)
    for e in extra:
        ok |= ids == e
    return bool(ok.all())


@contextmanager
def _outcome(expect_ok: bool):
    """Run a call that must succeed if ``expect_ok``, else raise a documented error."""
    event("works" if expect_ok else "documented error")  # --hypothesis-show-statistics shows the split
    if expect_ok:
        yield
    else:
        with pytest.raises(DOCUMENTED):
            yield


# ============================================================================ priors
@pytest.fixture(scope="module")
def priors():
    g = torch.Generator().manual_seed(0)
    acc = PriorAccumulator(K, LAT).update(torch.randn(6, *LAT, generator=g),
                                          torch.randint(0, K, (6, *LAT[1:]), generator=g))
    return [NormalPrior(latent_channels=LAT[0]), acc.spatial(), acc.categorical(), acc.joint(min_count=2)]


@FAST
@given(labels=label_maps(fit_hw=(7, 9)),
       size=st.one_of(st.integers(-1, 6), st.tuples(st.integers(0, 6), st.integers(1, 6))))
@example(labels=torch.tensor(3), size=2)  # 0-d
@example(labels=np.zeros(5, np.int64), size=2)  # 1-d
@example(labels=np.zeros((1, 1, 4, 4), np.int64), size=2)  # 4-d
@example(labels=np.zeros((2, 0, 4), np.int64), size=2)  # empty
@example(labels=np.full((4, 4), 2**63 - 1, np.uint64) + np.uint64(5), size=(2, 3))  # ids beyond int64
def test_downsample_labels_works_or_raises_value_error(labels, size):
    integer, shape, ids = _facts(labels)
    h, w = (size, size) if isinstance(size, int) else size
    ok = integer and len(shape) in (2, 3) and 0 not in shape[-2:] and h > 0 and w > 0
    with _outcome(ok):
        out = downsample_labels(labels, size)
    if ok:
        assert out.shape == (*shape[:-2], h, w) and out.dtype == torch.int64
        # nearest selection only copies ids that exist in the input (same wrap for uint64 as .long())
        assert set(out.unique().tolist()) <= set(torch.as_tensor(ids).unique().tolist())


@pytest.mark.parametrize("size", [2.5, None, "ab", (2, 3, 4), (2,), (2.5, 3), object()])
def test_downsample_refuses_a_bad_size_with_value_error(size):
    with pytest.raises(ValueError, match="size must be one int or a pair of ints"):
        downsample_labels(torch.zeros(4, 4, dtype=torch.long), size)
    assert downsample_labels(torch.zeros(4, 4, dtype=torch.long), np.int64(2)).shape == (2, 2)


@FAST
@given(labels=label_maps(fit_hw=LAT[1:]), batch=st.one_of(st.just("same"), st.integers(0, 3)))
@example(labels=np.full((1, *LAT[1:]), 2**64 - 1, np.uint64), batch=1)
@example(labels=np.zeros((0, *LAT[1:]), np.int16), batch=0)
def test_accumulator_update_works_or_raises_and_a_failed_update_changes_nothing(labels, batch):
    integer, shape, ids = _facts(labels)
    if batch == "same":  # as many latents as label maps
        batch = (1 if len(shape) == 2 else shape[0]) if len(shape) in (2, 3) else 1
    acc = PriorAccumulator(K, LAT)
    latents = torch.randn(batch, *LAT, generator=torch.Generator().manual_seed(batch))
    lab_shape = shape if len(shape) != 2 else (1, *shape)
    ok = integer and len(shape) in (2, 3) and lab_shape == (batch, *LAT[1:]) and _ids_ok(ids, K)
    with _outcome(ok):
        acc.update(latents, labels)
    expected = batch if ok else 0
    assert acc.num_images == expected
    assert float(acc.count.sum()) == expected * LAT[1] * LAT[2]
    assert torch.isfinite(acc.mean).all() and torch.isfinite(acc.m2).all() and (acc.m2 >= 0).all()


@FAST
@given(labels=label_maps(fit_hw=LAT[1:]))
@example(labels=torch.zeros(0, *LAT[1:], dtype=torch.int64))  # empty batch works: B = 0
@example(labels=np.full(LAT[1:], -1, np.int8))
@example(labels=np.full(LAT[1:], 255, np.uint8))
@example(labels=np.full(LAT[1:], 2, np.uint32))
def test_every_prior_maps_and_samples_or_raises_value_error(priors, labels):
    integer, shape, ids = _facts(labels)
    bhw = (1, *shape) if len(shape) == 2 else shape
    for prior in priors:
        normal = isinstance(prior, NormalPrior)  # N(0, I) has no classes and no fixed size
        ok = integer and len(shape) in (2, 3) and (normal or (bhw[1:] == LAT[1:] and _ids_ok(ids, K)))
        with _outcome(ok):
            mean, std = prior.distribution_map(labels)
            x = prior.sample(labels, generator=torch.Generator().manual_seed(0))
        if ok:
            assert mean.shape == std.shape == x.shape == (bhw[0], LAT[0], *bhw[1:]), prior.kind
            assert torch.isfinite(x).all() and (std >= 0).all(), prior.kind
            if prior.kind == "categorical" and x.numel():  # the map is the class statistics, per token
                assert torch.equal(mean, prior.mean[ids.reshape(bhw)].permute(0, 3, 1, 2))


# ============================================================================ the sampler
@pytest.fixture(scope="module")
def tiny_pipes():
    return {"plain": _tiny_pipeline(), "ignore255": _tiny_pipeline(ignore_index=255)}


def _joint_for(pipe):
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(0, pipe.prior_num_classes, (4, *pipe.latent_shape[1:]), generator=g)
    return PriorAccumulator(pipe.prior_num_classes, pipe.latent_shape).update(
        torch.randn(4, *pipe.latent_shape, generator=g), lab).joint(min_count=1)


@SLOW
@given(labels=label_maps(fit_hw=SIZE, max_batch=2), which=st.sampled_from(["plain", "ignore255"]),
       kind=st.sampled_from(["normal", "joint"]))
@example(labels=np.zeros((0, *SIZE), np.int64), which="plain", kind="normal")
@example(labels=np.full(SIZE, 255, np.uint8), which="ignore255", kind="joint")
@example(labels=np.full(SIZE, 255, np.uint8), which="plain", kind="normal")
@example(labels=np.ones((2, *SIZE), np.uint16), which="plain", kind="joint")
@example(labels=np.ones((1, SIZE[0] - 4, SIZE[1]), np.int64), which="plain", kind="joint")
def test_pipeline_call_works_or_raises_value_error(tiny_pipes, labels, which, kind):
    pipe = tiny_pipes[which]
    prior = NormalPrior(latent_channels=pipe.latent_shape[0]) if kind == "normal" else _joint_for(pipe)
    integer, shape, ids = _facts(labels)
    bhw = (1, *shape) if len(shape) == 2 else shape
    extra = (255,) if pipe.ignore_index is not None else ()
    ok = integer and len(shape) in (2, 3) and bhw[0] >= 1 and bhw[1:] == SIZE and _ids_ok(ids, K, extra)
    with _outcome(ok):
        out = pipe(labels, prior=prior, mu=1.0, num_inference_steps=1, seed=0, batch_size=1,
                   output_type="latent", progress=False)
    if ok:
        assert out.latents.shape == (bhw[0], *pipe.latent_shape) and torch.isfinite(out.latents).all()
        assert out.timesteps == [1]


@SLOW
@given(mu=st.one_of(st.sampled_from([1.0, 0.5, 0.0, -0.5, 1.5, float("nan"), float("inf")]), st.floats(0, 1)),
       steps=st.integers(-1, 3), batch_size=st.integers(-1, 3), n=st.integers(1, 2))
@example(mu=0.5, steps=3, batch_size=1, n=2)  # int(3 * 0.5) = 1 step
@example(mu=0.3, steps=3, batch_size=1, n=1)  # int(0.9) = 0 steps: refused
def test_pipeline_settings_work_or_raise_value_error(tiny_pipes, mu, steps, batch_size, n):
    pipe = tiny_pipes["plain"]
    labels = torch.zeros(n, *SIZE, dtype=torch.long)
    labels[:, SIZE[0] // 2:] = 1
    runs = int(round(steps * mu, 6)) if steps >= 1 and 0 < mu <= 1 else 0
    ok = batch_size >= 1 and runs >= 1
    with _outcome(ok):
        out = pipe(labels, prior=_joint_for(pipe), mu=mu, num_inference_steps=steps, seed=0, batch_size=batch_size,
                   output_type="latent", progress=False)
    if ok:
        assert out.latents.shape == (n, *pipe.latent_shape) and torch.isfinite(out.latents).all()
        assert len(out.timesteps) == runs


@pytest.mark.parametrize("labels", [None, "a label map", [[0, 1], [2]], np.array([[object()]]), {"a": 1}])
def test_pipeline_refuses_non_arrays_with_value_error(tiny_pipes, labels):
    with pytest.raises(ValueError, match="labels must be an integer tensor or array"):
        tiny_pipes["plain"](labels, num_inference_steps=1, seed=0, output_type="latent")


@pytest.mark.parametrize("labels,msg", [
    (torch.zeros(0, *SIZE, dtype=torch.long), "no label map"),
    (torch.zeros(1, *SIZE), "integer class ids"),
    (torch.zeros(1, *SIZE, dtype=torch.bool), "integer class ids"),
    (torch.zeros(1, 1, *SIZE, dtype=torch.long), r"labels must be \[B, H, W\]"),
    (torch.zeros(SIZE[1], dtype=torch.long), r"labels must be \[B, H, W\]"),
    (torch.zeros(1, 30, 62, dtype=torch.long), "multiples of the VAE factor"),
    (torch.zeros(1, 2 * SIZE[0], 2 * SIZE[1], dtype=torch.long), "this model samples"),
    (torch.full((1, *SIZE), K, dtype=torch.long), r"outside \[0, 3\)"),
    (np.full((1, *SIZE), -1, np.int8), r"outside \[0, 3\)"),
    (np.full((1, *SIZE), 2**63 + 5, np.uint64), r"outside \[0, 3\)"),  # wraps negative as int64: still refused
])
def test_pipeline_bad_label_maps_name_the_problem(tiny_pipes, labels, msg):
    with pytest.raises(ValueError, match=msg):
        tiny_pipes["plain"](labels, mu=1.0, num_inference_steps=1, seed=0, output_type="latent")


@pytest.mark.parametrize("kw,msg", [
    (dict(num_inference_steps=2.5), "num_inference_steps must be an integer"),
    (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
    (dict(num_inference_steps=None), "num_inference_steps must be an integer"),
    (dict(num_inference_steps=2000), "cannot be larger than"),
    (dict(mu="high"), "mu must be a number"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size=1.5), "batch_size must be an integer >= 1"),
    (dict(seed=[0, 1, 2]), "got 3 seeds for 1 label maps"),
])
def test_pipeline_refuses_bad_settings_with_value_error(tiny_pipes, kw, msg):
    args = {**dict(num_inference_steps=1, mu=1.0, seed=0, output_type="latent", progress=False), **kw}
    with pytest.raises(ValueError, match=msg):
        tiny_pipes["plain"](torch.zeros(1, *SIZE, dtype=torch.long), **args)


# ============================================================================ corrupt pipeline folders
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _truncate(rel, keep):
    def f(d):
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[:int(len(data) * keep)])
    return f


def _overwrite(rel, offset, payload):
    def f(d):
        data = bytearray((d / rel).read_bytes())
        off = offset if offset >= 0 else len(data) + offset
        data[off:off + len(payload)] = payload
        (d / rel).write_bytes(bytes(data))
    return f


def _write(rel, content):
    def f(d):
        (d / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    return f


def _remove(rel):
    def f(d):
        shutil.rmtree(d / rel) if (d / rel).is_dir() else (d / rel).unlink()
    return f


CORRUPTIONS = {
    # name: (mutation, error type, message pattern)
    "unet weights truncated to half": (_truncate(f"unet/{WEIGHTS}", 0.5), ValueError,
                                       r"could not load.*corrupt or truncated"),
    "unet weights truncated to a few bytes": (_truncate(f"unet/{WEIGHTS}", 1e-6), ValueError, "corrupt or truncated"),
    "unet weights empty": (_truncate(f"unet/{WEIGHTS}", 0), ValueError, "corrupt or truncated"),
    "vae weights missing the last bytes": (_truncate(f"vae/{WEIGHTS}", 0.99), ValueError, "corrupt or truncated"),
    "controlnet weights all garbage": (_write(f"controlnet/{WEIGHTS}", bytes(range(256)) * 64), ValueError,
                                       "corrupt or truncated"),
    "controlnet header garbage": (_overwrite(f"controlnet/{WEIGHTS}", 8, b"\xff" * 64), ValueError,
                                  "corrupt or truncated"),
    "controlnet tensor bytes garbage": (_overwrite(f"controlnet/{WEIGHTS}", -4096, b"\xff" * 4096), ValueError,
                                        r"controlnet weights .* contain NaN or Inf"),
    "controlnet weights missing": (_remove(f"controlnet/{WEIGHTS}"), ValueError, "missing, corrupt or truncated"),
    "unet config broken JSON": (_write("unet/config.json", "{\"in_channels\": 4,"), ValueError, "not a valid JSON"),
    "scheduler folder missing": (_remove("scheduler"), ValueError, "could not load the pipeline"),
    "scheduler config broken": (_write("scheduler/scheduler_config.json", "{"), ValueError, "not a valid JSON"),
    "conditioning truncated": (_truncate("conditioning.safetensors", 0.5), ValueError, "corrupt or truncated"),
    "scp_pipeline.json missing": (_remove("scp_pipeline.json"), FileNotFoundError, "not an SCP-Diff pipeline folder"),
    "scp_pipeline.json broken JSON": (_write("scp_pipeline.json", "{\"num_classes\": 3,"), ValueError,
                                      "is not valid JSON"),
    "scp_pipeline.json binary garbage": (_write("scp_pipeline.json", b"\xff\xfe\x00\x01"), ValueError,
                                         "is not valid JSON"),
    "scp_pipeline.json a list": (_write("scp_pipeline.json", "[1, 2]"), ValueError, r"lacks \['num_classes'"),
    "scp_pipeline.json without palette": (_write("scp_pipeline.json", json.dumps(
        {"num_classes": 3, "image_size": [32, 64], "ignore_index": None, "scale_factor": 1.0})), ValueError,
        r"lacks \['palette'\]"),
    "scp_pipeline.json wrong palette": (_write("scp_pipeline.json", json.dumps(
        {"num_classes": 3, "palette": [[0, 0, 0]], "image_size": [32, 64], "ignore_index": None,
         "scale_factor": 1.0})), ValueError, "has invalid values"),
    "prior truncated": (_truncate("prior.safetensors", 0.5), ValueError, "corrupt or truncated"),
}


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    pipe = _tiny_pipeline()
    pipe.prior = _joint_for(pipe)
    path = tmp_path_factory.mktemp("corrupt") / "intact"
    pipe.save_pretrained(path)
    return path


def test_the_intact_folder_loads(saved_pipeline):
    pipe = SCPDiffPipeline.from_pretrained(saved_pipeline, device="cpu")
    assert pipe.prior is not None and pipe.prior.kind == "joint"


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupt_pipeline_folder_gives_a_clear_error(saved_pipeline, tmp_path, name):
    mutate, err, pattern = CORRUPTIONS[name]
    folder = tmp_path / "p"
    shutil.copytree(saved_pipeline, folder)
    mutate(folder)
    with pytest.raises(DOCUMENTED) as info:
        SCPDiffPipeline.from_pretrained(folder, device="cpu")
    assert info.type is err, f"{name}: {info.type.__name__}: {info.value}"
    assert re.search(pattern, str(info.value), re.S), str(info.value)
    assert str(folder) in str(info.value), "the error names the folder or file"


def test_a_corrupt_controlnet_override_gives_a_clear_error(saved_pipeline, tmp_path):
    shutil.copytree(saved_pipeline / "controlnet", tmp_path / "cn")
    _truncate(WEIGHTS, 0.3)(tmp_path / "cn")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        SCPDiffPipeline.from_pretrained(saved_pipeline, device="cpu", controlnet=tmp_path / "cn")


def _flip_sign_bits(path: Path, n: int = 64) -> None:
    """Flip the sign bit of the first ``n`` float32 values of a safetensors file: it still loads, finite."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    for i in range(n):
        data[start + 4 * i + 3] ^= 0x80
    path.write_bytes(bytes(data))


def test_weight_files_are_checked_against_their_recorded_sha256(saved_pipeline, tmp_path):
    """A UNet with flipped sign bits loads and samples other images unless its sha256 is checked (issue 22)."""
    cfg = json.loads((saved_pipeline / "scp_pipeline.json").read_text())
    files = sorted(p.relative_to(saved_pipeline).as_posix() for p in saved_pipeline.rglob("*.safetensors"))
    assert sorted(cfg["weights_sha256"]) == files and f"unet/{WEIGHTS}" in files and "prior.safetensors" in files
    folder = tmp_path / "p"
    shutil.copytree(saved_pipeline, folder)
    _flip_sign_bits(folder / "unet" / WEIGHTS)
    with pytest.raises(ValueError, match="does not match the sha256 recorded") as e:
        SCPDiffPipeline.from_pretrained(folder, device="cpu")
    assert str(folder / "unet" / WEIGHTS) in str(e.value) and "restore it from git" in str(e.value)
    # a folder written before the hashes were recorded still loads (unchecked)
    del cfg["weights_sha256"]
    (folder / "scp_pipeline.json").write_text(json.dumps(cfg, indent=2) + "\n")
    assert SCPDiffPipeline.from_pretrained(folder, device="cpu").prior is not None


def test_replaced_components_are_not_checked_against_the_folder(saved_pipeline, tmp_path):
    shutil.copytree(saved_pipeline / "controlnet", tmp_path / "cn")
    _flip_sign_bits(tmp_path / "cn" / WEIGHTS)  # another ControlNet: not the folder's, not its hash
    SCPDiffPipeline.from_pretrained(saved_pipeline, device="cpu", controlnet=tmp_path / "cn")
    folder = tmp_path / "p"
    shutil.copytree(saved_pipeline, folder)
    _flip_sign_bits(folder / "prior.safetensors")
    other = SCPDiffPipeline.from_pretrained(saved_pipeline, device="cpu").prior
    assert SCPDiffPipeline.from_pretrained(folder, device="cpu", prior=other).prior is other


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_safetensors_files_follow_the_umask(tmp_path, umask):
    """safetensors' save_file makes 0600 files; every weight file the project writes follows the umask (issue 22)."""
    from scp_core.metrics.toy_segmenter import ToySegmenter
    from scp_core.reference import save_accumulator
    from scp_core.training.stacks import save_final

    old = os.umask(umask)
    try:
        pipe = _tiny_pipeline()
        pipe.prior = _joint_for(pipe)
        pipe.save_pretrained(tmp_path / "pipe")
        pipe.prior.save(tmp_path / "prior.safetensors")
        save_accumulator(PriorAccumulator(3, (4, 2, 2)), tmp_path / "acc.safetensors")
        ToySegmenter(4, (8, 8, 8, 8)).save_pretrained(tmp_path / "seg")
        save_final(pipe.unet, tmp_path / "stage" / "final")
    finally:
        os.umask(old)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 9, files
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    assert (tmp_path / "pipe").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


# ============================================================================ training killed mid-way
STEPS = 10
CFG = dict(steps=STEPS, batch_size=4, lr=5e-4, seed=1, checkpoint_every=1, keep_checkpoints=2, log_every=1)

TRAIN_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
import scp_core, torch
torch.set_num_threads(1)
from scp_core.training.finetune import finetune_controlnet
from scp_core.training.loop import TrainConfig
from test_train import TinySet, tiny_pipeline

mode, out = sys.argv[1], Path(sys.argv[2])
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "mid-write":  # killed while checkpoint 3 is being written: its weights are half on disk
    from accelerate import Accelerator
    save_state = Accelerator.save_state
    def patched(self, output_dir=None, **kw):
        r = save_state(self, output_dir, **kw)
        if Path(output_dir).name == ".checkpoint-3.tmp":
            w = Path(output_dir) / "model.safetensors"
            w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
            die()
        return r
    Accelerator.save_state = patched
elif mode == "mid-delete":  # killed while the oldest checkpoint is being removed (keep_checkpoints=2)
    import shutil
    rmtree = shutil.rmtree
    def patched(p, *a, **kw):
        p = Path(p)
        if "checkpoint-" in p.name:  # the checkpoint itself, or its renamed .checkpoint-N.del
            (p / "model.safetensors").unlink()  # rmtree's order is the directory's: weights may go first
            die()
        return rmtree(p, *a, **kw)
    shutil.rmtree = patched
finetune_controlnet(tiny_pipeline(), TinySet(8), TrainConfig(**{cfg!r}), out)
"""


@contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the killed subprocess ran with one thread: same float sums
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def straight_losses(tmp_path_factory):
    with _one_thread():
        return finetune_controlnet(tiny_pipeline(), TinySet(8), TrainConfig(**CFG), tmp_path_factory.mktemp("straight"),
                                   device="cpu")["losses"]  # compared with the CPU subprocess


def _start(tmp_path, mode):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(root=str(ROOT), tests=str(TESTS), cfg=CFG))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "run")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _checkpoints(run: Path) -> dict[int, Path]:
    return {int(p.name.split("-")[1]): p for p in run.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)}


def _loads(ckpt: Path, tmp_path: Path) -> None:
    """Resume from one checkpoint explicitly (``accelerator.load_state``), running no further step."""
    step = json.loads((ckpt / "step.json").read_text())["step"]
    assert ckpt.name == f"checkpoint-{step}"
    with _one_thread():
        r = finetune_controlnet(tiny_pipeline(), TinySet(8), TrainConfig(**{**CFG, "steps": step}),
                                tmp_path / f"probe-{step}", resume=str(ckpt), device="cpu")
    assert r["steps"] == step and r["losses"] == []


def _resume_and_compare(run: Path, straight, tmp_path, full_log: bool | None = True) -> None:
    """Resume from the latest checkpoint: the losses after it equal those of an uninterrupted run.

    ``full_log``: whether ``loss.csv`` held every step up to the checkpoint when the run died
    (``fit`` writes the log only after the checkpoint is renamed into place, so a kill in between
    loses that one step's entry; ``None``: either).
    """
    last = max(_checkpoints(run))
    with _one_thread():
        r = finetune_controlnet(tiny_pipeline(), TinySet(8), TrainConfig(**CFG), run, resume="latest", device="cpu")
    assert r["steps"] == STEPS
    new = r["losses"][-(STEPS - last):]
    np.testing.assert_allclose(new, straight[last:], rtol=1e-5, atol=1e-7)
    if full_log is not None:
        assert len(r["losses"]) == (STEPS if full_log else STEPS - 1)
    assert not list(run.glob(".checkpoint-*")), "the rerun replaced the half-written checkpoint"
    assert sorted(_checkpoints(run)) == [STEPS - 2, STEPS - 1]  # keep_checkpoints=2; none at the final step
    for ckpt in _checkpoints(run).values():
        assert (ckpt / "step.json").is_file()


def test_sigkill_mid_checkpoint_write_leaves_only_complete_checkpoints(tmp_path, straight_losses):
    proc = _start(tmp_path, "mid-write")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    run = tmp_path / "run"
    # the half-written checkpoint stays under its temporary name; the complete ones are untouched
    assert (run / ".checkpoint-3.tmp").is_dir() and not (run / ".checkpoint-3.tmp" / "step.json").exists()
    assert sorted(_checkpoints(run)) == [1, 2]
    for ckpt in _checkpoints(run).values():
        _loads(ckpt, tmp_path)
    _resume_and_compare(run, straight_losses, tmp_path)


def test_sigkill_at_a_random_moment_resumes_from_the_last_checkpoint(tmp_path, straight_losses):
    """A real SIGKILL from outside, sent the moment a checkpoint is being written (or just after)."""
    proc = _start(tmp_path, "external")
    run = tmp_path / "run"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(_checkpoints(run)) >= 2 and list(run.glob(".checkpoint-*.tmp")):
            break
        time.sleep(0.001)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpts = _checkpoints(run)
    assert proc.returncode == -signal.SIGKILL and ckpts
    _loads(ckpts[max(ckpts)], tmp_path)  # the one resume="latest" picks
    _resume_and_compare(run, straight_losses, tmp_path, full_log=None)


def test_sigkill_mid_pruning_still_resumes_from_the_newest_checkpoint(tmp_path, straight_losses):
    proc = _start(tmp_path, "mid-delete")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    run = tmp_path / "run"
    # killed while removing checkpoint-1 after writing 3: it was renamed to .checkpoint-1.del first
    assert sorted(_checkpoints(run)) == [2, 3]
    assert list(run.glob(".checkpoint-1.del")), "the half-removed checkpoint is hidden, not listed"
    _loads(_checkpoints(run)[3], tmp_path)
    _resume_and_compare(run, straight_losses, tmp_path, full_log=False)  # step 3 never reached loss.csv


def test_sigkill_mid_pruning_never_leaves_a_checkpoint_that_does_not_load(tmp_path):
    proc = _start(tmp_path, "mid-delete")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    for step, ckpt in _checkpoints(tmp_path / "run").items():
        if (ckpt / "step.json").is_file():  # a folder that claims to be complete must load
            _loads(ckpt, tmp_path)


def test_atomic_create_keeps_the_first_file_and_leaves_no_temporary(tmp_path):
    from scp_core.io import atomic_create

    target = tmp_path / "entry.bin"
    assert atomic_create(target, lambda tmp: tmp.write_bytes(b"first"))
    assert not atomic_create(target, lambda tmp: tmp.write_bytes(b"second"))
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["entry.bin"]
    with pytest.raises(RuntimeError):  # a failing writer leaves nothing behind
        atomic_create(tmp_path / "other.bin", lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert [p.name for p in tmp_path.iterdir()] == ["entry.bin"]
