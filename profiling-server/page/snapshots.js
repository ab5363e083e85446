// Snapshots and their diff: take a snapshot, pick a base and a target (in the URL), see
// the per-function deltas and the differential flame graph (drawn here from the two
// snapshots' call trees; with `profiling-full` the server's SVG is linked too).

import { api } from './api.js';
import { buildTree, diffColors, drawFlame, weightOf } from './flame.js';
import { describe, weightSelect } from './flameview.js';
import { change, clock, count, dur, bytes, fill, h } from './format.js';

export function mount(root, ctx) {
  const p = ctx.params;
  const label = h('input', { type: 'text', id: 'snap-label', maxlength: 200, placeholder: 'e.g. before the fix' });
  const take = h('button', { type: 'submit', id: 'snap-take' }, 'Take snapshot');
  const msg = h('span', { 'aria-live': 'polite', id: 'snap-msg' });
  const list = h('div', {});
  const result = h('div', { id: 'diff' });
  root.append(
    h('h1', {}, 'Snapshots and diff'),
    h('form', { class: 'toolbar', id: 'snap-form' }, h('label', { for: 'snap-label' }, 'Label (optional)'), label, take, msg),
    h('section', { class: 'panel', 'aria-labelledby': 'snaps-h' }, h('h2', { id: 'snaps-h' }, 'Stored snapshots'),
      h('p', { class: 'muted' }, 'Pick a base and a target to compare; the diff follows the selection.'), list),
    result,
  );
  root.querySelector('#snap-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    take.disabled = true;
    try {
      const s = await api(`snapshot${label.value ? `?label=${encodeURIComponent(label.value)}` : ''}`, { method: 'POST' });
      msg.textContent = `took ${s.id}`;
      label.value = '';
      // The newest becomes the target, the previous target the base.
      const target = p.get('target');
      select({ base: target || p.get('base'), target: s.id });
      await refreshList();
    } catch (err) {
      msg.textContent = `snapshot failed: ${err.message}`;
    } finally {
      take.disabled = false;
    }
  });

  let snaps = [];
  let shownDiff = null;
  function select(changes) {
    for (const [k, v] of Object.entries(changes)) if (v) p.set(k, v);
    ctx.setParams(changes);
    renderList();
    showDiff();
  }

  function renderList() {
    const radio = (role, id) =>
      h('input', { type: 'radio', name: role, value: id, checked: p.get(role) === id, 'aria-label': `${role} ${id}`, onchange: () => select({ [role]: id }) });
    fill(
      list,
      snaps.length
        ? h('table', { id: 'snapshots-table' },
            h('thead', {}, h('tr', {}, ['base', 'target', 'id', 'label', 'taken', 'functions', 'calls'].map((t, i) => h('th', { scope: 'col', class: i > 1 && i < 5 ? 'text' : null }, t)))),
            h('tbody', {}, [...snaps].reverse().map((s) =>
              h('tr', {}, h('td', {}, radio('base', s.id)), h('td', {}, radio('target', s.id)), h('td', { class: 'text' }, s.id),
                h('td', { class: 'text' }, s.label || ''), h('td', { class: 'text' }, clock(s.taken_unix_ms)), h('td', {}, count(s.functions)), h('td', {}, count(s.calls))))))
        : h('p', { class: 'muted' }, 'No snapshot yet: take one, let the workload run, take another.'),
    );
  }

  async function refreshList() {
    const fresh = (await api('snapshots')).snapshots;
    // Re-drawn only when it changed, so a refresh does not take the keyboard focus away.
    if (fresh.map((s) => s.id).join() === snaps.map((s) => s.id).join() && list.firstChild) return;
    snaps = fresh;
    renderList();
  }

  async function showDiff() {
    const base = p.get('base');
    const target = p.get('target');
    const key = `${base}|${target}|${p.get('weight')}`;
    if (!base || !target || key === shownDiff) return;
    shownDiff = key;
    fill(result, h('p', { class: 'muted' }, 'comparing…'));
    try {
      // One after another: the server runs requests that load whole profiles one at a time
      // (a second concurrent one gets 429).
      const d = await api(`diff?base=${encodeURIComponent(base)}&target=${encodeURIComponent(target)}`);
      const b = await api(`snapshots/${base}`);
      const t = await api(`snapshots/${target}`);
      renderDiff(d, b, t);
    } catch (e) {
      shownDiff = null;
      fill(result, h('p', { class: 'alert bad' }, `diff failed: ${e.message}`));
    }
  }

  function renderDiff(d, b, t) {
    const weight = weightOf(p.get('weight'));
    const box = h('div', { class: 'flame-box', id: 'diff-flame' });
    const tip = h('div', { class: 'tooltip', role: 'tooltip', hidden: true });
    fill(
      result,
      h('section', { class: 'panel', 'aria-labelledby': 'deltas-h' },
        h('h2', { id: 'deltas-h' }, `${d.base} → ${d.target}: ${d.regressed} regressed, ${d.improved} improved`),
        deltaTable(d, ctx)),
      h('section', { class: 'panel', 'aria-labelledby': 'dflame-h' },
        h('h2', { id: 'dflame-h' }, 'Differential flame graph'),
        h('div', { class: 'toolbar' }, weightSelect('diff-weight', weight.key, (w) => select({ weight: w }))),
        h('p', { class: 'muted' }, `Frames as wide as in the target. Colour: how a subtree's share of all ${weight.label} changed since the base (red: grew, blue: shrank, white: held, deep red: new in the target).`),
        h('div', { class: 'flame-wrap' }, box, tip),
        h('p', {}, h('a', { href: `flamegraph/diff?base=${encodeURIComponent(d.base)}&target=${encodeURIComponent(d.target)}&weight=${weight.key}`, target: '_blank', rel: 'noopener' }, 'The server\'s differential SVG (profiling-full)'))),
    );
    const baseTree = buildTree(b.profile, weight);
    const targetTree = buildTree(t.profile, weight);
    const colors = diffColors(baseTree, targetTree);
    const desc = describe(t.profile.functions);
    const redraw = (focusPath) =>
      drawFlame(box, targetTree, {
        focusPath,
        weight,
        colorOf: colors.colorOf,
        describe: (f, share) => {
          const x = colors.delta(f);
          const lines = desc(f, share);
          const moved = x.added ? 'new in the target' : `share ${x.base.toFixed(1)} % → ${x.target.toFixed(1)} % (${x.target >= x.base ? '+' : ''}${(x.target - x.base).toFixed(1)} points)`;
          return [lines[0], moved, ...lines.slice(2)];
        },
        onZoom: redraw,
      });
    redraw('');
  }

  return async () => {
    await refreshList();
    showDiff();
  };
}

function deltaTable(d, ctx) {
  const rows = d.functions.filter((f) => f.status !== 'unchanged');
  if (!rows.length) return h('p', { class: 'muted' }, `No function changed beyond the tolerance (${d.functions.length} compared).`);
  const per = (x, k, fmt) => (x ? fmt(x[k]) : '—');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'deltas-table' },
    h('thead', {}, h('tr', {}, ['function', 'status', 'calls', 'mean', 'self mean', 'self change', 'alloc/call change'].map((t, i) => h('th', { scope: 'col', class: i < 2 ? 'text' : null }, t)))),
    h('tbody', {}, rows.map((f) =>
      h('tr', { class: f.status },
        h('td', { class: 'text fn' }, h('a', { href: ctx.href('function', { name: f.function }) }, f.function)),
        h('td', { class: 'text' }, h('span', { class: `badge ${f.status}` }, f.status)),
        h('td', {}, `${per(f.base, 'calls', count)} → ${per(f.target, 'calls', count)}`),
        h('td', {}, `${per(f.base, 'mean_ns', dur)} → ${per(f.target, 'mean_ns', dur)}`),
        h('td', {}, `${per(f.base, 'self_mean_ns', dur)} → ${per(f.target, 'self_mean_ns', dur)}`),
        h('td', {}, change(f.self_change_percent)),
        h('td', {}, `${change(f.alloc_change_percent)} (${per(f.target, 'alloc_bytes_per_call', bytes)})`))))));
}
