// Before/after comparison: the input, stretched to the result's size, is laid
// over the result and clipped at the split; drag or use the range to move it.
// Zoom shows real pixels (1:1, 2x, 4x) inside a scrollable viewport.

export class Compare {
  constructor(root) {
    this.root = root;
    this.viewport = root.querySelector("#compare-viewport");
    this.stage = root.querySelector("#compare-stage");
    this.before = root.querySelector("#before-image");
    this.after = root.querySelector("#after-image");
    this.divider = root.querySelector("#divider");
    this.range = root.querySelector("#compare-split");
    this.zoom = "fit";
    this.width = 1;
    this.height = 1;

    this.range.addEventListener("input", () => this.split(Number(this.range.value)));
    let dragging = false;
    const move = (ev) => {
      const r = this.stage.getBoundingClientRect();
      this.split(((ev.clientX - r.left) / r.width) * 100);
    };
    this.stage.addEventListener("pointerdown", (ev) => {
      dragging = true;
      this.stage.setPointerCapture(ev.pointerId);
      move(ev);
    });
    this.stage.addEventListener("pointermove", (ev) => dragging && move(ev));
    this.stage.addEventListener("pointerup", () => (dragging = false));
    for (const b of root.querySelectorAll("[data-zoom]")) {
      b.addEventListener("click", () => this.setZoom(b.dataset.zoom));
    }
    new ResizeObserver(() => this.layout()).observe(this.viewport);
  }

  /** Show a result (`afterUrl`, width x height) against its input (`beforeUrl`). */
  show(beforeUrl, afterUrl, width, height) {
    this.width = width || 1;
    this.height = height || 1;
    this.after.src = afterUrl;
    if (beforeUrl) {
      this.before.src = beforeUrl;
      this.before.hidden = false;
    } else {
      this.before.removeAttribute("src");
      this.before.hidden = true;
    }
    this.root.classList.toggle("no-before", !beforeUrl);
    this.split(50);
    this.layout();
  }

  split(percent) {
    const p = Math.max(0, Math.min(100, percent));
    this.range.value = String(Math.round(p));
    this.before.style.clipPath = `inset(0 ${100 - p}% 0 0)`;
    this.divider.style.left = `${p}%`;
  }

  setZoom(z) {
    this.zoom = z;
    for (const b of this.root.querySelectorAll("[data-zoom]")) b.setAttribute("aria-pressed", String(b.dataset.zoom === z));
    this.layout();
  }

  layout() {
    const aspect = this.height / this.width;
    let w;
    if (this.zoom === "fit") {
      const maxW = this.viewport.clientWidth || 600;
      const maxH = Math.max(240, window.innerHeight * 0.62);
      w = Math.min(maxW, maxH / aspect);
    } else {
      w = this.width * Number(this.zoom);
    }
    this.stage.style.width = `${Math.round(w)}px`;
    this.stage.style.height = `${Math.round(w * aspect)}px`;
    this.root.classList.toggle("pixelated", this.zoom !== "fit" && Number(this.zoom) >= 2);
  }
}
