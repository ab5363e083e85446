// The flame graph of the instrumented call tree, drawn as an icicle (callers above
// callees) in SVG from the JSON of a snapshot. Frames are as wide as the chosen weight over
// their subtree; clicking or pressing Enter on a frame zooms into it, its ancestors stay
// on top as full-width rows to zoom back out; a search highlights matching frames and says
// what share of the weight they hold. The same drawing colours a differential graph.

import { bytes, count, dur, h } from './format.js';

/** The weights a frame can be as wide as: each reads one figure of a call-tree node. */
export const WEIGHTS = [
  { key: 'wall', label: 'self wall time', of: (n) => n.self_wall_ns, fmt: dur },
  { key: 'cpu', label: 'self CPU time', of: (n) => n.self_cpu_ns, fmt: dur },
  { key: 'off_cpu', label: 'off-CPU time (wall − CPU)', of: (n) => Math.max(n.self_wall_ns - n.self_cpu_ns, 0), fmt: dur },
  { key: 'alloc_bytes', label: 'allocated bytes', of: (n) => n.self_alloc.alloc_bytes, fmt: bytes },
  { key: 'calls', label: 'calls', of: (n) => n.calls, fmt: count },
];

export function weightOf(key) {
  return WEIGHTS.find((w) => w.key === key) || WEIGHTS[0];
}

const ROOT_NAME = 'all';

/**
 * The frames of a snapshot's call tree: {name, path, fn, self, total, node, sums, children,
 * parent}, where `self` is the weight of the node and `total` that of its subtree, and `sums`
 * adds up wall, CPU, bytes and calls over the subtree for the tooltip. Returns the root.
 */
export function buildTree(snapshot, weight) {
  const names = new Map(snapshot.functions.map((f) => [f.id, f.name]));
  const frames = new Map();
  for (const n of snapshot.call_tree) {
    frames.set(n.id, {
      name: n.function == null ? ROOT_NAME : names.get(n.function) ?? '?',
      fn: n.function,
      node: n,
      self: weight.of(n),
      total: 0,
      sums: { wall: n.self_wall_ns, cpu: n.self_cpu_ns, alloc: n.self_alloc.alloc_bytes },
      children: [],
      parent: null,
    });
  }
  let root = [...frames.values()].find((f) => f.node.parent == null);
  if (!root) {
    const zero = { self_wall_ns: 0, self_cpu_ns: 0, calls: 0, self_alloc: { alloc_bytes: 0 } };
    root = { name: ROOT_NAME, fn: null, node: zero, self: 0, total: 0, sums: { wall: 0, cpu: 0, alloc: 0 }, children: [], parent: null };
  }
  for (const f of frames.values()) {
    if (f === root) continue;
    const p = frames.get(f.node.parent) || root;
    f.parent = p;
    p.children.push(f);
  }
  // Parents come before children in the JSON: summing in reverse order finishes each
  // subtree before its parent reads it.
  const order = [root, ...[...frames.values()].filter((f) => f !== root)];
  for (let i = order.length - 1; i >= 0; i--) {
    const f = order[i];
    f.total += f.self;
    if (f.parent) {
      f.parent.total += f.total;
      f.parent.sums.wall += f.sums.wall;
      f.parent.sums.cpu += f.sums.cpu;
      f.parent.sums.alloc += f.sums.alloc;
    }
  }
  const walk = (f, prefix) => {
    f.path = prefix;
    f.children.sort((a, b) => b.total - a.total || a.name.localeCompare(b.name));
    for (const c of f.children) walk(c, prefix ? `${prefix};${c.name}` : c.name);
  };
  walk(root, '');
  return root;
}

/** The frame at `path` (names joined by `;`), or null. */
export function find(root, path) {
  if (!path) return root;
  let f = root;
  for (const name of path.split(';')) {
    f = f.children.find((c) => c.name === name);
    if (!f) return null;
  }
  return f;
}

/** A stable warm colour per name, as flame graphs use. */
function warm(name) {
  let x = 0;
  for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
  return `hsl(${x % 50 + 5}, ${75 + (x >> 8) % 20}%, ${62 + (x >> 16) % 12}%)`;
}

const ROW = 22;

/**
 * Draws `root` into `container`, zoomed on `focusPath`. Options: `search` (text to
 * highlight), `weight`, `colorOf(frame)` (default warm), `describe(frame)` (tooltip
 * lines), `onZoom(path)`. Returns {matches, matchedShare}.
 */
export function drawFlame(container, root, { focusPath = '', search = '', weight, colorOf = null, describe, onZoom }) {
  const width = Math.max(container.clientWidth, 320);
  const focus = find(root, focusPath) || root;
  const ancestors = [];
  for (let f = focus.parent; f; f = f.parent) ancestors.unshift(f);
  const rows = [];
  const needle = search.trim().toLowerCase();
  let matched = 0;
  let matches = 0;
  const place = (f, depth, x, w, inMatch) => {
    if (w < 1) return;
    const isMatch = needle !== '' && f.name.toLowerCase().includes(needle);
    if (isMatch) matches++;
    if (isMatch && !inMatch) matched += f.total;
    rows.push({ f, depth, x, w, isMatch });
    let cx = x;
    for (const c of f.children) {
      const cw = focus.total ? (c.total / focus.total) * width : 0;
      place(c, depth + 1, cx, cw, inMatch || isMatch);
      cx += cw;
    }
  };
  ancestors.forEach((a, i) => rows.push({ f: a, depth: i, x: 0, w: width, ancestor: true }));
  place(focus, ancestors.length, 0, width, false);
  const depth = Math.max(...rows.map((r) => r.depth)) + 1;
  const svg = h('svg', {
    class: 'flame',
    width,
    height: depth * ROW,
    viewBox: `0 0 ${width} ${depth * ROW}`,
    role: 'group',
    'aria-label': `flame graph by ${weight.label}, ${rows.length} frames; Enter zooms into a frame, Escape zooms out`,
  });
  const tip = container.parentElement.querySelector('.tooltip');
  for (const r of rows) {
    const { f } = r;
    const share = root.total ? (f.total / root.total) * 100 : 0;
    const chars = Math.floor((r.w - 8) / 7);
    const text = chars >= 3 ? (f.name.length > chars ? `${f.name.slice(0, chars - 1)}…` : f.name) : '';
    const cls = ['frame', r.ancestor && 'ancestor', r.isMatch && 'match', needle && !r.isMatch && 'dim', f === focus && 'focus']
      .filter(Boolean)
      .join(' ');
    const g = h(
      'g',
      {
        class: cls,
        transform: `translate(${r.x.toFixed(2)},${r.depth * ROW})`,
        tabindex: r.w >= 12 ? 0 : -1,
        role: 'button',
        'aria-label': `${f.name}: ${weight.fmt(f.total)}, ${share.toFixed(1)} % of all`,
        'data-path': f.path,
        'data-name': f.name,
      },
      h('rect', { width: Math.max(r.w - 1, 0.5), height: ROW - 2, rx: 2, fill: colorOf ? colorOf(f) : f.fn == null ? '#d9d9d9' : warm(f.name) }),
      text && h('text', { x: 4, y: 15 }, text),
    );
    const show = (ev) => {
      if (!tip) return;
      tip.replaceChildren(...describe(f, share).map((line, i) => h(i ? 'div' : 'strong', {}, line)));
      tip.hidden = false;
      const box = container.getBoundingClientRect();
      const px = ev && ev.clientX != null ? ev.clientX - box.left : r.x + 10;
      const py = ev && ev.clientY != null ? ev.clientY - box.top : r.depth * ROW;
      tip.style.left = `${Math.min(px + 14, width - 300)}px`;
      tip.style.top = `${py + 18 + container.offsetTop}px`;
    };
    const hide = () => {
      if (tip) tip.hidden = true;
    };
    g.addEventListener('mousemove', show);
    g.addEventListener('focus', () => show(null));
    g.addEventListener('mouseleave', hide);
    g.addEventListener('blur', hide);
    g.addEventListener('click', () => onZoom(f.path));
    g.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        onZoom(f.path);
      } else if (ev.key === 'Escape') {
        onZoom(focus.parent ? focus.parent.path : '');
      }
    });
    svg.append(g);
  }
  // A redraw (refresh, resize) keeps the keyboard on the frame it was on.
  const active = document.activeElement;
  const had = active && container.contains(active) ? active.getAttribute('data-path') : null;
  container.replaceChildren(svg);
  if (had != null) {
    const again = [...svg.querySelectorAll('g.frame')].find((g) => g.getAttribute('data-path') === had);
    if (again) again.focus({ preventScroll: true });
  }
  return { matches, matchedShare: focus.total ? (matched / focus.total) * 100 : 0 };
}

/**
 * Colours for a differential graph of `target` against `base`. Two snapshots of one window
 * differ in length, so frames compare by share of their graph's total: red where a
 * subtree's share grew, blue where it shrank, white where it held, deep red for frames only
 * in the target. Returns `colorOf(frame)` and `delta(frame)` = {base, target} shares in %.
 */
export function diffColors(base, target) {
  let maxDelta = 0;
  const deltas = new Map();
  const share = (f, root) => (root.total ? (f.total / root.total) * 100 : 0);
  const visit = (f) => {
    const b = find(base, f.path);
    const x = { base: b ? share(b, base) : 0, target: share(f, target), added: !b && f.fn != null };
    deltas.set(f, x);
    maxDelta = Math.max(maxDelta, Math.abs(x.target - x.base));
    f.children.forEach(visit);
  };
  visit(target);
  return {
    colorOf(f) {
      const x = deltas.get(f);
      if (!x) return '#eee';
      if (x.added) return 'hsl(0, 75%, 60%)';
      const r = maxDelta ? (x.target - x.base) / maxDelta : 0;
      const light = 96 - Math.abs(r) * 36;
      return r >= 0 ? `hsl(0, 80%, ${light}%)` : `hsl(215, 80%, ${light}%)`;
    },
    delta(f) {
      return deltas.get(f);
    },
  };
}
