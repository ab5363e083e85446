// The JSON API, as the page calls it: paths relative to the page (it sits at
// /api/profiling/), the bearer token from sessionStorage on every request, errors as
// exceptions carrying the server's own message.

const TOKEN_KEY = 'profiling-token';

/** The server answered 401: the page needs (another) token. */
export class Unauthorized extends Error {}

/** An error answer, with the server's message and status. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Calls `path`; `as` is 'json', 'text' or 'blob'. */
export async function api(path, { method = 'GET', as = 'json' } = {}) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const r = await fetch(path, { method, headers, cache: 'no-store' });
  if (r.status === 401) throw new Unauthorized('the server asks for a bearer token');
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      message = (await r.json()).error || message;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new ApiError(r.status, message);
  }
  if (as === 'blob') return r.blob();
  if (as === 'text') return r.text();
  return r.json();
}

/** `api(path)` for each path, in parallel. */
export function all(paths) {
  return Promise.all(paths.map((p) => api(p)));
}
