"""Bad inputs that used to end in a traceback, a hang, a huge allocation, a silent failure or a misleading message:
each is now one sentence, before any work, naming the limit or what was read."""

from __future__ import annotations

import json

import pytest
import yaml

from srdistill.core.errors import UserError
from srdistill.degrade.cli import main as degrade
from srdistill.degrade.spec.schema import MAX_DEPTH, PRESET_DIR, load_spec, spec_from_dict
from srdistill.core.typed import MAX_KERNEL_SIZE

DEEP = 300


def _one_line(err: str) -> str:
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def _nested(levels: int) -> dict:
    step: dict = {"op": "bicubic_downsample"}
    for _ in range(levels):
        step = {"one_of": [step]}
    return {"version": 2, "name": "deep", "scale": 4, "pipeline": [step]}


@pytest.mark.parametrize("form", ["yaml", "json", "dict"])
def test_a_spec_nested_300_levels_is_refused_with_the_limit(form, tmp_path):
    doc = _nested(DEEP)
    with pytest.raises(UserError, match=f"nests lists and mappings more than {MAX_DEPTH} levels deep \\(the limit\\)"):
        if form == "dict":  # as a manifest hands it over
            spec_from_dict(doc)
        else:
            path = tmp_path / f"deep.{form}"
            # Written by hand: both serialisers recurse too, and would stop first.
            text = json.dumps({"op": "bicubic_downsample"})
            for _ in range(DEEP):
                text = '{"one_of": [' + text + "]}"
            path.write_text('{"version": 2, "name": "deep", "scale": 4, "pipeline": [' + text + "]}")
            load_spec(str(path))


def test_the_shipped_presets_are_well_inside_the_depth_limit():
    def depth(x) -> int:
        children = x.values() if isinstance(x, dict) else x if isinstance(x, list) else None
        return 0 if children is None else 1 + max((depth(c) for c in children), default=0)

    assert max(depth(yaml.safe_load(p.read_text())) for p in PRESET_DIR.glob("*.yaml")) <= MAX_DEPTH // 2


def test_a_kernel_size_over_the_limit_is_refused_before_any_worker(tmp_path):
    text = (PRESET_DIR / "realesrgan.yaml").read_text()
    assert "sizes: [7, 9, 11, 13, 15, 17, 19, 21]" in text
    path = tmp_path / "huge.yaml"
    path.write_text(text.replace("sizes: [7, 9, 11, 13, 15, 17, 19, 21]", "sizes: [100001]", 1))
    with pytest.raises(UserError, match=f"must hold odd sizes from 1 to {MAX_KERNEL_SIZE} \\(the limit\\), got \\[100001\\]"):
        load_spec(str(path))
    path.write_text(text.replace("sizes: [7, 9, 11, 13, 15, 17, 19, 21]", f"sizes: [{MAX_KERNEL_SIZE}]", 1))
    load_spec(str(path))


def test_a_crop_over_the_pixel_limit_is_refused_before_ray(tmp_path, capsys):
    out = tmp_path / "out"
    assert degrade(["build", "--src", "sample", "--out", str(out), "--preset", "bicubic", "--crop", "1000000000"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "--crop 1000000000 is over the limit: a crop may hold at most --max-pixels 67108864 pixels, so --crop " \
           "must be at most 8192." in err
    assert not out.exists()


def test_an_infinite_seed_is_one_sentence(tmp_path, capsys):
    from srdistill.training.cli import main as train

    assert train(["--recipe", "d3sr", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--set",
                  "seed=1e400"]) == 2
    assert _one_line(capsys.readouterr().err).endswith("trainer.seed (--set) must be int (a finite number), got '1e400'.")
    assert train(["--recipe", "vpdsr", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--set",
                  "recipe.lambda_hfp=1e400"]) == 2
    assert _one_line(capsys.readouterr().err).endswith("recipe.lambda_hfp must be a finite number, got inf.")


@pytest.mark.parametrize("options,message", [
    ({"bogus_option": 1}, "protocol x: metric psnry: pyiqa's PSNR takes no option 'bogus_option' (its options: "),
    ({"crop_border": "abc"}, "protocol x: metric psnry: option crop_border must be a number like its default 0, "
                             "got 'abc'."),
])
def test_metric_options_are_checked_against_the_metric_before_any_run(options, message):
    from srdistill.evaluate.protocol import PRESET_DIR as PROTOCOLS, protocol_from_dict

    doc = yaml.safe_load((PROTOCOLS / "srdistill.yaml").read_text())
    doc["metrics"] = {"psnry": options}
    with pytest.raises(UserError) as err:
        protocol_from_dict(doc, "x")
    assert str(err.value).startswith(message)
    doc["metrics"] = {"psnry": {"crop_border": 4}}
    assert protocol_from_dict(doc, "x").metrics["psnry"].options == {"crop_border": 4}


def _motion(length) -> dict:
    return {"version": 2, "name": "m", "scale": 4,
            "pipeline": [{"op": "motion_blur", "length": length, "angle": 0.0}, {"op": "bicubic_downsample"}]}


def test_a_number_yaml_read_as_text_is_named_as_such(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_motion(1.0)).replace("length: 1.0", "length: 1e9"))
    with pytest.raises(UserError) as err:
        load_spec(str(path))
    assert str(err.value).endswith("must be a finite number, got '1e9' (YAML read 1e9 as text: write it with a "
                                   "decimal point, e.g. 1.0e9, or in plain digits).")


def test_a_var_inside_a_draw_is_named_for_what_it_is():
    doc = {"version": 2, "name": "d", "scale": 4, "pipeline": [{"draw": {"q": {"var": "q"}}}, {"op": "bicubic_downsample"}]}
    with pytest.raises(UserError) as err:
        spec_from_dict(doc)
    assert "none of the distribution keys" not in str(err.value)
    assert str(err.value).startswith("spec.pipeline[0].draw.q is {var: ...}, which a draw cannot hold: a draw makes new "
                                     "values from a distribution (uniform, ")


def test_a_folder_whose_only_parquet_is_unusable_names_the_file_and_why(tmp_path):
    import pandas as pd

    from srdistill.datasets.sources import resolve_source

    pd.DataFrame({"caption": ["a cat"]}).to_parquet(tmp_path / "only.parquet")
    with pytest.raises(UserError) as err:
        resolve_source(str(tmp_path))
    message = str(err.value)
    assert message.startswith(f"source '{tmp_path.name}' holds no images: ") and "\n" not in message
    assert f"under {tmp_path} (only.parquet was skipped: " in message
    (tmp_path / "only.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(UserError, match=r"\(only\.parquet was skipped: "):
        resolve_source(str(tmp_path))


def test_the_set_aside_note_ends_on_a_whole_word(tmp_path):
    from srdistill.core.parts import PartsStore, TableSchema

    schema = TableSchema(columns={"item": "object", "score": "float64"}, key=("item",))
    PartsStore(str(tmp_path), schema, name="scores").add([{"item": "a", "score": 1.0}])
    (part,) = (tmp_path / "scores.parts").glob("*.parquet")
    damage = b"garbage" * 20
    part.write_bytes(damage)
    try:  # what the reader says about these bytes, asked directly
        import io

        import pandas as pd

        pd.read_parquet(io.BytesIO(damage))
    except (OSError, ValueError) as exc:
        said = str(exc).strip().splitlines()[0]
    assert 120 < len(said) <= 160  # long enough that the old 120-character cut fell inside a word
    notes: list[str] = []
    PartsStore(str(tmp_path), schema, name="scores", notify=notes.append)
    (note,) = notes
    assert note.endswith(f"because it cannot be read ({said}); its rows will be computed again.")
