// The playground: wires the generated form, the image picker, the queue
// follower, the result viewer, the history and the code snippets together.

import { Api, ApiError, progressOf } from "./api.js";
import { Compare } from "./compare.js";
import { clearErrors, readBody, renderFields, resetFields, setField, showFieldError } from "./form.js";
import { clearHistory, loadHistory, storableInput, upsertHistory } from "./history.js";
import { loadFields } from "./schema.js";
import { snippet } from "./snippets.js";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "ccsr.key";

const form = $("#request-form");
const keyInput = $("#api-key");
const remember = $("#remember-key");
const urlInput = $("#image_url");
const fileInput = $("#image-file");
const dropZone = $("#drop-zone");
const preview = $("#input-preview");
const statusBox = $("#run-status");
const progressBar = $("#progress");
const logsPre = $("#logs");

const api = new Api(document.baseURI, () => keyInput.value.trim());
const compare = new Compare($("#compare"));
const publicBase = new URL(".", document.baseURI).toString().replace(/\/$/, "");

let fields = [];
/** The apps the server serves (GET /api/apps) and the one the form is for. */
let apps = [];
let app = null;
let lang = "curl";
/** The chosen local image: the File, a blob: URL to show it, and its URL once uploaded. */
let local = null;
/** The request being followed. */
let current = null;

// ------------------------------------------------------------------ API key

keyInput.value = localStorage.getItem(KEY_STORE) || "";
remember.checked = localStorage.getItem(KEY_STORE + ".forget") !== "1";
function storeKey() {
  if (remember.checked && keyInput.value.trim()) localStorage.setItem(KEY_STORE, keyInput.value.trim());
  else localStorage.removeItem(KEY_STORE);
  localStorage.setItem(KEY_STORE + ".forget", remember.checked ? "0" : "1");
  $("#api-key-error").hidden = true;
  updateSnippet();
}
keyInput.addEventListener("input", storeKey);
remember.addEventListener("change", storeKey);

// ------------------------------------------------------------------ image input

function describeImage(name, w, h, bytes) {
  const size = bytes ? ` · ${humanBytes(bytes)}` : "";
  $("#input-meta").textContent = `${name} · ${w}×${h}${size}`;
}

function setLocalFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    showFieldError(document, "image_url", `not an image: ${file ? file.name || file.type : "nothing"} (choose a PNG, JPEG or WebP file)`);
    return;
  }
  clearErrors(document);
  if (local?.objectUrl) URL.revokeObjectURL(local.objectUrl);
  local = { file, objectUrl: URL.createObjectURL(file), uploadedUrl: null };
  urlInput.value = "";
  urlInput.placeholder = `local file ${file.name || "pasted image"}, uploaded when you press Upscale`;
  showPreview(local.objectUrl, file.name || "pasted image", file.size);
  updateSnippet();
}

function showPreview(src, name, bytes) {
  preview.onload = () => describeImage(name, preview.naturalWidth, preview.naturalHeight, bytes);
  preview.onerror = () => {
    preview.hidden = true;
    $("#input-meta").textContent = src.startsWith("http") ? "(no preview: the server will fetch the URL itself)" : "";
  };
  preview.src = src;
  preview.hidden = false;
  dropZone.classList.add("has-image");
}

function clearImage() {
  if (local?.objectUrl) URL.revokeObjectURL(local.objectUrl);
  local = null;
  urlInput.value = "";
  urlInput.placeholder = "https://… or data:image/png;base64,…";
  preview.hidden = true;
  preview.removeAttribute("src");
  dropZone.classList.remove("has-image");
  $("#input-meta").textContent = "";
  fileInput.value = "";
  updateSnippet();
}

dropZone.addEventListener("click", () => fileInput.click());
dropZone.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" || ev.key === " ") {
    ev.preventDefault();
    fileInput.click();
  }
});
fileInput.addEventListener("change", () => fileInput.files[0] && setLocalFile(fileInput.files[0]));
for (const type of ["dragenter", "dragover"]) {
  dropZone.addEventListener(type, (ev) => {
    ev.preventDefault();
    dropZone.classList.add("dragging");
  });
}
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (ev) => {
  ev.preventDefault();
  dropZone.classList.remove("dragging");
  const file = ev.dataTransfer.files[0];
  if (file) return setLocalFile(file);
  const url = ev.dataTransfer.getData("text/uri-list") || ev.dataTransfer.getData("text/plain");
  if (url) setUrl(url.trim().split(/\s+/)[0]);
});
document.addEventListener("paste", (ev) => {
  const item = [...(ev.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
  if (item) {
    ev.preventDefault();
    const blob = item.getAsFile();
    const ext = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
    setLocalFile(new File([blob], blob.name && blob.name !== "image.png" ? blob.name : `pasted.${ext}`, { type: blob.type }));
    return;
  }
  const text = ev.clipboardData?.getData("text/plain")?.trim();
  const inField = ev.target instanceof HTMLInputElement || ev.target instanceof HTMLTextAreaElement;
  if (text && !inField && /^(https?:|data:image\/)/.test(text)) {
    ev.preventDefault();
    setUrl(text);
  }
});

function setUrl(url) {
  if (local?.objectUrl) URL.revokeObjectURL(local.objectUrl);
  local = null;
  urlInput.value = url;
  onUrlTyped();
}

function onUrlTyped() {
  const url = urlInput.value.trim();
  if (local && url !== local.uploadedUrl) {
    if (local.objectUrl) URL.revokeObjectURL(local.objectUrl);
    local = null;
  }
  if (/^(https?:|data:image\/)/.test(url)) showPreview(url, url.startsWith("data:") ? "data URI" : url.split("/").pop().split("?")[0] || url);
  else if (!url) clearImage();
  updateSnippet();
}
urlInput.addEventListener("change", onUrlTyped);
urlInput.addEventListener("input", () => {
  clearFieldError("image_url");
  updateSnippet();
});
$("#clear-image").addEventListener("click", clearImage);

function clearFieldError(name) {
  const p = document.querySelector(`.field-error[data-error-for="${name}"]`);
  if (p) {
    p.hidden = true;
    p.closest(".field")?.classList.remove("invalid");
  }
}

/** The image_url to send: the URL given, or the local file uploaded (once). */
async function resolveImageUrl() {
  if (local) {
    if (local.uploadedUrl) return local.uploadedUrl;
    setState("uploading", `Uploading ${local.file.name || "image"}…`);
    try {
      local.uploadedUrl = await api.upload(local.file);
    } catch (err) {
      if (!(err instanceof ApiError) || ![404, 405, 501].includes(err.status)) throw err;
      local.uploadedUrl = await dataUri(local.file); // a server without upload routes still takes data: URIs
    }
    urlInput.value = local.uploadedUrl.startsWith("data:") ? "" : local.uploadedUrl;
    return local.uploadedUrl;
  }
  return urlInput.value.trim();
}

function dataUri(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// ------------------------------------------------------------------ status display

function setState(state, text) {
  statusBox.dataset.state = state;
  $("#status-text").textContent = text;
  const busy = ["uploading", "queued", "running"].includes(state);
  $("#submit").disabled = busy;
  $("#cancel").disabled = !busy || !current;
  if (state === "uploading" || state === "queued") progressBar.removeAttribute("value");
  if (state === "idle") progressBar.value = 0;
  if (state !== "queued") $("#queue-position").hidden = true;
}

function showStatus(st) {
  if (!current || st.request_id && st.request_id !== current.id) return;
  if (st.status === "IN_QUEUE") {
    setState("queued", "In queue");
    const badge = $("#queue-position");
    const pos = st.queue_position ?? 0;
    badge.textContent = pos === 0 ? "queue position 0 (next)" : `queue position ${pos}`;
    badge.dataset.position = String(pos);
    badge.hidden = false;
  } else if (st.status === "IN_PROGRESS") {
    if (!current.running) {
      current.running = true;
      upsertHistory({ id: current.id, status: "IN_PROGRESS" });
      renderHistory();
    }
    const p = progressOf(st);
    if (p) {
      progressBar.value = Math.min(1, p.step / p.total);
      setState("running", p.total === 1 ? `Running · ${Math.round(p.step * 100)}%` : `Running · step ${p.step} of ${p.total}`);
    } else {
      setState("running", "Running");
      progressBar.removeAttribute("value");
    }
  }
  appendLogs(st.logs);
}

function appendLogs(logs) {
  if (!Array.isArray(logs) || !current) return;
  for (const log of logs) {
    const key = `${log.timestamp}|${log.level}|${log.message}`;
    if (current.seenLogs.has(key)) continue;
    current.seenLogs.add(key);
    const line = document.createElement("span");
    line.className = `log log-${(log.level || "INFO").toLowerCase()}`;
    const time = log.timestamp ? new Date(log.timestamp).toLocaleTimeString() : "";
    line.textContent = `${time} ${log.level || ""} ${log.message}\n`;
    logsPre.append(line);
  }
  $("#log-count").textContent = current.seenLogs.size ? `(${current.seenLogs.size})` : "";
  logsPre.scrollTop = logsPre.scrollHeight;
}

/** Show an error where it belongs: next to the field(s), the key box, or the form. */
function showError(err, prefix = "") {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    const p = $("#api-key-error");
    p.textContent = keyInput.value.trim()
      ? `The server refused this API key (${err.status}). Check it and try again.`
      : `This server needs an API key (${err.status}): paste it here.`;
    p.hidden = false;
    keyInput.closest(".key-box").classList.add("invalid");
    keyInput.focus();
    return p.textContent;
  }
  let placed = false;
  const leftovers = [];
  if (err instanceof ApiError) {
    for (const e of err.fieldErrors) {
      const loc = (e.loc || []).filter((p) => p !== "body");
      const name = String(loc[0] ?? "");
      const msg = e.msg || JSON.stringify(e);
      if (name && showFieldError(document, name, msg)) {
        placed = true;
        document.querySelector(`[name="${CSS.escape(name)}"]`)?.scrollIntoView({ block: "center" });
      } else leftovers.push(`${loc.join(".") || "input"}: ${msg}`);
    }
  }
  const box = $("#form-error");
  const text = leftovers.length ? leftovers.join("; ") : err.message || String(err);
  if (!placed || leftovers.length) {
    box.textContent = prefix + text;
    box.hidden = false;
  }
  return placed && !leftovers.length ? "Invalid input: see the highlighted fields." : prefix + text;
}

// ------------------------------------------------------------------ running a request

async function onSubmit(ev) {
  ev.preventDefault();
  clearErrors(document);
  $("#form-error").hidden = true;
  keyInput.closest(".key-box").classList.remove("invalid");
  if (!local && !urlInput.value.trim()) {
    showFieldError(document, "image_url", "image_url is required: choose, drop or paste an image, or give its URL.");
    return;
  }
  logsPre.textContent = "";
  $("#log-count").textContent = "";
  $("#logs-box").open = true;
  let body;
  try {
    const imageUrl = await resolveImageUrl();
    body = readBody(form, fields, imageUrl);
    updateSnippet();
    setState("queued", "Submitting…");
    const handle = await api.submit(body);
    $("#result").hidden = true;
    $("#empty-result").hidden = false;
    current = { id: handle.request_id, seenLogs: new Set(), before: local?.objectUrl || imageUrl, input: body, started: Date.now(), abort: new AbortController() };
    upsertHistory({ id: current.id, app: api.app, created: new Date().toISOString(), status: "IN_QUEUE", input: storableInput(body) });
    renderHistory();
    showStatus({ status: "IN_QUEUE", request_id: handle.request_id, queue_position: handle.queue_position ?? 0 });
    await followCurrent();
  } catch (err) {
    const msg = showError(err);
    setState("failed", `Failed: ${msg}`);
    current = null;
  }
}

async function followCurrent() {
  const req = current;
  const final = await api.follow(req.id, showStatus, req.abort.signal);
  if (current !== req) return;
  appendLogs(final.logs);
  if (final.error) {
    let detail = final.error;
    try {
      await api.result(req.id);
    } catch (err) {
      if (err instanceof ApiError) {
        detail = showError(err);
      }
    }
    const cancelled = /cancel/i.test(`${final.error_type} ${final.error}`);
    setState(cancelled ? "cancelled" : "failed", cancelled ? "Cancelled." : `Failed: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    upsertHistory({ id: req.id, status: cancelled ? "CANCELLED" : "FAILED", error: String(final.error) });
  } else {
    const out = await api.result(req.id);
    progressBar.value = 1;
    const secs = final.metrics?.inference_time;
    showResult(out, req.before, secs);
    $("#logs-box").open = false; // make room for the result; one click shows them again
    setState("done", `Done${secs ? ` in ${secs.toFixed(1)} s` : ""}.`);
    upsertHistory({ id: req.id, status: "COMPLETED", result: summarize(out), seconds: secs ?? null, before: /^https?:/.test(req.input.image_url) ? req.input.image_url : null });
  }
  current = null;
  $("#cancel").disabled = true;
  renderHistory();
}

function summarize(out) {
  const img = out.image || {};
  // sync_mode: the image came inline (a data: URI) and the server keeps no copy;
  // the history keeps none either (it would fill the browser's storage).
  const inline = /^data:/.test(img.url || "");
  return { url: inline ? null : img.url, inline, width: img.width, height: img.height, file_name: img.file_name, file_size: img.file_size, content_type: img.content_type, seed: out.seed };
}

function showResult(out, beforeUrl, seconds) {
  const img = out.image || {};
  $("#result").hidden = false;
  $("#empty-result").hidden = true;
  compare.show(beforeUrl, img.url, img.width, img.height);
  $("#result-size").textContent = img.width ? `${img.width} × ${img.height}` : "?";
  $("#result-seed").textContent = out.seed ?? "?";
  $("#result-file").textContent = [img.file_name, img.file_size ? humanBytes(img.file_size) : ""].filter(Boolean).join(" · ");
  $("#result-time").textContent = seconds ? `${Number(seconds).toFixed(2)} s` : "–";
  const a = $("#download");
  a.href = img.url;
  a.download = img.file_name || "ccsr.png";
  a.dataset.seed = out.seed ?? "";
  $("#result").scrollIntoView({ block: "nearest" });
}

$("#cancel").addEventListener("click", async () => {
  if (!current) return;
  try {
    const answer = await api.cancel(current.id);
    $("#status-text").textContent = answer === "ALREADY_COMPLETED" ? "Already completed." : "Cancelling…";
  } catch (err) {
    showError(err, "Cancel failed: ");
  }
});

$("#reuse-seed").addEventListener("click", () => {
  setField(form, "seed", $("#download").dataset.seed);
  updateSnippet();
});

$("#reset").addEventListener("click", () => {
  resetFields(form, fields);
  clearErrors(document);
  $("#form-error").hidden = true;
  updateSnippet();
});

form.addEventListener("submit", onSubmit);
form.addEventListener("input", (ev) => {
  if (ev.target.name) clearFieldError(ev.target.name);
  updateSnippet();
});
form.addEventListener("change", updateSnippet);

// ------------------------------------------------------------------ history

function renderHistory() {
  const list = $("#history");
  const items = loadHistory();
  list.textContent = "";
  $("#history-empty").hidden = items.length > 0;
  for (const item of items) {
    const li = document.createElement("li");
    li.className = `history-item status-${(item.status || "").toLowerCase()}`;
    li.dataset.id = item.id;
    li.tabIndex = 0;
    const thumb = document.createElement(item.result?.url ? "img" : "div");
    thumb.className = "thumb";
    if (item.result?.url) {
      thumb.src = item.result.url;
      thumb.alt = "";
      thumb.loading = "lazy";
      thumb.onerror = () => thumb.classList.add("gone");
    }
    const text = document.createElement("div");
    text.className = "history-text";
    const title = document.createElement("strong");
    title.textContent = item.result ? `${item.result.width}×${item.result.height} · seed ${item.result.seed}` : (item.status || "").toLowerCase().replace("_", " ");
    const meta = document.createElement("span");
    meta.className = "muted";
    const params = Object.entries(item.input || {}).filter(([k]) => k !== "image_url").map(([k, v]) => `${k}=${v}`).join(" ");
    meta.textContent = `${timeAgo(item.created)} · ${item.id.slice(0, 8)}${params ? " · " + params : ""}`;
    text.append(title, meta);
    li.append(thumb, text);
    li.addEventListener("click", () => openHistory(item));
    li.addEventListener("keydown", (ev) => ev.key === "Enter" && openHistory(item));
    list.append(li);
  }
}

async function openHistory(item) {
  // Switch to the app that request went to, then restore its settings into the form.
  if (item.app && item.app !== app?.id && apps.some((a) => a.id === item.app)) await selectApp(item.app);
  resetFields(form, fields);
  for (const [k, v] of Object.entries(item.input || {})) if (k !== "image_url") setField(form, k, v);
  if (/^https?:/.test(item.input?.image_url || "")) setUrl(item.input.image_url);
  updateSnippet();
  if (item.status === "COMPLETED" && item.result?.inline) {
    $("#result").hidden = true;
    $("#empty-result").hidden = false;
    setState("done", `Request ${item.id.slice(0, 8)} ran with sync_mode: its image was returned inline and is not kept (run it again to see it).`);
    return;
  }
  if (item.status === "COMPLETED" && item.result) {
    showResult({ image: item.result, seed: item.result.seed }, item.before, item.seconds);
    setState("done", `Request ${item.id.slice(0, 8)} (from history).`);
    return;
  }
  if (item.status === "IN_QUEUE" || item.status === "IN_PROGRESS") {
    current = { id: item.id, seenLogs: new Set(), before: item.before, input: item.input || {}, abort: new AbortController() };
    logsPre.textContent = "";
    setState("queued", "Following…");
    try {
      await followCurrent();
    } catch (err) {
      setState("failed", showError(err));
      current = null;
    }
  } else {
    setState("failed", `Request ${item.id.slice(0, 8)}: ${item.error || item.status}`);
  }
}

$("#clear-history").addEventListener("click", () => {
  clearHistory();
  renderHistory();
});

// ------------------------------------------------------------------ snippets

function updateSnippet() {
  const pending = local && !local.uploadedUrl;
  const imageUrl = pending ? `<upload of ${local.file.name || "your image"}>` : urlInput.value.trim() || local?.uploadedUrl || "https://example.com/photo.png";
  const body = fields.length ? readBody(form, fields, imageUrl) : { image_url: imageUrl };
  $("#snippet").textContent = snippet(lang, {
    base: publicBase, app: app?.id ?? "", cliApp: apps[0]?.id, body, localName: local?.file?.name, withKey: !!keyInput.value.trim(),
  });
}

for (const tab of document.querySelectorAll("[data-lang]")) {
  tab.addEventListener("click", () => {
    lang = tab.dataset.lang;
    for (const t of document.querySelectorAll("[data-lang]")) t.setAttribute("aria-selected", String(t === tab));
    updateSnippet();
  });
}
$("#copy-snippet").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("#snippet").textContent);
    $("#copy-snippet").textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("#snippet"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("#copy-snippet").textContent = "Selected";
  }
  setTimeout(() => ($("#copy-snippet").textContent = "Copy"), 1500);
});

// ------------------------------------------------------------------ helpers

function humanBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

function timeAgo(iso) {
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(s)) return "";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// ------------------------------------------------------------------ start

/** Show the form of app ``id`` (its fields from the server's OpenAPI schema). */
async function selectApp(id) {
  app = apps.find((a) => a.id === id) || apps[0];
  api.app = app.id;
  $("#app-id").textContent = app.id;
  $("#app-select").value = app.id;
  document.title = `${app.title || app.id} · playground`;
  fields = await loadFields(document.baseURI, app);
  renderFields($("#schema-fields"), fields);
  updateSnippet();
}

function renderAppChoice() {
  const select = $("#app-select");
  select.textContent = "";
  for (const a of apps) {
    const opt = document.createElement("option");
    opt.value = a.id;
    opt.textContent = a.title ? `${a.id} — ${a.title}` : a.id;
    select.append(opt);
  }
  select.hidden = apps.length < 2;
  select.addEventListener("change", async () => {
    const url = new URL(location.href);
    url.searchParams.set("app", select.value);
    history.replaceState(null, "", url);
    await selectApp(select.value);
  });
}

async function start() {
  renderHistory();
  updateSnippet();
  try {
    apps = await api.apps();
    if (!apps.length) throw new Error("the server serves no app");
    renderAppChoice();
    await selectApp(new URL(location.href).searchParams.get("app") || apps[0].id);
    document.body.dataset.ready = "true";
  } catch (err) {
    $("#schema-fields").textContent = "";
    const p = document.createElement("p");
    p.className = "form-error";
    p.textContent = `Could not read the input schema (or the app list): ${err.message}. Is this page served by ccsr serve?`;
    $("#schema-fields").append(p);
    document.body.dataset.ready = "error";
  }
  updateSnippet();
}

start();
