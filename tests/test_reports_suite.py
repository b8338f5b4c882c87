"""Suite files: relative paths, NAME=DIR methods, training jobs, thresholds, and one-sentence mistakes."""

import pytest

from srdistill.core.errors import UserError
from srdistill.reports.suite import load_suite

GOOD = """
name: lab
datasets: [sample, Set5]
methods: [bicubic, mine=runs/mine]
metrics: [psnr, lpips]
specs: [realesrgan, specs/new.yaml]
training:
  - {name: d3sr-smoke, recipe: d3sr, shards: shards/, steps: 5, overrides: {trainer.batch_size: 2}}
throughput:
  - {name: deg, kind: degrade, spec: realesrgan, images: 2, size: 128}
compare: {confidence: 0.9, ci: bootstrap, min_effect: {lpips: 0.01}, throughput_rel: 0.5}
evaluation: {device: cpu}
"""


def test_good_suite_resolves_paths_and_settings(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(GOOD)
    s = load_suite(path)
    assert s.methods == ("bicubic",)
    assert s.method_dirs == {"mine": str(tmp_path / "runs/mine")}
    assert s.all_methods() == ["bicubic", "mine", "d3sr-smoke"]
    assert s.specs == ("realesrgan", str(tmp_path / "specs/new.yaml"))
    job = s.training[0]
    assert job.shards == str(tmp_path / "shards")
    assert job.sets() == ["trainer.batch_size=2", "trainer.steps=5"]
    assert s.compare.ci == "bootstrap" and s.compare.confidence == 0.9
    assert s.compare.min_effect["lpips"] == 0.01 and s.compare.min_effect["psnr"] == 0.05
    assert s.evaluation == {"device": "cpu"}
    # The fingerprint follows the content, not where the file lives.
    other = tmp_path / "copy"
    other.mkdir()
    (other / "suite.yaml").write_text(GOOD.replace("steps: 5", "steps: 6"))
    assert load_suite(other / "suite.yaml").fingerprint() != s.fingerprint()


@pytest.mark.parametrize("text, words", [
    ("methods: [bicubic]\n", "needs a 'name'"),
    ("name: x\nmetrix: [psnr]\n", "unknown key"),
    ("name: x\ntraining: [{name: t, recipe: d3sr}]\n", "lacks ['shards']"),
    ("name: x\nthroughput: [{name: t, kind: gpu}]\n", "kind must be one of"),
    ("name: x\nthroughput: [{name: t, kind: method}]\n", "needs 'method'"),
    ("name: x\ncompare: {ci: anova}\n", "bad 'compare' settings"),
    ("name: x\nevaluation: {frobnicate: 1}\n", "'evaluation' accepts only"),
    ("name: x\nmethods: [a, a=dir]\n", "distinct"),
    ("name: x\nmethods: [=dir]\n", "NAME=DIR"),
    ("name: [x\n", "not valid YAML"),
])
def test_suite_mistakes_are_one_sentence_user_errors(tmp_path, text, words):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_suite(path)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_suite_file(tmp_path):
    with pytest.raises(UserError, match=r"suite '.*nope.yaml' is neither a preset \(default\) nor an existing YAML file\."):
        load_suite(tmp_path / "nope.yaml")
