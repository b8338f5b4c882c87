"""The shard loader on real `degrade build` shards: determinism, exact resumption, paired crops, online mode."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers.images import to_uint8
from srdistill.training.loader import (
    BatchStream,
    LoaderPosition,
    iter_samples,
    make_loader,
    resize_short_side,
    shard_urls,
)

from srdistill.core.errors import UserError


def _digest(batches) -> list[tuple]:
    return [(tuple(m["key"] for m in b["meta"]), b["lr"].numpy().tobytes(), b["hr"].numpy().tobytes()) for b in batches]


def test_batches_are_paired_float_tensors_in_unit_range(shards):
    batch = next(iter(make_loader(shards, batch_size=3, crop=64, seed=0, num_workers=0)))
    assert batch["lr"].shape == (3, 3, 16, 16) and batch["hr"].shape == (3, 3, 64, 64)
    assert batch["lr"].dtype == batch["hr"].dtype == torch.float32
    assert 0.0 <= float(batch["lr"].min()) and float(batch["hr"].max()) <= 1.0
    assert [m["scale"] for m in batch["meta"]] == [4, 4, 4]
    top, left, h, w = batch["meta"][0]["train_crop"]
    assert h == w == 64 and top % 4 == 0 and left % 4 == 0


def test_stream_depends_only_on_seed_and_epoch(shards):
    def run(seed, epoch):
        return _digest(make_loader(shards, batch_size=2, crop=64, seed=seed, epoch=epoch, num_workers=2, shuffle_buffer=4))

    first = run(0, 0)
    assert first == run(0, 0)
    assert len(first) == 8 and len({k for keys, _, _ in first for k in keys}) == 16   # every sample once per epoch
    assert [d[0] for d in first] != [d[0] for d in run(0, 1)]
    assert first != run(1, 0)


def test_resumed_stream_equals_uninterrupted_stream_across_epochs(shards):
    kw = {"batch_size": 3, "crop": 64, "seed": 5, "num_workers": 2, "shuffle_buffer": 8}
    whole = BatchStream(shards, **kw)
    reference = _digest(next(whole) for _ in range(9))    # 4 batches per epoch (2 workers x 2): crosses two epochs
    head = BatchStream(shards, **kw)
    _digest(next(head) for _ in range(6))
    saved = LoaderPosition.from_dict(json.loads(json.dumps(head.position.to_dict())))
    assert (saved.epoch, saved.batches) == (1, 2)
    resumed = BatchStream(shards, **kw, position=saved)
    assert _digest(next(resumed) for _ in range(3)) == reference[6:]


def test_resume_with_another_worker_count_is_refused(shards):
    with pytest.raises(UserError, match="loader workers"):
        BatchStream(shards, batch_size=2, crop=64, seed=0, num_workers=1, position=LoaderPosition(0, 1, num_workers=2))


def test_lr_crop_is_the_bicubic_degradation_of_the_hr_crop(shards):
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    spec = load_spec("bicubic")
    batch = next(iter(make_loader(shards, batch_size=8, crop=64, seed=3, num_workers=0, flips=True)))
    shifted_errors = []
    for lr, hr, meta in zip(batch["lr"], batch["hr"], batch["meta"]):
        expected, _ = degrade_image(to_uint8(hr), spec, 0, meta["key"])
        got = to_uint8(lr).astype(int)
        # The antialiased x4 kernel reaches 2 LR pixels past the crop; inside that margin the pixels must agree.
        assert np.abs(got[2:-2, 2:-2] - expected[2:-2, 2:-2]).max() <= 1, meta["key"]
        shifted_errors.append(np.abs(got[2:-2, 3:-1] - expected[2:-2, 2:-2]).max())
    assert max(shifted_errors) > 8   # the check sees a one-LR-pixel misalignment


def test_ranks_read_disjoint_shards_that_cover_the_epoch(shards):
    keys = []
    for rank in (0, 1):
        for b in make_loader(shards, batch_size=2, crop=64, seed=0, num_workers=1, rank=rank, world_size=2):
            keys.append([m["key"] for m in b["meta"]])
    flat = [k for ks in keys for k in ks]
    assert len(flat) == len(set(flat)) == 16


def test_online_mode_redegrades_deterministically_per_epoch(shards):
    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    spec = load_spec("realesrgan")
    kw = {"batch_size": 2, "crop": 64, "seed": 7, "num_workers": 2, "shuffle_buffer": 1, "flips": False,
          "online_spec": "realesrgan"}
    e0 = list(make_loader(shards, epoch=0, **kw))[:2]
    assert _digest(e0) == _digest(list(make_loader(shards, epoch=0, **kw))[:2])
    b = e0[0]
    lr, params = degrade_image(to_uint8(b["hr"][0]), spec, 7, f"{b['meta'][0]['key']}-epoch0")
    assert np.array_equal(to_uint8(b["lr"][0]), lr) and b["meta"][0]["params"] == json.loads(json.dumps(params))
    key = b["meta"][0]["key"]
    e1 = {m["key"]: x for bb in make_loader(shards, epoch=1, **kw) for m, x in zip(bb["meta"], bb["lr"])}
    assert len(e1) == 16 and not torch.equal(e1[key], b["lr"][0])   # next epoch: a fresh degradation


def test_shard_urls_reads_manifest_patterns_and_reports_missing(shards, tmp_path):
    urls = shard_urls(shards)
    assert [u.rsplit("/", 1)[1] for u in urls] == [f"train-{i:06d}.tar" for i in range(4)]
    assert shard_urls(f"{shards}/train-{{000000..000001}}.tar") == urls[:2]
    with pytest.raises(UserError, match="no shards"):
        shard_urls(tmp_path)
    with pytest.raises(UserError, match="no shards"):
        shard_urls(shards, split="val")


def test_worker_errors_surface_as_one_sentence(shards):
    stream = BatchStream(shards, batch_size=2, crop=256, seed=0, num_workers=1)
    with pytest.raises(UserError) as err:
        next(stream)
    assert re.fullmatch(r"sample \w+ is 128x128, smaller than the training crop 256; "
                        r"lower it with --set trainer\.crop=N \(N at most 128\) or rebuild the shards with larger crops\.",
                        str(err.value))
    with pytest.raises(UserError, match="neither a preset"):
        BatchStream(shards, batch_size=2, crop=64, seed=0, online_spec="no-such-spec")


def test_center_crop_policy_takes_the_middle_on_the_lr_grid_every_epoch(shards):
    for epoch in (0, 1):
        batch = next(iter(make_loader(shards, batch_size=4, crop=40, seed=epoch, epoch=epoch, num_workers=0,
                                      flips=False, crop_policy="center")))
        # 128 px samples, x4: a 10 px LR window centred in 32 starts at LR pixel 11, HR pixel 44
        assert [m["train_crop"] for m in batch["meta"]] == [[44, 44, 40, 40]] * 4
        assert not any(m["flip_h"] or m["flip_v"] or m["rot90"] for m in batch["meta"])


def test_resize_short_side_is_box_halvings_then_one_bicubic_resize():
    """guided-diffusion's center_crop_arr sizes (StrSR's released loader): halve while the short side is at least
    twice the target, then scale the short side to it, each side rounded."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert resize_short_side(img, 64).shape == (64, 96, 3)        # 300x200 -> box 150x100 -> bicubic 96x64
    assert resize_short_side(img, 120).shape == (120, 180, 3)     # 200 < 240: no halving, bicubic x0.6
    small = img[:40, :50]
    assert resize_short_side(small, 64).shape == (64, 80, 3)      # smaller images are upscaled
    exact = img[:64, :90]
    assert np.array_equal(resize_short_side(exact, 64), exact)


def test_resize_center_policy_scales_crops_the_middle_and_degrades_the_crop(shards):
    from PIL import Image

    from srdistill.degrade.pipeline import degrade_image
    from srdistill.degrade.spec.schema import load_spec

    kw = {"batch_size": 2, "crop": 48, "seed": 3, "num_workers": 0, "shuffle_buffer": 1, "flips": False,
          "online_spec": "realesrgan", "crop_policy": "resize_center"}
    b = next(iter(make_loader(shards, **kw)))
    key = b["meta"][0]["key"]
    whole = next(s["hr"] for s in iter_samples(shards) if s["key"] == key)
    assert whole.shape[:2] == (128, 128)
    # written out: 128 >= 2 x 48, so one box halving to 64, then bicubic to 48; the centre 48x48 is all of it
    want = np.asarray(Image.fromarray(whole).resize((64, 64), Image.BOX).resize((48, 48), Image.BICUBIC))
    assert np.array_equal(to_uint8(b["hr"][0]), want)
    assert b["meta"][0]["train_resize"] == [48, 48] and b["meta"][0]["train_crop"] == [0, 0, 48, 48]
    lr, _ = degrade_image(want, load_spec("realesrgan"), 3, f"{key}-epoch0")   # the LR is made from the crop
    assert b["lr"].shape[-2:] == (12, 12) and np.array_equal(to_uint8(b["lr"][0]), lr)


def test_resize_center_policy_needs_a_crop_and_online_degradation(shards):
    from srdistill.training.config import TrainerConfig, validate

    with pytest.raises(UserError, match="needs a crop size and online degradation"):
        make_loader(shards, batch_size=2, crop=48, seed=0, num_workers=0, crop_policy="resize_center")
    with pytest.raises(UserError, match="trainer.crop_policy resize_center .* set trainer.crop and trainer.online"):
        validate(TrainerConfig(crop=1024, crop_policy="resize_center"))
    with pytest.raises(UserError, match="trainer.crop_policy must be one of random, center, resize_center"):
        validate(TrainerConfig(crop_policy="middle"))
    validate(TrainerConfig(crop=1024, crop_policy="resize_center", online="realesrgan"))
