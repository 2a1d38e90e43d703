/* API page: the routes of /openapi.json, listed offline (Swagger UI would need a CDN). */
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const spec = await EC.getJSON("/openapi.json");
    const rows = [];
    for (const [path, ops] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(ops)) {
        rows.push(EC.el("tr", {},
          EC.el("td", {}, EC.el("span", {class: "method " + method, text: method.toUpperCase()})),
          EC.el("td", {}, EC.el("code", {text: path})),
          EC.el("td", {class: "small", text: op.description || op.summary || ""})));
      }
    }
    document.getElementById("routes").replaceChildren(...rows);
  } catch (err) {
    EC.report(err);
  }
});
