// Small SVG charts drawn from arrays: a time-series line chart, a bar list and a
// histogram. Sized by viewBox so they scale with the page; every chart has a text
// alternative (`role=img` and an `aria-label` stating its latest figures).

import { h } from './format.js';

const W = 600;

/**
 * A time-series line chart. `series`: [{name, color, points: [[unix_ms, value], ...]}];
 * `fmt` formats a value for the axis and the label.
 */
export function lineChart({ title, series, fmt, height = 160 }) {
  const pad = { l: 64, r: 12, t: 26, b: 22 };
  const pts = series.flatMap((s) => s.points);
  const label = `${title}: ${series
    .map((s) => `${s.name} ${s.points.length ? fmt(s.points[s.points.length - 1][1]) : 'no data'}`)
    .join(', ')}`;
  const svg = h('svg', { viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': label, class: 'chart' });
  if (pts.length < 2) {
    svg.append(h('text', { x: W / 2, y: height / 2, 'text-anchor': 'middle', class: 'muted' }, 'waiting for samples'));
    return svg;
  }
  const t0 = Math.min(...pts.map((p) => p[0]));
  const t1 = Math.max(...pts.map((p) => p[0]));
  const vmax = Math.max(...pts.map((p) => p[1]), 1e-9) * 1.1;
  const x = (t) => pad.l + ((t - t0) / Math.max(t1 - t0, 1)) * (W - pad.l - pad.r);
  const y = (v) => height - pad.b - (v / vmax) * (height - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4;
    svg.append(
      h('line', { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: 'grid' }),
      h('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)),
    );
  }
  const secs = Math.round((t1 - t0) / 1000);
  svg.append(
    h('text', { x: pad.l, y: height - 6, class: 'axis' }, `−${secs} s`),
    h('text', { x: W - pad.r, y: height - 6, 'text-anchor': 'end', class: 'axis' }, 'now'),
  );
  // The legend above the plot, left to right: a swatch and the name of each series.
  let lx = pad.l;
  series.forEach((s) => {
    if (!s.points.length) return;
    svg.append(
      h('polyline', {
        points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
        class: 'line',
        stroke: s.color,
      }),
      h('rect', { x: lx, y: 4, width: 12, height: 4, fill: s.color }),
      h('text', { x: lx + 16, y: 10, class: 'legend' }, s.name),
    );
    lx += 28 + s.name.length * 7;
  });
  return svg;
}

/**
 * Horizontal bars: [{label, value, text, href}], the longest bar full width. Links when
 * `href` is given, so each bar is reachable by keyboard.
 */
export function barList(items, { empty = 'nothing yet' } = {}) {
  if (!items.length) return h('p', { class: 'muted' }, empty);
  const max = Math.max(...items.map((i) => i.value), 1e-9);
  return h(
    'ol',
    { class: 'bars' },
    items.map((i) => {
      const bar = h('span', { class: 'bar' });
      bar.style.width = `${Math.max((i.value / max) * 100, 0.5)}%`;
      const name = i.href ? h('a', { href: i.href, title: i.label }, i.label) : h('span', { title: i.label }, i.label);
      return h('li', {}, h('span', { class: 'bar-label' }, name), h('span', { class: 'bar-track' }, bar), h('span', { class: 'bar-value' }, i.text));
    }),
  );
}

/** A histogram of `[upper bound, count]` buckets, one bar per bucket, labelled by `fmt`. */
export function histogram(buckets, fmt, height = 180) {
  const pad = { l: 48, r: 8, t: 10, b: 36 };
  const total = buckets.reduce((s, b) => s + b[1], 0);
  const label = `latency histogram: ${buckets.map((b) => `${b[1]} calls under ${fmt(b[0])}`).join(', ')}`;
  const svg = h('svg', { viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': label, class: 'chart histogram' });
  if (!total) return svg;
  const max = Math.max(...buckets.map((b) => b[1]));
  const bw = (W - pad.l - pad.r) / buckets.length;
  const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  svg.append(
    h('text', { x: pad.l - 6, y: pad.t + 8, 'text-anchor': 'end', class: 'axis' }, String(max)),
    h('text', { x: pad.l - 6, y: height - pad.b, 'text-anchor': 'end', class: 'axis' }, '0'),
  );
  // At most about eight bucket labels, so they never overlap.
  const every = Math.ceil(buckets.length / 8);
  buckets.forEach(([upper, n], i) => {
    const bx = pad.l + i * bw;
    svg.append(
      h('rect', { x: bx + 1, y: y(n), width: Math.max(bw - 2, 1), height: height - pad.b - y(n), class: 'hbar' },
        h('title', {}, `${n} calls (${((n / total) * 100).toFixed(1)} %) under ${fmt(upper)}`)),
      i % every === 0 && h('text', { x: bx + bw / 2, y: height - pad.b + 14, 'text-anchor': 'middle', class: 'axis' }, `<${fmt(upper)}`),
    );
  });
  return svg;
}
