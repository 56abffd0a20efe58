"""Importing the authors' release (issue 23): their statistics files and a checkpoint of the ControlNet
repository's format, built here in their exact layouts at tiny sizes, become this project's priors and
pipeline folder; sampling the import gives the images of the same modules loaded directly; broken,
mismatched or malicious files are refused with a clear error and nothing is written."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from ldm_layout import mini_modules, to_ldm, toolkit_statistics
from safetensors.torch import save_file

from scp_core import cli
from scp_core.data import CITYSCAPES_PALETTE, DATASETS
from scp_core.models import encode_prompt, make_scheduler
from scp_core.pipeline import SCPDiffPipeline, load_pipeline
from scp_core.priors import load_prior
from scp_core.reference import provenance_problems
from scp_core.release import (MANIFEST, authors_mu, authors_normal_prior, authors_palette, authors_steps, conventions,
                              import_release, read_release_npy)
from scp_core.sampling import ddim_timesteps

SIZE = (64, 128)           # image size of the mini stack (8x autoencoder: latents 4 x 8 x 16)
LATENT = (4, 8, 16)
NAME = "cityscapes_mini"   # <name>_{spatial,categorical,spatial_class}_mean_std.npy


def nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "debris left"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The mini modules, their checkpoint in the ControlNet repository's layout, a tokenizer folder, statistics."""
    root = tmp_path_factory.mktemp("release")
    unet, cn, vae, te, tok, cfg = mini_modules()
    save_file(to_ldm(unet, cn, vae, te), str(root / "mini.safetensors"))
    tok.save_pretrained(root / "tokenizer")
    (root / "config.json").write_text(json.dumps(cfg))
    stats = toolkit_statistics(root / "statistics", NAME, shape=LATENT)
    return {"root": root, "ckpt": root / "mini.safetensors", "tokenizer": root / "tokenizer", "config": cfg,
            "stats": stats, "stat_dir": root / "statistics", "modules": (unet, cn, vae, te, tok)}


# ----------------------------------------------------------------------------- statistics
def test_statistics_become_priors_equal_to_the_arrays_with_provenance(release, tmp_path):
    out = import_release(tmp_path / "imp", "cityscapes", stat_dir=release["stat_dir"], stat_name=NAME)
    st = release["stats"]
    sp, cat, jo = (load_prior(out / "priors" / f"{k}.safetensors", num_classes=20, latent_shape=LATENT)
                   for k in ("spatial", "categorical", "joint"))
    assert torch.equal(sp.mean, torch.from_numpy(st["spatial"]["mean"]))
    assert torch.equal(sp.std, torch.from_numpy(st["spatial"]["std"]))
    for value, cls in [*((v, v) for v in range(19)), (255, 19)]:   # train ids 0..18; 255 -> the ignore class 19
        assert torch.equal(cat.mean[cls], torch.from_numpy(st["categorical"][value]["mean"]))
        assert torch.equal(cat.std[cls], torch.from_numpy(st["categorical"][value]["std"]))
        count = torch.from_numpy(st["joint"]["count"][value, 0])
        assert torch.equal(jo.count[cls], count)
        seen = count > 0
        assert torch.equal(jo.mean[cls][:, seen], torch.from_numpy(st["joint"]["mean"][value])[:, seen])
        assert torch.equal(jo.std[cls][:, seen], torch.from_numpy(st["joint"]["std"][value])[:, seen])
        # the authors' rule: a cell seen 0 times takes the spatial statistics at its position
        assert torch.equal(jo.mean[cls][:, ~seen], sp.mean[:, ~seen])
        assert torch.equal(jo.std[cls][:, ~seen], sp.std[:, ~seen])
    assert (jo.min_count, jo.fallback, jo.num_images) == (1, "spatial", 3)
    files = jo.provenance["files"]
    assert files["joint"]["file"] == f"{NAME}_spatial_class_mean_std.npy" and len(files["joint"]["sha256"]) == 64
    assert "SCP-Diff-Toolkit" in jo.provenance["source"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["conventions"]["authors"]["mu"] == 0.85
    assert manifest["priors"]["joint"] == "priors/joint.safetensors"


def test_class_fallback_and_ade20k_label_values(tmp_path):
    """ADE20K's raw values 1..150 are this project's 0..149, "other" (0) the ignore class 150."""
    st = toolkit_statistics(tmp_path / "s", "ade", shape=(4, 4, 4), labels=(0, 1, 7, 150))
    out = import_release(tmp_path / "imp", "ade20k", stat_dir=tmp_path / "s", stat_name="ade", fallback="class")
    cat = load_prior(out / "priors" / "categorical.safetensors", num_classes=151)
    jo = load_prior(out / "priors" / "joint.safetensors", num_classes=151)
    for value, cls in ((0, 150), (1, 0), (7, 6), (150, 149)):
        assert torch.equal(cat.mean[cls], torch.from_numpy(st["categorical"][value]["mean"]))
        unseen = jo.count[cls] == 0
        assert torch.equal(jo.mean[cls][:, unseen], cat.mean[cls][:, None].expand(4, int(unseen.sum())))
    assert cat.provenance["unseen_classes"] == [c for c in range(151) if c not in (150, 0, 6, 149)]


def test_label_values_invented_by_their_bilinear_label_resize_are_dropped(tmp_path):
    """Their loaders resize label maps bilinearly: a few tokens carry values between two ids (127 between
    road 0 and ignore 255); those are dropped and recorded, the rest imports unchanged."""
    st = toolkit_statistics(tmp_path / "s", NAME, shape=LATENT)
    st["joint"]["count"][127, 0, 0, :3] = 1
    st["joint"]["mean"][127, :, 0, :3] = 5.0
    st["categorical"][127] = {"mean": np.full(4, 5.0, np.float32), "std": np.ones(4, np.float32)}
    np.save(tmp_path / "s" / f"{NAME}_spatial_class_mean_std.npy", st["joint"], allow_pickle=True)
    np.save(tmp_path / "s" / f"{NAME}_categorical_mean_std.npy", st["categorical"], allow_pickle=True)
    out = import_release(tmp_path / "imp", "cityscapes", stat_dir=tmp_path / "s", stat_name=NAME)
    jo = load_prior(out / "priors" / "joint.safetensors")
    cat = load_prior(out / "priors" / "categorical.safetensors")
    assert jo.provenance["dropped_label_values"] == [127] and 0 < jo.provenance["dropped_token_share"] < 0.01
    assert cat.provenance["dropped_label_values"] == [127] and float(jo.mean.max()) < 5.0
    assert torch.equal(jo.count[0], torch.from_numpy(st["joint"]["count"][0, 0]))


def _npy_with_payload(path: Path, payload: bytes) -> Path:
    """An ``.npy`` file with a 0-d object header (as ``np.save`` writes a dict) and ``payload`` as its pickle."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(np.lib.format.magic(1, 0) + buf.getvalue()[len(np.lib.format.magic(1, 0)):] + payload)
    return path


def _stats_copy(release, tmp_path) -> Path:
    d = tmp_path / "stats"
    d.mkdir()
    for p in release["stat_dir"].iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    return d


def test_a_malicious_pickle_is_refused_and_nothing_in_it_runs(release, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    d = _stats_copy(release, tmp_path)
    _npy_with_payload(d / f"{NAME}_spatial_mean_std.npy", pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="refused to unpickle .* builtins.exec"):
        import_release(tmp_path / "imp", "cityscapes", stat_dir=d, stat_name=NAME)
    assert not marker.exists()
    nothing_written(tmp_path / "imp")


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated or corrupt"),
    ("shape", "do not fit each other"),
    ("classes", r"label values \[20, 30\]"),
    ("raw", "plain float32 array"),
])
def test_broken_or_mismatched_statistics_are_refused_and_nothing_is_written(release, tmp_path, damage, message):
    d = _stats_copy(release, tmp_path)
    joint = d / f"{NAME}_spatial_class_mean_std.npy"
    if damage == "truncate":
        joint.write_bytes(joint.read_bytes()[:-5000])
    elif damage == "shape":   # statistics of another resolution
        np.save(d / f"{NAME}_spatial_mean_std.npy", {"mean": np.zeros((4, 8, 8), np.float32),
                                                     "std": np.ones((4, 8, 8), np.float32)}, allow_pickle=True)
    elif damage == "classes":  # label values that Cityscapes' train ids do not have
        st = toolkit_statistics(tmp_path / "other", NAME, shape=LATENT, labels=(0, 1, 20, 30))
        np.save(joint, st["joint"], allow_pickle=True)
    else:                      # a *_raw.npy dump in place of the mean / std dict
        np.save(joint, np.zeros((2, 4, 8, 16), np.float32))
    with pytest.raises(ValueError, match=message):
        import_release(tmp_path / "imp", "cityscapes", stat_dir=d, stat_name=NAME)
    nothing_written(tmp_path / "imp")


def test_read_release_npy_reads_what_np_save_wrote(tmp_path):
    obj = {3: {"mean": np.arange(4, dtype=np.float32), "std": np.ones(4, np.float32)}}
    np.save(tmp_path / "c.npy", obj, allow_pickle=True)
    got = read_release_npy(tmp_path / "c.npy")
    assert list(got) == [3] and np.array_equal(got[3]["mean"], obj[3]["mean"])


# ----------------------------------------------------------------------------- checkpoint
def _direct_pipeline(release, conv) -> SCPDiffPipeline:
    unet, cn, vae, te, tok = release["modules"]
    return SCPDiffPipeline(vae, unet, cn, make_scheduler("ddim"), encode_prompt(te, tok, conv.prompt, "cpu"),
                           encode_prompt(te, tok, conv.negative_prompt, "cpu"), num_classes=19,
                           palette=CITYSCAPES_PALETTE, image_size=SIZE, ignore_index=255)


def _labels() -> torch.Tensor:
    lab = torch.zeros(2, *SIZE, dtype=torch.long)
    lab[:, : SIZE[0] // 3] = 10            # sky
    lab[:, SIZE[0] // 2:] = 0               # road
    lab[1, :, : SIZE[1] // 4] = 255         # ignored
    return lab


def test_an_imported_checkpoint_samples_the_images_of_the_same_modules_loaded_directly(release, tmp_path):
    out = import_release(tmp_path / "imp", "cityscapes", checkpoint=release["ckpt"], tokenizer=release["tokenizer"],
                         stat_dir=release["stat_dir"], stat_name=NAME, image_size=SIZE,
                         model_config=release["config"])
    imported = load_pipeline(out)
    conv = conventions("authors", "cityscapes")
    direct = _direct_pipeline(release, conv)
    assert torch.equal(imported.prompt_embeds, direct.prompt_embeds.float())
    assert imported.prior.kind == "joint" and imported.image_size == SIZE
    kw = dict(prior=imported.prior, seed=3, output_type="pt", progress=False, **conv.pipeline_kwargs())
    a, b = imported(_labels(), **kw), direct(_labels(), **kw)
    assert a.timesteps == b.timesteps == list(range(801, 0, -50))   # the authors' 17 steps from t = 801
    assert torch.equal(a.images, b.images)
    assert a.images.std() > 0.01
    info = json.loads((out / "scp_pipeline.json").read_text())["info"]
    assert info["conventions"]["guidance_scale"] == 4.0 and "Realistic city road scenes" in info["prompt"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["pipeline"]["checkpoint"]["file"] == "mini.safetensors"
    # the imported priors carry the pipeline's autoencoder: `scpdiff sample` takes them without --force
    assert provenance_problems(load_prior(out / "priors" / "spatial.safetensors"), imported, out) == []
    assert provenance_problems(imported.prior, direct, tmp_path / "elsewhere")  # another autoencoder: refused


def test_ckpt_files_are_read_with_weights_only_and_pickled_code_is_refused(release, tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(release["ckpt"]))
    torch.save({"state_dict": sd}, tmp_path / "mini.ckpt")   # a Lightning checkpoint's layout
    out = import_release(tmp_path / "ok", "cityscapes", checkpoint=tmp_path / "mini.ckpt",
                         tokenizer=release["tokenizer"], image_size=SIZE, model_config=release["config"])
    assert (out / "unet" / "config.json").is_file() and not (out / "prior.safetensors").exists()

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"state_dict": sd, "hyper_parameters": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refused to read .*weights_only"):
        import_release(tmp_path / "imp", "cityscapes", checkpoint=tmp_path / "evil.ckpt",
                       tokenizer=release["tokenizer"], image_size=SIZE, model_config=release["config"])
    assert not marker.exists()
    nothing_written(tmp_path / "imp")


@pytest.mark.parametrize("damage, message", [
    ("truncate", "truncated"),
    ("layout", "not of the ControlNet repository's format"),
    ("architecture", "do not fit the model configuration"),
    ("schedule", "another noise schedule"),
])
def test_broken_or_foreign_checkpoints_are_refused_and_nothing_is_written(release, tmp_path, damage, message):
    from safetensors.torch import load_file

    bad = tmp_path / "bad.safetensors"
    if damage == "truncate":
        bad.write_bytes(release["ckpt"].read_bytes()[:-4096])
    else:
        sd = load_file(str(release["ckpt"]))
        if damage == "layout":
            sd = {k: v for k, v in sd.items() if not k.startswith("control_model.")}
        elif damage == "architecture":
            k = next(k for k in sd if k.startswith("model.diffusion_model.") and k.endswith("proj_in.weight"))
            sd[k] = torch.zeros(sd[k].shape[0] + 1, *sd[k].shape[1:])
        else:
            sd["alphas_cumprod"] = torch.linspace(1, 0.01, 1000)
        save_file(sd, str(bad))
    with pytest.raises(ValueError, match=message):
        import_release(tmp_path / "imp", "cityscapes", checkpoint=bad, tokenizer=release["tokenizer"],
                       image_size=SIZE, model_config=release["config"])
    nothing_written(tmp_path / "imp")


# ----------------------------------------------------------------------------- conventions and the command
def test_the_authors_step_index_is_this_projects_mu():
    sched = make_scheduler("ddim")
    assert authors_steps(799) == (17, 801) and authors_mu(799) == 0.85
    assert ddim_timesteps(sched, 20, authors_mu(799)).tolist() == list(range(801, 0, -50))
    # their "normal" baseline (999) runs 19 steps from t = 901, from N(0, I): a prior of zeros and ones
    assert authors_steps(999) == (19, 901)
    assert ddim_timesteps(sched, 20, authors_mu(999)).tolist()[0] == 901
    prior = authors_normal_prior(LATENT)
    assert torch.equal(prior.mean, torch.zeros(LATENT)) and torch.equal(prior.std, torch.ones(LATENT))
    for d in range(0, 952):  # every step index their script accepts maps to a mu that runs as many steps
        n, first = authors_steps(d)
        assert len(ddim_timesteps(sched, 20, authors_mu(d))) == n
        # the first step is at or above the level they noised to, except above 901: the cap at L - 1 steps
        assert first >= d if d <= 901 else first == 901
    with pytest.raises(ValueError, match="runs 0..951 or 999"):
        authors_steps(960)
    # the colours their ControlNets saw: ADE20K's raw id v = 49 i + 7 j + k as (30 i, 30 j, 30 k)
    ade = authors_palette("ade20k")
    assert ade.shape == (150, 3) and ade[0].tolist() == [0, 0, 30] and ade[149].tolist() == [90, 0, 90]
    assert np.array_equal(authors_palette("cityscapes"), CITYSCAPES_PALETTE)
    ours = conventions("ours", "cityscapes")
    assert (ours.mu, ours.fallback, ours.prompt) == (0.8, "class", DATASETS["cityscapes"].prompt)


def test_the_command_imports_statistics_and_refuses_nothing_to_import(release, tmp_path, capsys):
    out = tmp_path / "cmd"
    code = cli.main(["import-release", "--dataset", "cityscapes", "--stat-dir", str(release["stat_dir"]),
                     "--stat-name", NAME, "--out", str(out)])
    assert code == 0 and (out / "priors" / "joint.safetensors").is_file()
    code = cli.main(["import-release", "--dataset", "cityscapes", "--stat-dir", str(release["stat_dir"]),
                     "--stat-name", NAME, "--out", str(out)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    code = cli.main(["import-release", "--dataset", "cityscapes", "--out", str(tmp_path / "none")])
    assert code == 2 and "nothing to import" in capsys.readouterr().err
    nothing_written(tmp_path / "none")
    code = cli.main(["import-release", "--dataset", "cityscapes", "--checkpoint", str(release["ckpt"]),
                     "--tokenizer", str(release["tokenizer"]), "--size", *map(str, SIZE), "--model-config",
                     str(release["root"] / "config.json"), "--out", str(tmp_path / "pipe")])
    assert code == 0 and load_pipeline(tmp_path / "pipe").latent_shape == LATENT


def test_the_sd21_configuration_fits_the_controlnet_repositorys_sd21_layout():
    """The local SD 2.1 configuration against an SD 2.1 ControlNet layout of meta tensors (no memory, no hub):
    every converted module loads strictly and has SD 2.1's published parameter counts."""
    import warnings

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel

    from scp_core.models import controlnet_from_unet
    from scp_core.release import SD21_MODEL_CONFIG, convert_checkpoint

    ldm = SD21_MODEL_CONFIG["ldm"]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        unet = UNet2DConditionModel(**sfu.create_unet_diffusers_config_from_ldm(ldm, {}, image_size=512))
        vae = AutoencoderKL(**sfu.create_vae_diffusers_config_from_ldm(ldm, {}, image_size=512))
        cn = controlnet_from_unet(unet, vae_factor=8)
        te = CLIPTextModel(CLIPTextConfig(**SD21_MODEL_CONFIG["text_encoder"]))
    mods = convert_checkpoint(to_ldm(unet, cn, vae, te), device="meta")
    counts = {k: sum(p.numel() for p in mods[k].parameters()) for k in ("unet", "vae", "text_encoder", "controlnet")}
    assert counts == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840, "controlnet": 364_228_240}
    assert tuple(mods["controlnet"].config.conditioning_embedding_out_channels) == (16, 32, 96, 256)


def test_sample_with_the_recorded_conventions_fills_cfg_steps_mu_and_the_authors_baseline(release, tmp_path, capsys):
    """`scpdiff sample --convention authors`: CFG 4.0, 20 steps, mu of --diffusion_steps 799 from the imported
    pipeline; the normal prior becomes their baseline (19 steps from t = 901); a flag given wins; a pipeline imported
    with the other conventions, or one that records none, is refused naming the fix."""
    from minisd import make_mini_cityscapes

    cs = make_mini_cityscapes(tmp_path / "cityscapes")
    out = import_release(tmp_path / "imp", "cityscapes", checkpoint=release["ckpt"], tokenizer=release["tokenizer"],
                         stat_dir=release["stat_dir"], stat_name=NAME, image_size=SIZE,
                         model_config=release["config"])
    common = ["sample", "--pipeline", str(out), "--dataset", "cityscapes", "--root", str(cs), "--split", "val",
              "--n", "1", "--device", "cpu"]

    def run(*extra, folder):
        code = cli.main([*common, *extra, "--out", str(tmp_path / folder)])
        err = capsys.readouterr().err
        return code, err, (json.loads((tmp_path / folder / "samples.json").read_text()) if code == 0 else None)

    code, err, meta = run("--convention", "authors", "--prior", str(out / "priors" / "joint.safetensors"), folder="j")
    assert code == 0, err
    assert (meta["guidance"], meta["steps"], meta["mu"]) == (4.0, 20, authors_mu(799))
    code, err, meta = run("--convention", "authors", folder="n")
    assert code == 0, err
    assert meta["prior"] == "authors-normal" and meta["mu"] == authors_mu(999) and authors_steps(999) == (19, 901)
    code, err, meta = run("--convention", "authors", "--guidance", "2.5", "--steps", "10", folder="g")
    assert code == 0 and (meta["guidance"], meta["steps"]) == (2.5, 10)
    code, err, _ = run("--convention", "ours", folder="o")
    assert code == 2 and "imported with the 'authors' conventions" in err and "--convention ours" in err
    code = cli.main(["sample", "--convention", "authors", "--n", "1", "--out", str(tmp_path / "toy")])
    assert code == 2 and "records no sampling conventions" in capsys.readouterr().err
    nothing_written(tmp_path / "toy")
