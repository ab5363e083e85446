// Human units and a small DOM builder: the one place the page formats figures (the JSON
// carries raw nanoseconds and bytes) and builds elements (text goes in as text, never as
// markup, so nothing needs escaping).

/** A duration in ns, in the largest unit that keeps it above 1. */
export function dur(ns) {
  if (ns == null) return 'n/a';
  const a = Math.abs(ns);
  if (a < 1e3) return `${Math.round(ns)} ns`;
  if (a < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  if (a < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  if (a < 120e9) return `${(ns / 1e9).toFixed(2)} s`;
  if (a < 7200e9) return `${(ns / 60e9).toFixed(1)} min`;
  return `${(ns / 3600e9).toFixed(1)} h`;
}

/** A size in bytes, binary units. */
export function bytes(b) {
  if (b == null) return 'n/a';
  const a = Math.abs(b);
  if (a < 1024) return `${b} B`;
  if (a < 1024 ** 2) return `${(b / 1024).toFixed(1)} KiB`;
  if (a < 1024 ** 3) return `${(b / 1024 ** 2).toFixed(1)} MiB`;
  return `${(b / 1024 ** 3).toFixed(2)} GiB`;
}

/** A count, with thousands separators. */
export function count(n) {
  return n == null ? 'n/a' : Math.round(n).toLocaleString('en-US');
}

/** A percentage, or n/a. */
export function pct(x, digits = 1) {
  return x == null || Number.isNaN(x) ? 'n/a' : `${x.toFixed(digits)} %`;
}

/** A signed percentage change, or n/a. */
export function change(x) {
  return x == null ? 'n/a' : `${x > 0 ? '+' : ''}${x.toFixed(1)} %`;
}

/** A clock time from ms since the Unix epoch. */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString('en-GB');
}

/** A name without its crate: `demo::Store::get` -> `Store::get` (the full name goes in titles). */
export function short(name) {
  const i = name.indexOf('::');
  return i < 0 ? name : name.slice(i + 2);
}

/**
 * Builds an element: `h('a', {href: '#x', class: 'y', onclick: f}, 'text', child)`.
 * Attributes starting with `on` become listeners; `null`/`false` attributes are left out;
 * children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const SVG_TAGS = new Set(['svg', 'g', 'rect', 'text', 'line', 'polyline', 'path', 'title', 'clipPath', 'circle']);

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}
