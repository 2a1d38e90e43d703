/* Models page: versions with status, gate verdict, per-class AP; promote and roll back. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  function apCell(perClass) {
    const entries = Object.entries(perClass || {});
    if (!entries.length) return EC.el("span", {class: "muted", text: "—"});
    return EC.el("div", {class: "ap"}, entries.flatMap(([name, ap]) => [
      EC.el("span", {text: name}),
      EC.el("div", {class: "bar"}, EC.el("span", {style: `width:${Math.round((ap || 0) * 100)}%`})),
      EC.el("span", {text: EC.fmt.num(ap, 2)}),
    ]));
  }

  async function promote(model) {
    const note = model.status === "rejected" ? ` The gate rejected it: ${model.reason || "no reason given"}.` : "";
    const ok = await EC.confirmDialog(`Promote ${model.version}?`,
      `The device will switch to ${model.version} between two frames.${note}`, `Promote ${model.version}`);
    if (!ok) return;
    try {
      await EC.postJSON(`/api/models/${encodeURIComponent(model.version)}/promote`);
      EC.toast(`${model.version} is now current`, "ok");
    } catch (err) {
      EC.report(err);
    }
    await load();
  }

  async function rollback() {
    const ok = await EC.confirmDialog("Roll back?", "The device will go back to the previous current version.", "Roll back");
    if (!ok) return;
    try {
      const result = await EC.postJSON("/api/models/rollback");
      EC.toast(`rolled back${result.current ? " to " + result.current : ""}`, "ok");
    } catch (err) {
      EC.report(err);
    }
    await load();
  }

  async function load() {
    const models = await EC.getJSON("/api/models");
    const rows = models.map((m) => EC.el("tr", {class: m.status === "current" ? "current" : "", "data-version": m.version},
      EC.el("td", {}, EC.el("strong", {text: m.version}), m.parent ? EC.el("div", {class: "small muted", text: "from " + m.parent}) : null),
      EC.el("td", {}, EC.el("span", {class: "badge " + (m.status || ""), text: m.status || "?"})),
      EC.el("td", {class: "reason small", text: m.reason || "—"}),
      EC.el("td", {}, apCell(m.per_class_ap)),
      EC.el("td", {class: "nowrap", text: EC.fmt.num(m.dece, 3)}),
      EC.el("td", {class: "nowrap", text: EC.fmt.bytes(m.size_bytes)}),
      EC.el("td", {class: "small", text: EC.fmt.time(m.created)}),
      EC.el("td", {}, m.status === "current" ? EC.el("span", {class: "small muted", text: "running"})
        : EC.el("button", {class: "promote", "data-version": m.version, text: "Promote", onclick: () => promote(m)}))));
    $("models").replaceChildren(...(rows.length ? rows
      : [EC.el("tr", {}, EC.el("td", {colspan: 8, class: "muted", text: "no model versions yet"}))]));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("rollback").addEventListener("click", rollback);
    EC.every(5000, load);
  });
})();
