// The queue protocol from the browser: submit, follow (SSE over fetch, so the
// Authorization header can be sent; polling as a fallback), result, cancel,
// and uploads through the storage routes.

/** An HTTP error carrying the server's explanation. */
export class ApiError extends Error {
  constructor(status, body, url) {
    super(ApiError.describe(status, body));
    this.status = status;
    this.body = body;
    this.url = url;
  }

  /** FastAPI's 422 list, when there is one. */
  get fieldErrors() {
    const d = this.body && this.body.detail;
    return Array.isArray(d) ? d : [];
  }

  static describe(status, body) {
    const d = body && typeof body === "object" ? body.detail ?? body.error ?? body.message : body;
    if (Array.isArray(d)) {
      return d.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "input"}: ${e.msg}`).join("; ");
    }
    if (status === 401 || status === 403) return `${status}: ${d || "this server needs an API key"}`;
    return d ? `${status}: ${typeof d === "string" ? d : JSON.stringify(d)}` : `the server answered ${status}`;
  }
}

export class Api {
  /** ``app``: the app id requests go to (from the server's /api/apps); set before submitting. */
  constructor(baseUrl, getKey, app = null) {
    this.base = new URL(".", baseUrl);
    this.getKey = getKey;
    this.app = app;
  }

  /** The apps the server serves: [{id, title, input_schema, output_schema, queue_url, run_url}]. */
  async apps() {
    const { data } = await this.request("GET", "api/apps");
    return data.apps;
  }

  url(path) {
    return new URL(path.replace(/^\//, ""), this.base).toString();
  }

  headers(extra = {}) {
    const key = this.getKey();
    return key ? { Authorization: `Key ${key}`, ...extra } : { ...extra };
  }

  async request(method, path, { body, headers, raw } = {}) {
    const url = path.startsWith("http") ? path : this.url(path);
    let resp;
    try {
      resp = await fetch(url, {
        method,
        headers: this.headers(body !== undefined && !raw ? { "Content-Type": "application/json", ...headers } : headers),
        body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, { detail: `cannot reach the server (${err.message})` }, url);
    }
    const text = await resp.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      /* keep the text */
    }
    if (!resp.ok) throw new ApiError(resp.status, data, url);
    return { data, headers: resp.headers };
  }

  /** Store a file; returns its URL for image_url (the route the JS client uses). */
  async upload(file) {
    const { data } = await this.request("POST", "rest/storage/upload/initiate?storage_type=fal-cdn-v3", {
      body: { content_type: file.type || "application/octet-stream", file_name: file.name || "image" },
    });
    const put = await fetch(data.upload_url, { method: "PUT", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    if (!put.ok) throw new ApiError(put.status, await put.text(), data.upload_url);
    return data.file_url;
  }

  async submit(input) {
    const { data } = await this.request("POST", `queue/${this.app}`, { body: input });
    return data;
  }

  statusUrl(id) {
    return `queue/${this.app}/requests/${encodeURIComponent(id)}/status`;
  }

  async status(id, logs = true) {
    const { data } = await this.request("GET", `${this.statusUrl(id)}?logs=${logs ? 1 : 0}`);
    return data;
  }

  async result(id) {
    const { data } = await this.request("GET", `queue/${this.app}/requests/${encodeURIComponent(id)}`);
    return data;
  }

  async cancel(id) {
    try {
      const { data } = await this.request("PUT", `queue/${this.app}/requests/${encodeURIComponent(id)}/cancel`);
      return data.status;
    } catch (err) {
      if (err.status === 400 && err.body?.status) return err.body.status;
      throw err;
    }
  }

  /**
   * Calls onStatus for every status until COMPLETED (returned). Uses the SSE
   * stream; falls back to polling if streaming fails before any event.
   */
  async follow(id, onStatus, signal) {
    try {
      const last = await this.stream(id, onStatus, signal);
      if (last && last.status === "COMPLETED") return last;
    } catch (err) {
      if (signal?.aborted) throw err;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403 || err.status === 404)) throw err;
    }
    for (;;) {
      if (signal?.aborted) throw new DOMException("aborted", "AbortError");
      const st = await this.status(id, true);
      onStatus(st);
      if (st.status === "COMPLETED") return st;
      await new Promise((r) => setTimeout(r, 400));
    }
  }

  async stream(id, onStatus, signal) {
    const url = this.url(`${this.statusUrl(id)}/stream?logs=1`);
    const resp = await fetch(url, { headers: this.headers({ Accept: "text/event-stream" }), signal });
    if (!resp.ok || !resp.body) {
      let body = null;
      try {
        body = await resp.json();
      } catch {
        /* not JSON */
      }
      throw new ApiError(resp.status, body, url);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const chunk = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = chunk
          .split(/\r?\n/)
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        try {
          last = JSON.parse(data);
        } catch {
          continue;
        }
        onStatus(last);
        if (last.status === "COMPLETED") {
          reader.cancel().catch(() => {});
          return last;
        }
      }
    }
    return last;
  }
}

/** {step, total} from a status: the last "step N/M" log line, else its progress fraction. */
export function progressOf(status) {
  let found = null;
  for (const log of status.logs || []) {
    const m = /\bsteps?\s+(\d+)\s*(?:\/|of)\s*(\d+)/i.exec(log.message || "");
    if (m && Number(m[2]) > 0) found = { step: Number(m[1]), total: Number(m[2]) };
  }
  if (found) return found;
  const p = status.progress;
  if (p && typeof p === "object" && typeof p.step === "number" && p.total > 0) return { step: p.step, total: p.total };
  if (typeof p === "number" && status.status === "IN_PROGRESS") return { step: Math.max(0, Math.min(1, p)), total: 1 };
  return null;
}
