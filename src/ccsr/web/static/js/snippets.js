// Code that sends the same request as the form: curl, Python (the official
// fal-client pointed at this server), JavaScript (@fal-ai/client) and our CLI.
// The key is never written into a snippet; it comes from FAL_KEY.

function indent(text, n) {
  const pad = " ".repeat(n);
  return text.split("\n").map((l, i) => (i ? pad + l : l)).join("\n");
}

function shellQuote(s) {
  const text = String(s);
  if (/^[A-Za-z0-9._:\/@=+,-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

function pyValue(v) {
  if (v === true) return "True";
  if (v === false) return "False";
  if (v === null) return "None";
  return JSON.stringify(v);
}

function pyDict(body) {
  const lines = Object.entries(body).map(([k, v]) => `    ${JSON.stringify(k)}: ${pyValue(v)},`);
  return `{\n${lines.join("\n")}\n}`;
}

/** Long data: URIs make unreadable snippets; show their start only. */
export function displayBody(body) {
  const out = { ...body };
  for (const [k, v] of Object.entries(out)) {
    if (typeof v === "string" && v.startsWith("data:") && v.length > 80) out[k] = `${v.slice(0, 40)}…(${v.length} chars)`;
  }
  return out;
}

export function curl(base, body, withKey, app) {
  const auth = withKey ? `\n  -H "Authorization: Key $FAL_KEY" \\` : "";
  return [
    `# submit to the queue; the answer has request_id, status_url and response_url`,
    `curl -s -X POST ${base}/queue/${app} \\${auth}`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(JSON.stringify(body))}`,
    ``,
    `# follow it, then fetch the output`,
    `curl -s${withKey ? ` -H "Authorization: Key $FAL_KEY"` : ""} "${base}/queue/${app}/requests/$REQUEST_ID/status?logs=1"`,
    `curl -s${withKey ? ` -H "Authorization: Key $FAL_KEY"` : ""} "${base}/queue/${app}/requests/$REQUEST_ID"`,
  ].join("\n");
}

export function python(base, body, app) {
  return [
    `# pip install fal-client   (FAL_KEY must be set; any value on an open server)`,
    `import fal_client`,
    `import fal_client.client as C`,
    ``,
    `B = ${JSON.stringify(base)}`,
    `C.RUN_URL_FORMAT, C.QUEUE_URL_FORMAT = B + "/", B + "/queue/"`,
    `C.REST_URL, C.CDN_URL = B + "/rest", B + "/cdn"`,
    ``,
    `result = fal_client.subscribe(`,
    `    ${JSON.stringify(app)},`,
    `    arguments=${indent(pyDict(body), 4)},`,
    `    with_logs=True,`,
    `    on_queue_update=print,`,
    `)`,
    `print(result)`,
  ].join("\n");
}

export function javascript(base, body, app) {
  const json = JSON.stringify(body, null, 2);
  return [
    `// npm install @fal-ai/client`,
    `import { createFalClient } from "@fal-ai/client";`,
    ``,
    `const B = ${JSON.stringify(base)};`,
    `const HOSTS = [["https://queue.fal.run/", B + "/queue/"], ["https://fal.run/", B + "/"],`,
    `  ["https://rest.fal.ai/", B + "/rest/"], ["https://v3.fal.media/", B + "/cdn/"]];`,
    `const fal = createFalClient({`,
    `  credentials: process.env.FAL_KEY,`,
    `  requestMiddleware: async (req) => {`,
    `    const hit = HOSTS.find(([from]) => req.url.startsWith(from));`,
    `    return hit ? { ...req, url: hit[1] + req.url.slice(hit[0].length) } : req;`,
    `  },`,
    `});`,
    ``,
    `const result = await fal.subscribe(${JSON.stringify(app)}, {`,
    `  input: ${indent(json, 2)},`,
    `  logs: true,`,
    `  onQueueUpdate: (u) => u.status === "IN_PROGRESS" && u.logs.forEach((l) => console.log(l.message)),`,
    `});`,
    `console.log(result.data, result.requestId);`,
  ].join("\n");
}

export function cli(base, body, localName, withKey, app) {
  const parts = ["ccsr run", shellQuote(localName || body.image_url || "IMAGE")];
  if (app) parts.push(`--app ${app}`);
  for (const [k, v] of Object.entries(body)) {
    if (k === "image_url") continue;
    const flag = `--${k.replace(/_/g, "-")}`;
    if (v === true) parts.push(flag);
    else if (v === false) parts.push(`--no-${k.replace(/_/g, "-")}`);
    else parts.push(`${flag} ${shellQuote(v)}`);
  }
  parts.push(`--server ${base}`);
  const env = withKey ? "CCSR_KEY=... " : "";
  return `# pip install ccsr   (uploads a local file, shows progress, saves the result)\n${env}${parts.join(" ")}`;
}

/** ``app``: the app id (from the server's /api/apps); ``cli`` is our client's
 * command, whose default app is ``cliApp`` (the server's first) and which
 * takes any other app it knows with ``--app``. */
export function snippet(lang, { base, app, cliApp, body, localName, withKey }) {
  const shown = displayBody(body);
  if (lang === "python") return python(base, shown, app);
  if (lang === "javascript") return javascript(base, shown, app);
  if (lang === "cli") return cli(base, shown, localName, withKey, app === cliApp ? null : app);
  return curl(base, shown, withKey, app);
}
