"""The static HTML leaderboard: the data it embeds (tables as leaderboard.md has them, per-image values), and a
real headless Chromium driving it from file:// (sort, per-image drill-down, slider, synchronised zoom) with no
request leaving the folder."""

import json
import re

import pandas as pd
import pytest
from helpers.chromium import Browser
from srdistill.evaluate.cli import main
from srdistill.evaluate.leaderboard import build_leaderboard
from srdistill.evaluate.render.site import section_data

# per-image PSNR and NIQE of three methods on one set; "late" lacks one image (unranked)
VALUES = {"a": ([30.0, 31.0, 35.0], [5.0, 6.0, 4.0]), "b": ([29.0, 29.0, 29.0], [3.0, 3.0, 3.0]),
          "c": ([33.0, 28.0, 30.5], [7.0, 7.5, 8.0]), "late": ([40.0, 40.0], [1.0, 1.0])}


def results() -> pd.DataFrame:
    rows = []
    for method, (psnr, niqe) in VALUES.items():
        for k, (p, n) in enumerate(zip(psnr, niqe)):
            for metric, v in (("psnry", p), ("niqe", n)):
                rows.append({"method": method, "dataset": "set", "image": f"i{k}", "metric": metric, "value": v,
                             "status": "ok", "protocol": "p1", "protocol_hash": "h1", "metric_version": "pyiqa-x",
                             "dataset_meta": "{}"})
    return pd.DataFrame(rows)


def test_section_rows_marks_reported_and_delta_rows_and_per_image_values():
    frame = results()
    reported = pd.DataFrame([{"paper": "P", "table": "Table 1", "protocol": "p1", "dataset": "set", "method_printed": "b",
                              "method": "b", "metric": "psnry", "metric_options": "", "value": 28.5}])
    section = section_data(build_leaderboard(frame), frame, "set", "p1", reported, None, None)
    rows = {r["label"]: r for r in section["rows"]}
    means = {m: sum(p) / len(p) for m, (p, _) in VALUES.items()}  # a 32.00, b 29.00, c 30.50; late unranked
    assert rows["a"]["cells"]["psnry"] == {"v": means["a"], "t": "32.00", "mark": "best"}
    assert rows["c"]["cells"]["psnry"]["mark"] == "second" and rows["b"]["cells"]["psnry"]["mark"] == ""
    assert rows["late"]["cells"]["psnry"] == {"v": 40.0, "t": "40.00 (n=2, unranked)", "mark": ""}
    assert rows["b"]["cells"]["niqe"]["mark"] == "best" and rows["a"]["cells"]["niqe"]["mark"] == "second"
    assert rows["b (reported, P Table 1)"]["kind"] == "reported" and rows["b (reported, P Table 1)"]["cells"]["psnry"]["t"] == "28.50"
    delta = rows["Δ b − b (P Table 1)"]
    assert delta["kind"] == "delta" and delta["cells"]["psnry"]["t"] == "+0.50" and "niqe" not in delta["cells"]
    assert section["perImage"]["psnry"]["c"] == {"i0": 33.0, "i1": 28.0, "i2": 30.5}
    assert section["images"] == ["i0", "i1", "i2"] and [m["name"] for m in section["metrics"]] == ["psnry", "niqe"]


@pytest.fixture
def site(tmp_path, pair_dirs, offline_weights):
    """Two protocols over the same HR/LR pair folder, bicubic and lanczos, PSNR and NIQE; the site of both."""
    hr, lr = pair_dirs
    crop = tmp_path / "crop4.yaml"
    crop.write_text("name: crop4\ntitle: PSNR with a 4-pixel border crop\nsource: this test\nscale: 4\nopen: true\n"
                    "datasets: {}\nmetrics:\n  psnry: {color_space: ycbcr, crop_border: 4}\n  niqe: {}\n")
    out = tmp_path / "o"
    common = ["leaderboard", "--methods", "bicubic,lanczos", "--hr", str(hr), "--lr", str(lr), "--metrics", "psnry,niqe",
              "--out", str(out), "--quiet"]
    assert main(common) == 0
    assert main(common + ["--protocol", str(crop), "--html", str(tmp_path / "site")]) == 0
    return tmp_path / "site", pd.read_parquet(out / "results.parquet")


def test_the_folder_is_self_contained(site):
    folder, _ = site
    page = (folder / "index.html").read_text()
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert [(s["dataset"], s["protocol"]) for s in data["sections"]] == [("LR", "crop4"), ("LR", "srdistill")]
    for stem, item in data["images"]["LR"].items():
        assert set(item["panels"]) == {"HR", "LR", "bicubic", "lanczos"} and (item["w"], item["h"]) == (96, 96)
        assert all((folder / p).is_file() for p in item["panels"].values())
    assert data["plots"] and all((folder / p).is_file() for p in data["plots"])
    # rewriting replaces the earlier site, but never a folder the command did not write
    out = folder.parent / "o"
    assert main(["leaderboard", "--methods", "bicubic", "--hr", str(folder.parent / "HR"), "--lr", str(folder.parent / "LR"),
                 "--metrics", "psnry", "--out", str(out), "--quiet", "--html", str(folder)]) == 0
    assert main(["leaderboard", "--methods", "bicubic", "--hr", str(folder.parent / "HR"), "--lr", str(folder.parent / "LR"),
                 "--metrics", "psnry", "--out", str(out), "--quiet", "--html", str(out)]) == 2
    assert (out / "results.parquet").is_file()
    # every src/href in the page is relative (no scheme, no //host)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_chromium_sorts_drills_down_slides_and_zooms_from_file_without_network(site, tmp_path):
    folder, frame = site
    ok = frame[frame["status"] == "ok"]
    browser = Browser(tmp_path / "profile")
    try:
        browser.open((folder / "index.html").as_uri())
        assert browser.js("document.querySelectorAll('section.board-section').length") == 2
        table = "document.getElementById('board-LR-srdistill')"
        # sort by NIQE (lower is better): the first click puts the lowest mean first
        niqe = ok[(ok["protocol"] == "srdistill") & (ok["metric"] == "niqe")].groupby("method")["value"].mean()
        col = browser.js(f"Array.from({table}.tHead.rows[0].cells).findIndex(th => th.dataset.metric === 'niqe')")
        browser.js(f"{table}.tHead.rows[0].cells[{col}].click()")
        order = browser.js(f"Array.from({table}.tBodies[0].rows).map(r => r.dataset.label)")
        assert order == list(niqe.sort_values().index)
        browser.js(f"{table}.tHead.rows[0].cells[{col}].click()")
        assert browser.js(f"Array.from({table}.tBodies[0].rows).map(r => r.dataset.label)") == list(niqe.sort_values().index[::-1])
        assert browser.js(f"{table}.tHead.rows[0].cells[{col}].getAttribute('aria-sort')") == "descending"
        # per-image drill-down: PSNR of each image and method as scored under crop4
        browser.js("document.getElementById('images-LR-crop4').open = true")
        cells = browser.js("Array.from(document.querySelectorAll('#images-LR-crop4 table.images tbody tr'))"
                           ".map(r => [r.dataset.image, ...Array.from(r.cells).slice(1).map(c => Number(c.dataset.v))])")
        psnr = ok[(ok["protocol"] == "crop4") & (ok["metric"] == "psnry")].pivot(index="image", columns="method", values="value")
        assert [c[0] for c in cells] == sorted(psnr.index)
        for image, *values in cells:
            assert values == pytest.approx(list(psnr.loc[image, ["bicubic", "lanczos"]]))
        # the viewer: choose the two methods, move the slider, zoom with the wheel
        browser.js("{ const l = document.getElementById('v-left'); l.value = 'lanczos'; l.dispatchEvent(new Event('change'));"
                   "const r = document.getElementById('v-right'); r.value = 'bicubic'; r.dispatchEvent(new Event('change'));"
                   "const s = document.getElementById('v-slider'); s.value = 60; s.dispatchEvent(new Event('input')) }")
        state = browser.js("({a: document.getElementById('v-a').getAttribute('src'), b: document.getElementById('v-b').getAttribute('src'),"
                           " clip: document.getElementById('v-layer-b').style.clipPath,"
                           " divider: document.getElementById('v-divider').style.left,"
                           " loaded: [document.getElementById('v-a').naturalWidth, document.getElementById('v-b').naturalWidth]})")
        panels = json.loads(re.search(r'id="data">(.*?)</script>', (folder / "index.html").read_text(), re.S).group(1))["images"]["LR"]
        first = sorted(panels)[0]
        assert state["a"] == panels[first]["panels"]["lanczos"] and state["b"] == panels[first]["panels"]["bicubic"]
        assert state["clip"] == "inset(0px 0px 0px 60%)" and state["divider"] == "60%"
        browser.js("new Promise(done => { const imgs = [document.getElementById('v-a'), document.getElementById('v-b')];"
                   " const check = () => imgs.every(i => i.complete) ? done() : setTimeout(check, 20); check(); })")
        assert browser.js("[document.getElementById('v-a').naturalWidth, document.getElementById('v-b').naturalWidth]") == [96, 96]
        view = "({zoom: Number(document.getElementById('v-stage').dataset.zoom), pan: document.getElementById('v-stage').dataset.pan," \
               " a: document.getElementById('v-a').style.transform, b: document.getElementById('v-b').style.transform})"
        before = browser.js(view)
        px, py = browser.js("(() => { const st = document.getElementById('v-stage'); const r = st.getBoundingClientRect();"
                            " const x = Math.round(r.left + 0.6 * r.width), y = Math.round(r.top + r.height / 2);"
                            " st.dispatchEvent(new WheelEvent('wheel', {deltaY: -250, clientX: x, clientY: y, bubbles: true,"
                            " cancelable: true})); return [x - r.left, y - r.top]; })()")
        after = browser.js(view)
        factor = 2.718281828459045 ** 0.5  # exp(250 / 500): the page's wheel step
        assert after["zoom"] == pytest.approx(before["zoom"] * factor)
        # zoomed about the cursor (on the split): the image point under it stays there
        (x0, y0), (x1, y1) = ([float(v) for v in state.split(",")] for state in (before["pan"], after["pan"]))
        assert (x1, y1) == pytest.approx((px - (px - x0) * factor, py - (py - y0) * factor))
        # one transform on both layers: pan and zoom stay synchronised
        assert after["a"] == after["b"] != before["a"]
        scale = float(re.search(r"scale\(([\d.]+)\)", after["a"]).group(1))
        assert scale == pytest.approx(after["zoom"], rel=1e-4)
        shots = [browser.screenshot(tmp_path / "site.png")]
        browser.js("document.getElementById('viewer').scrollIntoView()")
        shots.append(browser.screenshot(tmp_path / "viewer.png"))
        assert all(shot.read_bytes().startswith(b"\x89PNG") for shot in shots)
        assert browser.console_errors() == []
        urls = browser.requested_urls()
        assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls
        assert not [e for e in browser.events if e["method"] == "Network.loadingFailed"]
    finally:
        browser.close()
