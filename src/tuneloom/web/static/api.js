/**
 * The console's API layer: the key the user signed in with (sessionStorage), JSON calls that throw
 * ApiError with the server's message, paged lists, server-sent-event streams and file uploads.
 * No routing and no page code: a refused key is handed to the hook the router sets (onKeyRefused).
 */

import { toast } from "./dom.js";

const KEY_STORAGE = "tuneloom.apiKey";
let keyRefused = () => {};

/** What to do once a 401 has cleared the key (the router shows the sign-in page again). */
export function onKeyRefused(handler) {
  keyRefused = handler;
}

export const getKey = () => sessionStorage.getItem(KEY_STORAGE);
export const setKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
export const clearKey = () => sessionStorage.removeItem(KEY_STORAGE);

/** An API error: `message` is the server's, with `status`, `code`, `key` (the bad setting) and `details`. */
export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && typeof body.message === "string" && body.message) || unexplained(status);
    const key = (body && body.details && body.details.key) || null;
    super(message);
    this.status = status;
    this.code = (body && body.code) || null;
    this.key = key;
    this.details = (body && body.details) || null;
  }
}

/** What to tell the user when an error answer carries no message (a proxy's HTML page, a crash). */
function unexplained(status) {
  if (status === 413) return "The request is larger than the server, or a proxy in front of it, accepts (HTTP 413).";
  if (status >= 500) return `The server failed to answer (HTTP ${status}); its log says why. Try again in a moment.`;
  return `The server refused the request (HTTP ${status}) without saying why.`;
}

export const UNREACHABLE = "The server could not be reached: check that tuneloom serve is running and the network is up, then try again.";

/** fetch, with a network failure said in plain words (the browser's own is "Failed to fetch"). */
export async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error(UNREACHABLE);
  }
}

function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { Authorization: `Key ${key}`, ...extra } : extra;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401 && getKey()) {
    clearKey();
    setTimeout(() => keyRefused(), 0); // back to sign-in, with the reason shown there
    toast("Your key was refused; sign in again.");
  }
  return new ApiError(response.status, body);
}

/** Call the API: `api("/api/apps", {method: "POST", body: {id}})`. JSON in and out; throws ApiError. */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const init = { method, headers: authHeaders(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(path, init);
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Every item of a paged list (a model's or a dataset's versions, newest first): a request per page,
 * each following the previous page's `Link: <…>; rel="next"` (the last page has none), so a picker
 * or a filter sees all of them however many pages they take.
 */
export async function apiAll(path, { signal } = {}) {
  const items = [];
  for (let next = path; next; ) {
    const response = await api(next, { signal, raw: true });
    items.push(...(await response.json()));
    next = nextPage(response.headers.get("Link"));
  }
  return items;
}

/** The URL of a Link header's rel="next" (RFC 8288), or null. */
function nextPage(header) {
  const found = /<([^>]*)>\s*;\s*rel="next"/.exec(header || "");
  return found ? found[1] : null;
}

/**
 * Read a server-sent-event stream with fetch (EventSource cannot send the Authorization header).
 * `onEvent(name, data)` gets each event ("message" when unnamed; data JSON-parsed when it parses).
 * Resolves when the stream ends; rejects with ApiError on an error status.
 */
export async function streamSSE(path, { method = "GET", body, signal, onEvent }) {
  const init = { method, headers: authHeaders({ Accept: "text/event-stream" }), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(path, init);
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  const dispatch = () => {
    if (data.length) {
      const text = data.join("\n");
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      onEvent(event, parsed);
    }
    event = "message";
    data = [];
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") dispatch();
      else if (line.startsWith(":")) continue;
      else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  }
  dispatch();
}

/**
 * Upload a file with progress (XMLHttpRequest: fetch has no upload progress).
 * Resolves with the parsed JSON answer; rejects with ApiError.
 */
export function upload(path, file, { onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = getKey();
    if (key) xhr.setRequestHeader("Authorization", `Key ${key}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => onProgress && e.lengthComputable && onProgress(e.loaded, e.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new Error(UNREACHABLE));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    xhr.send(file);
  });
}
