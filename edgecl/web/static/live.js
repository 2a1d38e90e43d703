/* Live page: the latest frame a few times a second with its labels as text, and the runtime's
 * vital signs. The JPEG has the boxes only; the names and scores come as JSON with the frame's
 * sequence number and are laid over the picture as text (any script, right to left included),
 * and the JPEG fetched is the one of that very number, so labels never sit on another frame. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FRAME_PERIOD_MS = 250;
  let frameURL = null;
  let frameAt = 0;
  let shown = null;  // the labels of the frame on screen: {seq, width, height, boxes}

  function setBar(id, fraction) {
    const bar = $(id);
    const f = Math.max(0, Math.min(1, Number(fraction) || 0));
    bar.firstElementChild.style.width = (f * 100).toFixed(1) + "%";
    bar.classList.toggle("warn", f >= 0.8 && f < 0.95);
    bar.classList.toggle("bad", f >= 0.95);
  }

  /** Show the picture at `url` (a blob: URL); resolves once it is loaded (true) or broken. */
  function showImage(url) {
    return new Promise((resolve) => {
      const img = $("frame");
      img.onload = () => resolve(true);
      img.onerror = () => resolve(false);
      img.src = url;
    }).then((loaded) => {
      if (frameURL) URL.revokeObjectURL(frameURL);
      frameURL = url;
      frameAt = Date.now();
      $("frame").hidden = false;
      $("frame-empty").hidden = true;
      return loaded;
    });
  }

  /** One element per box: its name (dir=auto: any script reads in its own direction) and score,
   * as text only (never markup), in the colour its box has in the JPEG. */
  function buildLabels() {
    const labels = (shown ? shown.boxes : []).map((box) => {
      const name = String(box.name ?? "");
      const score = Number(box.score).toFixed(2);
      const color = EC.PALETTE[Math.abs(Math.trunc(Number(box.color_index) || 0)) % EC.PALETTE.length];
      const label = EC.el("div", {class: "frame-label", "data-full": `${name} ${score}`},
        EC.el("span", {class: "name", dir: "auto", text: name}),
        EC.el("span", {class: "score", text: score}));
      label.style.background = color;
      label.style.color = EC.inkOn(color);
      return label;
    });
    $("frame-labels").replaceChildren(...labels);
    $("frame-labels").dataset.seq = shown ? shown.seq : "";
    placeLabels();
  }

  /** Lay the labels over the picture at its shown size: above their box (inside it at the top
   * edge), never past the picture's edges, at most as wide as the box or half the picture (the
   * name cut with "…", the whole label in its tooltip); run again whenever the image resizes. */
  function placeLabels() {
    const img = $("frame");
    const layer = $("frame-labels");
    if (!shown || img.hidden || !img.naturalWidth || !img.clientWidth) {
      layer.hidden = true;
      return;
    }
    // object-fit: contain may letterbox the picture inside the <img>: the layer is its own box
    const k = Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight);
    const w = img.naturalWidth * k;
    const h = img.naturalHeight * k;
    Object.assign(layer.style, {
      left: `${img.offsetLeft + (img.clientWidth - w) / 2}px`,
      top: `${img.offsetTop + (img.clientHeight - h) / 2}px`,
      width: `${w}px`, height: `${h}px`,
      fontSize: `${Math.max(10, Math.min(15, w / 64)).toFixed(1)}px`,
    });
    layer.hidden = false;
    const sx = w / (shown.width || img.naturalWidth);
    const sy = h / (shown.height || img.naturalHeight);
    const nodes = [...layer.children];
    const boxes = nodes.map((node, i) => {  // write every width, then read every size once
      const [x1, y1, x2] = (shown.boxes[i].xyxy || [0, 0, 0, 0]).map(Number);
      const box = {x1: x1 * sx, y1: y1 * sy, x2: x2 * sx};
      node.style.maxWidth = `${Math.min(w, Math.max(box.x2 - box.x1, w / 2))}px`;
      return box;
    });
    const sizes = nodes.map((node) => ({
      width: node.offsetWidth, height: node.offsetHeight,
      cut: node.firstElementChild.scrollWidth > node.firstElementChild.clientWidth,
    }));
    nodes.forEach((node, i) => {
      const {x1, y1} = boxes[i];
      const {width, height, cut} = sizes[i];
      const left = Math.max(0, Math.min(x1, w - width));
      const top = y1 - height >= 0 ? y1 - height : Math.max(0, Math.min(y1, h - height));
      node.style.transform = `translate(${left.toFixed(1)}px, ${top.toFixed(1)}px)`;
      if (cut) node.title = node.dataset.full;
      else node.removeAttribute("title");
    });
  }

  /** A runtime that numbers no frames (or before the first one): the JPEG with its labels burnt in. */
  async function refreshPlainFrame() {
    const url = await EC.imageURL("/api/frame.jpg");
    shown = null;
    buildLabels();
    if (!url) {
      $("frame").hidden = true;
      $("frame-empty").hidden = false;
      return;
    }
    await showImage(url);
  }

  async function refreshFrame() {
    const labels = await EC.getJSON("/api/live/detections");
    if (labels.seq === null || labels.seq === undefined) {
      await refreshPlainFrame();
      return;
    }
    if (shown && shown.seq === labels.seq) return;  // the same frame: nothing to fetch
    let url;
    try {
      url = await EC.imageURL(`/api/frame.jpg?seq=${encodeURIComponent(labels.seq)}&labels=0`);
    } catch (err) {
      if (err instanceof EC.ApiError && err.status === 404) return;  // already replaced: next tick
      throw err;
    }
    if (!url) return;
    // the labels change in the same task as the picture's load: no paint shows them apart
    shown = (await showImage(url)) ? labels : null;
    buildLabels();
  }

  async function refreshStats() {
    const live = await EC.getJSON("/api/live");
    $("fps").firstChild.nodeValue = EC.fmt.num(live.fps);
    $("lat50").textContent = EC.fmt.num(live.latency_ms_p50);
    $("lat95").textContent = EC.fmt.num(live.latency_ms_p95);
    $("model").textContent = live.model_version || "—";
    const mem = live.memory || {};
    $("mem-samples").textContent = `${mem.samples ?? "—"} / ${mem.capacity ?? "—"} samples`;
    setBar("mem-samples-bar", mem.capacity ? mem.samples / mem.capacity : 0);
    $("mem-bytes").textContent = `${EC.fmt.bytes(mem.bytes)} / ${EC.fmt.bytes(mem.max_bytes)}`;
    setBar("mem-bytes-bar", mem.max_bytes ? mem.bytes / mem.max_bytes : 0);
    const learner = live.learner || {};
    const training = learner.state === "training";
    $("learner").replaceChildren(
      EC.el("span", {class: "badge " + (training ? "staged" : ""), text: training ? "training" : (learner.state || "idle").replace(/_/g, " ")}),
      training ? ` round ${learner.round ?? "?"} · ${EC.fmt.pct(learner.progress)}` : "");
    setBar("learner-bar", training ? learner.progress : 0);
    const alerts = live.alerts || [];
    const list = $("alerts");
    list.classList.toggle("none", alerts.length === 0);
    list.replaceChildren(...(alerts.length ? alerts.map((a) => EC.el("li", {dir: "auto", text: a}))
                                           : [EC.el("li", {text: "none"})]));
  }

  function tickAge() {
    $("frame-age").textContent = frameAt ? `${((Date.now() - frameAt) / 1000).toFixed(1)} s ago` : "—";
  }

  document.addEventListener("DOMContentLoaded", () => {
    new ResizeObserver(placeLabels).observe($("frame"));
    EC.every(FRAME_PERIOD_MS, refreshFrame);
    EC.every(1000, refreshStats);
    setInterval(tickAge, 500);
  });
})();
