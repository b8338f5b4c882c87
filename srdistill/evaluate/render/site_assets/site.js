"use strict";
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const el = (tag, attrs, ...kids) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const kid of kids) node.append(kid);
    return node;
  };
  const fmt = (v) => (v === undefined || v === null ? "–" : (Math.abs(v) >= 100 ? v.toFixed(2) : v.toFixed(4)));

  // Sorting: every tbody of the table by one column; the first click puts the best first (the metric's direction).
  function sortTable(table, col) {
    const th = table.tHead.rows[0].cells[col];
    const lower = th.dataset.lower === "1";
    const current = th.getAttribute("aria-sort");
    const ascending = current ? current === "descending" : (col === 0 ? true : lower);
    for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    for (const body of table.tBodies) {
      const rows = Array.from(body.rows);
      const key = (row) => {
        const cell = row.cells[col];
        return col === 0 ? cell.textContent : (cell.dataset.v === undefined ? null : Number(cell.dataset.v));
      };
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        const c = typeof x === "string" ? x.localeCompare(y) : x - y;
        return ascending ? c : -c;
      });
      for (const row of rows) body.append(row);
    }
  }

  function leaderboardTable(section) {
    const head = el("tr", {}, el("th", {}, "Method"));
    for (const m of section.metrics) {
      head.append(el("th", { "data-metric": m.name, "data-lower": m.lower ? "1" : "0" }, m.label + (m.lower ? "↓" : "↑")));
    }
    const table = el("table", { class: "board", id: "board-" + section.id }, el("thead", {}, head));
    for (const kind of ["measured", "reported", "delta"]) {
      const rows = section.rows.filter((r) => r.kind === kind);
      if (!rows.length) continue;
      const body = el("tbody", { class: kind });
      for (const row of rows) {
        const tr = el("tr", { "data-label": row.label }, el("td", {}, row.label));
        for (const m of section.metrics) {
          const cell = row.cells[m.name];
          const td = el("td", cell && cell.mark ? { class: cell.mark } : {}, cell ? cell.t : "–");
          if (cell && cell.v !== null) td.dataset.v = String(cell.v);
          tr.append(td);
        }
        body.append(tr);
      }
      table.append(body);
    }
    Array.from(head.cells).forEach((th, col) => th.addEventListener("click", () => sortTable(table, col)));
    return table;
  }

  function perImage(section) {
    const metrics = section.metrics.filter((m) => section.perImage[m.name]);
    const box = el("details", { class: "per-image", id: "images-" + section.id }, el("summary", {}, "Per image"));
    if (!metrics.length) return box;
    const pick = el("select", { class: "pi-metric" });
    for (const m of metrics) pick.append(el("option", { value: m.name }, m.label));
    const holder = el("div");
    const draw = () => {
      const values = section.perImage[pick.value];
      const methods = Object.keys(values).sort();
      const lower = metrics.find((m) => m.name === pick.value).lower;
      const head = el("tr", {}, el("th", {}, "Image"));
      for (const meth of methods) head.append(el("th", { "data-lower": lower ? "1" : "0" }, meth));
      const table = el("table", { class: "images" }, el("thead", {}, head));
      const body = el("tbody");
      for (const image of section.images) {
        const first = el("td", {}, image);
        const set = viewerSetFor(section.dataset, image);
        if (set) {
          const link = el("a", { href: "#viewer", class: "view" }, "compare");
          link.addEventListener("click", () => viewer.show(set, image));
          first.append(link);
        }
        const tr = el("tr", { "data-image": image }, first);
        for (const meth of methods) {
          const v = values[meth][image];
          const td = el("td", {}, fmt(v));
          if (v !== undefined) td.dataset.v = String(v);
          tr.append(td);
        }
        body.append(tr);
      }
      table.append(body);
      Array.from(head.cells).forEach((th, col) => th.addEventListener("click", () => sortTable(table, col)));
      holder.replaceChildren(table);
    };
    pick.addEventListener("change", draw);
    box.append(el("label", {}, "Metric ", pick), holder);
    draw();
    return box;
  }

  function viewerSetFor(dataset, image) {
    return Object.keys(data.images).find((s) => s.split("@")[0] === dataset && data.images[s][image]) || null;
  }

  // The viewer: both layers get the same transform (pan and zoom stay in step); the right one is clipped at the split.
  const viewer = (function () {
    const $ = (id) => document.getElementById(id);
    const stage = $("v-stage"), imgA = $("v-a"), imgB = $("v-b"), layerB = $("v-layer-b");
    const view = { x: 0, y: 0, zoom: 1 };
    let item = null;
    const apply = () => {
      const t = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
      imgA.style.transform = t;
      imgB.style.transform = t;
      stage.dataset.zoom = String(view.zoom);
      stage.dataset.pan = `${view.x},${view.y}`;
    };
    const split = () => {
      const s = Number($("v-slider").value);
      layerB.style.clipPath = `inset(0 0 0 ${s}%)`;
      $("v-divider").style.left = `${s}%`;
    };
    const fit = () => {
      if (!item) return;
      view.zoom = Math.min(stage.clientWidth / item.w, stage.clientHeight / item.h);
      view.x = (stage.clientWidth - item.w * view.zoom) / 2;
      view.y = (stage.clientHeight - item.h * view.zoom) / 2;
      apply();
    };
    const panels = () => {
      const a = $("v-left").value, b = $("v-right").value;
      for (const [img, name, tag] of [[imgA, a, "v-tag-a"], [imgB, b, "v-tag-b"]]) {
        img.src = item.panels[name];
        img.width = item.w;
        img.height = item.h;
        $(tag).textContent = name;
      }
    };
    const options = (select, names, chosen) => {
      select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (chosen !== undefined && names.includes(chosen)) select.value = chosen;
    };
    const show = (set, image) => {
      $("v-set").value = set;
      options($("v-image"), Object.keys(data.images[set]), image);
      item = data.images[set][$("v-image").value];
      const names = Object.keys(item.panels);
      const methods = names.filter((n) => n !== "HR" && n !== "LR");
      options($("v-left"), names, names.includes($("v-left").value) ? $("v-left").value : (methods[0] || names[0]));
      options($("v-right"), names, names.includes($("v-right").value) ? $("v-right").value : "HR");
      panels();
      fit();
    };
    const init = () => {
      const sets = Object.keys(data.images);
      if (!sets.length) {
        $("v-empty").hidden = false;
        stage.hidden = true;
        return;
      }
      options($("v-set"), sets);
      $("v-set").addEventListener("change", () => show($("v-set").value));
      $("v-image").addEventListener("change", () => show($("v-set").value, $("v-image").value));
      $("v-left").addEventListener("change", panels);
      $("v-right").addEventListener("change", panels);
      $("v-slider").addEventListener("input", split);
      $("v-reset").addEventListener("click", fit);
      let drag = null;
      stage.addEventListener("pointerdown", (e) => { drag = { x: e.clientX - view.x, y: e.clientY - view.y }; });
      window.addEventListener("pointerup", () => { drag = null; });
      stage.addEventListener("pointermove", (e) => {
        if (!drag) return;
        view.x = e.clientX - drag.x;
        view.y = e.clientY - drag.y;
        apply();
      });
      stage.addEventListener("wheel", (e) => {
        e.preventDefault();
        const r = stage.getBoundingClientRect();
        const px = e.clientX - r.left, py = e.clientY - r.top;
        const factor = Math.exp(-e.deltaY / 500);
        const zoom = Math.min(64, Math.max(0.05, view.zoom * factor));
        view.x = px - (px - view.x) * (zoom / view.zoom);
        view.y = py - (py - view.y) * (zoom / view.zoom);
        view.zoom = zoom;
        apply();
      }, { passive: false });
      split();
      show(sets[0]);
    };
    return { init, show };
  })();

  const toc = document.getElementById("toc");
  const holder = document.getElementById("sections");
  for (const section of data.sections) {
    const title = `${section.dataset} — protocol ${section.protocol}`;
    toc.append(el("a", { href: "#" + section.id }, title));
    const meta = section.title + (section.hash ? ` (hash ${section.hash})` : "");
    holder.append(el("section", { id: section.id, class: "board-section" }, el("h2", {}, title),
      el("p", { class: "meta" }, meta), leaderboardTable(section), perImage(section)));
  }
  const plots = document.getElementById("plot-list");
  for (const path of data.plots) plots.append(el("img", { src: path, alt: path }));
  if (!data.plots.length) plots.append("No plots.");
  viewer.init();
})();
