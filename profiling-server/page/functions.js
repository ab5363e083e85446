// The ranking as a table (the only place a ranking row is written), sortable by any
// column and filtered by name, and the page of one function: its figures, latency
// histogram, callers and callees with their shares, call paths and recommendations.

import { histogram } from './charts.js';
import { buildTree, WEIGHTS } from './flame.js';
import { bytes, count, dur, fill, h, pct } from './format.js';

/** The columns of the ranking: JSON key, heading, formatter. */
const COLUMNS = [
  { key: 'rank', label: '#', fmt: String },
  { key: 'function', label: 'function', text: true },
  { key: 'calls', label: 'calls', fmt: count },
  { key: 'self_wall_ns', label: 'self wall', fmt: dur },
  { key: 'total_wall_ns', label: 'total wall', fmt: dur },
  { key: 'cpu_self_ns', label: 'self CPU', fmt: dur },
  { key: 'alloc_bytes', label: 'allocated', fmt: bytes },
  { key: 'p50_ns', label: 'p50', fmt: dur },
  { key: 'p99_ns', label: 'p99', fmt: dur },
  { key: 'impact_score', label: 'impact', fmt: (x) => x.toFixed(3) },
  { key: 'classification', label: 'class', text: true, fmt: (x) => x.replace(/_/g, ' ') },
];

export function mount(root, ctx) {
  const sortKey = () => ctx.params.get('sort') || 'rank';
  const ascending = () => (ctx.params.get('dir') || (sortKey() === 'rank' || sortKey() === 'function' ? 'asc' : 'desc')) === 'asc';
  const filter = h('input', { type: 'search', id: 'fn-filter', placeholder: 'part of a name', value: ctx.params.get('filter') || '' });
  const shown = h('span', { class: 'muted', 'aria-live': 'polite' });
  const head = h('tr');
  const body = h('tbody');
  root.append(
    h('h1', {}, 'Functions'),
    h('div', { class: 'toolbar' }, h('label', { for: 'fn-filter' }, 'Filter by name'), filter, shown),
    h('div', { class: 'table-wrap' }, h('table', { id: 'functions-table' }, h('caption', { class: 'sr-only' }, 'Ranked functions; column headings sort'), h('thead', {}, head), body)),
    h('p', { class: 'muted' }, 'Click a function for its page; click a heading to sort.'),
  );
  let last = null;
  const setSort = (key) => {
    const dir = sortKey() === key ? (ascending() ? 'desc' : 'asc') : key === 'function' ? 'asc' : 'desc';
    ctx.params.set('sort', key);
    ctx.params.set('dir', dir);
    ctx.setParams({ sort: key, dir });
    if (last) update(last);
  };
  filter.addEventListener('input', () => {
    ctx.params.set('filter', filter.value);
    ctx.setParams({ filter: filter.value });
    if (last) update(last);
  });

  function update(data) {
    last = data;
    const key = sortKey();
    const asc = ascending();
    fill(
      head,
      COLUMNS.map((c) =>
        h(
          'th',
          { scope: 'col', 'aria-sort': c.key === key ? (asc ? 'ascending' : 'descending') : null, class: c.text ? 'text' : null },
          h('button', { type: 'button', 'data-key': c.key, onclick: () => setSort(c.key) }, c.label),
        ),
      ),
    );
    const needle = (ctx.params.get('filter') || '').toLowerCase();
    const rows = data.ranking.bottlenecks
      .filter((b) => b.function.toLowerCase().includes(needle))
      .sort((a, b) => {
        const x = a[key];
        const y = b[key];
        const r = typeof x === 'string' ? x.localeCompare(y) : x - y;
        return asc ? r : -r;
      });
    shown.textContent = `${rows.length} of ${data.ranking.bottlenecks.length} functions`;
    fill(
      body,
      rows.length
        ? rows.map((b) =>
            h(
              'tr',
              {},
              COLUMNS.map((c) =>
                c.key === 'function'
                  ? h('td', { class: 'text fn' }, h('a', { href: ctx.href('function', { name: b.function }), title: b.recommendations.join('\n') }, b.function))
                  : h('td', { class: c.text ? 'text' : null }, c.fmt ? c.fmt(b[c.key]) : b[c.key]),
              ),
            ),
          )
        : h('tr', {}, h('td', { colspan: COLUMNS.length, class: 'text muted' }, needle ? 'No function matches the filter.' : 'No annotated function has been called in this window yet.')),
    );
  }
  return update;
}

/** The page of one function (`#function?name=...`). */
export function mountFunction(root, ctx) {
  const name = ctx.params.get('name') || '';
  const heading = h('h1', { class: 'fn' }, name);
  const sub = h('p', { class: 'muted' });
  const figures = h('dl', { class: 'figures' });
  const hist = h('div', {});
  const callers = h('div', {});
  const callees = h('div', {});
  const paths = h('div', {});
  const advice = h('div', {});
  const error = h('p', { class: 'alert bad', hidden: true });
  const section = (title, body, id) => h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id }, title), body);
  root.append(
    h('p', {}, h('a', { href: ctx.href('functions') }, '← all functions')),
    heading,
    sub,
    error,
    figures,
    h('div', { class: 'grid2' }, section('Latency histogram', hist, 'hist-h'), section('Recommendations', advice, 'advice-h')),
    h('div', { class: 'grid2' }, section('Callers', callers, 'callers-h'), section('Callees', callees, 'callees-h')),
    section('Call paths', paths, 'paths-h'),
  );

  // Everything from one refresh (the call tree carries every function's figures), so the
  // figures, callers, callees and paths agree with each other.
  function update(data) {
    const f = data.tree.functions.find((x) => x.name === name);
    error.hidden = !!f;
    if (!f) {
      error.textContent = `No function named ${name} has been called in this window.`;
      return;
    }
    sub.textContent = `${f.kind} · ${f.module} · ${f.file}:${f.line}`;
    const fig = [
      ['calls', count(f.calls)],
      ['cancelled', count(f.cancelled)],
      ['total wall', dur(f.total_wall_ns)],
      ['self wall', dur(f.self_wall_ns)],
      ['busy', dur(f.busy_ns)],
      ['self CPU', dur(f.cpu_self_ns)],
      ['total CPU', dur(f.cpu_total_ns)],
      ['mean', dur(f.mean_ns)],
      ['min', dur(f.min_ns)],
      ['max', dur(f.max_ns)],
      ['p50', dur(f.p50_ns)],
      ['p90', dur(f.p90_ns)],
      ['p99', dur(f.p99_ns)],
      ['p99.9', dur(f.p999_ns)],
      ['allocated (self)', `${bytes(f.alloc_self.alloc_bytes)} in ${count(f.alloc_self.alloc_count)}`],
      ['allocated (total)', bytes(f.alloc_total.alloc_bytes)],
      ['freed (self)', bytes(f.alloc_self.freed_bytes)],
    ];
    fill(figures, fig.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
    fill(hist, f.histogram.length ? histogram(f.histogram, dur) : h('p', { class: 'muted' }, 'no call recorded'));
    const b = data.ranking.bottlenecks.find((x) => x.function === f.name);
    fill(
      advice,
      b
        ? [
            h('p', {}, `Classified ${b.classifications.join(', ').replace(/_/g, ' ')}; impact ${b.impact_score.toFixed(3)}, ${pct(b.share * 100)} of profiled wall time.`),
            b.recommendations.length ? h('ul', {}, b.recommendations.map((r) => h('li', {}, r))) : h('p', { class: 'muted' }, 'No recommendation.'),
          ]
        : h('p', { class: 'muted' }, 'not in the ranking'),
    );
    const rel = relations(data.tree, f.id);
    fill(callers, shareTable(rel.callers, 'caller', ctx, rel.calls, rel.wall));
    fill(callees, shareTable(rel.callees, 'callee', ctx, rel.calls, rel.wall));
    fill(
      paths,
      rel.paths.length
        ? h('table', {}, h('thead', {}, h('tr', {}, ['path', 'calls', 'self wall', 'self CPU', ''].map((t, i) => h('th', { scope: 'col', class: i ? null : 'text' }, t)))),
            h('tbody', {}, rel.paths.map((fr) => h('tr', {},
              h('td', { class: 'text fn' }, fr.path.split(';').join(' → ')), h('td', {}, count(fr.node.calls)), h('td', {}, dur(fr.node.self_wall_ns)), h('td', {}, dur(fr.node.self_cpu_ns)),
              h('td', {}, h('a', { href: ctx.href('flame', { focus: fr.path }) }, 'flame graph'))))))
        : h('p', { class: 'muted' }, 'none'),
    );
  }
  return update;
}

/**
 * Callers and callees of function `id` over the call tree: per other function, the calls
 * and the inclusive wall time on the edges between them; the function's calls and
 * inclusive wall time over all its nodes, to take shares of; its nodes (call paths).
 */
function relations(snapshot, id) {
  const root = buildTree(snapshot, WEIGHTS[0]);
  const callers = new Map();
  const callees = new Map();
  const add = (m, name, calls, wall) => {
    const e = m.get(name) || { name, calls: 0, wall: 0 };
    e.calls += calls;
    e.wall += wall;
    m.set(name, e);
  };
  let calls = 0;
  let wall = 0;
  const paths = [];
  const visit = (fr) => {
    if (fr.fn === id) {
      paths.push(fr);
      calls += fr.node.calls;
      wall += fr.sums.wall;
      add(callers, fr.parent && fr.parent.fn != null ? fr.parent.name : '(root)', fr.node.calls, fr.sums.wall);
      for (const c of fr.children) add(callees, c.name, c.node.calls, c.sums.wall);
    }
    fr.children.forEach(visit);
  };
  visit(root);
  const sorted = (m) => [...m.values()].sort((a, b) => b.wall - a.wall);
  paths.sort((a, b) => b.node.self_wall_ns - a.node.self_wall_ns);
  return { callers: sorted(callers), callees: sorted(callees), calls, wall, paths };
}

function shareTable(rows, what, ctx, calls, wall) {
  if (!rows.length) return h('p', { class: 'muted' }, `no annotated ${what}`);
  const isCaller = what === 'caller';
  return h(
    'table',
    {},
    h('thead', {}, h('tr', {}, [what, 'calls', isCaller ? 'share of calls' : 'time', isCaller ? 'time via' : 'share of its total'].map((t, i) => h('th', { scope: 'col', class: i ? null : 'text' }, t)))),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h('tr', {},
          h('td', { class: 'text fn' }, r.name === '(root)' ? r.name : h('a', { href: ctx.href('function', { name: r.name }) }, r.name)),
          h('td', {}, count(r.calls)),
          h('td', {}, isCaller ? pct(calls ? (r.calls / calls) * 100 : null) : dur(r.wall)),
          h('td', {}, isCaller ? dur(r.wall) : pct(wall ? (r.wall / wall) * 100 : null))),
      ),
    ),
  );
}
