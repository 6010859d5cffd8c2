// qiflow's live dashboard: polls GET /qiflow/api/overview every 2 s and draws it.
//
// The page runs under a strict Content-Security-Policy, so this file keeps three rules:
// - every string from the server goes into the DOM as text (text nodes / textContent), never as
//   HTML: routes, error messages and alert labels are user-controlled;
// - no inline styles: only classes from app.css and SVG presentation attributes;
// - no eval, no external resources, no framework.
'use strict';

(() => {
  const API = '/qiflow/api/overview';
  const SILENCES = '/qiflow/api/alerts/silences';
  const TOKEN_KEY = 'qiflow.token';
  const POLL_MS = 2000;
  const WINDOW_S = 15 * 60; // sparklines: the last 15 minutes
  const KIOSK = new URLSearchParams(location.search).get('kiosk') === '1';

  const state = {
    token: null,
    timer: null, // the next poll
    inFlight: false, // never more than one overview request at once
    again: false, // poll again as soon as the request in flight ends (after a write)
    lastOk: 0, // Date.now() of the last good answer
    problem: null, // why the last poll or drawing failed
    canWrite: false,
    step: 2, // seconds between history points
    drawn: {}, // section id -> the JSON it shows: unchanged sections are not redrawn
    inFlightSamples: [], // in-flight has no server history: sampled here, one per poll
  };

  // --- DOM helpers ------------------------------------------------------------------------------

  const $ = (sel) => document.querySelector(sel);
  const show = (sel, visible) => {
    const el = $(sel); // kiosk mode removes some elements: a missing one is fine
    if (el) el.hidden = !visible;
  };

  // h('td', {class: 'num'}, 'text', node, [more], null): an element whose children are nodes or
  // text (strings and numbers always become text nodes). Attributes are never `style`.
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }
  function svg(tag, attrs, ...children) {
    return build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
  }
  function build(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false && k !== 'style') el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const td = (...c) => h('td', null, ...c);
  const tc = (cls, ...c) => h('td', { class: cls }, ...c);
  const tn = (...c) => tc('num', ...c); // numbers: right-aligned
  const tag = (text, cls) => h('span', { class: `tag ${cls || ''}` }, text);
  const mono = (text) => (text === null || text === undefined ? '–' : h('code', null, text));
  const empty = (text) => h('p', { class: 'empty' }, text);
  const sub = (...c) => h('p', { class: 'sub' }, ...c);
  const list = (v) => (Array.isArray(v) ? v : []);

  // A table in a horizontal scroller; empty column titles are dropped with null.
  function table(head, rows) {
    return h('div', { class: 'scroll' }, h('table', null,
      h('thead', null, h('tr', null, head.filter((t) => t !== null).map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows)));
  }

  // --- Formatting -------------------------------------------------------------------------------

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function num(v, unit) {
    if (!isNum(v)) return '–';
    const a = Math.abs(v);
    return v.toFixed(a === 0 || a >= 100 ? 0 : a >= 10 ? 1 : 2) + (unit ? ` ${unit}` : '');
  }
  const pct = (ratio) => (isNum(ratio) ? num(ratio * 100, '%') : '–');
  const ms = (v) => num(v, 'ms');
  const int = (v) => (isNum(v) ? String(Math.round(v)) : '–');
  const micros = (us) => (!isNum(us) ? '–' : us < 1000 ? `${Math.round(us)} µs` : ms(us / 1000));

  function bytes(v) {
    if (!isNum(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    for (; Math.abs(v) >= 1024 && i < units.length - 1; i += 1) v /= 1024;
    return `${i ? v.toFixed(Math.abs(v) >= 100 ? 0 : 1) : v} ${units[i]}`;
  }

  function duration(s) {
    if (!isNum(s)) return '–';
    s = Math.max(0, Math.floor(s));
    const [d, hr, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
    return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }

  const fmt = (opts) => new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', hour12: false, ...opts });
  const clock = fmt({ second: '2-digit' });
  const dateClock = fmt({ month: 'short', day: 'numeric' });

  // An RFC 3339 time as <time>: the local clock time today, else date and time.
  function when(text) {
    if (text === null || text === undefined) return '–';
    const t = new Date(text);
    if (Number.isNaN(t.getTime())) return String(text);
    const today = t.toDateString() === new Date().toDateString();
    return h('time', { datetime: text, title: text }, (today ? clock : dateClock).format(t));
  }

  const timeOf = (text) => Date.parse(text) || 0;
  const newest = (arr, key) => list(arr).slice().sort((a, b) => timeOf(b[key]) - timeOf(a[key]));
  const pairs = (obj) => Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join(', ');
  const last = (arr) => (list(arr).length ? arr[arr.length - 1] : null);

  // --- Sparklines: an SVG polyline per run of non-null points, scaled from 0 to the max ---------

  function sparkline(values, label) {
    const [W, H] = [100, 24];
    const el = svg('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
    const vals = list(values).map((v) => (isNum(v) ? v : null));
    const present = vals.filter((v) => v !== null);
    if (vals.length < 2 || !present.length) return el;
    const max = Math.max(...present) || 1;
    let run = [];
    const flush = () => {
      if (run.length === 1) run.push(run[0]);
      if (run.length) el.append(svg('polyline', { points: run.join(' '), fill: 'none', 'vector-effect': 'non-scaling-stroke' }));
      run = [];
    };
    vals.forEach((v, i) => {
      if (v === null) flush();
      else run.push(`${((i / (vals.length - 1)) * W).toFixed(2)},${(H - 1 - (v / max) * (H - 2)).toFixed(2)}`);
    });
    flush();
    el.append(svg('title', null, `${label}: max ${num(Math.max(...present))}`));
    return el;
  }

  // The last 15 minutes of a history array (oldest first).
  const recent = (arr) => list(arr).slice(-Math.max(2, Math.round(WINDOW_S / state.step)));

  // The total's path over the window, rebuilt from the request rate: the total now, minus the
  // requests of every later step.
  function totalPath(total, rps) {
    const out = [];
    let acc = total;
    for (let i = rps.length - 1; i >= 0 && isNum(total); i -= 1) {
      out[i] = Math.max(0, acc);
      acc -= (isNum(rps[i]) ? rps[i] : 0) * state.step;
    }
    return out;
  }

  // --- Sections: each draws into its card's .content --------------------------------------------

  function section(id, data, draw) {
    const key = JSON.stringify(data === undefined ? null : data) + state.canWrite;
    if (state.drawn[id] === key) return; // unchanged: no flicker, buttons keep their focus
    $(`#${id} .content`).replaceChildren(...[draw(data)].flat(Infinity).filter(Boolean));
    state.drawn[id] = key;
  }

  function drawHeader(d) {
    const s = d.service || {};
    const c = d.caller || {};
    $('#service-name').textContent = s.name || 'qiflow';
    document.title = `${s.name || 'qiflow'} · qiflow`;
    $('#service-meta').replaceChildren(tag(s.environment || '–', 'env'), ` v${s.version || '?'} · up ${duration(s.uptime_seconds)}`);
    $('#caller').textContent = `${c.name || 'operator'} (${c.scope || 'operator'})`;
  }

  const tile = (label, metric, value, values, note) => h('div', { class: 'tile' },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-metric': metric }, value),
    sparkline(values, label),
    note ? h('div', { class: 'note' }, note) : null);

  function drawTraffic(t) {
    const hist = t.history || {};
    const rps = recent(hist.rps);
    return h('div', { class: 'tiles' },
      tile('requests/s', 'rps', num(t.rps), rps),
      tile('errors', 'error-ratio', pct(t.error_ratio), recent(hist.error_ratio)),
      tile('p95 latency', 'p95', ms(last(hist.p95_ms)), recent(hist.p95_ms)),
      tile('in flight', 'in-flight', int(t.in_flight), state.inFlightSamples, 'sampled by this page'),
      tile('requests', 'requests-total', isNum(t.requests_total) ? int(t.requests_total) : '0',
        totalPath(t.requests_total, rps), 'since start'));
  }

  function drawRoutes(routes) {
    if (!list(routes).length) return empty('No requests yet.');
    return table(['method', 'route', 'req/s', '', 'errors', 'in flight', 'total', 'p50', 'p95', 'p99', 'baseline p50 / p95 / p99'],
      routes.map((r) => {
        const b = r.baseline;
        return h('tr', { 'data-route': r.route, 'data-method': r.method, class: r.latency_deviating || r.errors_deviating ? 'deviating' : null },
          td(tag(r.method, 'method')),
          tc('route', mono(r.route), ' ', r.latency_deviating ? tag('latency ↑', 'warn') : null,
            r.errors_deviating ? tag('errors ↑', 'warn') : null),
          tn(num(r.rps)),
          tc('spark-cell', sparkline(recent((r.history || {}).rps), `${r.route} requests/s`)),
          tc(r.error_ratio > 0 ? 'num bad' : 'num', pct(r.error_ratio)),
          tn(int(r.in_flight)),
          tn(int(r.requests_total)),
          tn(ms(r.p50_ms)), tn(ms(r.p95_ms)), tn(ms(r.p99_ms)),
          tn(b ? `${num(b.p50_ms)} / ${num(b.p95_ms)} / ${num(b.p99_ms)} ms` : tag('learning', 'muted')));
      }));
  }

  function drawSlow(slow) {
    if (!list(slow).length) return empty('No slow requests.');
    return table(['time', 'method', 'route', 'latency', 'request id', 'trace id'], newest(slow, 'at').map((s) =>
      h('tr', { 'data-request-id': s.request_id },
        td(when(s.at)),
        td(tag(s.method, 'method')),
        tc('route', mono(s.route)),
        tn(ms(s.latency_ms), isNum(s.baseline_p99_ms) && s.baseline_p99_ms > 0
          ? h('small', null, ` ×${(s.latency_ms / s.baseline_p99_ms).toFixed(1)} p99`) : null),
        tc('id', mono(s.request_id)),
        tc('id', mono(s.trace_id)))));
  }

  function drawErrors(errors) {
    const groups = list(errors && errors.groups);
    const head = sub(`${int(errors && errors.recorded)} recorded, ${groups.length} group${groups.length === 1 ? '' : 's'}`);
    if (!groups.length) return [head, empty('No errors.')];
    return [head, table(['error', 'route', 'count', 'first seen', 'last seen', 'latest request'], newest(groups, 'last_seen').map((g) =>
      h('tr', { 'data-fingerprint': g.fingerprint },
        td(h('div', null, g.kind === 'panic' ? [tag('panic', 'bad'), ' '] : null, h('strong', null, g.type_name)),
          h('div', { class: 'message' }, g.message)),
        tc('route', mono(g.route), isNum(g.last_status) ? h('small', null, ` ${g.last_status}`) : null),
        tn(int(g.count)),
        td(when(g.first_seen)),
        td(when(g.last_seen)),
        tc('id', mono(g.last_request_id)))))];
  }

  const button = (label, data) => h('button', { type: 'button', class: 'small', ...data }, label);

  function drawAlerts(alerts) {
    alerts = alerts || {};
    const w = state.canWrite;
    const active = list(alerts.active);
    const silences = list(alerts.silenced);
    const sent = newest(alerts.recent, 'at');
    const channels = list(alerts.channels);
    return [
      h('h3', null, `Active (${active.length})`),
      active.length ? table(['alert', 'level', 'summary', 'count', 'since', 'silenced', w ? '' : null], active.map((a) => {
        const al = a.alert || {};
        return h('tr', { 'data-alert': al.name, class: a.silenced ? 'silenced' : null },
          td(h('strong', null, al.name), h('div', { class: 'labels' }, pairs(al.labels))),
          td(tag(al.level, `level-${al.level}`)),
          tc('message', al.summary),
          tn(int(a.count)),
          td(when(a.first_seen)),
          td(a.silenced ? tag('yes', 'muted') : 'no'),
          w ? td(button('silence 1h', { 'data-action': 'silence', 'data-name': al.name })) : null);
      })) : empty('No active alerts.'),
      h('h3', null, `Silences (${silences.length})`),
      silences.length ? table(['matchers', 'until', 'comment', 'by', w ? '' : null], silences.map((s) =>
        h('tr', { 'data-silence': s.id },
          td(mono(pairs(s.matchers))),
          td(when(s.expires_at)),
          tc('message', s.comment || '–'),
          td(s.created_by),
          w ? td(button('end', { 'data-action': 'unsilence', 'data-id': s.id })) : null))) : empty('No silences.'),
      h('h3', null, 'Recent notifications'),
      sent.length ? table(['time', 'channel', 'outcome', 'alerts'], sent.map((n) => h('tr', null,
        td(when(n.at)),
        td(n.channel),
        td(tag(n.outcome, n.outcome === 'sent' ? 'ok' : 'bad'), n.attempts > 1 ? ` (${n.attempts} attempts)` : '',
          n.error ? h('div', { class: 'message' }, n.error) : null),
        td(list(n.alerts).map((a) => `${a.name} (${a.status})`).join(', '))))) : empty('None sent yet.'),
      channels.length ? sub('channels: ', channels.map((c, i) => [i ? ', ' : '', h('strong', null, c.name), ` ${int(c.pending)} pending`,
        c.last_error ? h('span', { class: 'bad' }, ` (last error: ${c.last_error})`) : null])) : null,
    ];
  }

  const statusClass = (s) => (['healthy', 'verified', 'success', 'ok'].includes(s) ? 'ok'
    : ['degraded', 'pending'].includes(s) ? 'warn' : 'bad');

  function drawHealth(health) {
    health = health || {};
    const checks = Object.entries(health.checks || {});
    return [
      h('p', { class: 'overall' }, tag(health.status || 'unknown', statusClass(health.status)),
        health.checked_at ? h('small', null, ' checked ', when(health.checked_at)) : null),
      checks.length ? table(['check', 'status', 'detail', 'took'], checks.map(([name, c]) => h('tr', { 'data-check': name },
        td(mono(name)),
        td(tag(c.status, statusClass(c.status))),
        tc('message', c.detail || ''),
        tn(micros(c.duration_us))))) : empty('No checks.'),
    ];
  }

  function drawAudit(audit) {
    if (!audit || !audit.enabled) return empty('Audit logging is off.');
    const v = audit.verification || {};
    const verdict = {
      verified: isNum(v.last_seq) ? `verified up to seq ${v.last_seq}` : `verified${v.detail ? `: ${v.detail}` : ''}`,
      broken: `broken: ${v.detail || 'no detail'}`,
      pending: 'pending',
    }[v.state] || `unavailable${v.detail ? `: ${v.detail}` : ''}`;
    const facts = [
      isNum(v.records) ? `${v.records} records` : null,
      isNum(v.sealed_seq) ? `sealed to seq ${v.sealed_seq}` : null,
      v.unsealed > 0 ? `${v.unsealed} unsealed` : null,
    ].filter(Boolean).join(', ');
    const records = list(audit.records).slice().sort((a, b) => (b.seq || 0) - (a.seq || 0));
    return [
      h('p', { class: 'overall', 'data-verification': v.state || 'unavailable' }, tag(verdict, statusClass(v.state)),
        facts ? h('small', null, ` ${facts}`) : null,
        v.checked_at ? h('small', null, ' · checked ', when(v.checked_at)) : null),
      records.length ? table(['time', 'actor', 'action', 'resource', 'outcome'], records.map((r) => h('tr', { 'data-seq': r.seq },
        td(when(r.timestamp)),
        td(r.actor),
        td(mono(r.action)),
        td(r.resource || '–'),
        td(tag(r.outcome, statusClass(r.outcome)))))) : empty('No audit records.'),
    ];
  }

  // A horizontal bar, `used` out of `total` (SVG: no inline style needed).
  function bar(used, total) {
    if (!isNum(used) || !isNum(total) || total <= 0) return null;
    const ratio = Math.min(1, Math.max(0, used / total));
    return svg('svg', { class: ratio > 0.9 ? 'bar high' : 'bar', viewBox: '0 0 100 4', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
      svg('rect', { class: 'track', width: 100, height: 4 }),
      svg('rect', { class: 'fill', width: (ratio * 100).toFixed(1), height: 4 }));
  }

  const facts = (...items) => h('dl', { class: 'facts' }, items.filter(Boolean).map(([label, ...value]) =>
    h('div', { class: 'fact' }, h('dt', null, label), h('dd', null, value))));
  const minus = (a, b) => (isNum(a) && isNum(b) ? a - b : null);

  function drawSystem(sys) {
    if (!sys) return empty('System metrics are off.');
    const p = sys.process || {};
    const m = sys.machine || {};
    const limit = m.cgroup_memory_limit_bytes;
    return [
      h('h3', null, 'Process'),
      facts(['CPU', pct(p.cpu_ratio), h('small', null, ' of one core')],
        ['memory', bytes(p.resident_bytes), isNum(limit) ? h('small', null, ` of ${bytes(limit)} (cgroup)`) : null],
        ['threads', int(p.threads)],
        ['open files', `${int(p.open_fds)} / ${int(p.max_fds)}`]),
      bar(p.resident_bytes, limit),
      h('h3', null, 'Machine'),
      facts(['CPU', pct(m.cpu_ratio)],
        ['load 1m / 5m / 15m', list(m.load).length ? m.load.map((l) => num(l)).join(' / ') : '–'],
        ['memory available', `${bytes(m.memory_available_bytes)} / ${bytes(m.memory_total_bytes)}`]),
      bar(minus(m.memory_total_bytes, m.memory_available_bytes), m.memory_total_bytes),
      list(m.volumes).map((v) => h('div', { class: 'volume', 'data-volume': v.volume },
        h('div', null, h('strong', null, v.volume), ' ', mono(v.mountpoint),
          h('span', { class: 'right' }, `${bytes(v.available_bytes)} free of ${bytes(v.size_bytes)}`)),
        bar(minus(v.size_bytes, v.available_bytes), v.size_bytes))),
      sys.sampled_at ? sub('sampled ', when(sys.sampled_at)) : null,
    ];
  }

  const jobClass = (s) => (s === 'up' ? 'ok' : ['new', 'running'].includes(s) ? 'warn' : 'bad');

  function drawJobs(jobs) {
    if (!list(jobs).length) return empty('No scheduled jobs: declare them in [[jobs]], or check in from Rust or over HTTP.');
    return table(['job', 'state', 'schedule', 'next due', 'last start', 'last success', 'took', 'size', 'last error'], jobs.map((j) =>
      h('tr', { 'data-job': j.name, 'data-state': j.state, class: ['late', 'down', 'failed'].includes(j.state) ? 'deviating' : null },
        td(h('strong', null, j.name)),
        td(tag(j.state, jobClass(j.state))),
        td(j.schedule || 'check-ins only'),
        td(when(j.next_due)),
        td(when(j.last_start)),
        td(when(j.last_success)),
        tn(isNum(j.last_duration_seconds) ? duration(j.last_duration_seconds) : '–'),
        tn(bytes(j.last_size)),
        td(j.last_error || j.last_message || '–'))));
  }

  function drawDependencies(deps) {
    if (!list(deps).length) return empty('No dependencies registered: observer.dependency("main-db", DependencyKind::Postgres) adds one.');
    return table(['dependency', 'health', 'calls', 'failed', 'failing now', 'slow', 'pool in use', 'waiting'], deps.map((d) => {
      const p = d.pool;
      const health = d.readiness ? d.readiness.status : 'unchecked';
      return h('tr', { 'data-dependency': d.name, class: d.saturated || d.erroring || health === 'unhealthy' ? 'deviating' : null },
        td(h('strong', null, d.name), ' ', h('small', null, d.system)),
        td(tag(health, d.readiness ? statusClass(health) : 'warn')),
        tn(int(d.calls)),
        tc(d.failed > 0 ? 'num bad' : 'num', int(d.failed)),
        tc(d.erroring ? 'num bad' : 'num', pct(d.error_ratio)),
        tc(d.slow > 0 ? 'num warn' : 'num', `${int(d.slow)} (≥ ${int(d.slow_ms)} ms)`),
        p ? td(`${int(p.used)} / ${int(p.max)}`, bar(p.used, p.max)) : td('–'),
        p ? tc(d.saturated ? 'num bad' : 'num', int(p.pending)) : td('–'));
    }));
  }

  function drawDenials(denials) {
    if (!list(denials).length) return empty('No permission denied recently.');
    return table(['when', 'actor', 'permission', 'request', 'request id'], denials.map((d) =>
      h('tr', { 'data-denial': d.actor },
        td(when(d.at)),
        td(h('strong', null, d.actor)),
        td(tag(d.permission, 'bad')),
        td(`${d.method} ${d.route}`),
        td(d.request_id || '–'))));
  }

  function drawPipelines(pipes) {
    if (!list(pipes).length) return empty('No pipelines.');
    return table(['pipeline', 'queued', 'in flight', 'submitted', 'delivered', 'dropped'], pipes.map((p) =>
      h('tr', { 'data-pipeline': p.name },
        td(h('strong', null, p.name)),
        tn(`${int(p.queued)} / ${int(p.capacity)}`),
        tn(int(p.in_flight)),
        tn(int(p.submitted)),
        tn(int(p.delivered)),
        tc(p.dropped > 0 ? 'num dropped bad' : 'num', int(p.dropped)))));
  }

  function render(d) {
    state.step = isNum(d.step_seconds) && d.step_seconds > 0 ? d.step_seconds : 2;
    const scope = d.caller ? d.caller.scope : null;
    // null scope: the trusted operator listener, which may write.
    state.canWrite = !KIOSK && (scope === 'write' || scope === null || scope === undefined);
    const t = d.traffic || {};
    if (isNum(t.in_flight)) {
      state.inFlightSamples.push(t.in_flight);
      if (state.inFlightSamples.length > WINDOW_S / (POLL_MS / 1000)) state.inFlightSamples.shift();
    }
    // Each part on its own: one that throws does not keep the others from updating.
    const failed = [];
    const parts = {
      header: () => drawHeader(d),
      traffic: () => section('traffic', [t, state.inFlightSamples], () => drawTraffic(t)),
      routes: () => section('routes', d.routes, drawRoutes),
      slow: () => section('slow', d.slow, drawSlow),
      errors: () => section('errors', d.errors, drawErrors),
      alerts: () => section('alerts', d.alerts, drawAlerts),
      health: () => section('health', d.health, drawHealth),
      audit: () => section('audit', d.audit, drawAudit),
      jobs: () => section('jobs', d.jobs, drawJobs),
      dependencies: () => section('dependencies', d.dependencies, drawDependencies),
      denials: () => section('denials', d.denials, drawDenials),
      system: () => section('system', d.system, drawSystem),
      pipelines: () => section('pipelines', d.pipelines, drawPipelines),
    };
    for (const [name, draw] of Object.entries(parts)) {
      try {
        draw();
      } catch (e) {
        failed.push(`${name} (${e.message})`);
      }
    }
    show('#silence-form', state.canWrite);
    if (failed.length) throw new Error(`cannot draw ${failed.join(', ')}`);
  }

  // --- Token: #token=… (then dropped from the address bar), sessionStorage, or the login form ---

  function storage(op, value) {
    try {
      if (op === 'get') return sessionStorage.getItem(TOKEN_KEY);
      if (op === 'set') sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      // Storage refused (privacy settings): the token lives in this page only.
    }
    return null;
  }

  function tokenFromFragment() {
    const frag = new URLSearchParams(location.hash.slice(1));
    if (!frag.has('token')) return null;
    const token = frag.get('token').trim();
    frag.delete('token');
    const rest = frag.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
    return token || null;
  }

  function signIn(token) {
    state.token = token;
    storage('set', token);
    show('#auth', false);
    show('#login-message', false);
    show('#dashboard', true);
    show('#signout', true);
    pollNow();
  }

  // Back to the login form; every piece of data leaves the page.
  function signOut(message) {
    storage('remove');
    clearTimeout(state.timer);
    Object.assign(state, { token: null, timer: null, again: false, lastOk: 0, problem: null, drawn: {}, inFlightSamples: [] });
    for (const c of document.querySelectorAll('#dashboard .content')) c.replaceChildren();
    for (const sel of ['#service-meta', '#caller', '#status']) $(sel).replaceChildren();
    $('#service-name').textContent = 'qiflow';
    document.title = 'qiflow';
    show('#dashboard', false);
    show('#signout', false);
    show('#auth', true);
    const msg = $('#login-message');
    msg.textContent = message || '';
    msg.hidden = !message;
    $('#token-input').value = '';
    $('#token-input').focus();
  }

  // --- Polling: one request at a time, every 2 s, paused while the tab is hidden ----------------

  function schedule() {
    clearTimeout(state.timer);
    state.timer = state.token && !document.hidden ? setTimeout(poll, POLL_MS) : null;
  }

  function pollNow() {
    if (state.inFlight) state.again = true;
    else poll();
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      return body.message || body.error || `HTTP ${res.status}`;
    } catch (e) {
      return `HTTP ${res.status}`;
    }
  }

  function api(method, url, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body) headers['Content-Type'] = 'application/json';
    return fetch(url, { method, headers, cache: 'no-store', credentials: 'omit', body: body ? JSON.stringify(body) : undefined });
  }

  async function poll() {
    if (!state.token || state.inFlight) return;
    clearTimeout(state.timer);
    const token = state.token;
    state.inFlight = true;
    try {
      const res = await api('GET', API);
      if (token !== state.token) return; // signed out meanwhile: drop the answer
      if (res.status === 401) return signOut('the token was refused');
      if (!res.ok) {
        state.problem = `server error: ${await errorText(res)} (HTTP ${res.status})`;
        return;
      }
      const data = await res.json();
      if (token !== state.token) return;
      state.lastOk = Date.now();
      state.problem = null;
      try {
        render(data);
      } catch (e) {
        state.problem = e.message;
      }
    } catch (e) {
      state.problem = `connection lost (${e.message})`;
    } finally {
      state.inFlight = false;
      showStatus();
      if (state.again && state.token) {
        state.again = false;
        poll();
      } else {
        schedule();
      }
    }
  }

  function showStatus() {
    const el = $('#status');
    if (!state.token) return el.replaceChildren();
    const parts = [];
    if (state.problem) parts.push(state.problem);
    if (state.lastOk) parts.push(`${state.problem ? 'last ' : ''}updated ${Math.round((Date.now() - state.lastOk) / 1000)}s ago`);
    else if (!state.problem) parts.push('loading…');
    if (document.hidden) parts.push('paused');
    el.textContent = parts.join(' · ');
    const stale = state.lastOk && Date.now() - state.lastOk > 3 * POLL_MS;
    el.className = `status${state.problem ? ' bad' : stale ? ' warn' : ''}`;
  }

  // --- Writes: silences (write-capable callers, never in kiosk mode) ----------------------------

  // "alertname=X, route=/fail" -> {alertname: "X", route: "/fail"}
  function parseMatchers(text) {
    const matchers = {};
    for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
      const eq = part.indexOf('=');
      if (eq < 1 || !part.slice(0, eq).trim()) throw new Error(`"${part}" is not key=value`);
      matchers[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
    }
    if (!Object.keys(matchers).length) throw new Error('give at least one key=value matcher');
    return matchers;
  }

  function say(text, bad) {
    const el = $('#silence-message');
    el.textContent = text;
    el.className = bad ? 'notice bad' : 'notice ok';
  }

  // One write with `button` disabled meanwhile; answers the error text, or null when it worked.
  // Either way the overview is polled at once.
  async function write(method, url, body, btn) {
    btn.disabled = true;
    try {
      const res = await api(method, url, body);
      if (res.status === 401) {
        signOut('the token was refused');
        return 'the token was refused';
      }
      return res.ok ? null : await errorText(res);
    } catch (e) {
      return `connection lost (${e.message})`;
    } finally {
      btn.disabled = false;
      if (state.token) pollNow();
    }
  }

  async function silence(matchers, duration, comment, btn) {
    const err = await write('POST', SILENCES, { matchers, duration, comment }, btn);
    say(err ? `silence refused: ${err}` : `silenced ${pairs(matchers)} for ${duration}`, err);
    return !err;
  }

  function wireControls() {
    $('#login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = $('#token-input').value.trim();
      if (token) signIn(token);
    });
    if (KIOSK) return;
    $('#signout').addEventListener('click', () => signOut('signed out'));

    const form = $('#silence-form');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const f = form.elements;
      let matchers;
      try {
        matchers = parseMatchers(f.matchers.value);
      } catch (e) {
        return say(e.message, true);
      }
      if (await silence(matchers, f.duration.value.trim(), f.comment.value.trim(), form.querySelector('button'))) {
        f.matchers.value = '';
      }
    });

    // The table buttons are redrawn with their card: one listener on the card.
    $('#alerts').addEventListener('click', async (ev) => {
      const btn = ev.target.closest('button[data-action]');
      if (!btn || !state.canWrite) return;
      if (btn.dataset.action === 'silence') {
        await silence({ alertname: btn.dataset.name }, '1h', 'from the dashboard', btn);
      } else if (btn.dataset.action === 'unsilence') {
        const err = await write('DELETE', `${SILENCES}/${encodeURIComponent(btn.dataset.id)}`, null, btn);
        say(err ? `cannot end the silence: ${err}` : 'silence ended', err);
      }
    });
  }

  // --- Start ------------------------------------------------------------------------------------

  if (KIOSK) {
    // A wall screen: large type and no controls (removed, not just hidden).
    document.documentElement.classList.add('kiosk');
    document.body.classList.add('kiosk');
    $('#signout').remove();
    $('#silence-form').remove();
  }
  wireControls();
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) clearTimeout(state.timer);
    else if (state.token) pollNow();
    showStatus();
  });
  // A #token=… link opened in this tab while the page is up.
  window.addEventListener('hashchange', () => {
    const token = tokenFromFragment();
    if (token) signIn(token);
  });
  setInterval(showStatus, 1000);

  const token = tokenFromFragment() || storage('get');
  if (token) signIn(token);
  else signOut(null);
})();
