// Talking to the disco-serve API: multipart uploads, JSON errors, Retry-After, Server-Timing.
// URLs are relative to the page, so the UI also works when the API sits behind a path prefix.

/** An error answer of the API (`{"error": {"code", "message"}}`) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

const KEY_STORAGE = "disco-api-key";
let apiKey = readKey();

function readKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";  // storage disabled: keep the key in memory only
  }
}

/** The API key sent as X-API-Key (when the service requires keys); kept for this tab only. */
export function getApiKey() {
  return apiKey;
}

export function setApiKey(key) {
  apiKey = (key || "").trim();
  try {
    if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled
  }
}

/** POST `image` (a File or Blob) and string `fields` as multipart/form-data; resolves to the OK Response. */
export async function postImage(path, image, fields = {}, { signal } = {}) {
  return postFile(path, "image", image, fields, { signal });
}

/** GET / DELETE an API path with the API key; resolves to the OK Response, else throws ApiError. */
export async function request(path, { method = "GET", signal } = {}) {
  let response;
  try {
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    response = await fetch(path, { method, headers, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The service could not be reached. Is it running, and are you online?");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** POST a file as multipart field `field`, with string `fields`; resolves to the OK Response. */
export async function postFile(path, field, file, fields = {}, { signal } = {}) {
  const form = new FormData();
  form.append(field, file, file.name || field);
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined && value !== null && value !== "") form.append(key, String(value));
  }
  let response;
  try {
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    response = await fetch(path, { method: "POST", body: form, headers, signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The service could not be reached. Is it running, and are you online?");
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "The request failed.";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON (a proxy's HTML page, say): keep the status text
  }
  return new ApiError(response.status, code, message, parseRetryAfter(response.headers.get("Retry-After")));
}

/** Retry-After as seconds: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

const TITLES = {
  0: "Cannot reach the service",
  400: "The request was refused",
  401: "This service needs an API key",
  409: "Not ready yet",
  413: "The image is too large",
  415: "Not a supported image",
  422: "Invalid options",
  429: "The service is busy",
  499: "Cancelled",
  500: "The service failed",
  503: "The service is unavailable",
  504: "The service took too long",
};

const ADVICE = {
  401: "Enter your key under Options, then retry.",
  413: "Try a smaller file or fewer pixels (by default up to 20 MB and 40 megapixels).",
  415: "Use a PNG, JPEG, WebP, BMP, GIF or TIFF image.",
  503: "Try again in a moment.",
  504: "Try again, or use a smaller image.",
};

/** A person-readable { title, detail, retryAfterS } for any error thrown by `postImage`. */
export function describeError(err) {
  if (!(err instanceof ApiError)) {
    return { title: "Something went wrong", detail: String(err && err.message ? err.message : err), retryAfterS: null };
  }
  const title = err.code === "rate_limited"
    ? "Too many requests"
    : TITLES[err.status] || `Something went wrong (HTTP ${err.status})`;
  const parts = [sentence(err.message)];
  if (ADVICE[err.status]) parts.push(ADVICE[err.status]);
  if (err.status === 429) {
    parts.push(err.retryAfterS != null ? `Try again in ${err.retryAfterS} s.` : "Try again in a moment.");
  }
  return { title, detail: parts.filter(Boolean).join(" "), retryAfterS: err.retryAfterS };
}

/** The API's messages are lower-case clauses: capitalise and close them for display. */
function sentence(text) {
  const t = String(text || "").trim();
  if (!t) return "";
  const s = t[0].toUpperCase() + t.slice(1);
  return /[.!?)]$/.test(s) ? s : `${s}.`;
}

/** `Server-Timing: queue;dur=1.0, compute;dur=12.3` -> { queue: 1.0, compute: 12.3 } (milliseconds). */
export function parseServerTiming(value) {
  const out = {};
  for (const part of (value || "").split(",")) {
    const [name, ...params] = part.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && dur) out[name] = Number(dur.slice(4));
  }
  return out;
}

/** Base64 (the diverse endpoint's images) -> Blob. */
export function base64ToBlob(data, type) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}
