"""The schema-2 engine changes no pixel of the presets: HR and LR hashes against those taken before it.

tests/data/degrade_v1_baseline.json was written by tests/data/make_degrade_baseline.py with the engine of the
commit before the refactor (issue 15); its `coverage` shows every branch of each preset ran.
"""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from srdistill.degrade.pipeline import degrade_image
from srdistill.degrade.spec.schema import PRESET_DIR, load_spec, read_document, resolve, spec_from_dict, spec_hash

DATA = Path(__file__).parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location("make_degrade_baseline", DATA / "make_degrade_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BASELINE = json.loads((DATA / "degrade_v1_baseline.json").read_text())


@pytest.mark.parametrize("preset", ["realesrgan", "realesrgan-libjpeg", "bicubic"])
def test_presets_keep_their_bytes(preset):
    mb = _maker()
    want = BASELINE["presets"][preset]
    spec = load_spec(preset)
    got, branches = {}, Counter()
    for key, hr in mb.cases(preset):
        lr, params = degrade_image(hr, spec, BASELINE["seed"], key)
        got[key] = {"hr": mb.sha(hr), "lr": mb.sha(lr), "lr_shape": list(lr.shape)}
        branches.update(mb.branches(params))
    assert set(got) == set(want)
    bad = [k for k in want if got[k] != want[k]]
    assert not bad, f"{len(bad)} of {len(want)} samples changed, e.g. {bad[:3]}"
    # the records take the same branches, as often, as the version-1 params did
    assert dict(branches) == BASELINE["coverage"][preset]


@pytest.mark.parametrize("preset", ["realesrgan", "realesrgan-libjpeg", "bicubic"])
def test_version1_documents_convert_to_the_v2_presets(preset):
    """The version-1 preset files (as an old user file or manifest holds them) load as the v2 preset: same hash,
    so the same pipeline and the same bytes."""
    old = spec_from_dict(resolve(read_document(PRESET_DIR / "v1" / f"{preset}.yaml"), preset))
    assert spec_hash(old) == spec_hash(load_spec(preset))
    mb = _maker()
    key, hr = mb.cases(preset)[0]
    assert mb.sha(degrade_image(hr, old, BASELINE["seed"], key)[0]) == BASELINE["presets"][preset][key]["lr"]
