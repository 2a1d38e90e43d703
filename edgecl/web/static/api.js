/* API page: the routes of /openapi.json, listed offline (Swagger UI would need a CDN). */
"use strict";

/** A route's description as text nodes, its ``literal`` or `literal` parts (the docstrings'
 * markup) as <code>: before, the backticks showed as they are. Text only: nothing is parsed as
 * HTML. */
function withCode(text) {
  return String(text).split(/(``[^`]+``|`[^`]+`)/).filter(Boolean).map((part) =>
    part.startsWith("`") ? EC.el("code", {text: part.replace(/^`+|`+$/g, "")})
                         : document.createTextNode(part));
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const spec = await EC.getJSON("/openapi.json");
    const rows = [];
    for (const [path, ops] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(ops)) {
        rows.push(EC.el("tr", {},
          EC.el("td", {}, EC.el("span", {class: "method " + method, text: method.toUpperCase()})),
          EC.el("td", {}, EC.el("code", {text: path})),
          EC.el("td", {class: "small"}, ...withCode(op.description || op.summary || ""))));
      }
    }
    document.getElementById("routes").replaceChildren(...rows);
  } catch (err) {
    EC.report(err);
  }
});
