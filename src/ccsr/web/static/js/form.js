// Builds one control per schema field (named after the field), reads the form
// back into a request body, and shows errors next to the fields.

import { describeLimits } from "./schema.js";

/** Fields with a custom control elsewhere on the page. */
const CUSTOM = new Set(["image_url"]);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function control(f) {
  const id = `field-${f.name}`;
  if (f.kind === "enum") {
    const sel = el("select", { id, name: f.name });
    for (const v of f.enum) {
      const opt = el("option", { value: v, text: String(v) });
      if (v === f.default) opt.selected = true;
      sel.append(opt);
    }
    return sel;
  }
  if (f.kind === "boolean") {
    const box = el("input", { id, name: f.name, type: "checkbox" });
    box.checked = f.default === true;
    return box;
  }
  if (f.kind === "integer" || f.kind === "number") {
    const min = f.min ?? f.exclusiveMin;
    const max = f.max ?? f.exclusiveMax;
    const input = el("input", {
      id, name: f.name, type: "number", inputmode: f.kind === "integer" ? "numeric" : "decimal",
      step: f.kind === "integer" ? "1" : "any",
      min: min !== undefined && Math.abs(min) < 1e15 ? min : undefined,
      max: max !== undefined && Math.abs(max) < 1e15 ? max : undefined,
      placeholder: f.default === undefined || f.default === null ? (f.nullable ? "random" : "") : String(f.default),
    });
    if (f.default !== undefined && f.default !== null) input.value = String(f.default);
    return input;
  }
  const input = el("input", { id, name: f.name, type: "text", placeholder: f.default ?? "" });
  if (f.default !== undefined && f.default !== null) input.value = String(f.default);
  return input;
}

function hint(f) {
  const parts = [];
  if (f.default !== undefined && f.default !== null) parts.push(`default ${JSON.stringify(f.default)}`);
  else if (f.nullable) parts.push("optional");
  const limits = describeLimits(f);
  if (limits) parts.push(limits);
  if (f.kind === "enum") parts.push(`one of ${f.enum.join(", ")}`);
  return parts.join(" · ");
}

/** Render the generated controls into `container`; returns the visible field list. */
export function renderFields(container, fields) {
  container.textContent = "";
  const shown = fields.filter((f) => !CUSTOM.has(f.name));
  for (const f of shown) {
    const label = el("label", { for: `field-${f.name}` }, el("span", { class: "name", text: f.name }));
    if (f.required) label.append(el("span", { class: "req", text: "required" }));
    const ctl = control(f);
    const wrap = el("div", { class: `field field-${f.kind}`, "data-field": f.name });
    if (f.kind === "boolean") {
      wrap.append(el("div", { class: "check" }, ctl, label));
    } else {
      wrap.append(label, ctl);
    }
    wrap.append(el("p", { class: "hint", text: hint(f) }));
    if (f.description) wrap.title = f.description;
    if (f.description) wrap.append(el("p", { class: "desc", text: f.description }));
    wrap.append(el("p", { class: "field-error", "data-error-for": f.name, hidden: true }));
    container.append(wrap);
  }
  return shown;
}

/** The value of one control as JSON, or undefined when left empty. */
function readControl(form, f) {
  const node = form.elements.namedItem(f.name);
  if (!node) return undefined;
  if (f.kind === "boolean") return node.checked;
  const raw = node.value.trim();
  if (raw === "") return undefined;
  if (f.kind === "integer" || f.kind === "number") {
    // Send what was typed when it is not a number, so the server names the field and the problem.
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw;
  }
  return raw;
}

/**
 * The request body: image_url plus every field whose value differs from its
 * default (the server fills in the rest), so the body and the snippets stay short.
 */
export function readBody(form, fields, imageUrl) {
  const body = {};
  if (imageUrl) body.image_url = imageUrl;
  for (const f of fields) {
    if (CUSTOM.has(f.name)) continue;
    const v = readControl(form, f);
    if (v === undefined) continue;
    if (f.default !== undefined && v === f.default) continue;
    if (f.default === undefined && f.kind === "boolean" && v === false) continue;
    body[f.name] = v;
  }
  return body;
}

export function resetFields(form, fields) {
  for (const f of fields) {
    const node = form.elements.namedItem(f.name);
    if (!node || CUSTOM.has(f.name)) continue;
    if (f.kind === "boolean") node.checked = f.default === true;
    else if (f.kind === "enum") node.value = f.default ?? f.enum[0];
    else node.value = f.default === undefined || f.default === null ? "" : String(f.default);
  }
}

export function setField(form, name, value) {
  const node = form.elements.namedItem(name);
  if (!node) return;
  if (node.type === "checkbox") node.checked = !!value;
  else node.value = value === null || value === undefined ? "" : String(value);
}

export function clearErrors(root) {
  for (const p of root.querySelectorAll(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const w of root.querySelectorAll(".field.invalid")) w.classList.remove("invalid");
  for (const c of root.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
}

/** Put `message` under the field's control; false when the page has no such field. */
export function showFieldError(root, name, message) {
  const p = root.querySelector(`.field-error[data-error-for="${CSS.escape(name)}"]`);
  if (!p) return false;
  p.textContent = message;
  p.hidden = false;
  p.closest(".field")?.classList.add("invalid");
  const ctl = root.querySelector(`[name="${CSS.escape(name)}"]`);
  if (ctl) ctl.setAttribute("aria-invalid", "true");
  return true;
}
