/* edgecl field console: shared helpers (token, API calls, dialogs, formatting). No dependencies. */
"use strict";

const EC = (() => {
  const TOKEN_KEY = "edgecl.token";
  let tokenRequired = null;
  let tokenAsk = null;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) if (child) node.append(child);
    return node;
  }

  function dialogShell(id) {
    let dialog = document.getElementById(id);
    if (!dialog) {
      dialog = el("dialog", {id, class: "dialog"});
      document.body.append(dialog);
    }
    dialog.replaceChildren();
    return dialog;
  }

  /** Ask for the console token once; every caller waiting at that moment shares the answer. */
  function askToken(message) {
    if (tokenAsk) return tokenAsk;
    tokenAsk = new Promise((resolve) => {
      const dialog = dialogShell("token-dialog");
      const input = el("input", {type: "password", id: "token-input", autocomplete: "off",
                                 placeholder: "token", required: true});
      const form = el("form", {method: "dialog"},
        el("h2", {text: "Console token"}),
        el("p", {text: message}),
        input,
        el("div", {class: "actions"}, el("button", {class: "primary", id: "token-ok", text: "Open"})));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
        dialog.close();
        tokenAsk = null;
        resolve(token);
      });
      dialog.addEventListener("cancel", (event) => event.preventDefault());
      dialog.append(form);
      dialog.showModal();
      input.focus();
    });
    return tokenAsk;
  }

  async function needsToken() {
    if (tokenRequired === null) {
      const response = await fetch("/api/auth", {cache: "no-store"});
      tokenRequired = response.ok ? Boolean((await response.json()).token_required) : false;
    }
    return tokenRequired;
  }

  async function authHeaders() {
    if (!(await needsToken())) return {};
    const token = sessionStorage.getItem(TOKEN_KEY) ||
      await askToken("This device asks for its console token (kept for this browser session).");
    return {Authorization: "Bearer " + token};
  }

  // ---- connection state: a banner in words while the device does not answer ---------------
  const REQUEST_TIMEOUT_MS = 15000;   // a request unanswered this long counts as no connection
  let offlineSince = 0;

  function offlineBanner() {
    let banner = document.getElementById("offline");
    if (!banner) {
      banner = el("div", {id: "offline", role: "alert", hidden: true});
      const nav = document.querySelector("nav.top");
      if (nav) nav.after(banner);
      else document.body.prepend(banner);
    }
    return banner;
  }

  function markOffline(why) {
    if (!offlineSince) offlineSince = Date.now();
    const banner = offlineBanner();
    banner.textContent = `No connection to the device at ${location.host} (${why}): the runtime ` +
      "may be stopped or restarting, or the network is down. This page retries by itself; " +
      "nothing is saved until the device answers.";
    banner.hidden = false;
    document.body.classList.add("offline");  // values shown are the last ones read: greyed
  }

  function markOnline() {
    if (!offlineSince) return;
    offlineSince = 0;
    offlineBanner().hidden = true;
    document.body.classList.remove("offline");
    toast("Connected to the device again", "ok");
  }

  /** fetch() that turns a refused connection or a timeout into ApiError(0, words). */
  async function reach(path, opts) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, Object.assign({}, opts, {signal: abort.signal}));
      markOnline();
      return response;
    } catch (err) {
      const why = abort.signal.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
                                       : "connection refused or lost";
      markOffline(why);
      throw new ApiError(0, `not connected to the device (${why})`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** fetch() with the token; throws ApiError with the server's one-line message on 4xx/5xx
   * and ApiError(0, ...) when the device cannot be reached (the page's banner says so). */
  async function api(path, options) {
    const opts = options || {};
    for (;;) {
      let headers;
      try {
        headers = Object.assign({}, opts.headers || {}, await authHeaders());
      } catch (err) {
        if (err instanceof ApiError) throw err;
        markOffline("connection refused or lost");
        throw new ApiError(0, "not connected to the device (connection refused or lost)");
      }
      const response = await reach(path, Object.assign({}, opts, {headers, cache: "no-store"}));
      if (response.status === 401 && tokenRequired) {
        sessionStorage.removeItem(TOKEN_KEY);
        await askToken("That token was refused; enter the device's console token.");
        continue;
      }
      if (response.status === 304) return response;  // pollJSON's "unchanged"
      if (!response.ok) {
        let message = response.statusText || "request failed";
        try {
          message = (await response.json()).error || message;
        } catch (_) { /* not JSON: keep the status text */ }
        throw new ApiError(response.status, message);
      }
      return response;
    }
  }

  const getJSON = async (path) => (await api(path)).json();

  const polled = new Map();  // path -> {etag, value}: what pollJSON last read
  /** GET path as JSON, sending the ETag of the last answer: resolves to {changed, value},
   * changed false (the last value, no body sent) while the device answers 304. */
  async function pollJSON(path) {
    const last = polled.get(path);
    const response = await api(path, last ? {headers: {"If-None-Match": last.etag}} : {});
    if (response.status === 304 && last) return {changed: false, value: last.value};
    const value = await response.json();
    const etag = response.headers.get("ETag");
    if (etag) polled.set(path, {etag, value}); else polled.delete(path);
    return {changed: true, value};
  }
  const postJSON = async (path, body) => (await api(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {}),
  })).json();

  /** A blob: URL of an image fetched with the token (img tags cannot send headers). */
  async function imageURL(path) {
    const response = await api(path);
    if (response.status === 204) return null;
    return URL.createObjectURL(await response.blob());
  }

  /** Toasts shown at once: a quick run of answers does not pile them up over the page. */
  const MAX_TOASTS = 3;

  /** How long a toast stays, in ms: 3.5 s (8 s for an error), longer for a long message at
   *  about 15 characters a second (a save's warning that a new class is one slip from a known
   *  one was gone before it could be read), at most 20 s. */
  function toastMs(message, kind) {
    const least = kind === "error" ? 8000 : 3500;
    return Math.min(20000, Math.max(least, 1500 + String(message).length * 65));
  }

  function toast(message, kind) {
    let box = document.getElementById("toasts");
    if (!box) {
      box = el("div", {id: "toasts", "aria-live": "polite"});
      document.body.append(box);
    }
    const item = el("div", {class: "toast " + (kind || "info"), text: message});
    box.append(item);
    while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();  // oldest first
    setTimeout(() => item.remove(), toastMs(message, kind));
  }

  /** A modal confirmation; resolves true when the operator confirms. */
  function confirmDialog(title, message, okLabel) {
    return new Promise((resolve) => {
      const dialog = dialogShell("confirm-dialog");
      const done = (value) => { dialog.close(); resolve(value); };
      dialog.append(
        el("h2", {text: title}),
        el("p", {text: message}),
        el("div", {class: "actions"},
          el("button", {id: "confirm-cancel", text: "Cancel", onclick: () => done(false)}),
          el("button", {id: "confirm-ok", class: "primary", text: okLabel || "Confirm",
                        onclick: () => done(true)})));
      dialog.addEventListener("cancel", () => resolve(false), {once: true});
      dialog.showModal();
      dialog.querySelector("#confirm-ok").focus();
    });
  }

  function markNav() {
    const here = location.pathname === "/" ? "/live" : location.pathname;
    for (const link of document.querySelectorAll("nav.top a[data-path]")) {
      if (link.dataset.path === here) link.classList.add("active");
    }
  }

  /** Run fn now and every periodMs after it settles; skipped while the tab is hidden. */
  function every(periodMs, fn) {
    const tick = async () => {
      if (!document.hidden) {
        try {
          await fn();
        } catch (err) {
          report(err);
        }
      }
      setTimeout(tick, periodMs);
    };
    tick();
  }

  let lastReport = "";
  function report(err) {
    if (err instanceof ApiError && err.status === 0) return;  // the banner says it, in words
    const message = err instanceof ApiError ? `${err.message} (HTTP ${err.status})` : String(err.message || err);
    if (message !== lastReport) toast(message, "error");
    lastReport = message;
    setTimeout(() => { if (lastReport === message) lastReport = ""; }, 10000);
  }

  const fmt = {
    num: (v, digits) => (v === null || v === undefined || Number.isNaN(v)) ? "—" : Number(v).toFixed(digits ?? 1),
    pct: (v) => (v === null || v === undefined) ? "—" : Math.round(v * 100) + "%",
    bytes: (v) => {  // binary units, as the command line writes sizes (memory stats: MiB)
      if (v === null || v === undefined) return "—";
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      let x = Number(v);
      while (x >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
      return (i ? x.toFixed(x < 10 ? 1 : 0) : x) + " " + units[i];
    },
    time: (v) => {
      if (v === null || v === undefined || v === "") return "—";
      const date = typeof v === "number" ? new Date(v * 1000) : new Date(v);
      if (Number.isNaN(date.getTime())) return String(v);
      return date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
    },
  };

  /** Perceptual-ish colour scale for 0..1 (dark blue -> teal -> yellow). */
  function heat(v) {
    const stops = [[0, [48, 18, 59]], [0.25, [50, 101, 176]], [0.5, [32, 164, 134]],
                   [0.75, [148, 202, 67]], [1, [249, 231, 33]]];
    const x = Math.max(0, Math.min(1, v));
    for (let i = 1; i < stops.length; i += 1) {
      if (x <= stops[i][0]) {
        const [a, ca] = stops[i - 1];
        const [b, cb] = stops[i];
        const t = (x - a) / (b - a);
        const c = ca.map((ch, k) => Math.round(ch + t * (cb[k] - ch)));
        return `rgb(${c[0]},${c[1]},${c[2]})`;
      }
    }
    return "rgb(249,231,33)";
  }

  /** `text` as a bidi isolate: a right-to-left class name cannot pull a score or a number
   * beside it into its own direction (in option text and canvas labels, where no element can). */
  function isolate(text) {
    return "\u2068" + String(text) + "\u2069";
  }

  /** `text` cut to `max` characters (code points, as the server counts) with an ellipsis. */
  function clip(text, max) {
    const chars = [...String(text)];
    return chars.length <= max ? String(text) : chars.slice(0, max - 1).join("") + "…";
  }

  // Tableau-10 with its grey swapped for magenta: grey boxes vanish on thermal (grey) frames
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#f032e6", "#bcbd22", "#17becf"];

  /** Black or white, whichever contrasts more with `color` ("#rrggbb"; WCAG 2 luminance). */
  function inkOn(color) {
    const m = /^#([0-9a-f]{6})$/i.exec(String(color));
    if (!m) return "#fff";
    const [r, g, b] = [0, 2, 4].map((i) => {
      const c = parseInt(m[1].slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    const lum = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000" : "#fff";
  }
  function classColor(name) {
    let h = 0;
    for (const ch of String(name)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
    return PALETTE[h % PALETTE.length];
  }

  /** The bar's height as --nav-h, where the offline banner sticks (the bar wraps on a narrow
   * screen or with larger text). */
  function trackNavHeight() {
    const nav = document.querySelector("nav.top");
    if (!nav || !window.ResizeObserver) return;
    new ResizeObserver(() => document.documentElement.style.setProperty(
      "--nav-h", nav.getBoundingClientRect().height + "px")).observe(nav);
  }

  document.addEventListener("DOMContentLoaded", markNav);
  document.addEventListener("DOMContentLoaded", trackNavHeight);
  return {ApiError, el, svg, api, getJSON, pollJSON, postJSON, imageURL, toast, toastMs, confirmDialog, every,
          report, fmt, heat, classColor, PALETTE, inkOn, isolate, clip};
})();
