// The video panel: upload a short clip to POST videos/colorize (an async job), poll jobs/{id}
// for frames done / total, then play the MP4 result in a <video> element (a blob: URL).

import { describeError, postFile, request } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;

const els = {
  file: $("video-file"),
  go: $("video-go"),
  cancel: $("video-cancel"),
  progress: $("video-progress"),
  status: $("video-status"),
  error: $("video-error"),
  result: $("video-result"),
  download: $("video-download"),
};
let job = null;  // the Location of the running job
let resultUrl = null;

function say(text) {
  els.status.textContent = text;
}

// describeError speaks of images; these statuses mean something else for a clip
const VIDEO_TITLES = { 413: "The clip is too large or too long", 415: "Not a readable video" };

function fail(err) {
  const described = describeError(err);
  const title = VIDEO_TITLES[err && err.status] || described.title;
  const detail = VIDEO_TITLES[err && err.status] ? err.message : described.detail;
  els.error.textContent = `${title}: ${detail}`;
  els.error.hidden = false;
  finish();
}

function finish() {
  job = null;
  els.progress.hidden = true;
  els.cancel.hidden = true;
  els.go.disabled = !els.file.files.length;
}

async function start() {
  const file = els.file.files[0];
  if (!file) return;
  els.error.hidden = true;
  els.result.hidden = true;
  els.download.hidden = true;
  els.go.disabled = true;
  say(`Uploading ${file.name}...`);
  try {
    const accepted = await (await postFile("videos/colorize", "video", file)).json();
    job = accepted.links.self.replace(/^\//, "");
    els.progress.hidden = false;
    els.progress.removeAttribute("value");
    els.cancel.hidden = false;
    say(`Queued: ${accepted.video.frames} frames, ${accepted.video.width}x${accepted.video.height}.`);
    poll(job);
  } catch (err) {
    fail(err);
  }
}

async function poll(location) {
  while (job === location) {
    let info;
    try {
      info = await (await request(location)).json();
    } catch (err) {
      fail(err);
      return;
    }
    const p = info.progress;
    if (p && p.frames_total) {
      els.progress.max = p.frames_total;
      els.progress.value = p.frames_done;
      say(`Colorizing: ${p.frames_done} / ${p.frames_total} frames.`);
    }
    if (info.status === "done") {
      await show(location);
      return;
    }
    if (["failed", "expired", "cancelled"].includes(info.status)) {
      const e = info.error || {};
      say("");
      els.error.textContent = info.status === "cancelled"
        ? "Cancelled."
        : `The video could not be colorized: ${e.message || info.status}`;
      els.error.hidden = false;
      finish();
      return;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function show(location) {
  try {
    const blob = await (await request(`${location}/result`)).blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    els.result.src = resultUrl;
    els.result.hidden = false;
    els.download.href = resultUrl;
    els.download.hidden = false;
    say("Done.");
  } catch (err) {
    fail(err);
    return;
  }
  finish();
}

els.file.addEventListener("change", () => {
  els.go.disabled = !els.file.files.length || job !== null;
});
els.go.addEventListener("click", start);
els.cancel.addEventListener("click", async () => {
  if (!job) return;
  try {
    await request(job, { method: "DELETE" });
    say("Cancelling...");
  } catch (err) {
    fail(err);
  }
});
