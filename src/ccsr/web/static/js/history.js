// This browser's requests, kept in localStorage (nothing is stored on the
// server for it): id, when, the input fields, and the result or error.

const KEY = "ccsr.history.v1";
const LIMIT = 50;

export function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch {
    return [];
  }
}

function save(items) {
  try {
    localStorage.setItem(KEY, JSON.stringify(items.slice(0, LIMIT)));
  } catch {
    /* storage full or disabled: history is a convenience */
  }
}

/** Insert or update the entry with this id (newest first). */
export function upsertHistory(entry) {
  const items = loadHistory();
  const i = items.findIndex((x) => x.id === entry.id);
  if (i >= 0) items[i] = { ...items[i], ...entry };
  else items.unshift(entry);
  save(items);
  return items;
}

export function clearHistory() {
  save([]);
  return [];
}

/** Inputs worth remembering: data: URIs and blob: URLs are too big or die with the page. */
export function storableInput(body) {
  const out = { ...body };
  if (typeof out.image_url === "string" && !/^https?:/.test(out.image_url)) out.image_url = "(local file)";
  return out;
}
