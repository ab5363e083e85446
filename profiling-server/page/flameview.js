// The flame-graph view: the instrumented call tree drawn in the browser (weight, zoom and
// search in the URL), the zoomed frame's figures, and, with the `profiling-full` feature,
// a sampled CPU profile of the whole process beside it (the server's inferno SVG).

import { api } from './api.js';
import { buildTree, drawFlame, find, weightOf, WEIGHTS } from './flame.js';
import { bytes, count, dur, fill, h } from './format.js';

/** The tooltip lines of a frame: calls, total, self, CPU, allocations, p50/p99. */
export function describe(functions) {
  const byId = new Map(functions.map((f) => [f.id, f]));
  return (fr, share) => {
    const f = byId.get(fr.fn);
    const n = fr.node;
    if (fr.fn == null) {
      // The root: no function, no call of its own; what lies under it.
      return [fr.name, '100 % of the graph', `total wall ${dur(fr.sums.wall)}`, `total CPU ${dur(fr.sums.cpu)}`, `allocated ${bytes(fr.sums.alloc)}`];
    }
    return [
      fr.name,
      `${share.toFixed(1)} % of the graph`,
      `calls ${count(n.calls)}`,
      `total wall ${dur(fr.sums.wall)} · self wall ${dur(n.self_wall_ns)}`,
      `self CPU ${dur(n.self_cpu_ns)} · total CPU ${dur(fr.sums.cpu)}`,
      `allocated ${bytes(n.self_alloc.alloc_bytes)} self, ${bytes(fr.sums.alloc)} total`,
      f ? `p50 ${dur(f.p50_ns)} · p99 ${dur(f.p99_ns)} (function, all paths)` : null,
    ].filter(Boolean);
  };
}

/** The weight picker: a labelled select. */
export function weightSelect(id, value, onChange) {
  const sel = h('select', { id }, WEIGHTS.map((w) => h('option', { value: w.key, selected: w.key === value }, w.label)));
  sel.addEventListener('change', () => onChange(sel.value));
  return [h('label', { for: id }, 'Width'), sel];
}

export function mount(root, ctx) {
  const p = ctx.params;
  const search = h('input', { type: 'search', id: 'flame-search', placeholder: 'function name', value: p.get('q') || '' });
  const reset = h('button', { type: 'button', id: 'flame-reset' }, 'Reset zoom');
  const found = h('span', { class: 'muted', 'aria-live': 'polite', id: 'flame-found' });
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Zoomed frame' });
  const box = h('div', { class: 'flame-box', id: 'flame' });
  const tip = h('div', { class: 'tooltip', role: 'tooltip', hidden: true });
  const detail = h('div', { class: 'frame-detail', 'aria-live': 'polite' });
  const cpuPanel = sampledCpuPanel();
  root.append(
    h('h1', {}, 'Flame graph'),
    h(
      'div',
      { class: 'toolbar' },
      weightSelect('flame-weight', p.get('weight') || 'wall', (w) => {
        p.set('weight', w);
        ctx.setParams({ weight: w });
        draw();
      }),
      h('label', { for: 'flame-search' }, 'Search'),
      search,
      reset,
      found,
    ),
    h(
      'div',
      { class: 'flame-layout' },
      h('section', { class: 'panel', 'aria-labelledby': 'flame-h' },
        h('h2', { id: 'flame-h' }, 'Instrumented call tree'),
        h('p', { class: 'muted' }, 'Callers above callees; a frame is as wide as the weight of its subtree. Click or press Enter to zoom, Escape to zoom out.'),
        crumbs, h('div', { class: 'flame-wrap' }, box, tip), detail),
      cpuPanel,
    ),
  );
  let last = null;
  const zoom = (path) => {
    p.set('focus', path);
    ctx.setParams({ focus: path });
    draw();
  };
  search.addEventListener('input', () => {
    p.set('q', search.value);
    ctx.setParams({ q: search.value });
    draw();
  });
  reset.addEventListener('click', () => zoom(''));
  const onResize = () => {
    if (!box.isConnected) window.removeEventListener('resize', onResize);
    else draw();
  };
  window.addEventListener('resize', onResize);

  function draw() {
    if (!last) return;
    const weight = weightOf(p.get('weight'));
    const root = buildTree(last.tree, weight);
    let focusPath = p.get('focus') || '';
    if (!find(root, focusPath)) focusPath = '';
    const r = drawFlame(box, root, { focusPath, search: p.get('q') || '', weight, describe: describe(last.tree.functions), onZoom: zoom });
    found.textContent = p.get('q') ? `${r.matches} matching frames, ${r.matchedShare.toFixed(1)} % of the zoomed graph` : '';
    const focus = find(root, focusPath) || root;
    const chain = [];
    for (let f = focus; f; f = f.parent) chain.unshift(f);
    fill(crumbs, chain.map((f, i) => [i ? ' › ' : '', f === focus ? h('strong', {}, f.name) : h('a', { href: '#', onclick: (e) => { e.preventDefault(); zoom(f.path); } }, f.name)]));
    const lines = describe(last.tree.functions)(focus, root.total ? (focus.total / root.total) * 100 : 0);
    fill(detail, h('strong', {}, `${focus === root ? 'Whole graph' : 'Zoomed on'}: ${weight.fmt(focus.total)} of ${weight.label}`), h('ul', {}, lines.slice(2).map((l) => h('li', {}, l))),
      focus.fn != null ? h('a', { href: ctx.href('function', { name: focus.name }) }, `Open the page of ${focus.name}`) : null);
  }

  return (data) => {
    last = data;
    draw();
  };
}

/** With `profiling-full`: sample the process's CPU for a few seconds, show inferno's SVG. */
function sampledCpuPanel() {
  const secs = h('select', { id: 'cpu-seconds' }, [2, 5, 10, 30].map((s) => h('option', { value: s, selected: s === 5 }, `${s} s`)));
  const go = h('button', { type: 'button', id: 'cpu-sample' }, 'Sample CPU');
  const out = h('div', { class: 'svg-box', id: 'cpu-profile' }, h('p', { class: 'muted' }, 'Samples every thread of the process (not only annotated functions) with a CPU profiler.'));
  go.addEventListener('click', async () => {
    go.disabled = true;
    fill(out, h('p', { class: 'muted' }, `sampling for ${secs.value} s…`));
    try {
      const text = await api(`flamegraph?source=cpu&seconds=${secs.value}`, { as: 'text' });
      // An <object> from a blob URL keeps inferno's own zoom and search scripts working.
      const url = URL.createObjectURL(new Blob([text], { type: 'image/svg+xml' }));
      const obj = h('object', { data: url, type: 'image/svg+xml', 'aria-label': 'sampled CPU flame graph' }, 'sampled CPU flame graph');
      // At its own aspect ratio, in a scrolling box scrolled to the roots (at the bottom).
      const size = /<svg[^>]*\bwidth="(\d+)"[^>]*\bheight="(\d+)"/.exec(text);
      if (size) obj.style.aspectRatio = `${size[1]} / ${size[2]}`;
      obj.addEventListener('load', () => {
        out.scrollTop = out.scrollHeight;
      });
      fill(out, obj);
      out.scrollTop = out.scrollHeight;
    } catch (e) {
      fill(out, h('p', { class: e.status === 501 ? 'muted' : 'alert bad' }, e.message));
    } finally {
      go.disabled = false;
    }
  });
  return h('section', { class: 'panel', 'aria-labelledby': 'cpu-h' },
    h('h2', { id: 'cpu-h' }, 'Sampled CPU profile'),
    h('div', { class: 'toolbar' }, h('label', { for: 'cpu-seconds' }, 'Duration'), secs, go), out);
}
