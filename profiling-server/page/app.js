// The page's shell: the view named in the URL hash (`#view?param=value`, so every view
// and selection is a link and survives a reload), the data refreshed every 5 seconds, and
// the bearer-token dialog.

import { all, setToken, token, Unauthorized } from './api.js';
import { clock } from './format.js';
import * as flame from './flameview.js';
import * as functions from './functions.js';
import * as overview from './overview.js';
import * as snapshots from './snapshots.js';

const VIEWS = {
  overview: { mod: overview, title: 'Overview' },
  flame: { mod: flame, title: 'Flame graph' },
  functions: { mod: functions, title: 'Functions' },
  function: { mod: functions, title: 'Function', mount: functions.mountFunction },
  snapshots: { mod: snapshots, title: 'Snapshots and diff' },
};

const REFRESH_MS = 5000;
const DATA_PATHS = ['bottlenecks?limit=1000', 'memory', 'cpu', 'samples', 'call-tree'];

const state = { name: null, update: null, data: null, timer: null };
const $ = (id) => document.getElementById(id);

/** The view and its parameters from the URL hash. */
function parseHash() {
  const raw = location.hash.slice(1);
  const q = raw.indexOf('?');
  const name = q < 0 ? raw : raw.slice(0, q);
  return { name: VIEWS[name] ? name : 'overview', params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

/** A link to a view: `href('function', {name: 'x'})` -> `#function?name=x`. */
export function href(name, params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== '')).toString();
  return `#${name}${q ? `?${q}` : ''}`;
}

/** Changes parameters of the current view in the URL without re-mounting it. */
function setParams(changes) {
  const { name, params } = parseHash();
  for (const [k, v] of Object.entries(changes)) {
    if (v == null || v === '') params.delete(k);
    else params.set(k, v);
  }
  history.replaceState(null, '', href(name, Object.fromEntries(params)));
}

function status(text, bad = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('bad', bad);
}

async function refresh() {
  try {
    const [ranking, memory, cpu, samples, tree] = await all(DATA_PATHS);
    state.data = { ranking, memory, cpu, samples, tree };
    status(`updated ${clock(Date.now())}`);
    if (state.update) await state.update(state.data);
  } catch (e) {
    if (e instanceof Unauthorized) askToken();
    status(`refresh failed: ${e.message}`, true);
  }
}

function route() {
  const { name, params } = parseHash();
  const view = VIEWS[name];
  for (const a of document.querySelectorAll('nav a')) {
    const current = a.dataset.view === name || (name === 'function' && a.dataset.view === 'functions');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const main = $('main');
  main.replaceChildren();
  state.name = name;
  const ctx = { params, setParams, refresh, href };
  state.update = (view.mount || view.mod.mount)(main, ctx);
  document.title = `${view.title} · Profiling`;
  if (state.data && state.update) {
    Promise.resolve(state.update(state.data)).catch((e) => status(`drawing failed: ${e.message}`, true));
  }
}

function schedule() {
  clearInterval(state.timer);
  if ($('live').checked) state.timer = setInterval(refresh, REFRESH_MS);
}

function askToken() {
  const d = $('token-dialog');
  if (d.open) return;
  $('token-input').value = token() || '';
  d.showModal();
}

function init() {
  $('token-button').addEventListener('click', askToken);
  $('token-dialog').addEventListener('close', () => {
    const v = $('token-dialog').returnValue;
    if (v === 'save') setToken($('token-input').value.trim());
    if (v === 'forget') setToken(null);
    if (v !== 'cancel') refresh();
  });
  $('live').addEventListener('change', schedule);
  window.addEventListener('hashchange', () => {
    route();
    $('main').focus({ preventScroll: true });
  });
  route();
  refresh();
  schedule();
}

init();
