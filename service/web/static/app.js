// The disco-serve web UI: upload, compare, pick a diverse result, edit anchors, re-colorize.
// Plain ES modules, no build step. Only the API's own endpoints are called.

import {
  ApiError, base64ToBlob, describeError, getApiKey, parseServerTiming, postImage, setApiKey,
} from "./api.js";
import { labToHex, textColorOn } from "./color.js";
import "./video.js";  // the video panel (its own job: upload, progress, <video> result)

const $ = (id) => document.getElementById(id);

const el = {
  file: $("file"), drop: $("drop"), fileName: $("file-name"),
  anchors: $("anchors"), anchorsOut: $("anchors-out"), seed: $("seed"), seedRandom: $("seed-random"),
  count: $("count"), colorize: $("colorize"), diverse: $("diverse"),
  apiKeyField: $("api-key-field"), apiKey: $("api-key"),
  progress: $("progress"), status: $("status"), cancel: $("cancel"),
  error: $("error"), errorTitle: $("error-title"), errorDetail: $("error-detail"),
  errorRetry: $("error-retry"), errorDismiss: $("error-dismiss"),
  empty: $("empty"), stage: $("stage"), before: $("before-img"), after: $("after-img"),
  resultLabel: $("result-label"), layer: $("anchor-layer"), belowStage: $("below-stage"),
  split: $("split"), showAnchors: $("show-anchors"), grayInput: $("gray-input"), download: $("download"),
  anchorPanel: $("anchor-panel"), anchorList: $("anchor-list"), anchorStale: $("anchor-stale"),
  editor: $("editor"), editorTitle: $("editor-title"), candidates: $("candidates"),
  customColor: $("custom-color"), anchorRevert: $("anchor-revert"), anchorClose: $("anchor-close"),
  applyHints: $("apply-hints"), resetAnchors: $("reset-anchors"), downloadHints: $("download-hints"),
  pending: $("pending"), diversePanel: $("diverse-panel"), diverseGrid: $("diverse-grid"),
};

const state = {
  file: null,          // the uploaded File
  inputUrl: null,      // object URL of the upload
  result: null,        // { blob, url, label }
  anchors: [],         // from /anchors, each with base (the shown result's colour) and pick (the user's)
  anchorKey: null,     // the options the anchors were computed with
  selected: -1,        // index of the anchor being edited
  diverse: [],         // [{ index, blob, url, anchors }]
  diverseKey: null,    // the options the diverse results were made with
  picked: -1,          // which diverse result is shown
  dirty: false,        // anchor edits not yet re-colorized
  controller: null,    // AbortController of the running request
  lastAction: null,    // for Retry
  retryTimer: null,
  tick: null,
};

// ---------------------------------------------------------------------------------------------
// Options

function options() {
  const seed = el.seed.value.trim();
  return { anchors: Number(el.anchors.value), seed: seed === "" ? "" : seed };
}

function optionsKey() {
  const o = options();
  return `${o.anchors}/${o.seed}`;
}

function diverseCount() {
  const n = Math.round(Number(el.count.value));
  const count = Number.isFinite(n) ? Math.min(10, Math.max(2, n)) : 6;
  el.count.value = String(count);
  return count;
}

el.anchors.addEventListener("input", () => {
  el.anchorsOut.value = el.anchors.value;
  markStale();
});
el.seed.addEventListener("input", markStale);
el.seedRandom.addEventListener("click", () => {
  el.seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
  markStale();
});

// The API key field shows once the service asks for one (401), or when this tab holds a key.
el.apiKey.value = getApiKey();
el.apiKeyField.hidden = !getApiKey();
el.apiKey.addEventListener("input", () => setApiKey(el.apiKey.value));

function markStale() {
  el.anchorStale.hidden = !(state.anchors.length && state.anchorKey !== optionsKey());
}

// ---------------------------------------------------------------------------------------------
// Upload: picker, drag and drop anywhere on the page, paste

el.file.addEventListener("change", () => {
  if (el.file.files && el.file.files[0]) useFile(el.file.files[0]);
});

let dragDepth = 0;
window.addEventListener("dragenter", (e) => {
  if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
  e.preventDefault();
  dragDepth += 1;
  el.drop.classList.add("dragging");
});
window.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) el.drop.classList.remove("dragging");
});
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  el.drop.classList.remove("dragging");
  const file = e.dataTransfer?.files?.[0];
  if (file) useFile(file);
});
window.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) useFile(file);
});

function useFile(file) {
  if (file.type && !file.type.startsWith("image/")) {
    showError({ title: "Not an image", detail: `${file.name} is ${file.type}; choose a photo.` });
    return;
  }
  abortRunning();
  clearResults();
  state.file = file;
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  state.inputUrl = URL.createObjectURL(file);
  el.before.src = state.inputUrl;
  el.after.removeAttribute("src");
  el.before.onload = () => setAspect(el.before.naturalWidth, el.before.naturalHeight);
  el.fileName.textContent = `${file.name || "Pasted image"} (${formatBytes(file.size)})`;
  el.fileName.hidden = false;
  el.empty.hidden = true;
  el.stage.hidden = false;
  el.belowStage.hidden = false;
  el.colorize.disabled = false;
  el.diverse.disabled = false;
  colorize();
  // On a phone the result panel sits below the options: bring it into view.
  const panel = el.stage.closest(".panel");
  if (panel.getBoundingClientRect().top > window.innerHeight * 0.6) reveal(panel, "start");
}

function clearResults() {
  hideError();
  setResult(null);
  clearDiverse();
  state.anchors = [];
  state.anchorKey = null;
  state.selected = -1;
  state.dirty = false;
  renderDiverse();
  renderAnchors();
}

function clearDiverse() {
  for (const d of state.diverse) URL.revokeObjectURL(d.url);
  state.diverse = [];
  state.diverseKey = null;
  state.picked = -1;
}

function setAspect(width, height) {
  if (width > 0 && height > 0) el.stage.style.setProperty("--ar", String(width / height));
}

// ---------------------------------------------------------------------------------------------
// Running requests: one at a time, cancellable, with progress and errors

async function run(label, action) {
  abortRunning();
  hideError();
  const controller = new AbortController();
  state.controller = controller;
  state.lastAction = () => run(label, action);
  setBusy(true, label);
  try {
    await action(controller.signal, (text) => setBusy(true, text));
  } catch (err) {
    if (err && err.name === "AbortError") {
      if (state.controller === controller) say("Cancelled.");
    } else {
      console.warn(err);
      if (state.controller === controller) {
        say("");
        showError(describeError(err), isRetryable(err));
        if (err instanceof ApiError && err.status === 401) {
          el.apiKeyField.hidden = false;
          el.apiKey.focus();
        }
      }
    }
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
    }
  }
}

function isRetryable(err) {
  return err instanceof ApiError && ([0, 401, 429].includes(err.status) || err.status >= 500);
}

function abortRunning() {
  if (state.controller) {
    const c = state.controller;
    state.controller = null;
    c.abort();
    setBusy(false);
  }
}

el.cancel.addEventListener("click", () => {
  abortRunning();
  say("Cancelled.");
});

function setBusy(busy, text = "") {
  document.body.dataset.busy = busy ? "true" : "false";
  el.stage.setAttribute("aria-busy", busy ? "true" : "false");
  el.progress.hidden = !busy;
  el.cancel.hidden = !busy;
  const noFile = !state.file;
  el.colorize.disabled = busy || noFile;
  el.diverse.disabled = busy || noFile;
  el.applyHints.disabled = busy || !state.anchors.length;
  clearInterval(state.tick);
  if (busy) {
    const start = performance.now();
    const update = () => say(`${text} ${((performance.now() - start) / 1000).toFixed(1)} s`);
    update();
    state.tick = setInterval(update, 200);
  }
}

function say(text) {
  el.status.textContent = text;
}

function done(start, response, what) {
  const seconds = ((performance.now() - start) / 1000).toFixed(2);
  const t = parseServerTiming(response.headers.get("Server-Timing"));
  const server = t.compute != null ? ` (model ${Math.round(t.compute)} ms)` : "";
  say(`${what} in ${seconds} s${server}.`);
}

function showError({ title, detail, retryAfterS = null }, retryable = false) {
  clearInterval(state.retryTimer);
  el.errorTitle.textContent = title;
  el.errorDetail.textContent = detail;
  el.errorRetry.hidden = !(retryable && state.lastAction);
  el.errorRetry.disabled = false;
  el.errorRetry.textContent = "Retry";
  if (retryAfterS) {
    let left = retryAfterS;
    el.errorRetry.disabled = true;
    el.errorRetry.textContent = `Retry in ${left} s`;
    state.retryTimer = setInterval(() => {
      left -= 1;
      if (left <= 0) {
        clearInterval(state.retryTimer);
        el.errorRetry.disabled = false;
        el.errorRetry.textContent = "Retry";
      } else {
        el.errorRetry.textContent = `Retry in ${left} s`;
      }
    }, 1000);
  }
  el.error.hidden = false;
}

function hideError() {
  clearInterval(state.retryTimer);
  el.error.hidden = true;
}

el.errorDismiss.addEventListener("click", hideError);
el.errorRetry.addEventListener("click", () => state.lastAction && state.lastAction());

// ---------------------------------------------------------------------------------------------
// Actions

el.colorize.addEventListener("click", colorize);
el.diverse.addEventListener("click", diverse);
el.applyHints.addEventListener("click", applyHints);

function colorize() {
  if (!state.file) return;
  const opts = options();
  run("Colorizing…", async (signal, progress) => {
    const start = performance.now();
    const response = await postImage("colorize", state.file, opts, { signal });
    const blob = await response.blob();
    setResult(blob, "Automatic");
    state.picked = -1;
    if (state.diverseKey !== `${opts.anchors}/${opts.seed}`) clearDiverse();
    renderDiverse();
    progress("Finding the anchors…");
    await loadAnchors(opts, signal, true);
    done(start, response, "Colorized");
  });
}

function diverse() {
  if (!state.file) return;
  const opts = options();
  const count = diverseCount();
  run(`Making ${count} diverse results…`, async (signal, progress) => {
    const start = performance.now();
    const response = await postImage("colorize/diverse", state.file, { ...opts, count }, { signal });
    const body = await response.json();
    const type = body.content_type || "image/png";
    clearDiverse();
    state.diverseKey = `${opts.anchors}/${opts.seed}`;
    state.diverse = body.results.map((r) => {
      const blob = base64ToBlob(r.image, type);
      return { index: r.index, blob, url: URL.createObjectURL(blob), anchors: r.anchors || [] };
    });
    state.picked = -1;
    renderDiverse();
    if (state.anchorKey !== `${opts.anchors}/${opts.seed}`) {
      // New options: show #1 (the automatic result for them) so the anchors match the image.
      progress("Finding the anchors…");
      await loadAnchors(opts, signal, false);
      pickDiverse(0);
    }
    done(start, response, `${state.diverse.length} diverse results`);
    reveal(el.diversePanel, "nearest");
  });
}

function applyHints() {
  if (!state.file || !state.anchors.length) return;
  const hints = currentHints();
  run("Colorizing with your anchors…", async (signal) => {
    const start = performance.now();
    const response = await postImage("colorize", state.file, { hints: JSON.stringify(hints) }, { signal });
    setResult(await response.blob(), "Your anchors");
    state.dirty = false;
    renderPending();
    done(start, response, "Re-colorized");
  });
}

async function loadAnchors(opts, signal, resetBase) {
  const response = await postImage("anchors", state.file, opts, { signal });
  const body = await response.json();
  state.anchors = body.anchors.map((a) => {
    const top = a.candidates[0];
    return { ...a, base: { ab: top.ab, color: top.color, bin: top.bin }, pick: null };
  });
  state.anchorKey = `${opts.anchors}/${opts.seed}`;
  state.selected = -1;
  state.dirty = false;
  if (!resetBase && state.picked >= 0) applyDiverseBase(state.diverse[state.picked]);
  renderAnchors();
  markStale();
}

// ---------------------------------------------------------------------------------------------
// The result and the compare view

function setResult(blob, label) {
  if (state.result) URL.revokeObjectURL(state.result.url);
  el.stage.classList.toggle("no-result", !blob);
  if (!blob) {
    state.result = null;
    el.after.removeAttribute("src");
    el.resultLabel.hidden = true;
    el.download.hidden = true;
    syncSplit();
    return;
  }
  const url = URL.createObjectURL(blob);
  state.result = { blob, url, label };
  el.after.src = url;
  el.after.onload = () => {
    if (!el.before.naturalWidth) setAspect(el.after.naturalWidth, el.after.naturalHeight);
  };
  el.resultLabel.textContent = label;
  el.resultLabel.hidden = false;
  el.download.href = url;
  el.download.download = `${baseName()}-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.${extension(blob.type)}`;
  el.download.hidden = false;
  syncSplit();
}

function baseName() {
  const name = (state.file && state.file.name) || "image";
  return name.replace(/\.[^.]+$/, "") || "image";
}

function extension(type) {
  return { "image/jpeg": "jpg", "image/webp": "webp" }[type] || "png";
}

for (const radio of document.querySelectorAll('input[name="view"]')) {
  radio.addEventListener("change", () => {
    el.stage.dataset.view = radio.value;
    syncSplit();
  });
}

/** The before/after slider only means something in the slider view with a result. */
function syncSplit() {
  el.split.closest(".field").hidden = !state.result || el.stage.dataset.view !== "slider";
}

function setSplit(percent) {
  const p = Math.min(100, Math.max(0, percent));
  el.split.value = String(Math.round(p));
  el.stage.style.setProperty("--split", `${p}%`);
  el.split.setAttribute("aria-valuetext", `${Math.round(p)}% input`);
}
el.split.addEventListener("input", () => setSplit(Number(el.split.value)));
setSplit(50);

// Drag on the image to move the split (the range input is the keyboard way).
el.stage.addEventListener("pointerdown", (e) => {
  if (el.stage.dataset.view !== "slider" || e.target.closest(".anchor") || e.button !== 0) return;
  const move = (ev) => {
    const rect = el.stage.getBoundingClientRect();
    setSplit(((ev.clientX - rect.left) / rect.width) * 100);
  };
  move(e);
  el.stage.setPointerCapture(e.pointerId);
  el.stage.addEventListener("pointermove", move);
  el.stage.addEventListener("pointerup", () => el.stage.removeEventListener("pointermove", move), { once: true });
});

el.showAnchors.addEventListener("change", () => {
  el.stage.classList.toggle("hide-anchors", !el.showAnchors.checked);
});
el.grayInput.addEventListener("change", () => {
  el.stage.classList.toggle("gray-input", el.grayInput.checked);
});
el.stage.classList.toggle("gray-input", el.grayInput.checked);

// ---------------------------------------------------------------------------------------------
// Diverse results

function renderDiverse() {
  el.diverseGrid.replaceChildren(
    ...state.diverse.map((d, k) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb";
      button.setAttribute("aria-pressed", String(k === state.picked));
      const img = document.createElement("img");
      img.src = d.url;
      img.alt = "";
      const caption = document.createElement("span");
      caption.textContent = `#${k + 1}`;
      button.append(img, caption);
      button.setAttribute("aria-label", `Diverse result ${k + 1}${k === 0 ? " (the automatic one)" : ""}`);
      button.addEventListener("click", () => pickDiverse(k));
      item.append(button);
      return item;
    }),
  );
  el.diversePanel.hidden = state.diverse.length === 0;
}

function pickDiverse(k) {
  const d = state.diverse[k];
  if (!d) return;
  state.picked = k;
  setResult(d.blob, `Diverse #${k + 1}`);
  applyDiverseBase(d);
  renderDiverse();
  renderAnchors();
  say(`Showing diverse result ${k + 1}. Its anchor colours are ready to edit.`);
}

/** Start anchor editing from the colours a diverse result used (matched by token). */
function applyDiverseBase(d) {
  if (!d) return;
  const byToken = new Map(d.anchors.map((a) => [a.token, a]));
  for (const a of state.anchors) {
    const used = byToken.get(a.token);
    if (!used) continue;
    const cand = a.candidates.find((c) => c.bin === used.bin);
    a.base = { ab: used.ab, bin: used.bin, color: cand ? cand.color : labToHex(used.ab[0], used.ab[1]) };
    a.pick = null;
  }
  state.dirty = false;
}

// ---------------------------------------------------------------------------------------------
// Anchors: markers on the result, a list, and the editor

function current(a) {
  if (!a.pick) return { ab: a.base.ab, color: a.base.color };
  if (a.pick.kind === "candidate") {
    const c = a.candidates[a.pick.index];
    return { ab: c.ab, color: c.color };
  }
  return { color: a.pick.color };
}

/** The hints for /colorize: every anchor, `ab` for model colours, `color` for picked ones. */
function currentHints() {
  return state.anchors.map((a) => {
    const c = current(a);
    return c.ab ? { token: a.token, ab: c.ab } : { token: a.token, color: c.color };
  });
}

function describeAnchor(a, i) {
  const c = current(a);
  return `Anchor ${i + 1}, row ${a.row + 1}, column ${a.col + 1}: ${c.color}${a.pick ? ", changed" : ""}`;
}

function anchorButton(a, i, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = className;
  b.dataset.index = String(i);
  const c = current(a);
  b.style.setProperty("--swatch", c.color);
  b.style.setProperty("--on-swatch", textColorOn(c.color));
  b.textContent = String(i + 1);
  b.setAttribute("aria-label", describeAnchor(a, i));
  b.setAttribute("aria-pressed", String(i === state.selected));
  b.classList.toggle("changed", Boolean(a.pick));
  b.addEventListener("click", () => selectAnchor(i === state.selected ? -1 : i, className));
  return b;
}

function renderAnchors() {
  const markers = state.anchors.map((a, i) => {
    const m = anchorButton(a, i, "anchor");
    m.style.left = `${a.x * 100}%`;
    m.style.top = `${a.y * 100}%`;
    return m;
  });
  el.layer.replaceChildren(...markers);
  el.anchorList.replaceChildren(...state.anchors.map((a, i) => anchorButton(a, i, "chip")));
  el.anchorPanel.hidden = state.anchors.length === 0;
  el.applyHints.disabled = Boolean(state.controller) || !state.anchors.length;
  el.resetAnchors.disabled = !state.anchors.some((a) => a.pick);
  renderEditor();
  renderPending();
}

function selectAnchor(i, from = "chip") {
  state.selected = i;
  renderAnchors();
  if (i >= 0) {
    const first = el.candidates.querySelector("input:checked") || el.candidates.querySelector("input");
    (first || el.customColor).focus({ preventScroll: from === "anchor" });
    if (from === "anchor" && !isInView(el.editor)) reveal(el.editor, "nearest");
  }
}

function reveal(node, block) {
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  node.scrollIntoView({ behavior: still ? "auto" : "smooth", block });
}

function isInView(node) {
  const r = node.getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight;
}

function renderEditor() {
  const a = state.anchors[state.selected];
  el.editor.hidden = !a;
  if (!a) return;
  el.editorTitle.textContent = `Anchor ${state.selected + 1} of ${state.anchors.length}`;
  const shown = current(a);
  const chosen = a.pick
    ? (a.pick.kind === "candidate" ? a.pick.index : -1)
    : a.candidates.findIndex((c) => c.bin === a.base.bin);
  el.candidates.replaceChildren(
    ...a.candidates.map((c, k) => {
      const label = document.createElement("label");
      label.className = "candidate";
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "candidate";
      input.value = String(k);
      input.checked = k === chosen;
      input.addEventListener("change", () => setPick(a, { kind: "candidate", index: k }));
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.setProperty("--swatch", c.color);
      const text = document.createElement("span");
      text.textContent = `${percent(c.probability)}`;
      input.setAttribute("aria-label", `${k === 0 ? "Most likely" : `Choice ${k + 1}`}: ${c.color}, ${percent(c.probability)}`);
      label.append(input, swatch, text);
      return label;
    }),
  );
  el.customColor.value = shown.color;
  el.anchorRevert.disabled = !a.pick;
}

el.customColor.addEventListener("input", () => {
  const a = state.anchors[state.selected];
  if (a) setPick(a, { kind: "color", color: el.customColor.value.toLowerCase() });
});

function setPick(a, pick) {
  const same = pick && pick.kind === "candidate" && a.candidates[pick.index].bin === a.base.bin;
  a.pick = same ? null : pick;
  state.dirty = true;
  refreshAnchorViews();
}

/** Update colours and labels in place (keeps focus in the editor while the user picks). */
function refreshAnchorViews() {
  for (const node of [...el.layer.children, ...el.anchorList.children]) {
    const i = Number(node.dataset.index);
    const a = state.anchors[i];
    const c = current(a);
    node.style.setProperty("--swatch", c.color);
    node.style.setProperty("--on-swatch", textColorOn(c.color));
    node.setAttribute("aria-label", describeAnchor(a, i));
    node.classList.toggle("changed", Boolean(a.pick));
  }
  const a = state.anchors[state.selected];
  if (a) {
    el.anchorRevert.disabled = !a.pick;
    if (!a.pick || a.pick.kind === "candidate") el.customColor.value = current(a).color;
    if (a.pick && a.pick.kind === "color") {
      for (const input of el.candidates.querySelectorAll("input")) input.checked = false;
    }
  }
  el.resetAnchors.disabled = !state.anchors.some((x) => x.pick);
  renderPending();
}

function renderPending() {
  const changed = state.anchors.filter((a) => a.pick).length;
  el.pending.hidden = !state.dirty;
  el.pending.textContent = changed
    ? `${changed} anchor${changed === 1 ? "" : "s"} changed: re-colorize to see the result.`
    : "Re-colorize to see the result.";
}

el.anchorRevert.addEventListener("click", () => {
  const a = state.anchors[state.selected];
  if (!a) return;
  a.pick = null;
  state.dirty = true;
  renderAnchors();
  el.customColor.focus();
});

el.anchorClose.addEventListener("click", () => closeEditor());

el.editor.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    e.preventDefault();
    closeEditor();
  }
});

function closeEditor() {
  const i = state.selected;
  state.selected = -1;
  renderAnchors();
  const back = el.anchorList.children[i];
  if (back) back.focus();
}

el.resetAnchors.addEventListener("click", () => {
  for (const a of state.anchors) a.pick = null;
  state.dirty = true;
  renderAnchors();
});

el.downloadHints.addEventListener("click", () => {
  const blob = new Blob([JSON.stringify(currentHints(), null, 2) + "\n"], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `${baseName()}-hints.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});

// ---------------------------------------------------------------------------------------------

function percent(p) {
  return p >= 0.995 ? "100%" : p < 0.01 ? "<1%" : `${Math.round(p * 100)}%`;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

document.body.dataset.ready = "true";
