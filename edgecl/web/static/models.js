/* Models page: versions with status, serving engine, gate verdict, per-class AP; promote and roll back. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let currentVersion = "";  // as the last load showed it: a rollback is asked from it
  let rollbackTarget = "";  // the version it goes back to, as the device computes it

  const AP_ROWS = 12;  // a version of 300 classes made the page 5,000 px tall: the weakest shown

  function apCell(perClass) {
    let entries = Object.entries(perClass || {});
    if (!entries.length) return EC.el("span", {class: "muted", text: "—"});
    const total = entries.length;
    if (total > AP_ROWS) {
      entries = entries.map((e, i) => [e, i]).sort((a, b) => (a[0][1] ?? 0) - (b[0][1] ?? 0) || a[1] - b[1])
        .slice(0, AP_ROWS).sort((a, b) => a[1] - b[1]).map(([e]) => e);
    }
    const cell = EC.el("div", {class: "ap"}, entries.flatMap(([name, ap]) => [
      EC.el("span", {class: "name", dir: "auto", title: name, text: name}),
      EC.el("div", {class: "bar"}, EC.el("span", {style: `width:${Math.round((ap || 0) * 100)}%`})),
      EC.el("span", {text: EC.fmt.num(ap, 2)}),
    ]));
    if (total === entries.length) return cell;
    return EC.el("div", {}, cell, EC.el("div", {class: "small muted",
      text: `the ${AP_ROWS} lowest of ${total} classes (edgecl models list --json has them all)`}));
  }

  /** Promote, or why not: the current version runs; a pruned one has no files left to serve,
   *  and the device never serves one the gate rejected (it refuses both: before, the button was
   *  offered and the click refused). */
  function actionCell(m) {
    if (m.status === "current") return EC.el("span", {class: "small muted", text: "running"});
    if (m.status === "pruned") return EC.el("span", {class: "small muted", text: "files deleted"});
    if (m.status === "rejected") {
      return EC.el("span", {class: "small muted", text: "not served (rejected)"});
    }
    return EC.el("button", {class: "promote", "data-version": m.version, text: "Promote",
                            onclick: () => promote(m)});
  }

  /** Which engine serves the version; the INT8 gate's reason as the tooltip (text only). */
  function engineCell(m) {
    const gate = m.int8 || null;
    const tip = [];
    if (gate) tip.push(`INT8 gate: ${gate.reason || (gate.accepted ? "accepted" : "not used")}`);
    else if (m.engine_label) tip.push("INT8 gate: no record (exported before the gate)");
    else tip.push("no serving engine (not exported)");
    if (m.engine_file) tip.push(`serves ${m.engine_file}`);
    return EC.el("td", {class: "engine", title: tip.join("\n")},
      EC.el("span", {class: m.engine_label ? "engine-name" : "muted", text: m.engine_label || "—"}),
      gate && gate.refused ? EC.el("div", {class: "small muted int8-note", text: "INT8 refused"}) : null);
  }

  /** " It does not detect Drone, ..., which the version serving now detects ...", or "": the
   *  classes serving this version would lose (before, a promotion or rollback stopped
   *  detecting a class a person had just taught without a word). Names stay text: the dialog
   *  shows no markup. */
  function lacks(model) {
    const names = model.not_detected || [];
    if (!names.length) return "";
    const shown = names.slice(0, 6).map(EC.isolate).join(", ") + (names.length > 6 ? `, and ${names.length - 6} more` : "");
    return ` It does not detect ${shown}, which the version serving now detects: a round ` +
      `learns ${names.length === 1 ? "it" : "them"} on top of it again from the samples kept.`;
  }

  async function promote(model) {
    const ok = await EC.confirmDialog(`Promote ${model.version}?`,
      `The device will switch to ${model.version} between two frames.${lacks(model)}`,
      `Promote ${model.version}`);
    if (!ok) return;
    try {
      // from the version this page shows as current: a second click, or a retry, is refused
      const from = currentVersion ? "?from=" + encodeURIComponent(currentVersion) : "";
      await EC.postJSON(`/api/models/${encodeURIComponent(model.version)}/promote` + from);
      EC.toast(`${model.version} is now current`, "ok");
    } catch (err) {
      notDone(`${model.version} not promoted`, err);
    }
    await load();
  }

  /** An action the device did not take: said in a toast, also when it cannot be reached (the
   * banner alone said nothing of the click; before, a rollback clicked offline went unsaid). */
  function notDone(what, err) {
    if (err instanceof EC.ApiError && err.status === 0) EC.toast(`${what}: ${err.message}`, "error");
    else EC.report(err);
  }

  async function rollback() {
    const to = rollbackTarget ? ` to ${rollbackTarget}` : " to the previous current version";
    const target = shown.find((m) => m.version === rollbackTarget);
    const ok = await EC.confirmDialog("Roll back?",
      `The device will go back${to}.${target ? lacks(target) : ""}`, "Roll back");
    if (!ok) return;
    try {
      // from the version this page shows as current: a second click, or a retry, is refused
      const from = currentVersion ? "?from=" + encodeURIComponent(currentVersion) : "";
      const result = await EC.postJSON("/api/models/rollback" + from);
      EC.toast(`rolled back${result.current ? " to " + result.current : ""}`, "ok");
    } catch (err) {
      notDone("not rolled back", err);
    }
    await load();
  }

  function row(m) {
    return EC.el("tr", {class: m.status === "current" ? "current" : "", "data-version": m.version},
      EC.el("td", {class: "version"}, EC.el("strong", {text: m.version}),
        m.parent ? EC.el("div", {class: "small muted", text: "from " + m.parent}) : null,
        /^fleet round /.test(m.origin || "") ? EC.el("div", {class: "small muted", text: m.origin}) : null),
      EC.el("td", {}, EC.el("span", {class: "badge " + (m.status || ""), text: m.status || "?"})),
      engineCell(m),
      EC.el("td", {class: "reason small", text: m.reason || "—"}),
      EC.el("td", {}, apCell(m.per_class_ap),
        m.ap_note ? EC.el("div", {class: "small muted ap-note", text: m.ap_note}) : null),
      EC.el("td", {class: "nowrap", text: EC.fmt.num(m.dece, 3)}),
      EC.el("td", {class: "nowrap", text: EC.fmt.bytes(m.size_bytes)}),
      EC.el("td", {class: "small", text: EC.fmt.time(m.created)}),
      EC.el("td", {}, actionCell(m)));
  }

  let shown = [];  // the versions as the device last sent them
  let showPruned = false;  // a device weeks old keeps up to 100 pruned versions: folded away

  /** The fold row under the table: how many pruned versions it hides, and the button. */
  function prunedFold(count, columns) {
    const words = showPruned ? "Hide pruned versions"
      : `Show ${count} pruned version${count === 1 ? "" : "s"} (files deleted, history kept)`;
    return EC.el("tr", {class: "fold"}, EC.el("td", {colspan: columns},
      EC.el("button", {id: "pruned-toggle", text: words,
                       onclick: () => { showPruned = !showPruned; render(); }})));
  }

  function render() {
    const models = shown;
    const pruned = models.filter((m) => m.status === "pruned").length;
    const rows = models.filter((m) => showPruned || m.status !== "pruned").map(row);
    const heads = [...document.querySelectorAll("table.models thead th")].map((th) => th.textContent);
    for (const tr of rows) {  // a phone shows each row as a card, each cell under its column's name
      [...tr.children].forEach((td, i) => { if (heads[i]) td.dataset.label = heads[i]; });
    }
    // the version a rollback goes back to, as the device computes it: with none (a version
    // rolled back from is retired too, but newer), the button would only be refused (409)
    rollbackTarget = (models.find((m) => m.rollback_target) || {}).version || "";
    const earlier = Boolean(rollbackTarget);
    currentVersion = (models.find((m) => m.status === "current") || {}).version || "";
    $("rollback").disabled = !earlier;
    $("rollback").title = earlier ? "" : "No version served before this one: nothing to roll back to";
    const columns = heads.length || 9;
    if (!models.length) {
      rows.push(EC.el("tr", {}, EC.el("td", {colspan: columns, class: "muted", text: "no trained versions yet: the device serves the model it was started with until a learning round's version is promoted"})));
    }
    if (pruned) rows.push(prunedFold(pruned, columns));
    $("models").replaceChildren(...rows);
  }

  /** Read the versions and draw them; an unchanged answer (304: nothing sent) leaves the table
   *  as it is, so a row being read or a button about to be clicked does not move. */
  async function load() {
    const {changed, value} = await EC.pollJSON("/api/models");
    if (!changed) return;
    shown = value;
    render();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("rollback").addEventListener("click", rollback);
    EC.every(5000, load);
  });
})();
