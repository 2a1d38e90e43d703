/* Forgetting page: accuracy matrix heatmap, per-class AP over rounds, reliability diagram (SVG). */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const S = EC.svg;

  const COLUMN_CHARS = 18;  // longer class or task names are cut ("…"); the full name is the tooltip
  const ROW_CHARS = 10;
  const TICK_CHARS = 10;
  const MAX_UNMEASURED = 10;  // class names listed as not measured yet; the rest are counted

  function empty(text) {
    return EC.el("p", {class: "muted small", text});
  }

  /** An SVG text cut to `max` characters, with the whole text as its tooltip. */
  function label(attrs, text, max) {
    const shown = EC.clip(text, max);
    const tip = shown === String(text) ? null : S("title", {text});
    return S("text", Object.assign({}, attrs, {text: shown}), tip);
  }

  function heatmap(matrix) {
    const rows = matrix.rows || [];
    const cols = matrix.columns || [];
    if (!rows.length || !cols.length) return empty("No evaluations yet: the matrix fills after the first round.");
    const cell = Math.max(34, Math.min(70, Math.floor(860 / cols.length)));
    const left = 90;
    const longest = Math.max(...cols.map((c) => Math.min([...String(c)].length, COLUMN_CHARS)));
    const top = Math.max(64, Math.round(16 + longest * 4.2));  // room for the slanted names
    const width = left + cols.length * cell + 90;
    const height = top + rows.length * 30 + 10;
    const chart = S("svg", {class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
                           "aria-label": "accuracy matrix", style: `max-width:${width}px`});
    cols.forEach((name, j) => {
      const x = left + j * cell + cell / 2;
      chart.append(label({x, y: top - 8, "text-anchor": "start", transform: `rotate(-35 ${x} ${top - 8})`},
                         name, COLUMN_CHARS));
    });
    rows.forEach((name, i) => {
      const y = top + i * 30;
      chart.append(label({x: left - 8, y: y + 19, "text-anchor": "end"}, name, ROW_CHARS));
      cols.forEach((_, j) => {
        const v = (matrix.values[i] || [])[j];
        const x = left + j * cell;
        const known = v !== null && v !== undefined;
        chart.append(S("rect", {x: x + 1, y: y + 1, width: cell - 2, height: 28, rx: 3,
                                fill: known ? EC.heat(v) : "#e9edf1"},
                       S("title", {text: `${name} · ${cols[j]}: ${known ? v.toFixed(3) : "not known"}`})));
        chart.append(S("text", {x: x + cell / 2, y: y + 19, "text-anchor": "middle",
                                fill: known && v < 0.55 ? "#fff" : "#1d2733",
                                style: `fill:${known && v < 0.55 ? "#fff" : "#1d2733"}`,
                                text: known ? v.toFixed(2) : "—"}));
      });
    });
    const lx = left + cols.length * cell + 24;
    for (let k = 0; k < 20; k += 1) {
      chart.append(S("rect", {x: lx, y: top + (19 - k) * ((rows.length * 30) / 20), width: 14,
                              height: (rows.length * 30) / 20 + 0.5, fill: EC.heat(k / 19)}));
    }
    chart.append(S("text", {x: lx + 20, y: top + 10, text: "1.0"}));
    chart.append(S("text", {x: lx + 20, y: top + rows.length * 30, text: "0.0"}));
    return chart;
  }

  function axes(chart, box, xTicks, yLabel, xLabel) {
    const {l, t, w, h} = box;
    for (let k = 0; k <= 5; k += 1) {
      const y = t + h - (k / 5) * h;
      chart.append(S("line", {class: "grid", x1: l, x2: l + w, y1: y, y2: y}));
      chart.append(S("text", {x: l - 6, y: y + 4, "text-anchor": "end", text: (k / 5).toFixed(1)}));
    }
    chart.append(S("line", {class: "axis", x1: l, x2: l, y1: t, y2: t + h}));
    chart.append(S("line", {class: "axis", x1: l, x2: l + w, y1: t + h, y2: t + h}));
    for (const [x, text] of xTicks) {
      chart.append(label({x, y: t + h + 18, "text-anchor": "middle"}, text, TICK_CHARS));
    }
    chart.append(S("text", {x: 14, y: t + h / 2, transform: `rotate(-90 14 ${t + h / 2})`, "text-anchor": "middle", text: yLabel}));
    if (xLabel) chart.append(S("text", {x: l + w / 2, y: t + h + 38, "text-anchor": "middle", text: xLabel}));
  }

  function lines(perClass, rounds) {
    const names = Object.keys(perClass || {});
    const n = Math.max(rounds.length, ...names.map((c) => perClass[c].length), 0);
    if (!names.length || !n) return [empty("No per-class AP yet."), []];
    const box = {l: 48, t: 12, w: 480, h: 230};
    const chart = S("svg", {class: "chart", viewBox: "0 0 550 300", role: "img", "aria-label": "per-class AP over rounds"});
    const xAt = (i) => box.l + (n === 1 ? box.w / 2 : (i / (n - 1)) * box.w);
    const yAt = (v) => box.t + box.h - v * box.h;
    const every = Math.max(1, Math.ceil(n / 8));  // at most 8 round labels, always the last
    const ticks = Array.from({length: n}, (_, i) => i).filter((i) => i === n - 1 || (i % every === 0 && n - 1 - i >= every / 2));
    axes(chart, box, ticks.map((i) => [xAt(i), (rounds[i] || String(i + 1)).split(" ")[0]]), "AP", "round");
    const legend = [];
    names.forEach((name, k) => {
      const color = EC.PALETTE[k % EC.PALETTE.length];
      let d = "";
      let pen = false;
      perClass[name].forEach((v, i) => {
        if (v === null || v === undefined) { pen = false; return; }
        d += `${pen ? "L" : "M"}${xAt(i).toFixed(1)},${yAt(v).toFixed(1)} `;
        pen = true;
        chart.append(S("circle", {cx: xAt(i), cy: yAt(v), r: 3.5, fill: color},
                       S("title", {text: `${name} after ${rounds[i] || i + 1}: ${v.toFixed(3)}`})));
      });
      if (d) chart.append(S("path", {d, fill: "none", stroke: color, "stroke-width": 2.2}));
      legend.push(EC.el("span", {style: `--c:${color}`, dir: "auto", text: name}));
    });
    return [chart, legend];
  }

  /** The diagram's bins with detections (a bin without any has no precision to draw); a
   *  version that detected nothing on its held-out images gets the reason instead. */
  function reliability(rel) {
    const all = (rel && rel.bins) || [];
    if (!all.length) return empty("No reliability data for the current version yet.");
    const bins = all.filter((b) => (b.count || 0) > 0 && b.precision !== null && b.precision !== undefined);
    if (!bins.length) {
      const minConf = rel.protocol && rel.protocol.min_conf;
      const floor = typeof minConf === "number" ? ` with confidence ≥ ${minConf.toFixed(2)}` : "";
      return empty(`Not measured: the current version made no detection${floor} on its held-out images.`);
    }
    const box = {l: 48, t: 12, w: 300, h: 230};
    const chart = S("svg", {class: "chart", viewBox: "0 0 380 300", role: "img", "aria-label": "reliability diagram",
                            style: "max-width:460px"});
    axes(chart, box, [0, 0.5, 1].map((v) => [box.l + v * box.w, v.toFixed(1)]), "precision", "confidence");
    const maxCount = Math.max(...bins.map((b) => b.count || 0), 1);
    for (const b of bins) {
      const x = box.l + b.lo * box.w;
      const w = (b.hi - b.lo) * box.w;
      const p = b.precision ?? 0;
      const c = b.confidence ?? (b.lo + b.hi) / 2;
      const y = box.t + box.h - p * box.h;
      const yc = box.t + box.h - c * box.h;
      chart.append(S("rect", {x: x + 1, y, width: w - 2, height: box.t + box.h - y, fill: "#5c8fd6",
                              "fill-opacity": 0.35 + 0.55 * ((b.count || 0) / maxCount)},
                     S("title", {text: `${b.lo.toFixed(1)}–${b.hi.toFixed(1)}: precision ${p.toFixed(3)}, mean confidence ${c.toFixed(3)}, ${b.count} detections`})));
      chart.append(S("rect", {x: x + 1, y: Math.min(y, yc), width: w - 2, height: Math.abs(yc - y),
                              fill: "#d62728", "fill-opacity": 0.25}));
    }
    chart.append(S("line", {x1: box.l, y1: box.t + box.h, x2: box.l + box.w, y2: box.t, stroke: "#444",
                            "stroke-dasharray": "5 4", "stroke-width": 1.3}));
    const legend = EC.el("div", {class: "legend"},
      EC.el("span", {style: "--c:#5c8fd6", text: "precision (darker: more detections)"}),
      EC.el("span", {style: "--c:#d62728", text: "gap to the diagonal (miscalibration)"}),
      EC.el("span", {style: "--c:#444", text: "diagonal: perfect calibration"}));
    const frame = EC.el("div");
    frame.append(chart, legend);
    return frame;
  }

  /** ACC, BWT and mean forgetting of the latest promoted version, as 'edgecl monitor summary'
   * gives them (the learner's log line on a promotion quotes the same ACC). */
  function summaryLine(summary) {
    if (summary.acc == null && summary.bwt == null) return "";
    const over = summary.kind === "tasks" ? "the tasks seen" : "every class with held-out samples";
    const parts = [`ACC ${EC.fmt.num(summary.acc, 3)}`, `BWT ${EC.fmt.num(summary.bwt, 3)}`,
                   `mean forgetting ${EC.fmt.num(summary.mean_forgetting, 3)}`];
    const at = summary.model_version ? `${summary.model_version}: ` : "";
    return `${at}${parts.join(" · ")} (over ${over})`;
  }

  async function load() {
    const {changed, value: data} = await EC.pollJSON("/api/forgetting");
    if (!changed) return;  // 304: the charts already show it
    const matrix = data.matrix || {rows: [], columns: [], values: []};
    $("heatmap").replaceChildren(heatmap(matrix));
    $("summary").textContent = summaryLine(data.summary || {});
    const shown = (matrix.rows || []).length;
    const cols = (matrix.columns || []).length;
    const what = matrix.kind === "tasks" ? "tasks" : "classes";
    const notes = [];
    if (matrix.rows_total > shown) notes.push(`the newest ${shown} of ${matrix.rows_total} rounds`);
    if (matrix.columns_total > cols) notes.push(`the ${cols} most forgotten of ${matrix.columns_total} ${what}`);
    const unmeasured = matrix.kind === "tasks" ? [] : (data.unmeasured || []);
    const listed = unmeasured.slice(0, MAX_UNMEASURED).map(EC.isolate).join(", ") +
      (unmeasured.length > MAX_UNMEASURED ? ` and ${unmeasured.length - MAX_UNMEASURED} more` : "");
    $("heatmap-window").textContent = [
      notes.length ? `Shown: ${notes.join("; ")}; edgecl monitor report writes them all to CSV.` : "",
      unmeasured.length ? `Not measured yet: ${listed} (a round measures a class once it has ` +
        "learnt it from training frames and a held-out frame shows it: a share of the labelled " +
        "frames is kept aside to measure each class; label a few more)." : "",
    ].filter(Boolean).join(" ");
    const [chart, legend] = lines(data.per_class_ap, matrix.rows || []);
    const curves = Object.keys(data.per_class_ap || {}).length;
    if (matrix.per_class_total > curves) {
      legend.push(EC.el("span", {class: "note muted", text: `the ${curves} most forgotten of ${matrix.per_class_total} classes`}));
    }
    $("lines").replaceChildren(chart);
    $("lines-legend").replaceChildren(...legend);
    $("reliability").replaceChildren(reliability(data.reliability));
    const protocol = (data.reliability && data.reliability.protocol) || {};
    $("protocol").replaceChildren(...Object.entries(protocol).flatMap(([k, v]) => [
      EC.el("dt", {text: k === "dece" ? "D-ECE" : k}), EC.el("dd", {text: typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v)})]));
  }

  document.addEventListener("DOMContentLoaded", () => EC.every(15000, load));
})();
