/* Label page: the operator queue; draw, move, resize, delete and name boxes on a canvas; the
 * latest answers, each opened in the same editor to correct its boxes or to withdraw it. */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const NEW_CLASS = "__new__";
  const MOVE_PX = 3;           // pointer travel (screen pixels) that makes a press a drag
  const HANDLE_MAX_PX = 10;    // a selected box's corner squares, at most (screen pixels)
  const GRAB_PX = 2;           // a corner grabs this far past it (outside the box): a mouse ...
  const TOUCH_GRAB_PX = 4;     // ... a finger or a pen (more would take drags beside the box)
  const ZOOM_STEPS = [1, 1.5, 2, 3, 4, 6, 8];
  const MAX_ZOOM = 8;
  const MAX_UNDO = 200;        // undo points kept for the frame shown
  const CONFIRM_MS = 5000;     // a second N or S within this confirms dropping edited boxes
  const QUEUE_PERIOD_MS = 4000;
  const WORD_MS = 400;          // a second letter this soon after a box's first one: a name
  const LETTER_KEYS = new Set(["a", "b", "c", "n", "q", "s", "t", "x", "z"]);  // see shortcut()
  const SWAP_GUARD_MS = 2000; // after the page opened a frame by itself, Enter and N wait this
  const SEEN_GUARD_MS = 800;  // a queued frame is answered no sooner than this after it showed
  const ANSWER_KEYS = new Set(["Enter", "n", "N", "s", "S"]);

  /** This page's console id, kept for the tab's life (reloads too): the device is told which
   * frame this page shows, so that another console's page picks another one. */
  const CONSOLE_ID = (() => {
    const key = "edgecl.console";
    let id = null;
    try {
      id = sessionStorage.getItem(key);
    } catch (err) {
      id = null;  // storage refused (a private window): one id for this load
    }
    if (!id || !/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
      const bytes = crypto.getRandomValues(new Uint8Array(12));
      id = "c" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
      try {
        sessionStorage.setItem(key, id);
      } catch (err) {
        // as above: the id lasts as long as this load
      }
    }
    return id;
  })();
  const MAX_CLASS_CHARS = 100; // the server's limit (edgecl.models.classes.MAX_NAME_CHARS)
  const PRELOAD = 2;           // images kept ahead of the current item (4K frames are big)
  const GONE = new Set([404, 409]);  // an answer refused because the item is no longer pending
  const MAX_ANSWERED = 20;     // answers listed, and asked for (the device lists up to 50)
  const MAX_CLASS_CHIPS = 6;   // class chips on one answered entry, then "+N more"
  // characters a class name may not hold (edgecl.data.class_names: INVISIBLE_CATEGORIES,
  // BLANK_RANGES, control characters)
  const INVISIBLE = new RegExp("[\\p{Cf}\\p{Zl}\\p{Zp}\\p{Co}\\p{Cc}\\u00AD\\u034F\\u061C" +
    "\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F" +
    "\\u2800\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0\\uFFF0-\\uFFF8\\u{1BCA0}-\\u{1BCA3}" +
    "\\u{1D173}-\\u{1D17A}\\u{E0000}-\\u{E0FFF}]", "u");
  // names that mark a region to ignore, not a class (edgecl.data.class_names.IGNORE_NAMES:
  // lower case, letters and digits only); the device refuses them as a new class
  const IGNORE_NAMES = new Set(["dontcare", "ignore", "ignored", "ignoreregion", "ignoreregions",
                                "ignoredregion", "ignoredregions"]);

  const state = {
    queue: [],                 // items from /api/labels/pending, minus answered ones
    answered: new Set(),       // ids answered here whose removal the server may not show yet
    inFlight: new Set(),
    images: new Map(),         // id -> Promise<HTMLImageElement>
    current: null,
    image: null,
    boxes: [],                 // {cls, x1, y1, x2, y2, proposed, score} in original-frame pixels
    selected: -1,
    drawnLast: null,           // the box drawn last, until named or clicked: not moved by a drag
    typeToName: null,          // the box just drawn or added: a letter typed next starts its name
    pendingKey: null,          // a key letter typed after a box, waiting WORD_MS for a second
    namedByC: false,           // the name field was opened by C right after a box was drawn
    classes: [],
    deviceClasses: new Map(),  // id -> name, as /api/classes last gave them (renames follow)
    aliases: new Map(),        // a name the device renamed or merged -> its name now
    defaultClass: "",
    scale: 1,
    drag: null,
    edited: false,             // the operator changed the current item's boxes
    swappedAt: 0,              // when the page last opened a frame by itself (ms since epoch)
    shownAt: 0,                // when the current queued frame's image showed (ms since epoch)
    failedImage: null,         // the id of the queued frame whose image did not load
    drafts: new Map(),         // id -> {boxes, edited} of an answer the device did not take (kept to resend)
    unsure: new Map(),         // id -> skip, of an answer that met no reply: it may have reached the device
    listed: "",                // what the queue list shows (ids and priorities)
    mode: "queue",             // "queue": answering queued frames; "correct": an answer reopened
    tab: "queue",              // the list the left column shows: "queue" or "answered"
    answers: null,             // the latest answers (/api/labels/answered); null: not read yet
    answersListed: null,       // what the answered list shows (ids, samples, corrections)
    resume: null,              // the queue item shown before an answer was opened
    warnedElsewhere: null,     // the frame last said to be open on another console too
    busy: false,               // a correction or a withdrawal is on its way
    zoom: 1,                   // times the fitted size (reset for each frame)
    tags: true,                // class tags drawn on the boxes (T hides them)
    undo: [],                  // undo points of the frame shown: {boxes, selected, edited}
    confirm: null,             // {action, item, until}: a second N or S drops edited boxes
    touches: new Map(),        // pointer id -> {x, y} of each finger on the frame
    pinch: null,               // {dist, zoom, frame} while two fingers zoom and pan
  };

  // ---- classes ------------------------------------------------------------------------------
  function addClass(name) {
    name = current(name);
    if (name && !state.classes.includes(name)) state.classes.push(name);
  }

  /** A class as the device names it now (a name it renamed or merged since maps on). */
  function current(name) {
    for (let hops = 0; state.aliases.has(name) && hops < 8; hops++) name = state.aliases.get(name);
    return name;
  }

  /** Names on this page become new ones (`changes`: old -> now, all from one reading of the
   * device's classes, so that two renames or a swap are applied at once, not one on top of the
   * other): the picker, the class new boxes get, the boxes on the frame and the kept drafts
   * follow, so that an answer never names a class by its old name (which would make it a new,
   * empty class). */
  function applyRenames(changes, quiet) {
    if (!changes.size) return;
    const now = (name) => (changes.has(name) ? changes.get(name) : name);
    state.classes = [...new Set(state.classes.map(now))];
    state.defaultClass = now(state.defaultClass);
    for (const b of [...state.boxes, ...[...state.drafts.values()].flatMap((d) => d.boxes)]) b.cls = now(b.cls);
    for (const [old, name] of changes) state.aliases.set(old, name);
    if (quiet) return;
    const said = [...changes].map(([old, name]) => `${EC.isolate(old)} is now ${EC.isolate(name)}`);
    EC.toast(`on the device, class ${said.join(", ")}`, "info");
  }

  /** Read the device's classes (at start, then with the queue) and follow its renames and
   * merges, by class id. */
  async function refreshClasses() {
    const rows = await EC.getJSON("/api/classes");
    // the page's first reading: merges made before it opened are followed without a word
    // (before, every load announced "class Persn is now Person", however old the merge)
    const first = state.deviceClasses.size === 0;
    const changes = new Map();
    for (const c of rows) {
      const before = state.deviceClasses.get(c.id);
      if (c.merged_into && state.aliases.get(c.name) !== c.merged_into) {
        changes.set(c.name, c.merged_into);
      } else if (!c.merged_into && before !== undefined && before !== c.name) {
        changes.set(before, c.name);
      }
      state.deviceClasses.set(c.id, c.name);
    }
    const live = new Set(rows.filter((c) => !c.merged_into).map((c) => c.name));
    for (const name of state.classes) {
      const known = live.has(name) ? undefined : [...live].find((k) => k.toLowerCase() === name.toLowerCase());
      if (known && !changes.has(name)) changes.set(name, known);
    }
    applyRenames(changes, first);
    for (const c of rows) if (!c.merged_into) state.aliases.delete(c.name);  // a class's own name
    for (const c of rows) if (!c.merged_into) addClass(c.name);
  }

  /** Why a new class name would be refused by the device, or "" (its rules,
   * edgecl.data.class_names.clean_name: invisible or direction-changing characters, code
   * points Unicode does not assign, or only marks and spaces; refuse_ignore_name: DontCare
   * and its like, unless the device has such a class); checked before the name enters the
   * picker. */
  function nameProblem(name) {
    const code = (ch) => ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    const bad = [...name].find((ch) => INVISIBLE.test(ch));
    if (bad) return `A class name may not hold invisible or direction-changing characters (U+${code(bad)})`;
    const unassigned = [...name].find((ch) => /\p{Cn}/u.test(ch));
    if (unassigned) return `A class name may not hold a character Unicode does not assign (U+${code(unassigned)})`;
    if (/^[\p{M}\p{Z}]+$/u.test(name)) return "A class name needs a character of its own to show";
    const loose = name.normalize("NFC").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, "");
    if (IGNORE_NAMES.has(loose) && !sameClass(name)) {
      return `${EC.isolate(name)} marks a region to ignore, not a class: leave the region ` +
        "unlabelled, or name the object it shows";
    }
    return "";
  }

  /** The device's class that `name` names up to case (the device stores one class for both:
   * `person` typed where it has `Person` is `Person`), or undefined. */
  function sameClass(name) {
    const folded = name.toLowerCase();
    return [...state.deviceClasses.values()].find((known) => known.toLowerCase() === folded);
  }

  function colorOf(name) {
    if (!name) return "#ffffff";
    const index = state.classes.indexOf(name);
    return index >= 0 ? EC.PALETTE[index % EC.PALETTE.length] : EC.classColor(name);
  }

  function renderPicker() {
    const select = $("class-select");
    const options = state.classes.map((name, i) => EC.el("option", {
      value: name, text: i < 9 ? `${i + 1} · ${EC.isolate(name)}` : EC.isolate(name)}));
    options.push(EC.el("option", {value: NEW_CLASS, text: "new class…"}));
    select.replaceChildren(...options);
    if (!state.defaultClass && state.classes.length) state.defaultClass = state.classes[0];
    select.value = state.defaultClass || NEW_CLASS;
  }

  function setClass(name) {
    state.defaultClass = name;
    $("class-select").value = name;
    if (state.selected >= 0) state.drawnLast = null;  // named: a drag inside it moves it now
    if (state.selected >= 0 && state.boxes[state.selected].cls !== name) {
      remember();
      state.boxes[state.selected].cls = name;
      state.boxes[state.selected].proposed = false;
      state.edited = true;
    }
    draw();
  }

  /** "; new class Persn is close to Person: if one is a typo, merge it into the other (edgecl
   *  classes merge on the device)", for each new class of an answer that is one slip from a
   *  known one, and a like note for each that a class had before a rename, or "". Names are
   *  shown as bidi isolates, so no command line is built from them here. */
  function typoNote(result) {
    return Object.entries((result && result.similar_classes) || {}).map(([name, known]) =>
      `; new class ${EC.isolate(name)} is close to ${EC.isolate(known)}: if one is a typo, ` +
      `merge it into the other (edgecl classes merge on the device)`).join("") +
      Object.entries((result && result.former_names) || {}).map(([name, now]) =>
        `; ${EC.isolate(name)} named class ${EC.isolate(now)} before a rename: it is a new ` +
        `class now (edgecl classes merge on the device makes them one)`).join("");
  }

  /** The class name field, in the picker's place; ``typed``: the name's first letters (typed
   *  right after drawing a box), ``afterDrawing``: opened by C right then (see
   *  :func:`typedName`). */
  function openNewClass(typed = "", afterDrawing = false) {
    const input = $("new-class");
    state.namedByC = afterDrawing === true;
    $("class-select").value = NEW_CLASS;
    // the name's box takes the picker's place at the picker's width: the toolbar keeps its rows
    // and the frame does not move (a picker widened by long class names wrapped it otherwise)
    const width = $("class-select").getBoundingClientRect().width;
    input.style.width = width >= 110 ? `${Math.round(width)}px` : "";
    $("toolbar").classList.add("naming");
    input.hidden = false;
    input.value = typeof typed === "string" ? typed : "";
    input.focus();
  }

  function closeNewClass(accept) {
    const input = $("new-class");
    let name = input.value.trim();
    if (accept) {
      if (!name || [...name].length > MAX_CLASS_CHARS) {  // the device says what else it refuses
        EC.toast(`A class name is 1–${MAX_CLASS_CHARS} characters`, "error");
        return;
      }
      const problem = nameProblem(name);
      if (problem) {
        EC.toast(problem, "error");
        return;
      }
      let known = sameClass(name);
      if (!known && state.namedByC && sameClass("c" + name)) {  // "car" typed after a draw:
        known = sameClass("c" + name);  // its C opened this field, the rest came here
        EC.toast(`${EC.isolate(name)} read as ${EC.isolate(known)}: C opened the name field`, "info");
        name = known;
      }
      const now = current(known || name);  // a class merged into another names that one
      if (now !== (known || name)) {  // before: the box showed the retired name, picker blank
        EC.toast(`${EC.isolate(known || name)} is merged into ${EC.isolate(now)} on the device`, "info");
        name = now;
      } else if (known && known !== name) {
        EC.toast(`${EC.isolate(name)} is the device's class ${EC.isolate(known)}`, "info");
        name = known;
      }
      addClass(name);
      renderPicker();
    }
    input.hidden = true;
    $("toolbar").classList.remove("naming");
    input.blur();
    if (accept) setClass(name);
    else $("class-select").value = state.defaultClass || NEW_CLASS;
  }

  // ---- queue --------------------------------------------------------------------------------
  function reasonChips(item) {
    return Object.entries(item.reasons || {})
      .sort((a, b) => b[1] - a[1])
      .map(([policy, score]) => EC.el("span", {class: "chip", text: `${policy} ${EC.fmt.num(score, 2)}`}));
  }

  /** The queue list; rebuilt only when its items change (400 items on a phone are not free). */
  function renderQueue() {
    $("queue-count").textContent = state.queue.length ? `(${state.queue.length})` : "";
    const list = $("queue");
    const signature = state.queue.map((item) =>
      `${item.id}:${item.priority}:${item.name}:${item.open_elsewhere ? 1 : 0}`).join(",");
    if (state.listed !== signature) {
      state.listed = signature;
      list.replaceChildren(...state.queue.map((item) => EC.el("li", {
        "data-id": item.id, tabindex: "0",
        onclick: (event) => {
          if (event.detail) event.currentTarget.blur();  // a click: the keys stay the editor's
          openItem(state.queue.find((q) => q.id === item.id) || item, true);
        },
      }, EC.el("div", {class: "head"},
           EC.el("span", {text: "…" + item.id.slice(-10), title: item.id}),
           EC.el("span", {class: "small muted", text: "priority " + EC.fmt.num(item.priority, 2)})),
         frameLine(item),
         EC.el("div", {}, item.open_elsewhere ? EC.el("span", {class: "chip elsewhere",
           text: "open elsewhere", title: "another console shows this frame"}) : null,
           reasonChips(item)))));
    }
    markActive(list, state.mode === "queue" && state.current ? state.current.id : null);
  }

  /** A queue entry's file name and capture time, one line cut with "…" (whole in its tooltip). */
  function frameLine(item) {
    const when = item.created_s ? EC.fmt.time(item.created_s) : "";
    // a file name is a bidi isolate, as a class name: one holding U+202E reversed the time
    const text = [item.name ? EC.isolate(item.name) : "", when].filter(Boolean).join(" · ");
    return text ? EC.el("div", {class: "small muted frame-name", text, title: text}) : null;
  }

  /** Highlight the entry of `list` the editor shows (none: `id` null). */
  function markActive(list, id) {
    for (const li of list.querySelectorAll("li.active")) {
      if (li.dataset.id !== id) li.classList.remove("active");
    }
    if (id) {
      const li = list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
      if (li) li.classList.add("active");
    }
  }

  async function refreshQueue() {
    const pending = await EC.getJSON(`/api/labels/pending?console=${CONSOLE_ID}`);
    const listed = new Set(pending.map((item) => item.id));
    for (const id of [...state.answered]) {
      if (!listed.has(id) && !state.inFlight.has(id)) state.answered.delete(id);
    }
    state.queue = pending.filter((item) => !state.answered.has(item.id));
    for (const proposed of state.queue.flatMap((item) => item.proposed || [])) addClass(proposed.class);
    const answering = state.mode === "queue";  // the editor shows a queued frame, not an answer
    if (answering && state.current && !state.queue.some((item) => item.id === state.current.id)) {
      state.swappedAt = Date.now();  // the frame opened next was not chosen by the operator
      if (state.unsure.has(state.current.id)) {
        confirmLate(state.current.id).catch(EC.report);
      } else if (state.edited) {
        sayLeftTheQueue(state.current.id);
      }
      state.current = null;
    }
    for (const id of [...state.drafts.keys()]) if (!listed.has(id)) state.drafts.delete(id);
    if (answering) {  // (correcting an answer, the queue waits in its list)
      if (!state.current && state.queue.length) await openItem(nextItem(0));
      else if (!state.current) showEmpty();
      else if (!state.image && !state.images.has(state.current.id)) await showImage(state.current);
    }
    renderPicker();
    renderQueue();
  }

  /** The queued frame to show next, from position `index` on: the first one no other console
   * has open, else the one at `index` (null: the queue is empty). */
  function nextItem(index) {
    const queue = state.queue;
    if (!queue.length) return null;
    const start = Math.min(Math.max(index, 0), queue.length - 1);
    const order = [...queue.slice(start), ...queue.slice(0, start)];
    return order.find((item) => !item.open_elsewhere) || queue[start];
  }

  /** Tell the device that this page shows `item`; `how` is "picked" (the page chose it),
   * "chosen" (the operator did) or "renew" (it stays shown). When another console opened it
   * first: a frame the page picked, with no box touched yet, gives way to one nobody has open;
   * one the operator chose stays, with a note. Advice only: a failure changes nothing here. */
  async function claim(item, how) {
    let result;
    try {
      result = await EC.postJSON(`/api/labels/${encodeURIComponent(item.id)}/open?console=${CONSOLE_ID}`);
    } catch (err) {
      return;  // answered meanwhile (404), a device stopping: the labelling goes on
    }
    const listed = state.queue.find((q) => q.id === item.id);
    if (listed && Boolean(listed.open_elsewhere) !== result.open_elsewhere) {
      listed.open_elsewhere = result.open_elsewhere;
      renderQueue();
    }
    const showing = state.mode === "queue" && state.current && state.current.id === item.id;
    if (!result.open_elsewhere || !showing) return;
    const free = state.queue.find((q) => q.id !== item.id && !q.open_elsewhere);
    if (how === "picked" && !state.edited && free) {
      EC.toast(`${item.id} is open on another console: showing ${free.id} instead`, "info");
      openItem(free);
    } else if (state.warnedElsewhere !== item.id) {  // said once per frame, renewals included
      state.warnedElsewhere = item.id;  // (a tab hidden for over 30 s lost its claim)
      EC.toast(`${item.id} is open on another console too: the first answer counts`, "info");
    }
  }

  function loadImage(item) {
    if (!state.images.has(item.id)) {
      state.images.set(item.id, (async () => {
        const url = await EC.imageURL(`/api/labels/${encodeURIComponent(item.id)}/image`);
        const img = new Image();
        img.src = url;
        await img.decode();
        return img;
      })());
    }
    return state.images.get(item.id);
  }

  function forgetImage(id) {
    const promise = state.images.get(id);
    state.images.delete(id);
    if (promise) promise.then((img) => URL.revokeObjectURL(img.src)).catch(() => {});
  }

  /** Keep the images of the current item, the next few and those being answered only (a phone
   * cannot hold 300 4K frames). */
  function pruneImages(keepIds) {
    const wanted = new Set(keepIds);
    for (const id of [...state.images.keys()]) if (!wanted.has(id)) forgetImage(id);
  }

  /** The queue could not be read (a refusal such as 429 after wrong tokens, a fault): said
   * where the frame goes while none is open. Before, the page said "the queue is empty" while
   * the device held 30 frames for a person. */
  function queueUnread(err) {
    if (state.mode !== "queue" || state.current) return;
    $("canvas").hidden = true;
    $("label-empty").textContent = `The queue could not be read: ${err.message || err}. This ` +
      "page asks again by itself.";
    $("label-empty").hidden = false;
  }

  function showEmpty() {
    state.current = null;
    state.image = null;
    state.boxes = [];
    freshFrame();
    $("canvas").hidden = true;
    $("label-empty").textContent = "Nothing to label: the queue is empty.";
    $("label-empty").hidden = false;
    $("why").replaceChildren();
    answerButtons();
  }

  /** Show a queued frame (`chosen`: the operator asked for this one, e.g. clicked it; else the
   * page picked it, and moves on should another console have it open). */
  async function openItem(item, chosen = false) {
    if (state.mode !== "queue") {
      state.mode = "queue";
      state.resume = null;
      renderMode();
      renderAnswered();
    }
    state.current = item;
    claim(item, chosen ? "chosen" : "picked");
    const draft = state.drafts.get(item.id);
    state.boxes = draft ? draft.boxes.map((b) => ({...b})) : (item.proposed || []).map((p) => ({
      cls: current(p.class), x1: p.xyxy[0], y1: p.xyxy[1], x2: p.xyxy[2], y2: p.xyxy[3], proposed: true, score: p.score,
    }));
    state.selected = -1;
    // a refused answer to untouched boxes (say, "nothing here") is no edit: sent again at once
    state.edited = Boolean(draft && draft.edited);
    freshFrame();
    renderQueue();
    $("why").replaceChildren(
      EC.el("strong", {text: item.id}), ` · priority ${EC.fmt.num(item.priority, 2)} · ${item.width}×${item.height} · chosen for `,
      ...reasonChips(item));
    await showImage(item);
  }

  /** Load and show an item's frame (the previous one dimmed meanwhile), then preload the next. */
  async function showImage(item) {
    state.image = null;  // no box is drawn on the previous frame while this one loads
    answerButtons();
    $("canvas").classList.add("loading");
    try {
      const img = await loadImage(item);
      if (state.current !== item) return;
      state.image = img;
      state.shownAt = Date.now();
      answerButtons();
      setTimeout(answerButtons, SEEN_GUARD_MS + 20);
      $("canvas").hidden = false;
      $("canvas").classList.remove("loading");
      $("label-empty").hidden = true;
      layout();
    } catch (err) {
      forgetImage(item.id);
      if (state.current === item) {
        state.failedImage = item.id;  // it can be skipped, not answered
        answerButtons();
        const why = err instanceof EC.ApiError && err.status === 0 ? "no connection to the device"
                                                                   : err.message || String(err);
        $("canvas").hidden = true;
        $("label-empty").textContent = `The frame of ${item.id} did not load (${why}); ` +
          (state.mode === "correct" ? "open the answer again from the Answered list."
                                    : "it is asked for again with the next queue refresh.");
        $("label-empty").hidden = false;
      }
      EC.report(err);
    }
    const index = state.queue.findIndex((q) => q.id === item.id);
    const ahead = state.queue.slice(index + 1, index + 1 + PRELOAD);
    pruneImages([item.id, ...ahead.map((q) => q.id), ...state.inFlight]);
    for (const next of ahead) loadImage(next).catch(() => forgetImage(next.id));
  }

  // ---- answers ------------------------------------------------------------------------------
  /** Boxes as the server takes them: class names and original-frame pixels (0.1 px). */
  function wire(boxes) {
    return boxes.map((b) => ({
      class: b.cls, xyxy: [b.x1, b.y1, b.x2, b.y2].map((v) => Math.round(v * 10) / 10),
    }));
  }

  /** A refusal in one line: the server's message and status, or what went wrong. */
  function describe(err) {
    return err instanceof EC.ApiError && err.status ? `${err.message} (HTTP ${err.status})`
                                                    : err.message || String(err);
  }

  async function send(skip, boxes) {
    const item = state.current;
    if (!item || state.mode !== "queue") return;
    const payload = {skip, boxes: skip ? [] : wire(boxes)};
    const kept = state.boxes.map((b) => ({...b}));
    const edited = state.edited;
    state.answered.add(item.id);
    state.inFlight.add(item.id);
    const index = state.queue.findIndex((q) => q.id === item.id);
    state.queue = state.queue.filter((q) => q.id !== item.id);
    state.drafts.delete(item.id);
    const next = nextItem(0);  // the highest priority again, after a frame chosen lower down
    if (next) openItem(next);
    else showEmpty();
    renderQueue();
    try {
      const result = await EC.postJSON(`/api/labels/${encodeURIComponent(item.id)}`, payload);
      state.unsure.delete(item.id);
      forgetImage(item.id);
      if (!skip && result && result.sample === null) {
        EC.toast(`answered ${item.id}, but the replay memory did not keep it (its insertion ` +
                 "policy declined it): no round learns it", "error");
      } else {
        EC.toast(skip ? `skipped ${item.id}` : `saved ${item.id}: ${boxCount(payload.boxes.length)}` +
                 typoNote(result), "ok");
      }
      if (!skip) refreshAnswered().catch(EC.report);  // its count shows on the tab too
    } catch (err) {
      state.answered.delete(item.id);
      if (err instanceof EC.ApiError && GONE.has(err.status) && state.unsure.has(item.id)) {
        forgetImage(item.id);  // sent again: the first sending had reached the device after all
        confirmLate(item.id).catch(EC.report);
      } else if (err instanceof EC.ApiError && GONE.has(err.status)) {
        forgetImage(item.id);
        EC.toast(`Not saved: ${err.message}`, "error");
      } else {
        // no reply is not a refusal: a frozen link may deliver the answer later (confirmLate)
        if (err instanceof EC.ApiError && err.status === 0) state.unsure.set(item.id, skip);
        restore(item, index, kept, err, edited);
      }
    } finally {
      state.inFlight.delete(item.id);
    }
    if (!state.queue.length) refreshQueue().catch(EC.report);
  }

  /** The toast of an edited frame that left the queue before its answer was taken. */
  function sayLeftTheQueue(id) {
    EC.toast(`${id} left the queue (answered elsewhere, or dropped for frames of higher ` +
             "priority): your boxes on it were not saved", "error");
  }

  /** Say whether an answer that met no reply reached the device after all, once its item left
   * the queue or a second sending was refused as already answered: its answer is in the
   * Answered list (before, a frozen link's answer that the device stored read "not saved"). */
  async function confirmLate(id) {
    const skipped = state.unsure.get(id);
    state.unsure.delete(id);
    state.drafts.delete(id);
    if (skipped) {  // a skip stores nothing to look for: gone from the queue, it was taken
      EC.toast(`skipped ${id} after all: the skip sent before the connection dropped reached ` +
               "the device", "ok");
      return;
    }
    const answers = await EC.getJSON(`/api/labels/answered?limit=${MAX_ANSWERED}`);
    const found = answers.find((entry) => entry.id === id);
    if (found) {
      EC.toast(`saved ${id} after all: the answer sent before the connection dropped reached the ` +
               `device (${boxCount((found.boxes || []).length)})`, "ok");
      refreshAnswered().catch(EC.report);
    } else {
      sayLeftTheQueue(id);
    }
  }

  /** An answer the device did not take (no connection, stopping, full disk, a refused box):
   * the item goes back where it was with the operator's boxes, and is shown again unless the
   * operator has started on another one. */
  function restore(item, index, boxes, err, edited) {
    EC.toast(`Not saved: ${describe(err)}. Your boxes stay on ${item.id}, back in the queue.`, "error");
    if (err instanceof EC.ApiError && err.status === 422 && /class name/.test(err.message)) {
      // a name the device refused is not offered again, nor given to the next boxes
      const known = new Set(state.deviceClasses.values());
      state.classes = state.classes.filter((name) => known.has(name) ||
        !boxes.some((b) => b.cls === name));
      if (!state.classes.includes(state.defaultClass)) state.defaultClass = "";
      renderPicker();
    }
    state.drafts.set(item.id, {boxes, edited});
    if (!state.queue.some((q) => q.id === item.id)) {
      state.queue.splice(Math.min(Math.max(index, 0), state.queue.length), 0, item);
    }
    if (state.mode === "queue" && (!state.current || !state.edited)) openItem(item, true);
    else renderQueue();
  }

  /** An answer asked for within SWAP_GUARD_MS of a frame the page opened by itself (the one
   * on screen left the queue: answered elsewhere, skipped from the command line): refused with
   * a toast, since the key was meant for the frame that left. Before, a stray Enter saved
   * "nothing here" for a frame nobody had looked at. */
  function justSwapped() {
    if (state.mode !== "queue") return false;
    if (Date.now() - (state.swappedAt || 0) <= SWAP_GUARD_MS) {
      EC.toast("Another frame just opened (the one on screen left the queue): look at it first", "error");
      return true;
    }
    return notSeenYet();
  }

  /** An answer to a queued frame whose image has not shown, or showed under SEEN_GUARD_MS ago:
   * refused with a toast. The next frame opens as soon as one is answered, so a double Enter
   * (or N) saved the frame after it, unseen; before, "nothing here" for frames that showed
   * people and cars. */
  function notSeenYet(skipping = false) {
    if (!state.image) {
      if (skipping && unloadable()) return false;
      EC.toast("This frame has not shown yet: look at it first", "error");
      return true;
    }
    if (!seenLongEnough()) {
      EC.toast("This frame just opened: look at it first", "error");
      return true;
    }
    return false;
  }

  /** Whether the frame's image has been on screen for SEEN_GUARD_MS. */
  function seenLongEnough() {
    return Boolean(state.image) && Date.now() - (state.shownAt || 0) >= SEEN_GUARD_MS;
  }

  /** Whether the frame on screen is one whose image did not load (it can only be skipped). */
  function unloadable() {
    return Boolean(state.current) && state.failedImage === state.current.id;
  }

  function submit() {
    if (justSwapped()) return;
    if (state.mode !== "correct" && !state.boxes.length && !state.edited) {
      // before: Enter on a frame nobody touched saved "nothing here" (a negative, perhaps held
      // out for every evaluation) for a frame full of cars opened after another operator's
      // answer; a negative now comes from N or its button only
      EC.toast("No box on this frame: draw the objects, or answer \u201cNothing here\u201d (its " +
               "button, or N)", "error");  // a phone has no N key
      return;
    }
    const unnamed = state.boxes.findIndex((b) => !b.cls);
    if (unnamed >= 0) {
      state.selected = unnamed;
      draw();
      EC.toast("Choose a class for every box first", "error");
      return;
    }
    if (state.mode === "correct") correct(state.boxes);
    else send(false, state.boxes);
  }

  function nothingHere() {
    if (justSwapped()) return;
    if (!confirmDrop("nothing", state.mode === "correct" ? "save this answer as \u201cnothing here\u201d"
                                                       : "answer \u201cnothing here\u201d", "N")) return;
    if (state.mode === "correct") correct([]);
    else send(false, []);
  }

  function skipOrWithdraw() {
    if (state.mode === "correct") withdraw();
    else if (!notSeenYet(true) && confirmDrop("skip", "skip this frame", "S")) send(true, []);
  }

  /** Whether to go on with an action that drops the boxes drawn or edited on this frame: yes
   * when there are none, or when the same action was asked again within a few seconds (the
   * first time says so, and its button asks to be pressed again). */
  function confirmDrop(action, words, key) {
    const asked = state.confirm;
    if (!state.edited || (asked && asked.action === action && asked.item === state.current &&
                          Date.now() < asked.until)) {
      disarm();
      return true;
    }
    disarm();
    state.confirm = {action, item: state.current, until: Date.now() + CONFIRM_MS};
    const button = $(action === "skip" ? "skip" : "nothing");
    button.classList.add("armed");
    state.confirm.timer = setTimeout(disarm, CONFIRM_MS);
    EC.toast(`Your box edits on this frame are not saved. To ${words} and drop them, press ` +
             `${key} again (or its button); Ctrl+Z undoes the last box edit.`, "error");
    return false;
  }

  function disarm() {
    if (state.confirm) clearTimeout(state.confirm.timer);
    state.confirm = null;
    for (const id of ["skip", "nothing"]) $(id).classList.remove("armed");
  }

  /** A frame just opened: its own undo points, the whole frame in view, nothing to confirm. */
  function freshFrame() {
    state.undo = [];
    state.zoom = 1;
    disarm();
  }

  // ---- answered: reopen an answer to correct its boxes or withdraw it --------------------------
  async function refreshAnswered() {
    const answers = await EC.getJSON(`/api/labels/answered?limit=${MAX_ANSWERED}`);
    state.answers = (Array.isArray(answers) ? answers : []).slice(0, MAX_ANSWERED);
    renderAnswered();
  }

  function boxCount(n) {
    return n === 0 ? "nothing here" : n === 1 ? "1 box" : `${n} boxes`;
  }

  /** An answer's class names (with counts), corrections and held-out flag as chips. */
  function answerChips(entry) {
    const counts = new Map();
    for (const box of entry.boxes || []) counts.set(box.class, (counts.get(box.class) || 0) + 1);
    const chips = [...counts].slice(0, MAX_CLASS_CHIPS).map(([name, n]) => EC.el("span", {
      class: "chip name", title: name + (n > 1 ? ` ×${n}` : ""),
      text: EC.isolate(name) + (n > 1 ? ` ×${n}` : "")}));
    if (counts.size > MAX_CLASS_CHIPS) {
      chips.push(EC.el("span", {class: "chip", text: `+${counts.size - MAX_CLASS_CHIPS} more`}));
    }
    if (entry.corrected > 0) {
      chips.push(EC.el("span", {class: "chip note", text: `corrected ${entry.corrected}×`}));
    }
    if (entry.held_out) {
      chips.push(EC.el("span", {class: "chip held", text: "held out",
                                title: "kept aside to validate each round's model, not trained on"}));
    }
    return chips;
  }

  /** The answered list; rebuilt only when its answers change (keeps the keyboard's place). */
  function renderAnswered() {
    const list = $("answered");
    const entries = state.answers || [];
    $("answered-count").textContent = state.answers ? `(${entries.length})` : "";
    const signature = entries.map((e) => `${e.id}:${e.sample}:${e.corrected}:${e.held_out}`).join(",");
    if (state.answers && state.answersListed !== signature) {
      state.answersListed = signature;
      list.replaceChildren(...(entries.length ? entries.map((entry) => EC.el("li", {
        "data-id": entry.id, tabindex: "0",
        title: entry.ts_s ? `answered ${EC.fmt.time(entry.ts_s)}` : null,
        onclick: (event) => {
          if (event.detail) event.currentTarget.blur();
          const found = (state.answers || []).find((e) => e.id === entry.id);
          openAnswer(found || entry);
        },
      }, EC.el("div", {class: "head"},
           EC.el("span", {text: "…" + entry.id.slice(-10), title: entry.id}),
           EC.el("span", {class: "small muted", text: boxCount((entry.boxes || []).length)})),
         entry.name ? EC.el("div", {class: "small muted frame-name", text: EC.isolate(entry.name),
                                    title: EC.isolate(entry.name)}) : null,
         EC.el("div", {}, answerChips(entry)))) : [EC.el("li", {class: "none",
           text: "No answer in memory yet: an answered frame shows here once the device stores it."})]));
    }
    markActive(list, state.mode === "correct" && state.current ? state.current.id : null);
  }

  /** Open an answer in the editor: its stored boxes as ordinary boxes, Save replaces them. */
  async function openAnswer(entry) {
    if (state.busy) return;
    if (state.mode === "queue" && state.current) {
      state.resume = state.current.id;  // the queued frame comes back, with its boxes, after
      if (state.edited) {
        state.drafts.set(state.current.id, {boxes: state.boxes.map((b) => ({...b})), edited: true});
      }
    }
    state.mode = "correct";
    state.current = entry;
    state.boxes = (entry.boxes || []).map((b) => ({
      cls: b.class, x1: b.xyxy[0], y1: b.xyxy[1], x2: b.xyxy[2], y2: b.xyxy[3], proposed: false,
    }));
    for (const box of entry.boxes || []) addClass(box.class);
    state.selected = -1;
    state.edited = false;
    freshFrame();
    renderPicker();
    renderMode();
    renderQueue();
    renderAnswered();
    const details = [`sample ${entry.sample}`, `${entry.width}×${entry.height}`];
    if (entry.name) details.unshift(entry.name);
    if (entry.ts_s) details.push(`answered ${EC.fmt.time(entry.ts_s)}`);
    if (entry.corrected > 0) details.push(`corrected ${entry.corrected}×`);
    if (entry.held_out) details.push("held out (validation)");
    $("why").replaceChildren(EC.el("strong", {text: entry.id}), " · " + details.join(" · "));
    revealEditor();
    await showImage(entry);
  }

  /** Back to the queued frame shown before (or the first one); the answer stays as it is. */
  function leaveCorrecting() {
    const resume = state.resume;
    state.mode = "queue";
    state.resume = null;
    state.current = null;
    state.image = null;
    state.boxes = [];
    state.selected = -1;
    state.edited = false;
    freshFrame();
    renderMode();
    renderAnswered();
    const resumed = state.queue.find((q) => q.id === resume);
    const item = resumed || nextItem(0);
    if (item) {
      openItem(item, Boolean(resumed));
    } else {
      showEmpty();
      renderQueue();
    }
  }

  /** The editor's words and buttons for answering the queue or correcting an answer. */
  function renderMode() {
    const correcting = state.mode === "correct";
    $("correcting").hidden = !correcting;
    $("correcting-id").textContent = correcting && state.current ? state.current.id : "";
    document.querySelector("section.editor").classList.toggle("correcting", correcting);
    $("submit").querySelector(".name").textContent = correcting ? "Save" : "Submit";
    $("submit").title = correcting ? "Replace the answer's boxes with these (Enter)"
                                   : "Save these boxes (Enter)";
    $("nothing").title = correcting ? "Save the answer as: no object in this frame (N)"
                                    : "No object in this frame (N)";
    $("skip").querySelector(".name").textContent = correcting ? "Withdraw" : "Skip";
    $("skip").title = correcting ? "Take this answer back: its sample leaves the memory (S, asks first)"
                                 : "Skip this frame without a label (S)";
    $("skip").classList.toggle("danger", correcting);
    $("help-proposed").hidden = correcting;
    $("help-back").hidden = !correcting;
    $("back-to-queue").disabled = state.busy;
    answerButtons();
  }

  /** Submit, Nothing here and Skip wait while a queued frame has not shown for SEEN_GUARD_MS
   * (the keys check the same, :func:`notSeenYet`); a frame whose image did not load can be
   * skipped. */
  function answerButtons() {
    const waiting = state.mode === "queue" && Boolean(state.current) && !seenLongEnough();
    $("submit").disabled = state.busy || waiting;
    $("nothing").disabled = state.busy || waiting;
    $("skip").disabled = state.busy || (waiting && !unloadable());
  }

  /** On a phone the editor is above the lists: bring it into view when an answer opens. */
  function revealEditor() {
    const editor = document.querySelector("section.editor");
    const top = editor.getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight / 2) editor.scrollIntoView({block: "start"});
  }

  /** Send a correction or a withdrawal of the answer shown; on success back to the queue.
   * A refusal is said in one line; an answer no longer there (404, 409) is left, any other
   * refusal keeps the editor on it with the person's boxes, to try again. */
  async function changeAnswer(entry, action, body, done) {
    state.busy = true;
    renderMode();
    let ok = false;
    try {
      const result = await EC.postJSON(`/api/labels/${encodeURIComponent(entry.id)}/${action}`, body);
      EC.toast(done(result), "ok");
      ok = true;
    } catch (err) {
      const gone = err instanceof EC.ApiError && GONE.has(err.status);
      EC.toast(`${action === "correct" ? "Not corrected" : "Not withdrawn"}: ${describe(err)}` +
               (gone ? "" : `. ${entry.id} stays open to try again.`), "error");
      ok = gone;
    } finally {
      state.busy = false;
    }
    if (action === "withdraw" && ok) forgetImage(entry.id);
    if (ok && state.mode === "correct" && state.current === entry) leaveCorrecting();
    else renderMode();
    refreshAnswered().catch(EC.report);
  }

  function correct(boxes) {
    const entry = state.current;
    if (state.mode !== "correct" || !entry || state.busy) return;
    const payload = {boxes: wire(boxes)};
    changeAnswer(entry, "correct", payload, (result) => {
      const added = (result.classes_added || []).length
        ? `; new class ${result.classes_added.map((n) => EC.isolate(n)).join(", ")}` : "";
      if (result.unchanged) return `${entry.id} unchanged: its sample holds these boxes already`;
      return `corrected ${entry.id}: ${boxCount(payload.boxes.length)}${added}${typoNote(result)}`;
    });
  }

  /** Withdraw the answer shown, after an in-page confirmation whose Cancel has the focus (an
   * S or a click then Enter by mistake keeps the answer). */
  async function withdraw() {
    const entry = state.current;
    if (state.mode !== "correct" || !entry || state.busy) return;
    const asked = EC.confirmDialog(`Withdraw answer ${entry.id}?`,
      `Its sample ${entry.sample} leaves the memory for good: later rounds no longer learn from ` +
      "this frame, and its boxes are not kept. To change the boxes, edit them and Save instead.",
      "Withdraw answer");
    const cancel = document.getElementById("confirm-cancel");
    if (cancel) cancel.focus();
    if (!(await asked) || state.mode !== "correct" || state.current !== entry || state.busy) return;
    changeAnswer(entry, "withdraw", {}, (result) => {
      const copies = result.snapshot_copies
        ? `; ${result.snapshot_copies} training view(s) of past rounds keep its image until pruned` : "";
      return `withdrew ${entry.id}: sample ${result.sample} left the memory${copies}`;
    });
  }

  // ---- the lists: tabs, and keys on their entries -------------------------------------------
  async function selectTab(name, focusList) {
    state.tab = name;
    for (const tab of ["queue", "answered"]) {
      $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
      $(`${tab}-panel`).hidden = tab !== name;
    }
    if (name === "answered") {
      try {
        await refreshAnswered();
      } catch (err) {
        EC.report(err);
      }
    }
    if (focusList && state.tab === name) {
      const list = $(name);
      const li = list.querySelector("li.active[data-id]") || list.querySelector("li[data-id]");
      if (li) li.focus();
    }
  }

  /** Keys on the lists: a tab takes Enter and Space itself, an entry opens with them (and hands
   * the keys back to the editor); arrows, Home and End move between entries, Tab natively. */
  function onListKey(event) {
    const target = event.target;
    if (!(target instanceof Element) || !target.closest("aside.queue")) return false;
    const key = event.key;
    if (key === "Tab") return true;
    if (target.getAttribute("role") === "tab") return key === "Enter" || key === " ";
    const entry = target.closest("li[data-id]");
    if (!entry) return false;
    if (key === "Enter" || key === " ") {
      event.preventDefault();
      entry.blur();
      entry.click();
      return true;
    }
    if (key === "Escape") {
      event.preventDefault();
      entry.blur();
      return true;
    }
    const items = [...entry.parentElement.querySelectorAll("li[data-id]")];
    const at = items.indexOf(entry);
    const to = {ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1}[key];
    if (to === undefined) return false;
    event.preventDefault();
    items[Math.max(0, Math.min(items.length - 1, to))].focus();
    return true;
  }

  // ---- canvas -------------------------------------------------------------------------------
  /** Fit the frame to the editor's width and to the viewport below the frame's top (the page
   * at its top), times the zoom; a zoomed frame scrolls inside its box. */
  function layout() {
    if (!state.image) return;
    const wrap = $("canvas-wrap");
    const canvas = $("canvas");
    const top = wrap.getBoundingClientRect().top + window.scrollY;
    const maxW = wrap.offsetWidth;  // not clientWidth: a zoomed frame's scroll bar takes from it
    // at least 280 px, or on a phone held sideways (a 360-390 px high screen) what the screen
    // leaves under the toolbar: before, 280 px put the frame's bottom below the fold there,
    // and scrolling to it took Submit off the screen
    const maxH = Math.max(Math.min(280, window.innerHeight * 0.45), window.innerHeight - top - 12);
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    const fit = Math.min(maxW / w, maxH / h);
    state.scale = fit * state.zoom;
    wrap.style.height = state.zoom > 1 ? Math.round(h * fit) + "px" : "";
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = Math.round(w * state.scale) + "px";
    canvas.style.height = Math.round(h * state.scale) + "px";
    canvas.width = Math.round(w * state.scale * dpr);
    canvas.height = Math.round(h * state.scale * dpr);
    $("zoom-level").textContent = `${Math.round(state.zoom * 100)}%`;
    draw();
  }

  /** Zoom to `zoom` (1: the whole frame) keeping the frame point `frame` (default: the one
   * under `client`, itself by default the middle of the frame's box) under `client`. */
  function zoomTo(zoom, client, frame) {
    if (!state.image) return;
    const wrap = $("canvas-wrap");
    const box = wrap.getBoundingClientRect();
    const at = client || {x: box.left + wrap.clientWidth / 2, y: box.top + wrap.clientHeight / 2};
    const before = $("canvas").getBoundingClientRect();
    const fixed = frame || {x: (at.x - before.left) / state.scale, y: (at.y - before.top) / state.scale};
    state.zoom = Math.max(1, Math.min(MAX_ZOOM, zoom));
    layout();
    const after = $("canvas").getBoundingClientRect();
    wrap.scrollLeft += after.left + fixed.x * state.scale - at.x;
    wrap.scrollTop += after.top + fixed.y * state.scale - at.y;
  }

  function zoomStep(up) {
    const next = up ? ZOOM_STEPS.find((z) => z > state.zoom + 0.01)
                    : [...ZOOM_STEPS].reverse().find((z) => z < state.zoom - 0.01);
    zoomTo(next || (up ? MAX_ZOOM : 1));
  }

  /** A corner square's side in screen pixels: at most a third of the box's shorter side, so
   * that the squares never cover a small box. */
  function handleSize(b) {
    const side = Math.min(b.x2 - b.x1, b.y2 - b.y1) * state.scale;
    return Math.max(3, Math.min(HANDLE_MAX_PX, side / 3));
  }

  function draw() {
    const canvas = $("canvas");
    if (!state.image || canvas.hidden) return;
    const ctx = canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const s = state.scale;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.imageSmoothingEnabled = state.zoom < 2;  // zoomed in: the frame's own pixels, sharp
    ctx.drawImage(state.image, 0, 0, state.image.naturalWidth * s, state.image.naturalHeight * s);
    const all = state.drag && state.drag.kind === "draw" && state.drag.box ? [...state.boxes, state.drag.box] : state.boxes;
    const place = (b) => ({x: Math.min(b.x1, b.x2) * s, y: Math.min(b.y1, b.y2) * s,
                           w: Math.abs(b.x2 - b.x1) * s, h: Math.abs(b.y2 - b.y1) * s});
    all.forEach((b, i) => {  // every outline first: no later box's outline runs over a tag
      const {x, y, w, h} = place(b);
      ctx.setLineDash(b.proposed ? [7, 5] : []);
      ctx.lineWidth = i === state.selected ? 3 : 2;
      ctx.strokeStyle = colorOf(b.cls);
      ctx.strokeRect(x, y, w, h);
    });
    ctx.setLineDash([]);
    all.forEach((b, i) => {
      const color = colorOf(b.cls);
      const {x, y, w} = place(b);
      const selected = i === state.selected;
      if (state.tags) {
        ctx.font = "600 13px system-ui, sans-serif";
        const score = b.proposed && b.score !== undefined ? ` ${b.score.toFixed(2)}` : "";
        const frameW = state.image.naturalWidth * s;
        const text = fitLabel(ctx, b.cls || "?", score, Math.min(frameW, Math.max(w, frameW / 2)));
        const tw = ctx.measureText(text).width + 8;
        const ty = y >= 18 ? y - 18 : y;
        // a box at the frame's right edge (an object leaving the frame) keeps its whole tag:
        // the tag ends at the edge instead of running past it
        const tx = Math.max(0, Math.min(x - (selected ? 1.5 : 1), frameW - tw));
        ctx.fillStyle = color;
        ctx.fillRect(tx, ty, tw, 18);
        ctx.fillStyle = EC.inkOn(color);
        ctx.fillText(text, tx + 4, ty + 13);
      }
      if (selected) {
        const side = handleSize(b);
        for (const [cx, cy] of corners(b)) {
          ctx.fillStyle = "#fff";
          ctx.fillRect(cx * s - side / 2, cy * s - side / 2, side, side);
          ctx.strokeStyle = color;
          ctx.lineWidth = side < 6 ? 1 : 2;
          ctx.strokeRect(cx * s - side / 2, cy * s - side / 2, side, side);
        }
      }
    });
  }

  /** A box's label: the class name (a bidi isolate, cut with "…" to `room` pixels) and its score. */
  function fitLabel(ctx, name, tail, room) {
    let chars = [...name];
    let text = EC.isolate(name) + tail;
    while (chars.length > 1 && ctx.measureText(text).width + 8 > room) {
      chars = chars.slice(0, Math.max(1, chars.length - Math.max(1, Math.floor(chars.length / 8))));
      text = EC.isolate(chars.join("") + "…") + tail;
    }
    return text;
  }

  function toggleTags() {
    state.tags = !state.tags;
    $("tags").setAttribute("aria-pressed", String(state.tags));
    draw();
  }

  function corners(b) {
    return [[b.x1, b.y1, "tl"], [b.x2, b.y1, "tr"], [b.x1, b.y2, "bl"], [b.x2, b.y2, "br"]];
  }

  /** The selected box's corner a press at `event` grabs, or null: inside the box its square
   * and a few screen pixels more (at most a quarter of the box each way, so that a small box
   * keeps a middle to move it by), outside it only those few pixels (half the square out there
   * took drags that began beside the box, where the next person stands, as resizes). */
  function grabbedCorner(b, event) {
    const rect = $("canvas").getBoundingClientRect();
    const px = event.clientX - rect.left;
    const py = event.clientY - rect.top;
    const s = state.scale;
    const grab = event.pointerType === "mouse" ? GRAB_PX : TOUCH_GRAB_PX;
    const inX = Math.min(handleSize(b) / 2 + grab, (b.x2 - b.x1) * s / 4);
    const inY = Math.min(handleSize(b) / 2 + grab, (b.y2 - b.y1) * s / 4);
    const found = corners(b).find(([cx, cy, name]) => {
      const dx = (px - cx * s) * (name[1] === "r" ? 1 : -1);  // > 0: outside the box
      const dy = (py - cy * s) * (name[0] === "b" ? 1 : -1);
      return dx >= -inX && dx <= grab && dy >= -inY && dy <= grab;
    });
    return found ? found[2] : null;
  }

  /** The frame pixel under a pointer: whole pixels, inside the frame. */
  function toImage(event) {
    const rect = $("canvas").getBoundingClientRect();
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    return {
      x: Math.max(0, Math.min(w, Math.round((event.clientX - rect.left) / state.scale))),
      y: Math.max(0, Math.min(h, Math.round((event.clientY - rect.top) / state.scale))),
    };
  }

  function normalize(b) {
    const [x1, x2] = [Math.min(b.x1, b.x2), Math.max(b.x1, b.x2)];
    const [y1, y2] = [Math.min(b.y1, b.y2), Math.max(b.y1, b.y2)];
    Object.assign(b, {x1, y1, x2, y2});
  }

  /** The smallest box holding `p` (within `pad` frame pixels), or -1. */
  function hitBox(p, pad = 0) {
    let best = -1;
    let bestArea = Infinity;
    state.boxes.forEach((b, i) => {
      if (p.x >= b.x1 - pad && p.x <= b.x2 + pad && p.y >= b.y1 - pad && p.y <= b.y2 + pad) {
        const area = (b.x2 - b.x1) * (b.y2 - b.y1);
        if (area < bestArea) { best = i; bestArea = area; }
      }
    });
    return best;
  }

  function select(index) {
    state.selected = index;
    state.drawnLast = null;  // a box clicked is selected to be moved too
    const b = state.boxes[index];
    if (b && b.cls && state.classes.includes(b.cls)) {
      state.defaultClass = b.cls;
      $("class-select").value = b.cls;
    }
    draw();
  }

  /** A press: on the selected box's corner it resizes, inside the selected box it moves it;
   * anywhere else it draws a new box once the pointer travels, and a press and release without
   * travel selects the box under it (a drag never takes an unselected box). */
  function onPointerDown(event) {
    if (!state.image || event.button > 0) return;
    event.preventDefault();
    // keys act on the editor again, not on a list, the class list or a button (before, a
    // click on the frame left them on the class list: Enter, 0 and Esc did nothing)
    const focused = document.activeElement;
    if (focused instanceof HTMLElement && focused !== document.body && focused.id !== "new-class") {
      focused.blur();
    }
    $("canvas").setPointerCapture(event.pointerId);
    if (event.pointerType === "touch") {
      state.touches.set(event.pointerId, {x: event.clientX, y: event.clientY});
      if (state.touches.size === 2) startPinch();
      if (state.touches.size > 1) return;
    }
    const p = toImage(event);
    const start = {x: event.clientX, y: event.clientY};
    const b = state.selected >= 0 ? state.boxes[state.selected] : null;
    const corner = b ? grabbedCorner(b, event) : null;
    // a box just drawn is selected to be named, not to be moved: until it is named or clicked,
    // a drag that starts inside it draws the next box (touching objects; before, it moved the
    // box just drawn)
    const movable = b && b !== state.drawnLast;
    if (corner) {
      state.drag = {kind: "resize", corner, box: b, start, p, moved: false};
    } else if (movable && p.x >= b.x1 && p.x <= b.x2 && p.y >= b.y1 && p.y <= b.y2) {
      state.drag = {kind: "move", box: b, start, p, orig: {...b}, moved: false};
    } else {
      state.drag = {kind: "draw", start, p, box: null, moved: false};
    }
  }

  function onPointerMove(event) {
    if (state.touches.has(event.pointerId)) {
      state.touches.set(event.pointerId, {x: event.clientX, y: event.clientY});
      if (state.pinch) { pinchMove(); return; }
    }
    const drag = state.drag;
    if (!drag || !state.image) return;
    if (!drag.moved) {
      if (Math.hypot(event.clientX - drag.start.x, event.clientY - drag.start.y) < MOVE_PX) return;
      drag.moved = true;
      if (drag.kind !== "draw") remember();
    }
    const p = toImage(event);
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    if (drag.kind === "draw") {
      drag.box = {cls: state.defaultClass, x1: drag.p.x, y1: drag.p.y, x2: p.x, y2: p.y, proposed: false};
    } else if (drag.kind === "move") {
      const bw = drag.orig.x2 - drag.orig.x1;
      const bh = drag.orig.y2 - drag.orig.y1;
      const x1 = Math.max(0, Math.min(w - bw, drag.orig.x1 + p.x - drag.p.x));
      const y1 = Math.max(0, Math.min(h - bh, drag.orig.y1 + p.y - drag.p.y));
      Object.assign(drag.box, {x1, y1, x2: x1 + bw, y2: y1 + bh, proposed: false});
    } else if (drag.kind === "resize") {
      const b = drag.box;  // never narrower or shorter than a frame pixel, never flipped
      if (drag.corner[1] === "l") b.x1 = Math.min(p.x, b.x2 - 1); else b.x2 = Math.max(p.x, b.x1 + 1);
      if (drag.corner[0] === "t") b.y1 = Math.min(p.y, b.y2 - 1); else b.y2 = Math.max(p.y, b.y1 + 1);
      b.proposed = false;
    }
    draw();
  }

  function onPointerUp(event) {
    if (state.touches.delete(event.pointerId) && state.pinch) {
      if (state.touches.size < 2) state.pinch = null;
      return;
    }
    const drag = state.drag;
    state.drag = null;
    if (!drag) return;
    if (!drag.moved) {
      if (drag.kind !== "resize") select(hitBox(drag.p, 2 / state.scale));
      return;
    }
    if (drag.kind === "draw" && drag.box && event.type !== "pointercancel") {
      const b = drag.box;
      normalize(b);
      if (b.x2 - b.x1 >= 1 && b.y2 - b.y1 >= 1) {
        remember();
        state.boxes.push(b);
        state.selected = state.boxes.length - 1;
        state.drawnLast = b;
        state.typeToName = b;
        state.edited = true;
        if (!b.cls) openNewClass();
      } else {
        EC.toast("No box: a box is at least 1 frame pixel each way (zoom in for small objects)", "info");
      }
    } else if (drag.kind !== "draw") {
      state.edited = true;
    }
    draw();
  }

  /** Two fingers: pinch zooms, and the frame follows their middle (pan). A box the first
   * finger was moving or resizing goes back as it was. */
  function startPinch() {
    const drag = state.drag;
    state.drag = null;
    if (drag && drag.moved && drag.kind !== "draw") undo();
    const [a, b] = [...state.touches.values()];
    const mid = {x: (a.x + b.x) / 2, y: (a.y + b.y) / 2};
    const rect = $("canvas").getBoundingClientRect();
    state.pinch = {dist: Math.max(1, Math.hypot(a.x - b.x, a.y - b.y)), zoom: state.zoom,
                   frame: {x: (mid.x - rect.left) / state.scale, y: (mid.y - rect.top) / state.scale}};
    draw();
  }

  function pinchMove() {
    const [a, b] = [...state.touches.values()];
    const mid = {x: (a.x + b.x) / 2, y: (a.y + b.y) / 2};
    const dist = Math.max(1, Math.hypot(a.x - b.x, a.y - b.y));
    zoomTo(state.pinch.zoom * dist / state.pinch.dist, mid, state.pinch.frame);
  }

  /** An undo point: the boxes as they are before an edit (Ctrl+Z goes back to it). */
  function remember() {
    state.undo.push({boxes: state.boxes.map((b) => ({...b})), selected: state.selected, edited: state.edited});
    if (state.undo.length > MAX_UNDO) state.undo.shift();
    disarm();
  }

  function undo() {
    const last = state.undo.pop();
    if (!last) {
      EC.toast("Nothing to undo on this frame", "info");
      return;
    }
    state.boxes = last.boxes;
    state.selected = Math.min(last.selected, state.boxes.length - 1);
    state.edited = last.edited;
    const cls = state.selected >= 0 ? state.boxes[state.selected].cls : "";
    if (cls && state.classes.includes(cls)) {  // the picker follows the undo (before: it kept
      state.defaultClass = cls;                // the class undone, and gave it to the next box)
      $("class-select").value = cls;
    }
    disarm();
    draw();
  }

  function deleteSelected() {
    if (state.selected < 0) return;
    remember();
    state.boxes.splice(state.selected, 1);
    state.selected = -1;
    state.edited = true;
    draw();
  }

  /** A new box from the keyboard: a quarter of the frame, centred, of the class in use,
   *  selected (arrows move it, + and - resize it). */
  function addBoxByKey() {
    if (!state.image || state.busy) return;
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    // whole frame pixels, as a drawn box's (before: 225.2, 179.6, ... from the keyboard)
    const b = {cls: state.defaultClass, x1: Math.round(w * 3 / 8), y1: Math.round(h * 3 / 8),
               x2: Math.round(w * 5 / 8), y2: Math.round(h * 5 / 8), proposed: false};
    remember();
    state.boxes.push(b);
    state.selected = state.boxes.length - 1;
    state.typeToName = b;
    state.edited = true;
    if (!b.cls) openNewClass();
    draw();
  }

  /** Grow (factor > 1) or shrink the selected box about its centre, kept inside the frame. */
  function resizeSelected(factor) {
    if (state.selected < 0 || !state.image) return;
    const b = state.boxes[state.selected];
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    const cx = (b.x1 + b.x2) / 2;
    const cy = (b.y1 + b.y2) / 2;
    const hw = Math.max(1, ((b.x2 - b.x1) / 2) * factor);
    const hh = Math.max(1, ((b.y2 - b.y1) / 2) * factor);
    remember();
    Object.assign(b, {x1: Math.max(0, Math.round(cx - hw)), x2: Math.min(w, Math.round(cx + hw)),
                      y1: Math.max(0, Math.round(cy - hh)), y2: Math.min(h, Math.round(cy + hh)),
                      proposed: false});
    state.edited = true;
    draw();
  }

  /** Tab on the frame: the next (Shift: previous) box; returns whether a box took it (past
   *  the last one, or with no box, the caller moves focus on to the class list). */
  function tabThroughBoxes(backwards) {
    const n = state.boxes.length;
    if (!n) return false;
    const next = backwards ? (state.selected < 0 ? n - 1 : state.selected - 1) : state.selected + 1;
    if (next < 0 || next >= n) {
      state.selected = -1;
      draw();
      return false;
    }
    state.selected = next;
    draw();
    return true;
  }

  function nudge(dx, dy) {
    if (state.selected < 0 || !state.image) return;
    const b = state.boxes[state.selected];
    const w = state.image.naturalWidth;
    const h = state.image.naturalHeight;
    const mx = Math.max(-b.x1, Math.min(w - b.x2, dx));
    const my = Math.max(-b.y1, Math.min(h - b.y2, dy));
    remember();
    Object.assign(b, {x1: b.x1 + mx, x2: b.x2 + mx, y1: b.y1 + my, y2: b.y2 + my, proposed: false});
    state.edited = true;
    draw();
  }

  function onKey(event) {
    const tag = event.target && event.target.tagName;
    if (document.querySelector("dialog[open]")) return;
    if (tag === "INPUT") {
      if (event.target.id === "new-class" && event.key === "Enter") { event.preventDefault(); closeNewClass(true); }
      if (event.target.id === "new-class" && event.key === "Escape") { event.preventDefault(); closeNewClass(false); }
      return;
    }
    if (tag === "SELECT" && event.target.id === "class-select" && !event.altKey
        && (event.key === "Escape" || event.key === "Enter")) {
      event.preventDefault();  // the list gives the keys back: Esc to the frame, Enter submits
      event.target.blur();
      if (event.key === "Enter") submit();
      return;
    }
    if (tag === "SELECT" || tag === "TEXTAREA") return;
    if ((event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Tab") {  // on a button or link, Tab moves focus as everywhere else
      const onFrame = tag === "BODY" || tag === "CANVAS" || !tag;
      if (!onFrame) return;
      if (tabThroughBoxes(event.shiftKey)) {
        event.preventDefault();
      } else if (!event.shiftKey) {  // past the last box: the class list, then the buttons
        event.preventDefault();      // (the browser would start again at the page's top)
        $("class-select").focus();
      }
      return;
    }
    if (onListKey(event)) return;
    const key = event.key;
    if (typedName(event)) return;
    if (event.repeat && ANSWER_KEYS.has(key)) {  // a key held down answers one frame, not each next
      event.preventDefault();
      return;
    }
    shortcut(event, key);
  }

  /** Run the page's key ``key`` (``event``: for Shift and to take the key from the browser). */
  function shortcut(event, key) {
    const step = event.shiftKey ? 10 : 1;
    const actions = {
      Enter: submit,
      n: nothingHere, N: nothingHere,
      s: skipOrWithdraw, S: skipOrWithdraw,
      Delete: deleteSelected, Backspace: deleteSelected,
      c: openNewClass, C: openNewClass,
      q: () => selectTab("queue", true), Q: () => selectTab("queue", true),
      a: () => selectTab("answered", true), A: () => selectTab("answered", true),
      Escape: () => {
        if (state.mode === "correct" && state.selected < 0 && !state.busy) leaveCorrecting();
        state.selected = -1;
        disarm();
        draw();
      },
      b: addBoxByKey, B: addBoxByKey,
      t: toggleTags, T: toggleTags,
      z: () => zoomStep(true), Z: () => zoomStep(true), x: () => zoomStep(false), X: () => zoomStep(false),
      0: () => zoomTo(1),
      "+": () => resizeSelected(1.1), "=": () => resizeSelected(1.1), "-": () => resizeSelected(1 / 1.1),
      ArrowLeft: () => nudge(-step, 0), ArrowRight: () => nudge(step, 0),
      ArrowUp: () => nudge(0, -step), ArrowDown: () => nudge(0, step),
    };
    if (/^[1-9]$/.test(key)) {
      const name = state.classes[Number(key) - 1];
      if (name) setClass(name);
      event.preventDefault();
    } else if (actions[key]) {
      event.preventDefault();
      actions[key]();
    }
  }

  /** Letters typed right after a box is drawn name it, as on a device with no class yet, and
   *  as a person who just drew a box types (before, "draw, type bus, Enter" ran B, U and S as
   *  keys: a second box nobody drew was saved; "car" made the class "ar"). The first key after
   *  the box decides: a letter that is no key of the page opens the name field with it; C
   *  opens it empty (the documented key; a name it gets that only lacks its C, "ar" where the
   *  device has "car", is that class); a letter that is a key waits WORD_MS for a second
   *  letter, which makes both the start of a name, else runs as the key it is.
   *  Returns whether the key was taken. */
  function typedName(event) {
    const key = event.key;
    const letter = key.length === 1 && /\p{L}/u.test(key);
    const waiting = state.pendingKey;
    if (waiting) {
      if (letter && key.toLowerCase() !== waiting.key.toLowerCase()) {
        clearTimeout(waiting.timer);
        state.pendingKey = null;
        event.preventDefault();
        openNewClass(waiting.key + key);
        return true;
      }
      runPendingKey();  // then this key, as it is
      return false;
    }
    const fresh = state.typeToName !== null && state.boxes[state.selected] === state.typeToName;
    state.typeToName = null;
    if (!fresh || !letter) return false;
    event.preventDefault();
    if (key === "c" || key === "C") {
      openNewClass("", true);
    } else if (!LETTER_KEYS.has(key.toLowerCase())) {
      openNewClass(key);
    } else {
      state.pendingKey = {key, event: {shiftKey: event.shiftKey, preventDefault() {}},
                          timer: setTimeout(runPendingKey, WORD_MS)};
    }
    return true;
  }

  /** Run the key letter :func:`typedName` holds back, now (no second letter came). */
  function runPendingKey() {
    const waiting = state.pendingKey;
    if (!waiting) return;
    clearTimeout(waiting.timer);
    state.pendingKey = null;
    shortcut(waiting.event, waiting.key);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const canvas = $("canvas");
    canvas.addEventListener("pointerdown", onPointerDown);
    document.addEventListener("pointerdown", () => {  // a click ends "a letter names the box"
      state.typeToName = null;
      runPendingKey();
    }, true);
    canvas.addEventListener("pointermove", onPointerMove);
    canvas.addEventListener("pointerup", onPointerUp);
    canvas.addEventListener("pointercancel", onPointerUp);
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", layout);
    window.addEventListener("beforeunload", (event) => {  // a reload or a link away asks first
      if (state.edited && state.current && !state.busy) {  // (before, boxes drawn went unsaid)
        event.preventDefault();
        event.returnValue = "";
      }
    });
    $("canvas-wrap").addEventListener("wheel", (event) => {
      if (!state.image || !(event.ctrlKey || event.metaKey)) return;  // a plain wheel scrolls
      event.preventDefault();
      zoomTo(state.zoom * Math.exp(-event.deltaY * 0.002), {x: event.clientX, y: event.clientY});
    }, {passive: false});
    $("zoom-in").addEventListener("click", () => zoomStep(true));
    $("zoom-out").addEventListener("click", () => zoomStep(false));
    $("zoom-fit").addEventListener("click", () => zoomTo(1));
    $("tags").addEventListener("click", toggleTags);
    $("undo").addEventListener("click", undo);
    $("class-select").addEventListener("change", (event) => {
      if (event.target.value === NEW_CLASS) openNewClass();
      else { setClass(event.target.value); event.target.blur(); }
    });
    $("new-class").addEventListener("blur", () => { if (!$("new-class").hidden) closeNewClass(Boolean($("new-class").value.trim())); });
    $("new-class").addEventListener("input", (event) => {  // said while typing, not at Enter
      const over = [...event.target.value.trim()].length > MAX_CLASS_CHARS;
      if (over && !event.target.classList.contains("too-long")) {
        EC.toast(`A class name is 1–${MAX_CLASS_CHARS} characters`, "error");
      }
      event.target.classList.toggle("too-long", over);
      event.target.setAttribute("aria-invalid", over ? "true" : "false");
    });
    $("delete-box").addEventListener("click", deleteSelected);
    $("nothing").addEventListener("click", nothingHere);
    $("skip").addEventListener("click", skipOrWithdraw);
    $("submit").addEventListener("click", submit);
    $("back-to-queue").addEventListener("click", () => { if (!state.busy) leaveCorrecting(); });
    for (const tab of ["queue", "answered"]) {
      $(`tab-${tab}`).addEventListener("click", (event) => {
        if (event.detail) event.currentTarget.blur();
        selectTab(tab, !event.detail);
      });
    }
    try {
      await refreshClasses();
    } catch (err) {
      EC.report(err);
    }
    renderPicker();
    renderMode();
    refreshAnswered().catch(EC.report);  // the Answered tab's count, before it is opened
    // the answered list is read while it is shown, with the queue (and after each change)
    EC.every(QUEUE_PERIOD_MS, async () => {
      try {
        await refreshClasses();
        await refreshQueue();
      } catch (err) {
        queueUnread(err);
        throw err;  // reported as every failed request is
      }
      if (state.mode === "queue" && state.current) claim(state.current, "renew");
      if (state.tab === "answered") await refreshAnswered();
    });
  });
})();
