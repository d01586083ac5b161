// Scenarios run by tests/service/test_official_clients.py with the official,
// unmodified @fal-ai/client against a live `ccsr serve`-style server.
//
//   node scenarios.mjs <scenario>
//   env: CCSR_BASE (server base URL), CCSR_KEY (API key), PNG_B64 (a small PNG),
//        MODE (subscribe: polling|streaming), LONG_STEPS (cancel),
//        CCSR_APP (app id, default fal-ai/ccsr), CCSR_INPUT (JSON merged into every input)
//
// Each scenario prints one JSON line with what it observed; the Python test
// asserts on it. The client is pointed at the server the documented way:
// a requestMiddleware rewriting the provider's https hosts to our prefixes
// (or, for the proxy scenario, proxyUrl with when: "always").

import crypto from "node:crypto";
import http from "node:http";
import falPkg from "@fal-ai/client";

const { createFalClient } = falPkg;
const APP = process.env.CCSR_APP || "fal-ai/ccsr";
const BASE_INPUT = JSON.parse(process.env.CCSR_INPUT || "{}");
const BASE = process.env.CCSR_BASE;
const KEY = process.env.CCSR_KEY;
const PNG_B64 = process.env.PNG_B64;
const PNG = Buffer.from(PNG_B64, "base64");

const HOSTS = [
  ["https://queue.fal.run", `${BASE}/queue`],
  ["https://fal.run", BASE],
  ["https://rest.fal.ai", `${BASE}/rest`],
  ["https://v3.fal.media", `${BASE}/cdn`],
];

function rewrite(request) {
  for (const [from, to] of HOSTS) {
    if (request.url === from || request.url.startsWith(from + "/")) {
      return Promise.resolve({ ...request, url: to + request.url.slice(from.length) });
    }
  }
  return Promise.resolve(request);
}

function client(credentials = KEY) {
  return createFalClient({ credentials, requestMiddleware: rewrite });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function input(extra = {}) {
  return { image_url: `data:image/png;base64,${PNG_B64}`, scale: 2, steps: 6, ...BASE_INPUT, ...extra };
}

async function waitStatus(fal, requestId, want, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await fal.queue.status(APP, { requestId, logs: true });
    if (s.status === want) return s;
    if (Date.now() > deadline) throw new Error(`status stayed ${JSON.stringify(s)}`);
    await sleep(50);
  }
}

const scenarios = {
  async subscribe() {
    const fal = client();
    const statuses = [];
    let sawLogs = false;
    const mode = process.env.MODE || "polling";
    const result = await fal.subscribe(APP, {
      input: input({ steps: 12 }),
      logs: true,
      mode,
      pollInterval: 100,
      onQueueUpdate: (update) => {
        statuses.push(update.status);
        if (Array.isArray(update.logs) && update.logs.some((l) => typeof l.message === "string")) sawLogs = true;
      },
    });
    return { requestId: result.requestId, data: result.data, statuses, sawLogs };
  },

  async queue() {
    const fal = client();
    const { request_id } = await fal.queue.submit(APP, { input: input() });
    const status = await waitStatus(fal, request_id, "COMPLETED");
    const result = await fal.queue.result(APP, { requestId: request_id });
    return { submittedId: request_id, status: status.status, requestId: result.requestId, data: result.data };
  },

  async streamStatus() {
    const fal = client();
    const { request_id } = await fal.queue.submit(APP, { input: input({ steps: 12 }) });
    const stream = await fal.queue.streamStatus(APP, { requestId: request_id, logs: true });
    const events = [];
    for await (const event of stream) events.push(event.status);
    return { events, last: events[events.length - 1] };
  },

  async cancel() {
    const fal = client();
    const steps = Number(process.env.LONG_STEPS || 60);
    const running = (await fal.queue.submit(APP, { input: input({ steps }) })).request_id;
    const queued = (await fal.queue.submit(APP, { input: input({ steps }) })).request_id;
    await waitStatus(fal, running, "IN_PROGRESS");
    const queuedBefore = await fal.queue.status(APP, { requestId: queued });
    await fal.queue.cancel(APP, { requestId: queued });
    const t0 = Date.now();
    await fal.queue.cancel(APP, { requestId: running });
    const runningFinal = await waitStatus(fal, running, "COMPLETED");
    const runningStoppedWithin = Date.now() - t0;
    const queuedFinal = await waitStatus(fal, queued, "COMPLETED");
    let resultErrorStatus = null;
    try {
      await fal.queue.result(APP, { requestId: running });
    } catch (e) {
      resultErrorStatus = e.status;
    }
    return { queuedBefore: queuedBefore.status, queuedFinal, runningFinal, runningStoppedWithin, resultErrorStatus };
  },

  async upload() {
    const fal = client();
    const blob = new Blob([PNG], { type: "image/png" });
    const uploadedUrl = await fal.storage.upload(blob);
    const fetched = await fetch(uploadedUrl);
    const fetchedBytes = (await fetched.arrayBuffer()).byteLength;
    const result = await fal.subscribe(APP, { input: input({ image_url: uploadedUrl }), pollInterval: 100 });
    const auto = await fal.subscribe(APP, {
      input: input({ image_url: new Blob([PNG], { type: "image/png" }) }),
      pollInterval: 100,
    });
    return { uploadedUrl, fetchedBytes, blobBytes: PNG.length, data: result.data, autoUpload: auto.data };
  },

  async dataUri() {
    const fal = client();
    const result = await fal.subscribe(APP, { input: input(), pollInterval: 100 });
    return { data: result.data };
  },

  async webhook() {
    const fal = client();
    let resolveHook;
    const arrived = new Promise((r) => (resolveHook = r));
    const server = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        res.writeHead(200).end();
        resolveHook({ headers: req.headers, body: Buffer.concat(chunks) });
      });
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    const hookUrl = `http://127.0.0.1:${server.address().port}/hook`;
    try {
      const { request_id } = await fal.queue.submit(APP, { input: input(), webhookUrl: hookUrl });
      const hook = await Promise.race([arrived, sleep(20000).then(() => null)]);
      if (!hook) throw new Error("no webhook arrived");
      const jwks = await (await fetch(`${BASE}/.well-known/jwks.json`)).json();
      const h = hook.headers;
      const message = Buffer.from(
        [
          h["x-fal-webhook-request-id"],
          h["x-fal-webhook-user-id"],
          h["x-fal-webhook-timestamp"],
          crypto.createHash("sha256").update(hook.body).digest("hex"),
        ].join("\n"),
      );
      const signature = Buffer.from(h["x-fal-webhook-signature"], "hex");
      const fresh = Math.abs(Date.now() / 1000 - Number(h["x-fal-webhook-timestamp"])) <= 300;
      const verified =
        fresh &&
        jwks.keys.some((jwk) => crypto.verify(null, message, crypto.createPublicKey({ key: jwk, format: "jwk" }), signature));
      return { requestId: request_id, verified, payload: JSON.parse(hook.body.toString()) };
    } finally {
      server.close();
    }
  },

  async validation() {
    const fal = client();
    try {
      await fal.subscribe(APP, { input: input({ scale: 1000 }) });
    } catch (e) {
      return { name: e.constructor.name, status: e.status, fieldErrors: e.fieldErrors ?? null };
    }
    throw new Error("expected a validation error");
  },

  async unauthorized() {
    const fal = client("wrong-key");
    try {
      await fal.queue.submit(APP, { input: input() });
    } catch (e) {
      return { name: e.constructor.name, status: e.status };
    }
    throw new Error("expected 401");
  },

  // Issue 23: output_format, transparency, sync_mode (inline once, then a clear error).
  async results() {
    const fal = client();
    const bytes = async (url) =>
      url.startsWith("data:") ? url.split(",")[1] : Buffer.from(await (await fetch(url)).arrayBuffer()).toString("base64");
    const webp = await fal.subscribe(APP, { input: input({ output_format: "webp" }), pollInterval: 100 });
    const run = await fal.run(APP, { input: input({ sync_mode: true }) });
    const sub = await fal.subscribe(APP, { input: input({ sync_mode: true, output_format: "jpeg" }), pollInterval: 100 });
    let again = null;
    try {
      await fal.queue.result(APP, { requestId: sub.requestId });
    } catch (e) {
      again = { name: e.constructor.name, status: e.status, body: e.body };
    }
    return {
      webp: webp.data, webpBytes: await bytes(webp.data.image.url),
      run: run.data, runBytes: await bytes(run.data.image.url),
      sub: sub.data, subBytes: await bytes(sub.data.image.url), again,
    };
  },

  async proxy() {
    const fal = createFalClient({ credentials: KEY, proxyUrl: { url: `${BASE}/api/fal/proxy`, when: "always" } });
    const uploadedUrl = await fal.storage.upload(new Blob([PNG], { type: "image/png" }));
    const result = await fal.subscribe(APP, { input: input({ image_url: uploadedUrl }), logs: true, pollInterval: 100 });
    return { requestId: result.requestId, data: result.data, uploadedUrl };
  },
};

const name = process.argv[2];
if (!scenarios[name]) {
  console.error(`unknown scenario ${name}; one of: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
try {
  const out = await scenarios[name]();
  console.log(JSON.stringify(out));
  process.exit(0); // do not wait for leftover timers (e.g. the webhook wait)
} catch (e) {
  console.error(e && e.stack ? e.stack : e, e && e.body ? JSON.stringify(e.body) : "");
  process.exit(1);
}
