"""Model ids for training components: resolved from a real Hugging Face cache tree and through a loopback Hub."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers.mirror import HubHandler, dead_url, serve
from srdistill.training import cli as train_cli
from srdistill.training.components.diffusers_models import alphas_cumprod, build_dit, build_unet, build_vae
from srdistill.training.config import load_run_config

from srdistill.core.fetch import hub
from srdistill.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def write_hub_repo(cache: Path, repo: str, commit: str, folder: Path, refs=("main",)) -> Path:
    """`folder` as the Hub cache stores a downloaded repo: blobs by content hash, a snapshot of symlinks, refs."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = root / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = snap / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def vae_out(vae, seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    return vae.encode(torch.rand(1, 3, 32, 32)).latent_dist.mode()


@pytest.fixture
def pipelines(tmp_path):
    """Two tiny saved repos: a diffusers SD-style pipeline (A) and a VAE alone (B), plus the modules saved."""
    from diffusers import DDPMScheduler

    torch.manual_seed(1)
    vae_a, unet_a = build_vae("tiny"), build_unet("tiny")
    a = tmp_path / "src" / "pipe"
    vae_a.save_pretrained(a / "vae")
    unet_a.save_pretrained(a / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(a / "scheduler")
    (a / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (a / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"variant, never read")
    (a / "v1-single-file.ckpt").write_bytes(b"single-file checkpoint, never read")
    torch.manual_seed(2)
    vae_b = build_vae("tiny")
    b = tmp_path / "src" / "vae"
    vae_b.save_pretrained(b)
    return {"a": a, "b": b, "vae_a": vae_a, "unet_a": unet_a, "vae_b": vae_b}


@pytest.fixture
def hub_cache(tmp_path, pipelines, monkeypatch):
    """A Hub cache holding org-a/tiny-sd (commit A, refs/main) and org-b/tiny-vae (commit B); offline."""
    cache = tmp_path / "hf" / "hub"
    write_hub_repo(cache, "org-a/tiny-sd", COMMIT_A, pipelines["a"])
    write_hub_repo(cache, "org-b/tiny-vae", COMMIT_B, pipelines["b"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub._resolve.cache_clear()
    yield cache
    hub._resolve.cache_clear()


def test_only_what_roles_read_is_selected_from_a_repo():
    sd21 = ["model_index.json", "README.md", "v2-1_512-ema-pruned.ckpt", "v2-1_512-ema-pruned.safetensors",
            "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
            "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin",
            "text_encoder/model.fp16.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
            "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.non_ema.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin"]
    assert hub.select_files(sd21) == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin"]
    bare_vae = [".gitattributes", "config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "sub/extra.safetensors"]
    assert hub.select_files(bare_vae) == [".gitattributes", "config.json", "diffusion_pytorch_model.safetensors"]


def test_model_id_parsing_leaves_presets_and_existing_folders_alone(tmp_path, monkeypatch):
    assert hub.parse_model_id("stabilityai/stable-diffusion-2-1-base") == hub.ModelId("stabilityai/stable-diffusion-2-1-base")
    assert hub.parse_model_id("org/name@v1.0") == hub.ModelId("org/name", "v1.0")
    assert hub.parse_model_id("tiny") is None and hub.parse_model_id("/abs/path") is None
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub.parse_model_id("org/name") is None  # a folder on disk wins over an id of the same spelling


def test_model_id_resolves_from_the_offline_cache_and_loads_by_the_folder_code(hub_cache, pipelines):
    for spec in ("org-a/tiny-sd", "org-a/tiny-sd@main", f"org-a/tiny-sd@{COMMIT_A}"):
        assert hub.resolve_components(spec, {}, "unused") == str(hub_cache / "models--org-a--tiny-sd" / "snapshots" / COMMIT_A)
    with torch.no_grad():
        assert torch.equal(vae_out(build_vae("org-a/tiny-sd")), vae_out(pipelines["vae_a"]))
        assert same_weights(build_unet("org-a/tiny-sd"), pipelines["unet_a"])
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # the saved scheduler's linear schedule
    assert torch.allclose(alphas_cumprod("org-a/tiny-sd").double(), torch.cumprod(1 - betas, 0), atol=1e-6)


def test_per_role_override_mixes_a_vae_from_one_repo_with_a_unet_from_another(hub_cache, pipelines, tmp_path):
    run = load_run_config("d3sr", sets=["components.vae=org-b/tiny-vae"])
    assert run.components == {"vae": "org-b/tiny-vae"} and run.to_dict()["component_overrides"] == run.components
    folder = hub.resolve_components("org-a/tiny-sd", run.components, tmp_path / "run" / "components")
    with torch.no_grad():
        assert torch.equal(vae_out(build_vae(folder)), vae_out(pipelines["vae_b"]))
        assert not torch.equal(vae_out(build_vae(folder)), vae_out(pipelines["vae_a"]))
        assert same_weights(build_unet(folder), pipelines["unet_a"])
    record = json.loads((Path(folder) / hub.MANIFEST).read_text())
    assert record["overrides"] == {"vae": "org-b/tiny-vae"}
    assert record["links"]["vae"] == str(hub_cache / "models--org-b--tiny-vae" / "snapshots" / COMMIT_B)
    # Composing again (a resumed run) gives the same folder; an override dropped later is unlinked.
    assert hub.resolve_components("org-a/tiny-sd", {"vae": "org-b/tiny-vae"}, Path(folder)) == folder
    with pytest.raises(UserError, match="unknown component role"):
        hub.resolve_components("org-a/tiny-sd", {"vea": "org-b/tiny-vae"}, tmp_path / "x")
    with pytest.raises(UserError, match="random-weight preset"):
        hub.resolve_components("tiny", {"vae": "org-b/tiny-vae"}, tmp_path / "x")


def test_a_dit_pipeline_snapshot_serves_its_vae_as_the_transformer_vae(tmp_path, monkeypatch):
    torch.manual_seed(3)
    src = tmp_path / "sd3"
    build_dit("tiny").save_pretrained(src / "transformer")
    vae16 = build_vae("tiny", latent_channels=16)
    vae16.save_pretrained(src / "vae")
    (src / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    cache = tmp_path / "hub"
    write_hub_repo(cache, "org-c/tiny-sd3", "c" * 40, src)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub._resolve.cache_clear()
    loaded = build_vae("org-c/tiny-sd3", latent_channels=16, sub="transformer_vae")
    with torch.no_grad():
        assert torch.equal(vae_out(loaded), vae_out(vae16))
    assert build_dit("org-c/tiny-sd3").config.num_layers == 2
    with pytest.raises(UserError, match="transformer_vae"):
        build_vae(str(src / "transformer"), sub="transformer_vae")  # a plain folder gets no such substitution
    hub._resolve.cache_clear()


@pytest.fixture
def loopback_hub(hub_cache, tmp_path, monkeypatch):
    """The same repos served by a Hub on 127.0.0.1 (HF_ENDPOINT); the client starts from an empty cache, online."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", huggingface_hub.constants.ENDPOINT)
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE)
    monkeypatch.delenv("SRDISTILL_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    client = tmp_path / "client" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(client))
    with serve(hub_cache, HubHandler) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.client = client
        yield server


def test_model_id_downloads_through_hf_endpoint_once_then_works_offline(loopback_hub, pipelines, monkeypatch):
    snap = Path(hub.resolve_components("org-a/tiny-sd", {}, "unused"))
    assert snap == loopback_hub.client / "models--org-a--tiny-sd" / "snapshots" / COMMIT_A
    assert (loopback_hub.client / "models--org-a--tiny-sd" / "refs" / "main").read_text() == COMMIT_A
    fetched = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert fetched == ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                       "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                       "vae/diffusion_pytorch_model.safetensors"]  # no fp16 variant, no single-file .ckpt
    with torch.no_grad():
        assert torch.equal(vae_out(build_vae(str(snap))), vae_out(pipelines["vae_a"]))
    downloads = [r for r in loopback_hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    assert len(downloads) == len(fetched)
    hub._resolve.cache_clear()
    assert Path(hub.resolve_components("org-a/tiny-sd", {}, "unused")) == snap
    assert [r for r in loopback_hub.requests if r[0] == "GET" and "/resolve/" in r[1]] == downloads  # not again
    monkeypatch.setenv("SRDISTILL_OFFLINE", "1")
    hub._resolve.cache_clear()
    before = len(loopback_hub.requests)
    assert Path(hub.resolve_components("org-a/tiny-sd@main", {}, "unused")) == snap
    assert len(loopback_hub.requests) == before  # offline asks the server nothing


def test_bad_model_ids_revisions_and_endpoints_are_one_sentence(loopback_hub, monkeypatch):
    cases = {"org-a/no-such-model": "does not exist on", "org-a/tiny-sd@v9": "has no revision 'v9'"}
    for spec, expected in cases.items():
        with pytest.raises(UserError) as err:
            hub.resolve_components(spec, {}, "unused")
        assert expected in str(err.value) and loopback_hub.url in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("HF_ENDPOINT", dead_url())
    with pytest.raises(UserError) as err:
        hub.resolve_components("org-a/tiny-sd", {}, "unused")
    msg = str(err.value)
    assert "cannot reach" in msg and os.environ["HF_ENDPOINT"] in msg and "refused" in msg and "\n" not in msg
    monkeypatch.setenv("SRDISTILL_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        hub.resolve_components("org-a/tiny-sd", {}, "unused")


def test_train_cli_reports_a_missing_model_id_in_one_line(hub_cache, tmp_path, capsys):
    argv = ["--recipe", "d3sr", "--shards", str(tmp_path), "--out", str(tmp_path / "run"),
            "--components", "org-a/tiny-sd", "--set", "components.vae=org-z/missing"]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "org-z/missing" in err and "Hugging Face cache" in err
