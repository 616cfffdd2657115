// The Swell dashboard: a client of the /v1 API and nothing more. The bearer token lives
// in sessionStorage (gone with the tab); tenancy and roles are the API's. The page asks
// the API who the caller is (`GET /v1/auth/whoami`: role, admin, owned instances) and
// shows only what that caller may do: an instance owner without a role gets the portal
// of their own instances, a viewer no buttons, a member pause / resume, an owner the
// instance owners' bindings. The API still decides every call and its refusals are
// shown as they come.
//
// Every string from the API is rendered with textContent or as an attribute value,
// never parsed as HTML, so a name or message holding markup shows as text. The
// Content-Security-Policy forbids inline scripts and styles, so nothing here uses them.
'use strict';

const TOKEN_KEY = 'swell.token';
const REFRESH_MS = 3000;
const EVENT_LIMIT = 200; // the newest events fetched for the table and the chart
const SVG_NS = 'http://www.w3.org/2000/svg';
const COLORS = ['#1f6feb', '#bf3989', '#1a7f37', '#9a6700', '#8250df'];

/** An API answer that was not 2xx, with its application/problem+json body if any. */
class ApiError extends Error {
  constructor(status, problem) {
    super(problemText(status, problem));
    this.status = status;
    this.problem = problem;
  }
}

/** `403 Forbidden: detail`, as the API phrased it. */
function problemText(status, problem) {
  if (problem && typeof problem === 'object' && problem.title) {
    return `${status} ${problem.title}: ${problem.detail || ''}`.trim();
  }
  return `HTTP ${status}`;
}

/** Calls the API with the session's token; resolves to the JSON body (or null). */
async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const $ = (id) => document.getElementById(id);

/** A new element with text content (never HTML). */
function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

/** A table row of text cells. */
function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(c instanceof Node ? c : el('td', c));
  return tr;
}

function cell(child, className) {
  const td = el('td', undefined, className);
  td.append(child);
  return td;
}

const path = (...parts) => parts.map(encodeURIComponent).join('/');

/** `3s`, `5m`, `2h`, `4d`: how long ago an RFC 3339 time was. */
function age(rfc3339) {
  const ms = Date.now() - Date.parse(rfc3339);
  if (!Number.isFinite(ms)) return '';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

const timeOf = (rfc3339) => new Date(rfc3339).toLocaleTimeString();

/** The `type`s of a group document's policies. */
function policyTypes(group) {
  const policies = (group.spec && group.spec.policies) || [];
  return policies.map((p) => p.type).filter(Boolean).join(', ') || 'none';
}

/** One word for a group's state, from the API's counts. */
function groupStatus(group) {
  if (group.deleting) return 'deleting';
  const c = group.instances || {};
  const moving = [];
  for (const s of ['pending', 'draining', 'terminating', 'paused']) {
    if (c[s]) moving.push(`${c[s]} ${s}`);
  }
  let state;
  if (moving.length === 0 && c.running === group.desired_capacity) state = 'steady';
  else state = moving.length ? `scaling (${moving.join(', ')})` : 'scaling';
  // Suspended: the policies change nothing (swell group resume).
  return group.suspended ? `${state}, autoscaling suspended` : state;
}

// ---- views and navigation ----

const VIEWS = ['login-view', 'groups-view', 'portal-view', 'group-view', 'cost-view'];

/** The caller as `GET /v1/auth/whoami` described them; null until asked (per login). */
let session = null;

/**
 * What the caller may do, from their role (the same rules as the API's table in
 * docs/api.md): `read` the tenant's groups (viewer or better), `write` (member or better:
 * desired_capacity, pause and resume), `bind` users to instances (owner or admin).
 * Without a role the caller is an instance owner: the portal of their instances.
 */
function may(w) {
  const rank = { viewer: 1, member: 2, owner: 3 }[w && w.role] || 0;
  const admin = !!(w && w.admin);
  return { read: admin || rank >= 1, write: admin || rank >= 2, bind: admin || rank >= 3 };
}
let timer = null;
let generation = 0; // bumped on every navigation: answers of an older view are dropped

function show(view) {
  $('loading').hidden = true;
  for (const v of VIEWS) $(v).hidden = v !== view;
}

function stopRefresh() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

/** Refreshes the view shown now at once (after a button changed something). */
let refreshNow = () => {};

/** Runs `load` now and every REFRESH_MS while the view it belongs to is shown. */
function refreshLoop(load) {
  const mine = ++generation;
  stopRefresh();
  let loading = false;
  let again = false;
  const tick = async () => {
    timer = null;
    // One load at a time: a refresh asked for during one follows it.
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      await load(() => mine === generation);
    } catch (e) {
      // A 401 of a view already left (say, just after logging out) must not end the
      // session that follows it.
      if (mine !== generation || handleAuthError(e)) return;
      console.error(e);
    } finally {
      loading = false;
    }
    if (mine !== generation) return;
    if (again) {
      again = false;
      tick();
    } else {
      timer = setTimeout(tick, REFRESH_MS);
    }
  };
  refreshNow = () => {
    if (mine !== generation) return;
    stopRefresh();
    tick();
  };
  tick();
}

/** A 401 means the token is gone or expired: back to the login form. */
function handleAuthError(e) {
  if (e instanceof ApiError && e.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    session = null;
    route(`Logged out: ${e.message}`);
    return true;
  }
  return false;
}

async function route(loginMessage) {
  stopRefresh();
  stopLive();
  const mine = ++generation;
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showLogin(loginMessage || '');
    return;
  }
  $('logout').hidden = false;
  // Asked at every navigation, so a role granted or taken away shows at the next one.
  try {
    await whoami();
  } catch (e) {
    if (mine !== generation || handleAuthError(e)) return;
    show(null);
    $('loading').hidden = false;
    $('loading').textContent = `Who are you? ${e.message}`;
    return;
  }
  if (mine !== generation) return;
  // The cost page is a tenant's (viewer or better): no link to it in an owner's portal.
  $('nav-cost').hidden = !may(session).read;
  // An instance owner without a role may read nothing but their instances: every
  // address shows their portal, never a page of refusals.
  if (!may(session).read) {
    showPortal();
    return;
  }
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/groups\/([^/]+)$/);
  if (m) {
    let name;
    try {
      name = decodeURIComponent(m[1]);
    } catch (_) {
      location.hash = '#/';
      return;
    }
    showGroup(name);
  } else if (hash === '#/cost') {
    showCost();
  } else {
    showGroups();
  }
}

// ---- login and logout ----

/** Empties every view, so that nothing of one session shows in the next. */
function clearData() {
  for (const id of ['groups-body', 'instances-body', 'events-body', 'metric-chart', 'load-chart', 'desired-chart', 'portal-list', 'bind-instance',
    'cost-body', 'cost-total', 'cost-chart', 'hours-chart', 'cost-period-text']) {
    $(id).replaceChildren();
  }
  for (const e of document.querySelectorAll('.summary dd, .error, [role=status], #group-name, #metric-name')) {
    e.textContent = '';
  }
  $('desired-input').value = '';
  $('bind-user').value = '';
  for (const id of ['groups-empty', 'instances-empty', 'events-empty', 'portal-empty', 'cost-empty']) $(id).hidden = true;
  for (const id of ['desired-form', 'bind-form', 'instances-actions', 'instances-owners']) $(id).hidden = true;
  $('groups-refreshed').textContent = '–';
  $('group-refreshed').textContent = '–';
  $('portal-refreshed').textContent = '–';
  portalNotes.clear();
  $('cost-refreshed').textContent = '–';
}

function showLogin(message) {
  session = null;
  clearData();
  $('logout').hidden = true;
  $('nav-cost').hidden = true;
  $('who').textContent = '';
  $('login-error').textContent = message;
  show('login-view');
}

/** Asks the API who the caller is; keeps the answer as `session` and shows it. */
async function whoami() {
  const w = await api('GET', '/v1/auth/whoami');
  const role = w.admin ? 'admin' : w.role || 'instance owner';
  $('who').textContent = `${w.principal} in tenant ${w.tenant} (${role})`;
  session = w;
  return w;
}

/** Keeps `token` for this tab if the API accepts it, then opens the groups. */
async function useToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  session = null;
  try {
    await whoami();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw e;
  }
  $('login-password').value = '';
  $('login-token').value = '';
  if (location.hash !== '#/') location.hash = '#/';
  else route();
}

async function submitting(form, action) {
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  $('login-error').textContent = '';
  try {
    await action();
  } catch (e) {
    $('login-error').textContent = e.message;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  submitting(ev.target, async () => {
    const answer = await api('POST', '/v1/auth/tokens', {
      user: $('login-user').value,
      password: $('login-password').value,
      tenant: $('login-tenant').value,
    });
    await useToken(answer.token);
  });
});

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  submitting(ev.target, () => useToken($('login-token').value.trim()));
});

$('logout').addEventListener('click', async () => {
  // A login token is revoked on the server; an API key is only forgotten here (it
  // lives until an owner deletes it).
  try {
    await api('DELETE', '/v1/auth/tokens/current');
  } catch (_) {
    // Already expired or an API key: nothing to revoke.
  }
  sessionStorage.removeItem(TOKEN_KEY);
  session = null;
  route('Logged out.');
});

window.addEventListener('hashchange', () => route());

// ---- the tenant's groups ----

function showGroups() {
  clearData();
  show('groups-view');
  refreshLoop(async (current) => {
    let list;
    try {
      list = await api('GET', '/v1/groups');
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      // Shown until the next refresh succeeds: a refusal, or the server out of reach.
      if (current()) $('groups-error').textContent = e.message;
      return;
    }
    if (!current()) return;
    $('groups-error').textContent = '';
    const body = $('groups-body');
    const rows = list.groups.map((g) => {
      const link = el('a', g.name);
      link.href = `#/groups/${encodeURIComponent(g.name)}`;
      const tr = row([
        cell(link),
        g.spec && g.spec.provider,
        el('td', g.spec && g.spec.min, 'num'),
        el('td', g.desired_capacity, 'num'),
        el('td', g.spec && g.spec.max, 'num'),
        el('td', (g.instances && g.instances.running) || 0, 'num'),
        policyTypes(g),
        groupStatus(g),
      ]);
      tr.dataset.group = g.name;
      return tr;
    });
    body.replaceChildren(...rows);
    $('groups-empty').hidden = rows.length > 0;
    $('groups-refreshed').textContent = new Date().toLocaleTimeString();
  });
}

// ---- the portal of an instance owner (seed 3) ----

/** What the last Pause / Resume of each instance answered, shown until the next one. */
const portalNotes = new Map();

/**
 * The instances bound to the caller (`GET /v1/instances` shows an instance owner only
 * theirs), each with its status, address, Pause or Resume, and its CPU and memory
 * chart (`GET /v1/groups/{name}/instances/{id}/metrics`). Calls nothing an instance
 * owner may not: no group, no event, no other instance.
 */
function showPortal() {
  clearData();
  show('portal-view');
  refreshLoop(async (current) => {
    let list, histories;
    try {
      list = (await api('GET', '/v1/instances')).instances;
      histories = await Promise.all(list.map((i) =>
        api('GET', `/v1/groups/${path(i.group)}/instances/${path(i.id)}/metrics`)));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      if (current()) $('portal-error').textContent = e.message;
      return;
    }
    if (!current()) return;
    $('portal-error').textContent = '';
    const cards = list.map((i, k) => portalCard(i, histories[k].points));
    $('portal-list').replaceChildren(...cards);
    $('portal-empty').hidden = cards.length > 0;
    $('portal-refreshed').textContent = new Date().toLocaleTimeString();
  });
}

function portalCard(i, points) {
  const card = el('article', undefined, 'instance-card');
  card.dataset.instance = i.id;
  card.dataset.group = i.group;
  card.dataset.status = i.status;
  const title = el('h2');
  title.append(el('span', i.id, 'mono'), el('span', i.status, `status status-${i.status}`));
  const facts = el('dl', undefined, 'summary');
  const fact = (name, value, cls) => {
    facts.append(el('dt', name), el('dd', value, cls));
  };
  fact('scaling group', i.group, 'group');
  fact('address', i.address || '–', 'address');
  fact('provider', i.provider, 'provider');
  fact('cpu', typeof i.cpu_percent === 'number' ? `${fmt(i.cpu_percent)} %` : '–', 'cpu');
  fact('memory', typeof i.memory_mb === 'number' ? `${fmt(i.memory_mb)} MiB` : '–', 'memory');
  fact('since', i.started_at ? new Date(i.started_at).toLocaleString() : '–', 'since');
  const controls = el('div', undefined, 'controls');
  const note = el('span', portalNotes.get(i.id) || '', 'note');
  note.setAttribute('role', 'status');
  const button = pauseButton(i.group, i, (e) => {
    portalNotes.set(i.id, e ? e.message : '');
    refreshNow();
  });
  if (button) controls.append(button);
  controls.append(note);
  if (portalNotes.get(i.id)) note.className = 'note error';
  const figure = el('figure');
  figure.append(el('figcaption',
    'CPU (% of one core, left axis) and memory (MiB, right axis), one point per metrics interval'));
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 900 220');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `CPU and memory of ${i.id} over time`);
  svg.classList.add('instance-chart');
  renderInstanceChart(svg, points);
  figure.append(svg);
  card.append(title, facts, controls, figure);
  return card;
}

/**
 * One instance's chart: CPU % (left axis) and memory MiB (right axis) over time. Each
 * line carries the points it drew (`data-at`, `data-values`) for the browser test.
 */
function renderInstanceChart(svg, points) {
  const W = 900, H = 220, L = 56, R = 84, T = 28, B = 24;
  if (points.length === 0) {
    svg.replaceChildren(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'label' },
      'No readings yet: one is kept every metrics interval while the instance runs.'));
    return;
  }
  const times = points.map((p) => Date.parse(p.at));
  const t0 = times[0];
  let t1 = times[times.length - 1];
  if (t1 <= t0) t1 = t0 + 1000;
  const cmax = Math.max(1, ...points.map((p) => p.cpu_percent)) * 1.1;
  const mmax = Math.max(1, ...points.map((p) => p.memory_mb)) * 1.1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v, max) => H - B - (v / max) * (H - T - B);
  const nodes = [
    svgEl('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }),
    svgEl('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }),
    svgEl('line', { x1: W - R, y1: T, x2: W - R, y2: H - B, class: 'axis' }),
    svgEl('text', { x: L - 4, y: T + 8, 'text-anchor': 'end', class: 'label' }, `${fmt(cmax)} %`),
    svgEl('text', { x: L - 4, y: H - B, 'text-anchor': 'end', class: 'label' }, '0'),
    svgEl('text', { x: W - R + 4, y: T + 8, class: 'label' }, `${fmt(mmax)} MiB`),
    svgEl('text', { x: W - R + 4, y: H - B, class: 'label' }, '0'),
    svgEl('text', { x: L, y: H - 6, class: 'label' }, new Date(t0).toLocaleTimeString()),
    svgEl('text', { x: W - R, y: H - 6, 'text-anchor': 'end', class: 'label' }, new Date(t1).toLocaleTimeString()),
  ];
  for (const [field, label, max, cls, color, lx] of [
    ['cpu_percent', 'cpu %', cmax, 'series', COLORS[0], L + 6],
    ['memory_mb', 'memory MiB', mmax, 'memory', '#bf3989', L + 90],
  ]) {
    const line = svgEl('polyline', {
      points: points.map((p, k) => `${x(times[k])},${y(p[field], max)}`).join(' '),
      class: cls,
      stroke: color,
    });
    line.dataset.series = field;
    line.dataset.at = points.map((p) => p.at).join(' ');
    line.dataset.values = points.map((p) => p[field]).join(' ');
    nodes.push(line);
    nodes.push(svgEl('text', { x: lx, y: 16, fill: color, class: 'legend' }, label));
  }
  svg.replaceChildren(...nodes);
}

// ---- one group ----

let desiredEdited = false;
$('desired-input').addEventListener('input', () => { desiredEdited = true; });

function showGroup(name) {
  show('group-view');
  clearData();
  const can = may(session);
  $('group-name').textContent = name;
  $('desired-form').dataset.group = name;
  $('bind-form').dataset.group = name;
  // Only the controls this caller may use (a viewer's page has none).
  $('desired-form').hidden = !can.write;
  $('instances-actions').hidden = !can.write;
  $('instances-owners').hidden = !can.bind;
  $('bind-form').hidden = !can.bind;
  desiredEdited = false;
  const me = startLive(name);
  refreshLoop(async (current) => {
    const base = `/v1/groups/${path(name)}`;
    // The events come live from the event stream; polled only when it is not to be had.
    const polled = me.polled;
    let group, instances, events, history, metrics, owners;
    try {
      [group, instances, events, history, metrics] = await Promise.all([
        api('GET', base),
        api('GET', `${base}/instances`),
        polled ? api('GET', `${base}/events?limit=${EVENT_LIMIT}`) : null,
        api('GET', `${base}/metrics/history`),
        api('GET', `${base}/metrics`),
      ]);
      owners = can.bind ? await instanceOwners(name, instances.instances) : null;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      // Shown until the next refresh succeeds: a refusal, or the server out of reach.
      if (current()) $('group-error').textContent = e.message;
      return;
    }
    if (!current()) return;
    $('group-error').textContent = '';
    renderGroup(group);
    renderInstances(name, instances.instances, can, owners);
    me.group = group;
    if (polled) me.events = events.events;
    if (me.events) showEvents(me);
    renderMetricChart(metrics);
    renderLoadChart(history.summaries);
    $('group-refreshed').textContent = new Date().toLocaleTimeString();
  });
}

// ---- live events ----

/**
 * The group page's event follower: its events (null until listed), the group as last
 * refreshed (for the desired capacity chart), and whether the page polls the events
 * instead (no stream to be had: the group is gone, or too many streams are open).
 */
let live = null;

function stopLive() {
  if (live) live.controller.abort();
  live = null;
}

/** Follows `name`'s events live while its page is shown; returns the follower. */
function startLive(name) {
  stopLive();
  const me = { controller: new AbortController(), events: null, group: null, polled: false };
  live = me;
  followEvents(name, me).catch((e) => {
    if (live !== me || handleAuthError(e)) return;
    // A refusal (a group gone, say) is the refresh's to show, from its own answers.
    if (!(e instanceof ApiError)) console.error(e);
    me.polled = true;
  });
  return me;
}

function showEvents(me) {
  renderEvents(me.events);
  if (me.group) renderDesiredChart(me.group, me.events);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Lists the newest events, then reads the event stream
 * (`GET /v1/groups/{name}/events/stream`) and shows each event as it comes. Not
 * `EventSource`: it cannot send the `Authorization` header, and a token in the URL
 * would end up in logs. Reconnects with `Last-Event-ID` when the stream ends, so no
 * event is lost or shown twice.
 */
async function followEvents(name, me) {
  const base = `/v1/groups/${path(name)}`;
  const list = await api('GET', `${base}/events?limit=${EVENT_LIMIT}`);
  if (live !== me) return;
  me.events = list.events;
  showEvents(me);
  let last = me.events.length ? me.events[me.events.length - 1].id : 0;
  while (live === me) {
    const headers = { Accept: 'text/event-stream', 'Last-Event-ID': String(last) };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(`${base}/events/stream`, {
        headers, cache: 'no-store', credentials: 'omit', signal: me.controller.signal,
      });
    } catch (_) {
      // Out of reach (or the page left): try again shortly.
      if (live === me) await pause(REFRESH_MS);
      continue;
    }
    if (response.status === 401) throw new ApiError(401, await response.json().catch(() => null));
    if (!response.ok) {
      // 404 (the group is gone: the refresh says so) or 429 (too many streams).
      me.polled = true;
      return;
    }
    let got = 0;
    try {
      for await (const data of sseData(response.body)) {
        if (live !== me) return;
        const e = JSON.parse(data);
        last = e.id;
        got++;
        me.events.push(e);
        if (me.events.length > EVENT_LIMIT) me.events.splice(0, me.events.length - EVENT_LIMIT);
        showEvents(me);
      }
    } catch (_) {
      // The connection broke (or the page left): reconnect from `last`.
    }
    // The stream ended at its timeout: go on at once; after nothing, not in a tight loop.
    if (live === me && got === 0) await pause(REFRESH_MS);
  }
}

/** The `data` of each message of a Server-Sent Events body (comments skipped). */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      if (!buf.endsWith('\r')) buf = buf.replace(/\r\n/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''));
        if (data.length) yield data.join('\n');
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function renderGroup(g) {
  const spec = g.spec || {};
  $('group-provider').textContent = spec.provider || '';
  $('group-min').textContent = spec.min;
  $('group-desired').textContent = g.desired_capacity;
  $('group-max').textContent = spec.max;
  $('group-running').textContent = (g.instances && g.instances.running) || 0;
  $('group-policies').textContent = policyTypes(g);
  $('group-status').textContent = groupStatus(g);
  $('group-lb').textContent = g.load_balancer || 'none';
  // No min/max on the input: the API checks the bounds and its answer is shown.
  if (!desiredEdited) $('desired-input').value = g.desired_capacity;
}

/** The users bound to each instance (`GET …/instances/{id}/owners`), by instance id. */
async function instanceOwners(group, list) {
  const base = `/v1/groups/${path(group)}/instances`;
  const answers = await Promise.all(list.map((i) => api('GET', `${base}/${path(i.id)}/owners`)));
  const out = new Map();
  list.forEach((i, k) => out.set(i.id, answers[k].owners.map((o) => o.user)));
  return out;
}

function renderInstances(group, list, can, owners) {
  const rows = list.map((i) => {
    const cells = [
      el('td', i.id, 'mono'),
      el('td', i.status, `status-${i.status}`),
      i.address || '',
      age(i.created_at),
    ];
    if (can.write) {
      const td = el('td');
      const b = pauseButton(group, i, (e) => {
        $('instances-error').textContent = e ? e.message : '';
        refreshNow();
      });
      if (b) td.append(b);
      cells.push(td);
    }
    if (can.bind) {
      const td = el('td');
      for (const user of owners.get(i.id) || []) {
        const chip = el('span', undefined, 'owner');
        chip.dataset.user = user;
        const unbind = el('button', 'Unbind', 'secondary');
        unbind.type = 'button';
        unbind.title = `unbind ${user} from ${i.id}`;
        unbind.addEventListener('click', () => unbindOwner(group, i.id, user, unbind));
        chip.append(el('span', user), unbind);
        td.append(chip);
      }
      cells.push(td);
    }
    const tr = row(cells);
    tr.dataset.instance = i.id;
    tr.dataset.status = i.status;
    return tr;
  });
  $('instances-body').replaceChildren(...rows);
  $('instances-empty').hidden = rows.length > 0;
  if (can.bind) renderBindChoices(list);
}

/** The bind form's instances, keeping the one chosen while the list refreshes. */
function renderBindChoices(list) {
  const select = $('bind-instance');
  const chosen = select.value;
  const options = list.map((i) => {
    const o = el('option', `${i.id} (${i.status})`);
    o.value = i.id;
    return o;
  });
  select.replaceChildren(...options);
  if (list.some((i) => i.id === chosen)) select.value = chosen;
}

/**
 * A Pause button for a running instance, Resume for a paused one, none otherwise:
 * `POST /v1/groups/{name}/instances/{id}/pause|resume`. `done(error)` runs after the
 * answer (error: the API's refusal, else null).
 */
function pauseButton(group, instance, done) {
  const action = { running: 'pause', paused: 'resume' }[instance.status];
  if (!action) return null;
  const b = el('button', action === 'pause' ? 'Pause' : 'Resume', 'secondary');
  b.type = 'button';
  b.dataset.action = action;
  b.addEventListener('click', async () => {
    b.disabled = true;
    b.textContent = action === 'pause' ? 'Pausing…' : 'Resuming…';
    try {
      await api('POST', `/v1/groups/${path(group)}/instances/${path(instance.id)}/${action}`);
      done(null);
    } catch (e) {
      if (handleAuthError(e)) return;
      if (!(e instanceof ApiError)) console.error(e);
      done(e);
    }
  });
  return b;
}

async function unbindOwner(group, id, user, button) {
  button.disabled = true;
  $('bind-error').textContent = '';
  $('bind-result').textContent = '';
  try {
    await api('DELETE', `/v1/groups/${path(group)}/instances/${path(id)}/owners/${path(user)}`);
    $('bind-result').textContent = `${user} is no longer an instance owner of ${id}`;
    refreshNow();
  } catch (e) {
    if (!handleAuthError(e)) $('bind-error').textContent = e.message;
    button.disabled = false;
  }
}

$('bind-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const group = ev.target.dataset.group;
  const id = $('bind-instance').value;
  const user = $('bind-user').value.trim();
  $('bind-error').textContent = '';
  $('bind-result').textContent = '';
  if (!id) {
    $('bind-error').textContent = 'instance: choose a live instance';
    return;
  }
  if (!user) {
    $('bind-error').textContent = 'user: name the user to bind';
    return;
  }
  const button = $('bind-submit');
  button.disabled = true;
  try {
    const o = await api('PUT', `/v1/groups/${path(group)}/instances/${path(id)}/owners/${path(user)}`);
    $('bind-user').value = '';
    $('bind-result').textContent = `${o.user} is an instance owner of ${o.instance}`;
    refreshNow();
  } catch (e) {
    if (!handleAuthError(e)) $('bind-error').textContent = e.message;
  } finally {
    button.disabled = false;
  }
});

function renderEvents(list) {
  const newest = list.slice(-50).reverse();
  const rows = newest.map((e) => {
    const c = e.cause;
    let metric = '';
    if (c && c.metric) {
      metric = `${c.metric} = ${fmt(c.value)}`;
      if (c.threshold !== null && c.threshold !== undefined) metric += ` / ${fmt(c.threshold)}`;
    }
    const tr = row([
      el('td', timeOf(e.at), 'nowrap'),
      el('td', e.kind, 'nowrap'),
      el('td', c ? c.policy : '', 'nowrap'),
      metric,
      el('td', c ? `${c.before} → ${c.after}` : '', 'nowrap'),
      c ? c.reason : '',
      e.message,
    ]);
    tr.dataset.event = e.id;
    return tr;
  });
  $('events-body').replaceChildren(...rows);
  $('events-empty').hidden = rows.length > 0;
}

const fmt = (v) => (typeof v === 'number' ? String(Math.round(v * 100) / 100) : '–');

// ---- charts (SVG built node by node) ----

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}

/**
 * Draws `series` ([{label, points: [[ms, value]…], step}]) into `svg`, with the value
 * range from 0 and the time range of all points; `empty` when nothing has two points.
 */
function drawChart(svg, series, empty) {
  const W = 600, H = 180, L = 44, R = 8, T = 24, B = 24;
  const nodes = [];
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    nodes.push(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'label' }, empty));
    svg.replaceChildren(...nodes);
    return;
  }
  let t0 = Math.min(...all.map((p) => p[0]));
  let t1 = Math.max(...all.map((p) => p[0]));
  if (t1 <= t0) t1 = t0 + 1000;
  let vmax = Math.max(...all.map((p) => p[1]));
  if (!(vmax > 0)) vmax = 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  nodes.push(svgEl('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }));
  nodes.push(svgEl('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }));
  nodes.push(svgEl('text', { x: L - 4, y: T + 8, 'text-anchor': 'end', class: 'label' }, fmt(vmax)));
  nodes.push(svgEl('text', { x: L - 4, y: H - B, 'text-anchor': 'end', class: 'label' }, '0'));
  nodes.push(svgEl('text', { x: L, y: H - 6, class: 'label' }, new Date(t0).toLocaleTimeString()));
  nodes.push(svgEl('text', { x: W - R, y: H - 6, 'text-anchor': 'end', class: 'label' }, new Date(t1).toLocaleTimeString()));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = [];
    s.points.forEach(([t, v], k) => {
      if (s.step && k > 0) pts.push(`${x(t)},${y(s.points[k - 1][1])}`);
      pts.push(`${x(t)},${y(v)}`);
    });
    const line = svgEl('polyline', { points: pts.join(' '), stroke: color, class: 'series' });
    line.dataset.series = s.label;
    nodes.push(line);
    nodes.push(svgEl('text', { x: L + 6 + i * 150, y: 14, fill: color, class: 'legend' }, s.label));
  });
  svg.replaceChildren(...nodes);
}

/**
 * The group's chart, from `GET /v1/groups/{name}/metrics`: its metric (left axis), a
 * dashed line per threshold or target of its policies, and the running instances as a
 * step line (right axis). Each series carries what it drew as data attributes
 * (`data-at`: the points' times as the API wrote them, `data-values`; space-separated),
 * so that a test can compare it with the API.
 */
function renderMetricChart(doc) {
  const svg = $('metric-chart');
  $('metric-name').textContent = doc.metric;
  const W = 900, H = 260, L = 48, R = 40, T = 28, B = 24;
  const points = doc.points || [];
  const sampled = points.filter((p) => typeof p.value === 'number');
  const lines = (doc.lines || []).filter((l) => l.metric === doc.metric);
  if (points.length === 0) {
    svg.replaceChildren(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'label' },
      'No metric points yet: one is kept every metrics interval.'));
    return;
  }
  const times = points.map((p) => Date.parse(p.at));
  const t0 = times[0];
  let t1 = times[times.length - 1];
  if (t1 <= t0) t1 = t0 + 1000;
  let vmax = Math.max(0, ...sampled.map((p) => p.value), ...lines.map((l) => l.value));
  if (!(vmax > 0)) vmax = 1;
  vmax *= 1.1;
  let nmax = Math.max(1, ...points.map((p) => Math.max(p.running, p.desired_capacity)));
  nmax += 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (Math.min(v, vmax) / vmax) * (H - T - B);
  const yn = (n) => H - B - (n / nmax) * (H - T - B);
  const nodes = [
    svgEl('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'axis' }),
    svgEl('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }),
    svgEl('line', { x1: W - R, y1: T, x2: W - R, y2: H - B, class: 'axis' }),
    svgEl('text', { x: L - 4, y: T + 8, 'text-anchor': 'end', class: 'label' }, fmt(vmax)),
    svgEl('text', { x: L - 4, y: H - B, 'text-anchor': 'end', class: 'label' }, '0'),
    svgEl('text', { x: W - R + 4, y: T + 8, class: 'label' }, nmax),
    svgEl('text', { x: W - R + 4, y: H - B, class: 'label' }, '0'),
    svgEl('text', { x: L, y: H - 6, class: 'label' }, new Date(t0).toLocaleTimeString()),
    svgEl('text', { x: W - R, y: H - 6, 'text-anchor': 'end', class: 'label' }, new Date(t1).toLocaleTimeString()),
  ];
  const legend = [];
  lines.forEach((l, i) => {
    const color = COLORS[(i + 1) % COLORS.length];
    const line = svgEl('line', { x1: L, y1: y(l.value), x2: W - R, y2: y(l.value), stroke: color, class: 'threshold' });
    line.dataset.kind = l.kind;
    line.dataset.policy = l.policy;
    line.dataset.value = String(l.value);
    nodes.push(line);
    legend.push([`${l.kind} ${fmt(l.value)}`, color]);
  });
  const metric = svgEl('polyline', {
    points: sampled.map((p) => `${x(Date.parse(p.at))},${y(p.value)}`).join(' '),
    stroke: COLORS[0],
    class: 'series',
  });
  metric.dataset.series = doc.metric;
  metric.dataset.at = sampled.map((p) => p.at).join(' ');
  metric.dataset.values = sampled.map((p) => p.value).join(' ');
  nodes.push(metric);
  legend.unshift([doc.metric, COLORS[0]]);
  const steps = [];
  points.forEach((p, k) => {
    if (k > 0) steps.push(`${x(times[k])},${yn(points[k - 1].running)}`);
    steps.push(`${x(times[k])},${yn(p.running)}`);
  });
  const running = svgEl('polyline', { points: steps.join(' '), class: 'instances' });
  running.dataset.series = 'running';
  running.dataset.at = points.map((p) => p.at).join(' ');
  running.dataset.values = points.map((p) => p.running).join(' ');
  nodes.push(running);
  legend.push(['running instances', '#57606a']);
  let lx = L + 6;
  for (const [label, color] of legend) {
    nodes.push(svgEl('text', { x: lx, y: 16, fill: color, class: 'legend' }, label));
    lx += 20 + label.length * 9;
  }
  svg.replaceChildren(...nodes);
}

function renderLoadChart(summaries) {
  const byMetric = new Map();
  for (const s of summaries) {
    if (!byMetric.has(s.metric)) byMetric.set(s.metric, []);
    byMetric.get(s.metric).push([Date.parse(s.at), s.mean]);
  }
  const series = [...byMetric].map(([metric, points]) => ({ label: `${metric} (mean)`, points }));
  drawChart($('load-chart'), series, 'No load history yet: it is summarised every five minutes.');
}

function renderDesiredChart(group, events) {
  const points = [];
  for (const e of events) {
    if (!e.cause || e.cause.before === e.cause.after) continue;
    const t = Date.parse(e.at);
    // Before the first change listed the group had its `before`: since its creation
    // when the list is whole (shorter than the limit asked for).
    const since = events.length < EVENT_LIMIT ? Math.min(t, Date.parse(group.created_at)) : t;
    if (points.length === 0) points.push([since, e.cause.before]);
    points.push([t, e.cause.after]);
  }
  if (points.length === 0) points.push([Date.parse(group.created_at), group.desired_capacity]);
  points.push([Date.now(), group.desired_capacity]);
  drawChart($('desired-chart'), [{ label: 'desired_capacity', points, step: true }], '');
}

// ---- setting the desired capacity ----

$('desired-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = ev.target.dataset.group;
  const button = $('desired-submit');
  const value = Number($('desired-input').value);
  $('desired-error').textContent = '';
  $('desired-result').textContent = '';
  if (!Number.isInteger(value) || value < 0) {
    $('desired-error').textContent = 'desired_capacity must be a whole number ≥ 0';
    return;
  }
  button.disabled = true;
  try {
    const g = await api('PUT', `/v1/groups/${path(name)}/desired_capacity`, { desired_capacity: value });
    desiredEdited = false;
    renderGroup(g);
    $('desired-result').textContent = `desired_capacity is now ${g.desired_capacity}`;
  } catch (e) {
    if (!handleAuthError(e)) $('desired-error').textContent = e.message;
  } finally {
    button.disabled = false;
  }
});

// ---- cost ----

/** Four decimals: a short test history is a fraction of an hour. */
const money = (v) => (typeof v === 'number' ? v.toFixed(4) : '–');

/** A number cell that also carries the API's value exactly (`data-value`). */
function numCell(v, key) {
  const td = el('td', money(v), 'num');
  td.dataset.key = key;
  td.dataset.value = String(v);
  return td;
}

/**
 * The cost page, from `GET /v1/cost` over the period chosen (ending now): per group
 * its instance-hours, cost, peak and the saving, a total line, and charts of cost and
 * instance-hours per step. The table carries the period it asked for (`data-since`,
 * `data-until`), so that a test can ask the API for the same one.
 */
function showCost() {
  clearData();
  show('cost-view');
  if (!$('who').textContent) whoami().catch(handleAuthError);
  refreshLoop(async (current) => {
    const seconds = Number($('cost-period').value) || 86400;
    const until = new Date();
    const since = new Date(until.getTime() - seconds * 1000);
    const q = `since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}`;
    let report;
    try {
      report = await api('GET', `/v1/cost?${q}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw e;
      if (current()) $('cost-error').textContent = e.message;
      return;
    }
    if (!current()) return;
    $('cost-error').textContent = '';
    renderCost(report);
    $('cost-refreshed').textContent = new Date().toLocaleTimeString();
  });
}

$('cost-period').addEventListener('change', () => {
  if (location.hash === '#/cost') route();
});

function renderCost(report) {
  const table = $('cost-table');
  table.dataset.since = report.since;
  table.dataset.until = report.until;
  $('cost-period-text').textContent = `Period: ${report.since} to ${report.until}, steps of ${report.step_seconds} s.`;
  const rows = report.groups.map((g) => {
    const tr = row([
      g.tenant,
      g.group,
      numCell(g.instance_hours, 'instance_hours'),
      numCell(g.cost, 'cost'),
      numCell(g.unpriced_hours, 'unpriced_hours'),
      el('td', g.peak_instances, 'num'),
      numCell(g.peak_cost, 'peak_cost'),
      numCell(g.saving, 'saving'),
    ]);
    tr.dataset.group = g.group;
    tr.dataset.tenant = g.tenant;
    return tr;
  });
  $('cost-body').replaceChildren(...rows);
  $('cost-empty').hidden = rows.length > 0;
  const t = report.total;
  const total = row([
    el('th', 'total'),
    '',
    numCell(t.instance_hours, 'instance_hours'),
    numCell(t.cost, 'cost'),
    numCell(t.unpriced_hours, 'unpriced_hours'),
    '',
    numCell(t.peak_cost, 'peak_cost'),
    numCell(t.saving, 'saving'),
  ]);
  total.dataset.total = 'true';
  $('cost-total').replaceChildren(total);
  const series = (key) => report.groups.map((g) => ({
    label: report.groups.some((o) => o.tenant !== g.tenant) ? `${g.tenant}/${g.group}` : g.group,
    points: g.buckets.map((b) => [Date.parse(b.start), b[key]]),
  }));
  drawChart($('cost-chart'), series('cost'), 'No groups.');
  drawChart($('hours-chart'), series('instance_hours'), 'No groups.');
}

route();
