// Overview: the figures of the moment, what needs attention (memory thresholds, leak
// suspects, the ranking's caveats), the top functions by self time, CPU and allocation,
// and memory and CPU over the sampler's window.

import { api } from './api.js';
import { barList, lineChart } from './charts.js';
import { bytes, clock, count, dur, fill, h, pct, short } from './format.js';

const TOP = 10;
const MIB = 1048576;

/** The last leak analysis run from this page, kept while the tab lives. */
let manualLeak = null;

export function mount(root, ctx) {
  const cards = h('div', { class: 'cards' });
  const alerts = h('div', { class: 'alerts' });
  const bars = {
    wall: h('div', {}),
    cpu: h('div', {}),
    alloc: h('div', {}),
  };
  const memChart = h('div', {});
  const cpuChart = h('div', {});
  const leakButton = h('button', { type: 'button' }, 'Run leak analysis now');
  const panel = (title, body, id) => h('section', { class: 'panel', 'aria-labelledby': id }, h('h2', { id }, title), body);
  root.append(
    h('h1', {}, 'Overview'),
    cards,
    h('section', { 'aria-labelledby': 'alerts-h' }, h('h2', { id: 'alerts-h', class: 'sr-only' }, 'Alerts'), alerts, leakButton),
    h(
      'div',
      { class: 'grid3' },
      panel('Top self wall time', bars.wall, 'top-wall'),
      panel('Top self CPU time', bars.cpu, 'top-cpu'),
      panel('Top allocated bytes (self)', bars.alloc, 'top-alloc'),
    ),
    h('div', { class: 'grid2' }, panel('Memory', memChart, 'mem-h'), panel('Process CPU', cpuChart, 'cpu-h')),
  );
  let last = null;
  leakButton.addEventListener('click', async () => {
    leakButton.disabled = true;
    try {
      manualLeak = await api('leak-detection', { method: 'POST' });
      if (last) update(last);
    } catch (e) {
      fill(alerts, h('p', { class: 'alert bad' }, `leak analysis failed: ${e.message}`));
    } finally {
      leakButton.disabled = false;
    }
  });

  function update(data) {
    last = data;
    const { ranking, memory, cpu, samples } = data;
    fill(cards, ...figureCards(ranking, memory, cpu));
    fill(alerts, ...alertList(data));
    const fnLink = (b) => ctx.href('function', { name: b.function });
    const top = (key, fmt) =>
      barList(
        [...ranking.bottlenecks]
          .filter((b) => b[key] > 0)
          .sort((a, b) => b[key] - a[key])
          .slice(0, TOP)
          .map((b) => ({ label: short(b.function), value: b[key], text: fmt(b[key]), href: fnLink(b) })),
        { empty: 'no figure recorded yet' },
      );
    fill(bars.wall, top('self_wall_ns', dur));
    fill(bars.cpu, top('cpu_self_ns', dur));
    fill(bars.alloc, ranking.window.allocations_counted ? top('alloc_bytes', bytes) : h('p', { class: 'muted' }, 'allocations are not counted: install the ProfilingAllocator'));
    const s = samples.samples;
    fill(
      memChart,
      lineChart({
        title: 'memory',
        fmt: (v) => `${v.toFixed(v < 10 ? 1 : 0)} MiB`,
        series: [
          { name: 'RSS', color: '#1f5fa8', points: s.map((x) => [x.at_unix_ms, x.rss_bytes / MIB]) },
          { name: 'heap', color: '#b4451f', points: s.filter((x) => x.heap_bytes != null).map((x) => [x.at_unix_ms, x.heap_bytes / MIB]) },
        ],
      }),
      h('p', { class: 'muted' }, `${samples.samples.length} samples, one every ${samples.interval_secs} s; growth of ${memory.growth_series}: ${memory.growth_rate_mb_per_hour == null ? 'n/a' : `${memory.growth_rate_mb_per_hour.toFixed(1)} MiB/h`}`),
    );
    fill(
      cpuChart,
      lineChart({
        title: 'process CPU',
        fmt: (v) => `${v.toFixed(0)} %`,
        series: [{ name: 'CPU, % of one core', color: '#2b7a3d', points: s.filter((x) => x.cpu_percent != null).map((x) => [x.at_unix_ms, x.cpu_percent]) }],
      }),
      h('p', { class: 'muted' }, `${cpu.available_cpus} CPUs available; recording overhead ${pct(cpu.profiling_overhead_percent, 2)}`),
    );
  }
  return update;
}

function card(label, value, detail, cls = '') {
  return h('div', { class: `card ${cls}` }, h('span', { class: 'card-label' }, label), h('b', {}, value), h('span', { class: 'card-detail' }, detail));
}

function figureCards(ranking, memory, cpu) {
  const w = ranking.window;
  const memCls = memory.alert ? 'bad' : memory.warning ? 'warn' : '';
  return [
    card('RSS', bytes(memory.rss_bytes), `warning at ${memory.warning_threshold_mb.toFixed(0)} MiB`, memCls),
    card('Heap', bytes(memory.heap_bytes), memory.growth_rate_mb_per_hour == null ? 'growth n/a' : `${memory.growth_rate_mb_per_hour.toFixed(1)} MiB/h (${memory.growth_series})`),
    card('CPU', pct(cpu.cpu_percent), `load ${cpu.load_average ? cpu.load_average.one.toFixed(2) : 'n/a'} · ${cpu.threads} threads`),
    card('Window', dur(w.duration_ns), `epoch ${w.epoch} · since ${clock(w.started_unix_ms)}`),
    card('Functions', count(w.functions), `profiled wall ${dur(w.profiled_wall_ns)}`),
  ];
}

function alertList({ ranking, memory, samples }) {
  const out = [];
  if (memory.alert) out.push(h('p', { class: 'alert bad' }, `RSS ${bytes(memory.rss_bytes)} is above the alert threshold (${memory.alert_threshold_mb.toFixed(0)} MiB).`));
  else if (memory.warning) out.push(h('p', { class: 'alert warn' }, `RSS ${bytes(memory.rss_bytes)} is above the warning threshold (${memory.warning_threshold_mb.toFixed(0)} MiB).`));
  const leak = manualLeak || samples.last_leak_report;
  if (leak) {
    if (leak.leak_suspected) {
      out.push(
        h('div', { class: 'alert bad' }, h('strong', {}, `Leak suspected (${leak.suspects.length})`),
          h('ul', {}, leak.suspects.map((s) => h('li', {}, `${s.kind.replace(/_/g, ' ')}${s.function ? ` in ${s.function}` : ''}: ${s.evidence}`)))),
      );
    } else {
      out.push(h('p', { class: 'alert ok' }, `No leak suspected over ${leak.samples} samples (${leak.window_secs.toFixed(0)} s of ${leak.series}).`));
    }
  }
  for (const n of ranking.notes) out.push(h('p', { class: 'alert note' }, n));
  if (!out.length) out.push(h('p', { class: 'alert ok' }, 'No alert: RSS is under its thresholds; no leak analysis has run yet.'));
  return out;
}
