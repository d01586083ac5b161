// Reads the request fields out of the server's OpenAPI document, so the form
// is generated from the same schema the API validates against and never drifts.
// Which apps exist, and the name of each one's input schema, come from /api/apps.

/** Follow a local "#/components/schemas/X" reference. */
function deref(doc, schema) {
  let s = schema;
  for (let i = 0; s && s.$ref && i < 20; i++) {
    const parts = s.$ref.replace(/^#\//, "").split("/");
    s = parts.reduce((node, key) => (node ? node[key] : undefined), doc);
  }
  return s || {};
}

/** The JSON schema of an app's input: by name, else from the POST body of its submit route. */
export function findInputSchema(doc, app) {
  const named = doc.components?.schemas?.[app.input_schema];
  if (named) return named;
  const paths = doc.paths || {};
  for (const path of [app.queue_url, app.run_url]) {
    if (!paths[path]?.post) continue;
    const body = deref(doc, paths[path].post.requestBody);
    const content = body.content || {};
    const media = content["application/json"] || Object.values(content)[0];
    if (media?.schema) return deref(doc, media.schema);
  }
  throw new Error(`the server's OpenAPI document has no input schema for ${app.id}`);
}

/** Merge anyOf/allOf variants (Optional[int] is anyOf [integer, null]). */
function flatten(doc, prop) {
  let s = deref(doc, prop);
  const meta = { ...s };
  let nullable = false;
  for (const key of ["anyOf", "oneOf"]) {
    if (!Array.isArray(s[key])) continue;
    const variants = s[key].map((v) => deref(doc, v));
    nullable = variants.some((v) => v.type === "null");
    const main = variants.find((v) => v.type !== "null") || {};
    Object.assign(meta, main, { default: s.default, description: s.description ?? main.description, title: s.title ?? main.title });
    delete meta[key];
  }
  if (Array.isArray(s.allOf)) {
    for (const part of s.allOf) Object.assign(meta, deref(doc, part));
    meta.default = s.default;
    if (s.description) meta.description = s.description;
    delete meta.allOf;
  }
  if (Array.isArray(meta.type)) {
    nullable = nullable || meta.type.includes("null");
    meta.type = meta.type.find((t) => t !== "null");
  }
  if (meta.const !== undefined && !meta.enum) meta.enum = [meta.const];
  return { ...meta, nullable };
}

/**
 * The fields as plain descriptions, in schema order:
 * {name, kind: "number"|"integer"|"enum"|"boolean"|"string", default, enum,
 *  min, max, exclusiveMin, exclusiveMax, description, required, nullable, title}
 */
export function describeFields(doc, schema) {
  const required = new Set(schema.required || []);
  const props = schema.properties || {};
  return Object.entries(props).map(([name, raw]) => {
    const p = flatten(doc, raw);
    let kind = p.type || "string";
    if (p.enum) kind = "enum";
    else if (kind !== "integer" && kind !== "number" && kind !== "boolean") kind = "string";
    // OpenAPI 3.1 gives exclusive bounds as numbers, 3.0 as booleans beside minimum/maximum.
    const exclusiveMin = typeof p.exclusiveMinimum === "number" ? p.exclusiveMinimum : p.exclusiveMinimum === true ? p.minimum : undefined;
    const exclusiveMax = typeof p.exclusiveMaximum === "number" ? p.exclusiveMaximum : p.exclusiveMaximum === true ? p.maximum : undefined;
    return {
      name,
      kind,
      title: p.title || name,
      description: p.description || "",
      default: p.default,
      enum: p.enum,
      min: exclusiveMin === undefined ? p.minimum : undefined,
      max: exclusiveMax === undefined ? p.maximum : undefined,
      exclusiveMin,
      exclusiveMax,
      required: required.has(name),
      nullable: p.nullable,
      examples: p.examples,
    };
  });
}

/** "0 < x ≤ 16", "2 – 1000": the limits of a numeric field, for people. */
export function describeLimits(f) {
  const lo = f.exclusiveMin !== undefined ? `${f.exclusiveMin} <` : f.min !== undefined ? `${f.min} ≤` : "";
  const hi = f.exclusiveMax !== undefined ? `< ${f.exclusiveMax}` : f.max !== undefined ? `≤ ${fmt(f.max)}` : "";
  if (!lo && !hi) return "";
  return `${lo} x ${hi}`.trim();
}

function fmt(n) {
  return Math.abs(n) >= 1e9 ? n.toExponential(2) : String(n);
}

let openapi = null;

/** The fields of ``app``'s input (the OpenAPI document is fetched once). */
export async function loadFields(baseUrl, app) {
  if (!openapi) {
    const resp = await fetch(new URL("openapi.json", baseUrl));
    if (!resp.ok) throw new Error(`GET openapi.json answered ${resp.status}`);
    openapi = await resp.json();
  }
  return describeFields(openapi, findInputSchema(openapi, app));
}
