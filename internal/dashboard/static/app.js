// Rampart dashboard: polls the controller's JSON APIs every two seconds
// and renders the traffic graph, security events, quarantine, golden
// signals, denials and certificate expiry. Plain DOM, no framework; text
// goes in through textContent only.
'use strict';

(function () {
  const POLL_MS = 2000;
  const SVGNS = 'http://www.w3.org/2000/svg';
  const DAY = 24 * 3600 * 1000;
  // A namespace or workload name, as the controller accepts it.
  const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

  const SEVERITIES = ['critical', 'high', 'medium', 'low'];
  const DETECTIONS = {
    new_edge: 'new edge',
    rate_spike: 'request-rate spike',
    error_spike: 'error-rate spike',
    denial_burst: 'burst of denials',
    route_scan: 'route scan',
    tls_unknown_ca: 'TLS: unknown CA',
    tls_revoked: 'TLS: revoked peer',
    plaintext_on_strict: 'plaintext on a strict port',
    code_changed: 'code digest changed',
  };

  // events and quarantine hold the last good answers of /api/v1/events
  // and /api/v1/quarantine: { missing: true } when the controller answers
  // 404 (it does not serve them), null before the first answer. open
  // holds the events whose evidence is shown, as "<table>:<event id>".
  const state = {
    window: '1m', timer: null, lastOK: null, generation: 0,
    events: null, quarantine: null, open: new Set(),
  };

  // ---- DOM and formatting ----------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, opts, children) {
    const e = document.createElement(tag);
    setOpts(e, opts);
    for (const c of children || []) e.append(c);
    return e;
  }

  function sv(tag, opts, children) {
    const e = document.createElementNS(SVGNS, tag);
    setOpts(e, opts);
    for (const c of children || []) e.append(c);
    return e;
  }

  function setOpts(e, opts) {
    if (!opts) return;
    for (const [k, v] of Object.entries(opts)) {
      if (v === undefined || v === null) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'data') {
        for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) e.dataset[dk] = dv;
      }
      else e.setAttribute(k, v);
    }
  }

  function td(text, cls, field) {
    return el('td', { text: text, class: cls, 'data-field': field });
  }

  class APIError extends Error {
    constructor(path, message, status) {
      super(message);
      this.path = path;
      this.status = status;
    }
  }

  async function getJSON(path) {
    let resp;
    try {
      resp = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    } catch (e) {
      throw new APIError(path, 'the controller did not answer: ' + e.message, 0);
    }
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const msg = body && typeof body.error === 'string' ? body.error : resp.status + ' ' + resp.statusText;
      throw new APIError(path, msg, resp.status);
    }
    if (body === null || typeof body !== 'object') {
      throw new APIError(path, 'the answer is not JSON', resp.status);
    }
    return body;
  }

  // list checks that an answer holds a list under the name (null, as Go
  // writes an empty one, is empty), so a wrong answer is a failure (the
  // banner) rather than an empty panel.
  function list(path, name) {
    return getJSON(path).then((body) => {
      if (body[name] === null) return [];
      if (!Array.isArray(body[name])) throw new APIError(path, 'the answer has no "' + name + '" list', 200);
      return body[name];
    });
  }

  function query(params) {
    return new URLSearchParams(params).toString();
  }

  function rate(t) {
    return t && t.requests > 0 ? t.requests_per_second.toFixed(1) : '–';
  }

  // A share as a percentage rounded down, so 99.96% never shows as 100.0%.
  function pct(v) {
    return v === null || v === undefined ? '–' : (Math.floor(v * 1000) / 10).toFixed(1) + '%';
  }

  function ms(v) {
    if (v === null || v === undefined) return '–';
    if (v >= 1000) return (v / 1000).toFixed(2) + 's';
    if (v >= 100) return v.toFixed(0) + 'ms';
    if (v >= 10) return v.toFixed(1) + 'ms';
    return v.toFixed(2) + 'ms';
  }

  function left(ms) {
    if (ms <= 0) return 'expired';
    const d = Math.floor(ms / DAY);
    if (d >= 2) return d + ' days';
    const h = Math.floor(ms / 3600000);
    if (h >= 1) return h + ' h';
    return Math.max(1, Math.floor(ms / 60000)) + ' min';
  }

  // isoTime writes an RFC 3339 time as the page shows times: UTC to the
  // second; what does not parse is shown as it came.
  function isoTime(v) {
    const t = Date.parse(v);
    return isNaN(t) ? String(v || '–') : new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  function key(ns, name) { return ns + '/' + name; }

  // A workload is a namespace, a name and the identity its instances
  // hold: two identities may report one name, and each is its own row and
  // node. idKey is the key within the page; names gives what a workload is
  // called on it: namespace/name, with the identity only when another
  // identity reports the same name.
  function idKey(ns, name, id) { return ns + '/' + name + ' ' + (id || ''); }
  function statIdentity(w) { return (w.identities || [])[0] || ''; }

  function names(stat, edges) {
    const ids = new Map();
    const add = (ns, name, id) => {
      const k = key(ns, name);
      if (!ids.has(k)) ids.set(k, new Set());
      ids.get(k).add(id || '');
    };
    for (const w of (stat && stat.workloads) || []) add(w.namespace, w.name, statIdentity(w));
    for (const e of (edges && edges.edges) || []) {
      for (const end of [e.source, e.destination]) if (end.workload) add(end.namespace, end.workload, end.identity);
    }
    return (ns, name, id) => {
      const k = key(ns, name);
      return ids.has(k) && ids.get(k).size > 1 ? k + ' (' + (id || 'no identity') + ')' : k;
    };
  }

  // ---- routing ----------------------------------------------------------

  // route reads the location hash: the overview, one workload, or a page
  // that does not exist.
  function route() {
    const h = location.hash.replace(/^#/, '');
    if (h === '' || h === '/') return { kind: 'overview' };
    const m = /^\/workload\/([^/]*)\/([^/]*)\/?$/.exec(h);
    if (!m) return { kind: 'unknown', what: h };
    let ns, name;
    try {
      ns = decodeURIComponent(m[1]);
      name = decodeURIComponent(m[2]);
    } catch (e) {
      return { kind: 'workload', ns: m[1], name: m[2], invalid: true };
    }
    return { kind: 'workload', ns: ns, name: name, invalid: !NAME.test(ns) || !NAME.test(name) };
  }

  // ---- polling ----------------------------------------------------------

  async function refresh() {
    clearTimeout(state.timer);
    const gen = ++state.generation;
    const w = state.window;
    const r = route();
    const jobs = {
      stat: getJSON('/api/v1/stat?' + query({ window: w })),
      edges: getJSON('/api/v1/edges?' + query({ window: w })),
      series: getJSON('/api/v1/series?' + query({ window: w })),
      identity: getJSON('/identity'),
      events: list('/api/v1/events?' + query({ since: '1h', limit: '50' }), 'events'),
      quarantine: list('/api/v1/quarantine', 'identities'),
    };
    const got = {};
    await settle(jobs, got);
    // One workload's numbers are asked for only when the overview lists
    // it: /api/v1/stat lists every workload that reported in the last
    // 10 minutes, so one it lacks is unknown without a request that fails.
    if (r.kind === 'workload' && !r.invalid && got.stat) {
      got.known = (got.stat.workloads || []).some((x) => x.namespace === r.ns && x.name === r.name);
      if (got.known) {
        await settle({
          detailStat: getJSON('/api/v1/stat?' + query({ namespace: r.ns, workload: r.name, window: w })),
          detailEdges: getJSON('/api/v1/edges?' + query({ namespace: r.ns, workload: r.name, window: w })),
        }, got);
      }
    }
    if (gen !== state.generation) return; // a newer refresh started
    const failed = [];
    for (const n of ['stat', 'edges', 'series', 'identity']) {
      if (got[n + 'Error']) failed.push(got[n + 'Error']);
    }
    // A controller without threat detection answers 404: the panels say
    // so, it is not a failure.
    for (const n of ['events', 'quarantine']) {
      const e = got[n + 'Error'];
      if (e && e.status !== 404) failed.push(e);
    }
    // A missing workload is an answer for the detail view, not a failure.
    for (const n of ['detailStat', 'detailEdges']) {
      const e = got[n + 'Error'];
      if (e && e.status !== 404 && e.status !== 400) failed.push(e);
    }
    try {
      render(r, got);
    } catch (e) {
      failed.push(new APIError('', 'cannot show the answer: ' + e.message, 0));
    }
    showBanner(failed);
    state.timer = setTimeout(refresh, POLL_MS);
  }

  // settle waits for the named requests, putting each answer in got[name]
  // and each failure in got[name + 'Error'].
  async function settle(jobs, got) {
    const names = Object.keys(jobs);
    const settled = await Promise.allSettled(names.map((n) => jobs[n]));
    names.forEach((n, i) => {
      if (settled[i].status === 'fulfilled') got[n] = settled[i].value;
      else got[n + 'Error'] = settled[i].reason;
    });
  }

  function showBanner(failed) {
    const b = $('banner');
    if (failed.length === 0) {
      state.lastOK = new Date();
      b.hidden = true;
      b.textContent = '';
      $('updated').textContent = 'updated ' + state.lastOK.toLocaleTimeString();
      return;
    }
    // The same failure of every request (the controller is down) is said
    // once.
    const parts = [...new Set(failed.map((e) => (e.status === 0 ? '' : e.path + ': ') + e.message))];
    const since = state.lastOK ? ' Showing the data of ' + state.lastOK.toLocaleTimeString() + '.' : '';
    b.textContent = 'Cannot read the controller (retrying every 2 s): ' + parts.join('; ') + '.' + since;
    b.hidden = false;
    $('updated').textContent = 'not updated';
  }

  // ---- rendering --------------------------------------------------------

  function render(r, got) {
    // The last good answer stays when a request fails.
    for (const n of ['events', 'quarantine']) {
      if (got[n]) state[n] = got[n];
      else if (got[n + 'Error'] && got[n + 'Error'].status === 404) state[n] = { missing: true };
    }
    const quarantined = quarantineByIdentity();
    if (got.identity) renderCerts(got.identity);
    if (got.stat) renderWorkloads(got.stat, got.series, r, names(got.stat, got.edges));
    if (got.edges) {
      renderGraph(got.stat, got.edges, r, quarantined);
      renderDenials(got.edges);
    }
    renderEvents();
    renderQuarantine(got.stat, got.edges);
    renderDetail(r, got, quarantined);
  }

  // endpoint names the graph node of one end of an edge.
  function endpoint(end, isDest, nameOf) {
    if (end.workload) {
      return {
        key: idKey(end.namespace, end.workload, end.identity), name: nameOf(end.namespace, end.workload, end.identity),
        href: key(end.namespace, end.workload), label: end.workload, sub: end.namespace, known: true,
        ids: end.identity ? [end.identity] : [],
      };
    }
    if (end.identity) return { key: 'id:' + end.identity, label: '(workload unknown)', sub: end.identity, known: false, ids: [end.identity] };
    if (isDest && end.service) return { key: 'svc:' + end.service, label: '(no endpoint reached)', sub: end.service, known: false };
    if (isDest) return { key: 'outside', label: '(outside the mesh)', sub: '', known: false };
    return { key: 'noproxy', label: '(no proxy)', sub: 'plaintext', known: false };
  }

  function edgeClass(e) {
    if (e.denied > 0) return 'denied';
    if (!e.mtls) return 'plain';
    return 'ok';
  }

  function renderGraph(stat, edges, r, quarantined) {
    const svg = $('graph');
    const nameOf = names(stat, edges);
    const nodes = new Map();
    for (const w of (stat && stat.workloads) || []) {
      const id = statIdentity(w);
      const k = idKey(w.namespace, w.name, id);
      nodes.set(k, { key: k, name: nameOf(w.namespace, w.name, id), href: key(w.namespace, w.name), label: w.name, sub: w.namespace, known: true, ids: w.identities || [] });
    }
    // Edges between the same two nodes are drawn as one.
    const links = new Map();
    for (const e of edges.edges || []) {
      const s = endpoint(e.source, false, nameOf);
      const d = endpoint(e.destination, true, nameOf);
      for (const n of [s, d]) if (!nodes.has(n.key)) nodes.set(n.key, n);
      const lk = s.key + '->' + d.key;
      let l = links.get(lk);
      if (!l) {
        l = { key: lk, name: (s.name || s.key) + '->' + (d.name || d.key), from: s.key, to: d.key, requests: 0, rps: 0, denied: 0, mtls: true, services: [] };
        links.set(lk, l);
      }
      l.requests += e.requests;
      l.rps += e.requests_per_second;
      l.denied += e.denied;
      l.mtls = l.mtls && e.mtls;
      if (e.destination.service) l.services.push(e.destination.service);
    }
    $('graph-empty').hidden = nodes.size > 0;
    svg.hidden = nodes.size === 0;

    // Columns by depth: callers left of what they call (cycles are cut
    // at the number of nodes).
    const depth = new Map([...nodes.keys()].map((k) => [k, 0]));
    for (let i = 0; i < nodes.size; i++) {
      let changed = false;
      for (const l of links.values()) {
        if (l.from === l.to) continue;
        const d = Math.min(depth.get(l.from) + 1, nodes.size);
        if (d > depth.get(l.to)) {
          depth.set(l.to, d);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const cols = [];
    for (const k of [...nodes.keys()].sort()) {
      const d = depth.get(k);
      (cols[d] = cols[d] || []).push(k);
    }
    const used = cols.filter((c) => c && c.length);
    const W = Math.max(svg.clientWidth || 900, 300);
    const H = Math.max(320, 90 * Math.max(1, ...used.map((c) => c.length)));
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('height', H);
    const pos = new Map();
    used.forEach((col, ci) => {
      col.forEach((k, ri) => {
        pos.set(k, { x: (W * (ci + 0.5)) / used.length, y: (H * (ri + 0.5)) / col.length });
      });
    });

    const R = 24;
    const children = [
      sv('defs', null, [
        sv('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' }, [
          sv('path', { d: 'M0,0 L10,5 L0,10 z' }),
        ]),
      ]),
    ];
    for (const l of links.values()) {
      const a = pos.get(l.from);
      const b = pos.get(l.to);
      if (!a || !b || l.from === l.to) continue;
      const dx = b.x - a.x;
      const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const ux = dx / len;
      const uy = dy / len;
      // Two edges in opposite directions are drawn side by side.
      const off = links.has(l.to + '->' + l.from) ? 5 : 0;
      const ox = -uy * off;
      const oy = ux * off;
      const cls = edgeClass(l);
      const nameOfKey = (k) => nodes.get(k).name || nodes.get(k).key;
      const title = nameOfKey(l.from) + ' → ' + nameOfKey(l.to) + (l.services.length ? ' (' + l.services.join(', ') + ')' : '') +
        ': ' + l.rps.toFixed(1) + ' requests/s, ' + (l.mtls ? 'mutual TLS' : 'not all mutual TLS') +
        (l.denied > 0 ? ', ' + l.denied + ' denied' : ', authorized');
      children.push(sv('g', { class: 'edge ' + cls, data: { edge: l.name, state: cls, requests: String(l.requests) } }, [
        sv('title', { text: title }),
        sv('line', {
          x1: (a.x + ux * R + ox).toFixed(1), y1: (a.y + uy * R + oy).toFixed(1),
          x2: (b.x - ux * (R + 3) + ox).toFixed(1), y2: (b.y - uy * (R + 3) + oy).toFixed(1),
          'marker-end': 'url(#arrow)',
        }),
        sv('text', { x: ((a.x + b.x) / 2 + ox * 3).toFixed(1), y: ((a.y + b.y) / 2 + oy * 3 - 6).toFixed(1), text: l.rps.toFixed(1) + '/s' }),
      ]));
    }
    const selected = r.kind === 'workload' ? key(r.ns, r.name) : '';
    for (const n of nodes.values()) {
      const p = pos.get(n.key);
      // A node is marked when an identity it holds is quarantined.
      const q = (n.ids || []).map((id) => quarantined.get(id)).find((x) => x);
      let title = n.known ? n.name : n.label + (n.sub ? ' ' + n.sub : '');
      if (q) title += ': quarantined until ' + isoTime(q.until) + (q.reason ? ' (' + q.reason + ')' : '');
      const shape = [
        sv('title', { text: title }),
        sv('circle', { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: R }),
        sv('text', { x: p.x.toFixed(1), y: (p.y + R + 14).toFixed(1), text: n.label }),
        sv('text', { x: p.x.toFixed(1), y: (p.y + R + 28).toFixed(1), text: n.sub, class: 'muted' }),
      ];
      if (q) shape.push(sv('text', { x: p.x.toFixed(1), y: (p.y - R - 8).toFixed(1), text: 'quarantined', class: 'qlabel' }));
      const cls = 'node' + (n.known ? '' : ' outside') + (n.known && n.href === selected ? ' selected' : '') + (q ? ' quarantined' : '');
      const body = n.known ? [sv('a', { href: '#/workload/' + n.href }, shape)] : shape;
      children.push(sv('g', { class: cls, data: { node: n.known ? n.name : n.key, quarantined: q ? 'true' : null } }, body));
    }
    svg.replaceChildren(...children);
  }

  function spark(values, cls, title) {
    const W = 120;
    const H = 24;
    const pts = [];
    const finite = values.filter((v) => v !== null && v !== undefined);
    const hi = Math.max(...finite, cls === 'success' ? 1 : 0) || 1;
    const lo = cls === 'success' ? Math.min(...finite, 1) : 0;
    const span = hi - lo || 1;
    values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      const x = values.length > 1 ? (i * W) / (values.length - 1) : W / 2;
      const y = H - 2 - ((v - lo) / span) * (H - 4);
      pts.push(x.toFixed(1) + ',' + y.toFixed(1));
    });
    const shapes = [sv('title', { text: title }), sv('polyline', { points: pts.join(' ') })];
    // A lone value draws no line: mark it.
    if (pts.length === 1) {
      const [x, y] = pts[0].split(',');
      shapes.push(sv('circle', { cx: x, cy: y, r: '2' }));
    }
    return sv('svg', { class: 'spark ' + cls, viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none' }, shapes);
  }

  // seriesOf finds the series of a workload; a row without an identity
  // takes the first of its name.
  function seriesOf(series, ns, name, id) {
    for (const s of (series && series.workloads) || []) {
      if (s.namespace === ns && s.name === name && (s.identity === id || !id)) return s;
    }
    return null;
  }

  // sparks draws a workload's rate and success over the window: what it
  // served, or what it sent when it served nothing.
  function sparks(s, step) {
    if (!s) return [el('span', { class: 'muted', text: '–' }), el('span', { class: 'muted', text: '–' })];
    const served = s.points.some((p) => p.inbound.requests > 0);
    const side = (p) => (served ? p.inbound : p.outbound);
    const what = served ? 'served' : 'sent';
    const rates = s.points.map((p) => side(p).requests_per_second);
    const success = s.points.map((p) => side(p).success_rate);
    return [
      spark(rates, 'rate', 'requests/s ' + what + ', one point per ' + step + ' s: ' + rates.map((v) => v.toFixed(1)).join(' ')),
      spark(success, 'success', 'success rate of what it ' + what + ', one point per ' + step + ' s'),
    ];
  }

  function renderWorkloads(stat, series, r, nameOf) {
    const body = $('workloads').tBodies[0];
    const rows = [];
    const selected = r.kind === 'workload' ? key(r.ns, r.name) : '';
    for (const w of stat.workloads || []) {
      const k = key(w.namespace, w.name);
      const id = statIdentity(w);
      const shown = nameOf(w.namespace, w.name, id);
      const inb = w.inbound;
      const lat = inb.latency_ms || {};
      const [rs, ss] = sparks(seriesOf(series, w.namespace, w.name, id), series ? series.step_seconds : 0);
      rows.push(el('tr', { class: k === selected ? 'selected' : null, data: { workload: shown, identity: id, requests: String(inb.requests), sent: String(w.outbound.requests) } }, [
        el('td', null, [el('a', { href: '#/workload/' + k, text: shown })]),
        td(String(w.instances), 'num', 'instances'),
        td(rate(inb), 'num', 'rps'),
        td(pct(inb.success_rate), 'num', 'success'),
        td(ms(lat.p50), 'num', 'p50'),
        td(ms(lat.p95), 'num', 'p95'),
        td(ms(lat.p99), 'num', 'p99'),
        td(pct(inb.mtls_share), 'num', 'mtls'),
        td(String(inb.denied), 'num', 'denied'),
        td(rate(w.outbound), 'num', 'sent'),
        el('td', null, [rs]),
        el('td', null, [ss]),
      ]));
    }
    if (rows.length === 0) {
      rows.push(el('tr', null, [el('td', { colspan: '12', class: 'empty', text: 'No workload reported traffic in the last 10 minutes.' })]));
    }
    body.replaceChildren(...rows);
  }

  function endName(end, isDest) {
    if (end.workload) return key(end.namespace, end.workload);
    if (end.identity) return '(workload unknown) ' + end.identity;
    if (isDest && end.service) return '(no endpoint reached)';
    return isDest ? '(outside the mesh)' : '(no proxy)';
  }

  function renderDenials(edges) {
    const rows = [];
    for (const e of edges.edges || []) {
      if (!(e.denied > 0)) continue;
      rows.push(el('tr', { data: { denial: endName(e.source, false) + '->' + endName(e.destination, true) } }, [
        td(endName(e.source, false)),
        td(endName(e.destination, true)),
        td(e.destination.service || '–'),
        td(String(e.denied), 'num'),
        td(pct(e.authorized_share), 'num'),
      ]));
    }
    $('denials').tBodies[0].replaceChildren(...rows);
    $('denials').hidden = rows.length === 0;
    $('denials-empty').hidden = rows.length > 0;
    $('denials-empty').textContent = 'No request was denied in the last ' + edges.window + '.';
  }

  // ---- security events and quarantine ------------------------------------

  function str(v) { return typeof v === 'string' ? v : ''; }

  function severityBadge(sev) {
    const s = str(sev);
    return el('span', { class: 'sev ' + (SEVERITIES.includes(s) ? 'sev-' + s : 'sev-unknown'), text: s || 'unknown' });
  }

  // partyName is the workload of one side of an event, as namespace/name.
  function partyName(p) {
    if (!p) return '–';
    if (p.workload) return key(str(p.namespace), str(p.workload));
    return '(workload unknown)';
  }

  // partyCell shows the workload and, under it, the identity (or the
  // address when there is none).
  function partyCell(p, field) {
    if (!p) return td('–', null, field);
    let id = str(p.spiffeId) || str(p.ip);
    if (p.spiffeId && p.claimed) id += ' (claimed, not verified)';
    return el('td', { class: 'party', 'data-field': field }, [
      el('span', { class: 'name', text: partyName(p) }),
      el('span', { class: 'id', text: id }),
    ]);
  }

  function actionText(e) {
    if (e.action === 'Quarantine') {
      return e.quarantinedUntil ? 'quarantined until ' + isoTime(e.quarantinedUntil) : 'quarantine';
    }
    if (e.action === 'Alert') return 'alert';
    return str(e.action) || '–';
  }

  function num(v, digits) { return typeof v === 'number' ? v.toFixed(digits) : String(v); }

  // EVIDENCE names and formats the evidence fields, in the order shown.
  // Fields not listed (a newer controller's) are shown as they came.
  const EVIDENCE = [
    ['windowSeconds', 'window', (v) => num(v, 0) + ' s'],
    ['requests', 'requests'],
    ['failures', 'failed requests'],
    ['denied', 'denied requests'],
    ['rate', 'rate', (v) => num(v, 2) + ' requests/s'],
    ['baselineRate', 'baseline rate', (v) => num(v, 2) + ' requests/s'],
    ['errorRate', 'error rate', (v) => pct(v)],
    ['baselineErrorRate', 'baseline error rate', (v) => pct(v)],
    ['bandHigh', 'top of the learnt band', (v, e) => (e.detection === 'error_spike' ? pct(v) : num(v, 2) + ' requests/s')],
    ['distinctPaths', 'distinct paths'],
    ['refusedShare', 'answered 403 or 404', (v) => pct(v)],
    ['paths', 'paths', (v) => (Array.isArray(v) ? v.join(', ') : String(v))],
    ['handshakes', 'failed handshakes or refused connections'],
    ['serial', 'certificate serial'],
    ['issuer', 'certificate issuer'],
    ['port', 'port'],
    ['digest', 'code digest'],
    ['previousDigest', 'previous code digest'],
    ['service', 'service'],
    ['reporter', 'reported by'],
  ];

  function evidenceList(e) {
    const kv = (k, v, field) => [el('dt', { text: k }), el('dd', { text: v, 'data-evidence': field })];
    const items = [].concat(
      kv('event', str(e.id), 'id'),
      kv('detection', str(e.detection), 'detection'),
      kv('time', isoTime(e.time), 'time'),
    );
    const ev = e.evidence && typeof e.evidence === 'object' ? e.evidence : {};
    const known = new Set();
    for (const [field, label, fmt] of EVIDENCE) {
      known.add(field);
      const v = ev[field];
      if (v === undefined || v === null || v === '') continue;
      items.push(...kv(label, fmt ? fmt(v, e) : String(v), field));
    }
    for (const [field, v] of Object.entries(ev)) {
      if (known.has(field) || v === undefined || v === null) continue;
      items.push(...kv(field, typeof v === 'object' ? JSON.stringify(v) : String(v), field));
    }
    return el('dl', { class: 'kv' }, items);
  }

  // eventRows builds the rows of events for a table; a click on a row (or
  // Enter on it) shows or hides its evidence under it.
  function eventRows(events, table) {
    const rows = [];
    for (const e of events) {
      const id = str(e.id);
      const openKey = table + ':' + id;
      const open = state.open.has(openKey);
      const tr = el('tr', {
        class: 'event' + (open ? ' open' : ''), tabindex: '0', 'aria-expanded': open ? 'true' : 'false',
        data: { event: id, severity: str(e.severity), detection: str(e.detection) },
      }, [
        td(isoTime(e.time), 'time', 'time'),
        el('td', { 'data-field': 'severity' }, [severityBadge(e.severity)]),
        el('td', { 'data-field': 'detection', title: str(e.detection) }, [DETECTIONS[e.detection] || str(e.detection) || '–']),
        partyCell(e.source, 'source'),
        partyCell(e.destination, 'destination'),
        td(str(e.summary), 'summary', 'summary'),
        td(actionText(e), e.action === 'Quarantine' ? 'crit' : null, 'action'),
      ]);
      const toggle = () => {
        if (state.open.has(openKey)) state.open.delete(openKey);
        else state.open.add(openKey);
        const next = tr.nextElementSibling;
        if (next && next.classList.contains('evidence')) {
          next.remove();
          tr.classList.remove('open');
          tr.setAttribute('aria-expanded', 'false');
        } else {
          tr.after(evidenceRow(e));
          tr.classList.add('open');
          tr.setAttribute('aria-expanded', 'true');
        }
      };
      tr.addEventListener('click', toggle);
      tr.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          toggle();
        }
      });
      rows.push(tr);
      if (open) rows.push(evidenceRow(e));
    }
    return rows;
  }

  function evidenceRow(e) {
    return el('tr', { class: 'evidence', data: { evidenceFor: str(e.id) } }, [el('td', { colspan: '7' }, [evidenceList(e)])]);
  }

  const EVENTS_MISSING = 'This controller does not serve security events (GET /api/v1/events answered 404): it runs a Rampart without threat detection.';

  function renderEvents() {
    const ev = state.events;
    const empty = $('events-empty');
    const counts = $('event-counts');
    if (ev === null) return; // no answer yet: "loading…" stays
    if (ev.missing) {
      $('events').hidden = true;
      $('events-note').hidden = true;
      $('events').tBodies[0].replaceChildren();
      empty.hidden = false;
      empty.textContent = 'No security events to show. ' + EVENTS_MISSING;
      counts.replaceChildren(el('span', { class: 'muted', text: 'security events: not served' }));
      return;
    }
    $('events').tBodies[0].replaceChildren(...eventRows(ev, 'events'));
    $('events').hidden = ev.length === 0;
    $('events-note').hidden = ev.length === 0;
    empty.hidden = ev.length > 0;
    empty.textContent = 'No security event in the last hour.';
    const n = new Map(SEVERITIES.map((s) => [s, 0]));
    for (const e of ev) {
      const s = SEVERITIES.includes(e.severity) ? e.severity : 'unknown';
      n.set(s, (n.get(s) || 0) + 1);
    }
    const badges = [];
    for (const [s, c] of n) {
      if (c === 0) continue;
      badges.push(el('span', { class: 'sev ' + (s === 'unknown' ? 'sev-unknown' : 'sev-' + s), data: { severity: s, count: String(c) }, text: c + ' ' + s }));
    }
    if (badges.length === 0) badges.push(el('span', { class: 'muted', text: 'no security event in the last hour' }));
    counts.replaceChildren(...badges);
  }

  // quarantineByIdentity maps each quarantined SPIFFE ID to its entry.
  function quarantineByIdentity() {
    const m = new Map();
    const q = state.quarantine;
    if (!q || q.missing) return m;
    for (const x of q) if (x && typeof x.spiffeId === 'string') m.set(x.spiffeId, x);
    return m;
  }

  // workloadsByIdentity maps the identities the traffic APIs report to
  // their workloads, namespace/name.
  function workloadsByIdentity(stat, edges) {
    const m = new Map();
    for (const w of (stat && stat.workloads) || []) for (const id of w.identities || []) m.set(id, key(w.namespace, w.name));
    for (const e of (edges && edges.edges) || []) {
      for (const end of [e.source, e.destination]) if (end.identity && end.workload && !m.has(end.identity)) m.set(end.identity, key(end.namespace, end.workload));
    }
    return m;
  }

  function renderQuarantine(stat, edges) {
    const q = state.quarantine;
    const empty = $('quarantine-empty');
    if (q === null) return;
    if (q.missing) {
      $('quarantine').hidden = true;
      $('quarantine').tBodies[0].replaceChildren();
      empty.hidden = false;
      empty.textContent = 'No identity to show. This controller does not serve the quarantine (GET /api/v1/quarantine answered 404).';
      return;
    }
    const byID = workloadsByIdentity(stat, edges);
    const now = Date.now();
    const rows = q.map((x) => {
      const id = str(x.spiffeId);
      const wl = byID.get(id);
      const until = Date.parse(x.until);
      const by = str(x.by);
      return el('tr', { data: { quarantined: id } }, [
        td(id, null, 'identity'),
        wl ? el('td', { 'data-field': 'workload' }, [el('a', { href: '#/workload/' + wl, text: wl })]) : td('–', null, 'workload'),
        td(isoTime(x.until), null, 'until'),
        td(isNaN(until) ? '–' : left(until - now), null, 'left'),
        td(str(x.reason) || '–', null, 'reason'),
        td(x.since ? isoTime(x.since) : '–', null, 'since'),
        td(by === 'operator' || by === '' ? by || '–' : 'event ' + by, null, 'by'),
      ]);
    });
    $('quarantine').tBodies[0].replaceChildren(...rows);
    $('quarantine').hidden = rows.length === 0;
    empty.hidden = rows.length > 0;
    empty.textContent = 'No identity is quarantined.';
  }

  // workloadEvents lists, on a workload's page, the events whose source
  // or destination is that workload.
  function workloadEvents(ns, name) {
    const ev = state.events;
    const head = el('h2', { text: 'Security events (last hour)' });
    if (ev === null) return [head, el('p', { class: 'muted', text: 'loading…' })];
    if (ev.missing) return [head, el('p', { class: 'empty', id: 'workload-events-empty', text: EVENTS_MISSING })];
    const is = (p) => p && p.namespace === ns && p.workload === name;
    const mine = ev.filter((e) => is(e.source) || is(e.destination));
    if (mine.length === 0) {
      return [head, el('p', { class: 'empty', id: 'workload-events-empty', text: 'No security event from or to ' + key(ns, name) + ' in the last hour.' })];
    }
    return [head, el('table', { id: 'workload-events' }, [
      el('thead', null, [el('tr', null, ['Time', 'Severity', 'Detection', 'Source', 'Destination', 'Summary', 'Action'].map((h) => el('th', { text: h })))]),
      el('tbody', null, eventRows(mine, 'workload')),
    ])];
  }

  function renderCerts(id) {
    $('trust-domain').textContent = id.trust_domain ? 'trust domain ' + id.trust_domain : '';
    const now = Date.now();
    const rows = [];
    const warnings = (id.warnings || []).map((w) => el('li', { class: w.startsWith('CRITICAL') ? 'crit' : 'warn', text: w }));
    const add = (kind, subject, serial, notAfter, ca) => {
      const t = Date.parse(notAfter);
      const rest = t - now;
      let cls = null;
      // Roots and issuers live for months: warn under 30 days, alarm under
      // 7. Workload certificates live for hours and renew at half-life.
      if (ca && rest < 7 * DAY) cls = 'crit';
      else if (ca && rest < 30 * DAY) cls = 'warn';
      else if (!ca && rest <= 0) cls = 'crit';
      rows.push(el('tr', { data: { cert: serial, expiry: cls || 'ok' } }, [
        td(kind), td(subject), td(serial), td(isNaN(t) ? notAfter : new Date(t).toISOString().replace('.000Z', 'Z')), td(isNaN(t) ? '–' : left(rest), cls),
      ]));
    };
    for (const a of id.trust_anchors || []) add('trust anchor (' + a.role + ')', a.subject, a.serial, a.not_after, true);
    if (id.issuer) add('issuer', id.issuer.subject, id.issuer.serial, id.issuer.not_after, true);
    for (const w of id.workloads || []) add(w.kind === 'serving' ? 'controller' : 'workload', w.spiffe_id, w.serial, w.not_after, false);
    $('cert-warnings').replaceChildren(...warnings);
    $('certs').tBodies[0].replaceChildren(...rows);
  }

  function renderDetail(r, got, quarantined) {
    const sec = $('detail');
    const title = $('detail-title');
    const body = $('detail-body');
    if (r.kind === 'overview') {
      sec.hidden = true;
      return;
    }
    sec.hidden = false;
    if (r.kind === 'unknown') {
      title.textContent = 'Unknown page';
      body.replaceChildren(el('p', { class: 'error-box', text: 'There is no page "' + r.what + '". Open a workload as #/workload/<namespace>/<name>, or go back to the overview.' }));
      return;
    }
    const k = key(r.ns, r.name);
    title.textContent = 'Workload ' + k;
    const err = r.invalid ? null : got.detailStatError;
    const unknown = got.known === false || (err && (err.status === 404 || err.status === 400));
    if (r.invalid || unknown) {
      let why = '"' + k + '" is not a namespace/name pair of lowercase letters, digits and dashes.';
      if (err) why = err.message;
      else if (!r.invalid) why = 'Workload ' + k + ' has not reported traffic in the last 10 minutes: check the name (the table below lists the workloads that did) and that its proxy is running.';
      const box = el('div', { class: 'error-box', id: 'unknown-workload' }, [
        el('strong', { text: 'unknown workload ' + k }),
        el('p', { text: why }),
      ]);
      // Events outlive traffic: a workload quiet for 10 minutes may still
      // have some.
      body.replaceChildren(box, ...(r.invalid ? [] : workloadEvents(r.ns, r.name)));
      return;
    }
    const stat = got.detailStat;
    if (!stat || !stat.workloads || stat.workloads.length === 0) {
      if (!body.firstChild) body.replaceChildren(el('p', { class: 'muted', text: 'loading…' }));
      return; // keep what is shown; the banner says why
    }
    const kv = (k2, v) => [el('dt', { text: k2 }), el('dd', { text: v })];
    const t = (x) => rate(x) + ' requests/s, success ' + pct(x.success_rate) +
      ', p50/p95/p99 ' + ms((x.latency_ms || {}).p50) + ' / ' + ms((x.latency_ms || {}).p95) + ' / ' + ms((x.latency_ms || {}).p99) +
      ', mTLS ' + pct(x.mtls_share) + ', ' + x.requests + ' requests, ' + x.failures + ' failed, ' + x.denied + ' denied';
    // One list per identity that reports the name: each its own workload.
    const lists = stat.workloads.map((w) => el('dl', { class: 'kv', data: { identity: statIdentity(w) } }, [].concat(
      kv('identities', (w.identities || []).join(', ') || '–'),
      kv('instances', String(w.instances)),
      kv('served', t(w.inbound)),
      kv('sent', t(w.outbound)),
    )));
    if (lists.length > 1) {
      lists.unshift(el('p', { class: 'error-box', text: lists.length + ' identities report the name ' + k + ': each is shown apart, and only one of them is likely the workload you deployed.' }));
    }
    for (const w of stat.workloads) {
      for (const id of w.identities || []) {
        const q = quarantined.get(id);
        if (!q) continue;
        lists.unshift(el('p', {
          class: 'error-box', data: { quarantined: id },
          text: 'Quarantined: ' + id + ' until ' + isoTime(q.until) + (q.reason ? ' (' + q.reason + ')' : '') +
            '. Release it with rampart quarantine release ' + id + '.',
        }));
      }
    }
    const edgeRows = ((got.detailEdges && got.detailEdges.edges) || []).map((e) => el('tr', null, [
      td(endName(e.source, false)), td(endName(e.destination, true)), td(e.destination.service || '–'),
      td(rate(e), 'num'), td(pct(e.success_rate), 'num'), td(e.mtls ? 'yes' : 'no'), td(e.authorized ? 'yes' : 'no (' + e.denied + ' denied)'),
    ]));
    const edgeTable = edgeRows.length
      ? el('table', null, [
        el('thead', null, [el('tr', null, ['Source', 'Destination', 'Service', 'Requests/s', 'Success', 'mTLS', 'Authorized'].map((h) => el('th', { text: h })))]),
        el('tbody', null, edgeRows),
      ])
      : el('p', { class: 'empty', text: 'No edge from or to it in the last ' + stat.window + '.' });
    body.replaceChildren(...lists, el('h2', { text: 'Edges' }), edgeTable, ...workloadEvents(r.ns, r.name));
  }

  // ---- start ------------------------------------------------------------

  function start() {
    const sel = $('window');
    const fromQuery = new URLSearchParams(location.search).get('window');
    if (fromQuery && [...sel.options].some((o) => o.value === fromQuery)) sel.value = fromQuery;
    state.window = sel.value;
    sel.addEventListener('change', () => {
      state.window = sel.value;
      refresh();
    });
    window.addEventListener('hashchange', refresh);
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
