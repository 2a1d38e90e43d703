/* Live page: the latest annotated frame a few times a second, and the runtime's vital signs. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FRAME_PERIOD_MS = 250;
  let frameURL = null;
  let frameAt = 0;

  function setBar(id, fraction) {
    const bar = $(id);
    const f = Math.max(0, Math.min(1, Number(fraction) || 0));
    bar.firstElementChild.style.width = (f * 100).toFixed(1) + "%";
    bar.classList.toggle("warn", f >= 0.8 && f < 0.95);
    bar.classList.toggle("bad", f >= 0.95);
  }

  async function refreshFrame() {
    const url = await EC.imageURL("/api/frame.jpg");
    if (!url) {
      $("frame").hidden = true;
      $("frame-empty").hidden = false;
      return;
    }
    await new Promise((resolve) => {
      const img = $("frame");
      img.onload = img.onerror = resolve;
      img.src = url;
    });
    if (frameURL) URL.revokeObjectURL(frameURL);
    frameURL = url;
    frameAt = Date.now();
    $("frame").hidden = false;
    $("frame-empty").hidden = true;
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
      EC.el("span", {class: "badge " + (training ? "staged" : ""), text: training ? "training" : (learner.state || "idle")}),
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
    EC.every(FRAME_PERIOD_MS, refreshFrame);
    EC.every(1000, refreshStats);
    setInterval(tickAge, 500);
  });
})();
