// edgemap dashboard. Reads only the admin API of the server that serves it
// (same origin; the token, when there is one, as a bearer header), draws
// with d3-geo on world-atlas's Natural Earth countries, and polls the map
// four times a second: an unchanged map costs one small answer.
'use strict';
(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const W = 960, H = 500;
  // Okabe & Ito's palette for edges, less vermillion, which marks edges
  // that are down; draining edges are grey.
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#F0E442', '#000000'];
  const DOWN = '#D55E00', DRAINING = '#999999';
  // MAP_POLL_MS is how often the page asks whether the map changed: a
  // change reaches the page within this plus one answer, well inside the
  // 2 s the dashboard promises even on a slow machine, and an unchanged
  // answer is under 100 bytes and tens of microseconds of the server's time.
  // The rest (activity, matrix, fleet, events) is refreshed on a slower
  // clock, SLOW_MS, apart, so that it never delays the map.
  const MAP_POLL_MS = 250, SLOW_MS = 1000, STALE_MS = 3000;
  const TOKEN_KEY = 'edgemap-token';

  const $ = (id) => document.getElementById(id);
  const ui = {
    map: $('map'), land: $('layer-land'), links: $('layer-links'), places: $('layer-places'), points: $('layer-points'),
    edges: $('layer-edges'), explain: $('layer-explain'), live: $('live'), property: $('property'),
    family: $('family'), zone: $('zone'), note: $('map-note'), summary: $('map-summary'), out: $('explain-out'),
  };
  const st = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    started: false, map: null, version: '', property: '', family: 'A',
    colour: new Map(), pos: new Map(), projection: null, tick: 0, busy: false, slowBusy: false,
    lastOK: 0, lastError: '', activity: null, tab: 'map', k: 1, viewBox: [0, 0, W, H],
    matrix: { group: 'target', q: '', edge: '', sort: 'key', offset: 0, limit: 50, col_offset: 0, col_limit: 16, last: null },
    explained: null, explainParams: null, selectedEdge: '',
  };

  // ---- DOM helpers ----
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (attrs[k] === undefined || attrs[k] === null || attrs[k] === false) continue;
      if (k === 'class') e.className = attrs[k]; else e.setAttribute(k, attrs[k] === true ? '' : attrs[k]);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  function table(tbl, head, rows) {
    const thead = h('thead', null, h('tr', null, ...head.map((c) => (c instanceof Node ? c : h('th', { scope: 'col', class: /^(RTT|Answers|Load|Targets|Total|%|qps|Capacity)/.test(c) ? 'num' : null }, c)))));
    const tbody = h('tbody');
    for (const r of rows) tbody.append(r);
    tbl.replaceChildren(thead, tbody);
  }
  const fmtTime = (t) => (t ? new Date(t).toLocaleTimeString() : '-');

  // ---- the admin API ----
  class AuthError extends Error {}
  async function api(path) {
    const headers = { Accept: 'application/json' };
    if (st.token) headers.Authorization = 'Bearer ' + st.token;
    const r = await fetch(path, { headers, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    if (r.status === 401) {
      st.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      askToken('The token was refused.');
      throw new AuthError('token refused');
    }
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const err = new Error(body && body.error ? (body.field ? body.field + ': ' : '') + body.error : 'HTTP ' + r.status);
      err.field = body && body.field;
      err.status = r.status;
      throw err;
    }
    return body;
  }

  function askToken(msg) {
    $('token-error').textContent = msg || '';
    const d = $('token-dialog');
    if (!d.open) d.showModal();
    $('token-input').focus();
  }
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    st.token = $('token-input').value.trim();
    $('token-input').value = '';
    if (!st.token) return;
    sessionStorage.setItem(TOKEN_KEY, st.token);
    $('token-dialog').close();
    start();
  });

  // ---- Go's number formatting, for the explanation as the CLI prints it ----
  // fixed is Go's %.<d>f: the exact value correctly rounded, exact ties to
  // even (toFixed rounds them away from zero).
  function fixed(x, d) {
    const scaled = Math.abs(x) * 10 ** d;
    if (Number.isFinite(scaled) && scaled < 2 ** 52 && scaled - Math.floor(scaled) === 0.5) {
      const n = Math.floor(scaled);
      const digits = String(n % 2 === 0 ? n : n + 1).padStart(d + 1, '0');
      const s = d > 0 ? digits.slice(0, digits.length - d) + '.' + digits.slice(digits.length - d) : digits;
      return (x < 0 ? '-' : '') + s;
    }
    return x.toFixed(d);
  }
  // tabwrite is text/tabwriter with padding 2: every cell but a line's last
  // padded to its column's widest plus two.
  function tabwrite(rows) {
    const n = rows[0].length - 1;
    const len = (s) => [...s].length;
    const widths = [];
    for (let c = 0; c < n; c++) widths[c] = Math.max(...rows.map((r) => len(r[c]))) + 2;
    return rows.map((r) => r.slice(0, n).map((cell, c) => cell + ' '.repeat(widths[c] - len(cell))).join('') + r[n] + '\n').join('');
  }
  // maskPrefix is netip.Addr.Prefix(bits).String() for the address of a
  // prefix ("203.0.113.0/24", 16 → "203.0.0.0/16").
  function maskPrefix(prefix, bits) {
    const addr = prefix.split('/')[0];
    if (!addr.includes(':')) {
      const n = addr.split('.').reduce((a, o) => a * 256 + Number(o), 0);
      const m = bits === 0 ? 0 : Number(BigInt(n) & ((0xffffffffn << BigInt(32 - bits)) & 0xffffffffn));
      return [24, 16, 8, 0].map((s) => (m >>> s) & 255).join('.') + '/' + bits;
    }
    const g = v6Groups(addr);
    let v = g.reduce((a, x) => (a << 16n) | BigInt(x), 0n);
    v &= ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - bits)) - 1n);
    const out = [];
    for (let i = 7; i >= 0; i--) out.push(Number((v >> BigInt(16 * i)) & 0xffffn));
    return v6String(out) + '/' + bits;
  }
  function v6Groups(a) {
    let tail4 = [];
    const m = a.match(/^(.*:)(\d+\.\d+\.\d+\.\d+)$/);
    if (m) {
      const o = m[2].split('.').map(Number);
      tail4 = [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
      a = m[1].endsWith('::') ? m[1] : m[1].slice(0, -1);
    }
    const [l, r] = a.includes('::') ? a.split('::') : [a, null];
    const left = l ? l.split(':').map((x) => parseInt(x, 16)) : [];
    const right = r ? r.split(':').map((x) => parseInt(x, 16)) : [];
    const fill = r === null ? [] : new Array(8 - left.length - right.length - tail4.length).fill(0);
    return [...left, ...fill, ...right, ...tail4];
  }
  function v6String(g) {
    if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
      return '::ffff:' + [g[6] >> 8, g[6] & 255, g[7] >> 8, g[7] & 255].join('.');
    }
    let zs = -1, ze = -1;
    for (let i = 0; i < 8; i++) {
      let j = i;
      while (j < 8 && g[j] === 0) j++;
      if (j - i >= 2 && j - i > ze - zs) { zs = i; ze = j; }
    }
    let s = '';
    for (let i = 0; i < 8; i++) {
      if (i === zs) { s += '::'; i = ze - 1; continue; }
      if (i > 0 && i !== ze) s += ':';
      s += g[i].toString(16);
    }
    return s;
  }

  // explainText is what `edgemap map explain` prints for x.
  function explainText(x) {
    const L = [];
    L.push(`property  ${x.property}  ${x.family}, ${x.answers} answer(s)`);
    const ecs = x.ecs || '', resolver = x.resolver || '';
    if (!ecs) L.push(`query     from ${resolver || 'invalid IP'} without ECS`);
    else if (resolver) L.push(`query     ECS ${ecs} from ${resolver}`);
    else L.push(`query     ECS ${ecs}`);
    if (x.decided_by !== 'ecs' && x.ecs_unused) L.push(`ecs       not used: ${x.ecs_unused}; the query's source address decides`);
    let where = 'no location';
    if (x.place) where = `${x.place.City}, ${x.place.Country} (${fixed(x.place.Lat, 2)}, ${fixed(x.place.Lon, 2)})`;
    const client = x.client || 'invalid IP';
    if (x.unit) L.push(`client    ${client}  in target ${x.unit}: ${where}`);
    else L.push(`client    ${client}  GeoIP network ${x.geoip_network || '-'}: ${where}`);
    const bits = ecs ? Number(ecs.split('/')[1]) : -1;
    if (!ecs) L.push('scope     none: no ECS option, so a resolver reuses the answer for all its clients');
    else if (bits === 0) L.push('scope     /0: the query has no client network, so a resolver reuses the answer for all its clients');
    else if (x.scope === 0) L.push('scope     /0: the answer is the same for every client');
    else L.push(`scope     /${x.scope}: a resolver reuses the answer for clients in ${maskPrefix(ecs, x.scope)}`);
    L.push(`reason    ${x.reason}`);
    if (x.assignment) {
      const a = x.assignment;
      L.push(`assigned  ${a.edge ?? ''} instead of ${a.best ?? ''} for ${a.reason ?? ''}: ${a.detail ?? ''} (unit demand ${fixed(a.demand_qps || 0, 1)} qps)`);
    }
    L.push('');
    const rows = [['RANK', 'EDGE', 'POOL', 'ADDRESS', 'DISTANCE_KM', 'SCORE_MS', 'BASIS', 'MEASURED', 'HEALTH', 'ANSWER']];
    (x.ranking || []).forEach((r, i) => {
      const m = r.measured;
      rows.push([String(i + 1), r.id, r.pool, r.address || '-',
        r.distance_km != null ? fixed(r.distance_km, 0) : '-',
        r.score_ms != null ? fixed(r.score_ms, 1) : '-',
        r.basis, m ? `rtt ${fixed(m.rtt_ms, 1)}ms loss ${fixed(m.loss * 100, 0)}% age ${fixed(m.age_s, 0)}s n=${m.samples}` : '-',
        r.health, r.chosen ? '*' : '']);
    });
    return L.join('\n') + '\n' + tabwrite(rows);
  }

  // ---- the map ----
  function project(lon, lat) { return st.projection([lon, lat]); }

  async function drawWorld() {
    const r = await fetch('vendor/countries-110m.json', { cache: 'default', credentials: 'omit' });
    const world = await r.json();
    const countries = topojson.feature(world, world.objects.countries);
    // Fitted to the inhabited world: Antarctica (ISO 3166 010) would take a
    // fifth of the height for no edge or client.
    const inhabited = { type: 'FeatureCollection', features: countries.features.filter((f) => f.id !== '010') };
    st.projection = d3.geoNaturalEarth1().fitExtent([[6, 6], [W - 6, H - 6]], inhabited);
    const path = d3.geoPath(st.projection);
    ui.land.replaceChildren();
    svg('path', { class: 'country', d: path(countries) }, ui.land);
  }

  function edgeColour(id) { return st.colour.get(id) || '#777777'; }
  function stateColour(e) { return e.state === 'down' ? DOWN : e.state === 'draining' ? DRAINING : edgeColour(e.id); }

  // focusedPoint names the focused point or edge of the map as a selector
  // that finds it in a new drawing, or null.
  function focusedPoint() {
    const a = document.activeElement;
    if (!a || a === ui.map || !ui.map.contains(a)) return null;
    for (const k of ['target', 'place']) if (a.dataset[k]) return `[data-${k}="${CSS.escape(a.dataset[k])}"]:not(line)`;
    return a.dataset.edge ? `g.edge[data-edge="${CSS.escape(a.dataset.edge)}"]` : null;
  }

  function renderMap(m) {
    st.map = m;
    st.colour.clear();
    st.pos.clear();
    m.edges.forEach((e, i) => {
      st.colour.set(e.id, PALETTE[i % PALETTE.length]);
      st.pos.set(e.id, project(e.lon, e.lat));
    });
    // Properties and the header.
    const names = m.properties.join('\n');
    if (ui.property.dataset.names !== names) {
      ui.property.replaceChildren(...m.properties.map((p) => h('option', { value: p }, p)));
      ui.property.dataset.names = names;
    }
    ui.property.value = m.property;
    st.property = m.property;
    ui.zone.textContent = m.zone ? `${m.zone} serial ${m.serial}` : 'no zone';
    for (const f of ['fleet', 'events']) $('tab-' + f).hidden = !m.features[f === 'fleet' ? 'nodes' : 'events'];

    // The points are drawn anew: a keyboard user's focus moves to the same
    // point in the new drawing, or Enter would go nowhere after each map.
    const focused = focusedPoint();
    const links = document.createDocumentFragment(), places = document.createDocumentFragment();
    const points = document.createDocumentFragment(), edges = document.createDocumentFragment();
    const focusable = m.targets.length + m.places.length <= 600;
    const drawPoint = (p, kind) => {
      if (p.lat == null) return;
      const [x, y] = project(p.lon, p.lat);
      const colour = p.edge ? edgeColour(p.edge) : '#777777';
      const ep = p.edge && st.pos.get(p.edge);
      const data = kind === 'place' ? { 'data-place': p.place, 'data-client': p.client } : { 'data-target': p.target };
      if (ep) {
        svg('line', { class: `link ${p.basis} ${kind}`, x1: x, y1: y, x2: ep[0], y2: ep[1], stroke: colour, 'data-edge': p.edge, ...data }, links);
      }
      const label = kind === 'place'
        ? `${p.place}: ${p.answers} answers in the last hour, answered by ${p.edge || 'nothing'} (${p.basis})`
        : `${p.targets ? p.targets + ' targets in ' : 'target ' + p.target + ' '}${p.place ? p.place + ', ' : ''}answered by ${p.edge || 'nothing'} (${p.basis})`;
      const attrs = { 'data-edge': p.edge, ...data, 'data-basis': p.basis, tabindex: focusable ? 0 : null, role: 'button', 'aria-label': label };
      let el;
      if (kind === 'place') {
        const s = Math.max(3, Math.min(8, 2 + Math.log10(1 + p.answers) * 1.5)) / st.k;
        el = svg('rect', { class: 'place', x: x - s, y: y - s, width: 2 * s, height: 2 * s, fill: colour, ...attrs }, places);
        el.dataset.size = s * st.k;
      } else {
        el = svg('circle', { class: `target ${p.basis}${p.targets ? ' group' : ''}`, cx: x, cy: y, fill: p.basis === 'measured' ? colour : null, stroke: p.basis === 'measured' ? null : colour, ...attrs }, points);
      }
      svg('title', {}, el).textContent = label;
      el.addEventListener('click', (ev) => { if (!st.dragged) explainPoint(p, kind); ev.stopPropagation(); });
      el.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); explainPoint(p, kind); } });
    };
    m.targets.forEach((p) => drawPoint(p, 'target'));
    m.places.forEach((p) => drawPoint(p, 'place'));

    const labels = m.edges.length <= 60;
    ui.map.classList.toggle('dense', m.edges.length > 100);
    for (const e of m.edges) {
      const [x, y] = st.pos.get(e.id);
      const load = e.capacity > 0 ? e.load_qps / e.capacity : 0;
      const desc = `edge ${e.id} (${e.pool}): ${e.state}${e.health_source && e.health_source !== 'none' ? ' by ' + e.health_source : ''}${e.since ? ' since ' + new Date(e.since).toLocaleString() : ''}, load ${e.load_qps} of ${e.capacity || 'unlimited'} qps`;
      const g = svg('g', { class: 'edge' + (st.selectedEdge === e.id ? ' selected' : ''), 'data-edge': e.id, 'data-state': e.state, tabindex: 0, role: 'button', 'aria-label': desc }, edges);
      svg('title', {}, g).textContent = desc;
      if (e.capacity > 0) {
        svg('circle', { class: 'edge-load' + (load > 1 ? ' over' : ''), cx: x, cy: y, pathLength: 100, 'stroke-dasharray': `${Math.min(100, load * 100).toFixed(1)} 100`, transform: `rotate(-90 ${x} ${y})` }, g);
      }
      svg('circle', { class: 'edge-dot', cx: x, cy: y, fill: stateColour(e) }, g);
      if (e.state === 'down') {
        const s = 3 / st.k;
        svg('path', { class: 'edge-cross', d: `M${x - s} ${y - s}L${x + s} ${y + s}M${x + s} ${y - s}L${x - s} ${y + s}` }, g);
      }
      if (labels) svg('text', { class: 'edge-label', x: x + 9 / st.k, y: y + 3 / st.k }, g).textContent = e.id;
      g.addEventListener('click', (ev) => { if (!st.dragged) showEdge(e.id); ev.stopPropagation(); });
      g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); showEdge(e.id); } });
    }
    ui.links.replaceChildren(links);
    ui.places.replaceChildren(places);
    ui.points.replaceChildren(points);
    ui.edges.replaceChildren(edges);
    if (focused) ui.map.querySelector(focused)?.focus({ preventScroll: true });

    const down = m.edges.filter((e) => e.state === 'down').length, draining = m.edges.filter((e) => e.state === 'draining').length;
    const measured = m.targets.filter((t) => t.basis === 'measured').reduce((a, t) => a + (t.targets || 1), 0);
    ui.summary.textContent = `${m.edges.length} edges (${down} down, ${draining} draining), ${m.target_count} targets (${measured} answered by measurement), ${m.places.length} busy places.`;
    const unlocated = m.targets.filter((t) => t.lat == null).reduce((a, t) => a + (t.targets || 1), 0);
    ui.note.textContent = [
      m.grouped ? `${m.target_count} targets drawn as ${m.targets.length} groups (place, edge, basis)` : '',
      m.omitted ? `${m.omitted} targets in smaller groups not drawn` : '',
      unlocated ? `${unlocated} targets without a GeoIP location are in the table only` : '',
    ].filter(Boolean).join(' · ');
    if (st.explained) drawExplanation(st.explained);
    if (st.selectedEdge) showEdge(st.selectedEdge, true);
    renderTables();
  }

  function renderTables() {
    const m = st.map;
    if (!m) return;
    const act = new Map(((st.activity && st.activity.edges) || []).map((s) => [s.key, s.total]));
    if ($('edges-details').open) {
      table($('edges-table'), ['Edge', 'Pool', 'State', 'Decided by', 'Since', 'Load qps', 'Capacity', '% of capacity', 'Answers, last hour', 'IPv4', 'IPv6', 'Lat', 'Lon'],
        m.edges.map((e) => h('tr', null,
          h('td', null, h('span', { class: 'swatch', 'aria-hidden': 'true', 'data-colour': stateColour(e) }), e.id),
          h('td', null, e.pool), h('td', null, e.state), h('td', null, e.health_source), h('td', null, e.since ? new Date(e.since).toLocaleString() : '-'),
          h('td', { class: 'num' }, e.load_qps), h('td', { class: 'num' }, e.capacity || 'unlimited'),
          h('td', { class: 'num' }, e.capacity ? Math.round((100 * e.load_qps) / e.capacity) + '%' : '-'),
          h('td', { class: 'num' }, act.get(e.id) || 0),
          h('td', null, e.ipv4 || '-'), h('td', null, e.ipv6 || '-'), h('td', { class: 'num' }, e.lat), h('td', { class: 'num' }, e.lon))));
      paintSwatches($('edges-table'));
    }
    if ($('points-details').open) {
      const row = (p, kind) => h('tr', null,
        h('td', null, kind),
        h('td', null, kind === 'place' ? p.client : p.target + (p.targets > 1 ? ` (+${p.targets - 1} more)` : '')),
        h('td', null, p.place || 'no GeoIP location'),
        h('td', null, h('span', { class: 'swatch', 'aria-hidden': 'true', 'data-colour': p.edge ? edgeColour(p.edge) : '#777777' }), p.edge || 'none (NODATA)'),
        h('td', null, p.basis), h('td', { class: 'num' }, p.answers || ''),
        h('td', null, explainButton(p, kind)));
      table($('points-table'), ['Kind', 'Target / client', 'Place', 'Answered by', 'Basis', 'Answers, last hour', ''],
        [...m.targets.map((p) => row(p, p.targets > 1 ? 'targets' : 'target')), ...m.places.map((p) => row(p, 'place'))]);
      paintSwatches($('points-table'));
    }
  }
  // Swatch colours are set through the CSSOM, which the page's CSP allows
  // (it refuses style attributes).
  function paintSwatches(root) { for (const s of root.querySelectorAll('.swatch[data-colour]')) s.style.backgroundColor = s.dataset.colour; }
  function explainButton(p, kind) {
    const b = h('button', { type: 'button', class: 'linkish' }, 'explain');
    b.addEventListener('click', () => { selectTab('map'); explainPoint(p, kind === 'place' ? 'place' : 'target'); });
    return b;
  }
  for (const id of ['edges-details', 'points-details']) $(id).addEventListener('toggle', renderTables);

  function showEdge(id, quiet) {
    const e = st.map && st.map.edges.find((x) => x.id === id);
    if (!e) { st.selectedEdge = ''; return; }
    st.selectedEdge = id;
    for (const g of ui.edges.querySelectorAll('.edge.selected')) g.classList.remove('selected');
    const g = ui.edges.querySelector(`[data-edge="${CSS.escape(id)}"]`);
    if (g) g.classList.add('selected');
    if (quiet && st.explained) return;
    st.explained = null;
    st.explainParams = null;
    ui.explain.replaceChildren();
    const targets = st.map.targets.filter((t) => t.edge === id).reduce((a, t) => a + (t.targets || 1), 0);
    const places = st.map.places.filter((t) => t.edge === id).length;
    const act = ((st.activity && st.activity.edges) || []).find((s) => s.key === id);
    ui.out.replaceChildren(h('h3', null, 'Edge ' + e.id), h('dl', null,
      h('dt', null, 'state'), h('dd', null, e.state),
      h('dt', null, 'decided by'), h('dd', null, e.health_source + (e.since ? ' since ' + new Date(e.since).toLocaleString() : '')),
      h('dt', null, 'pool'), h('dd', null, e.pool),
      h('dt', null, 'addresses'), h('dd', null, [e.ipv4, e.ipv6].filter(Boolean).join(', ') || '-'),
      h('dt', null, 'load'), h('dd', null, `${e.load_qps} qps of ${e.capacity || 'unlimited'}`),
      h('dt', null, 'answers, last hour'), h('dd', null, act ? act.total : 0),
      h('dt', null, 'answers now'), h('dd', null, `${targets} targets, ${places} busy places (${st.property} ${st.family})`)));
  }

  // ---- why: the explanation ----
  function explainPoint(p, kind) {
    if (kind === 'place') return explain({ client: p.client }, true);
    const [addr, bits] = p.target.split('/');
    return explain({ client: addr, source_prefix: bits }, true);
  }
  async function explain(params, retryWithResolver, again) {
    const q = new URLSearchParams({ property: st.property, family: st.family });
    for (const k in params) if (params[k]) q.set(k, params[k]);
    if (!again) {
      $('explain-client').value = params.client || '';
      $('explain-resolver').value = params.resolver || '';
    }
    st.explainParams = params;
    try {
      const x = await api('/v1/map/explain?' + q.toString());
      if (st.explainParams !== params) return; // another was asked for meanwhile
      st.explained = x;
      renderExplanation(x, params);
    } catch (err) {
      if (err instanceof AuthError || st.explainParams !== params) return;
      // A client in a special-purpose network is answered for its
      // resolver: a point's own address stands in for it.
      if (retryWithResolver && err.field === 'resolver' && params.client) return explain({ ...params, resolver: params.client }, false);
      st.explained = null;
      st.explainParams = null;
      ui.explain.replaceChildren();
      ui.out.replaceChildren(h('p', { class: 'error', role: 'alert' }, 'error: ' + err.message));
    }
  }
  $('explain-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    explain({ client: $('explain-client').value.trim(), resolver: $('explain-resolver').value.trim() }, false);
  });

  const KNOWN = new Set(['property', 'ecs', 'resolver', 'decided_by', 'ecs_unused', 'client', 'family', 'unit', 'geoip_network', 'place', 'scope', 'answers', 'basis', 'ranking', 'assignment', 'reason']);
  const RANK_KNOWN = ['id', 'pool', 'address', 'distance_km', 'score_ms', 'basis', 'measured', 'health', 'chosen'];
  function renderExplanation(x, params) {
    ui.out.dataset.client = params.client || '';
    const parts = [h('h3', null, `${x.property} ${x.family} for ${x.client || x.resolver}${x.basis && x.basis !== 'none' ? ', ranked by ' + x.basis : ''}`)];
    parts.push(h('pre', { id: 'explain-text', tabindex: 0, 'aria-label': 'the explanation as edgemap map explain prints it' }, explainText(x)));
    // Anything the record holds that the CLI's columns do not show yet.
    const extra = Object.keys(x).filter((k) => !KNOWN.has(k));
    if (extra.length) parts.push(h('dl', null, ...extra.flatMap((k) => [h('dt', null, k), h('dd', null, typeof x[k] === 'object' ? JSON.stringify(x[k]) : String(x[k]))])));
    const rankExtra = [...new Set((x.ranking || []).flatMap((r) => Object.keys(r)).filter((k) => !RANK_KNOWN.includes(k)))];
    const tbl = h('table', { id: 'explain-table' });
    table(tbl, ['Rank', 'Edge', 'Basis', 'Score ms', 'RTT', 'Loss', 'Age', 'Km', 'Health', ...rankExtra],
      (x.ranking || []).map((r, i) => h('tr', { class: r.chosen ? 'chosen' : null },
        h('td', { class: 'num' }, (i + 1) + (r.chosen ? ' *' : '')),
        h('td', null, h('span', { class: 'swatch', 'aria-hidden': 'true', 'data-colour': edgeColour(r.id) }), r.id),
        h('td', null, r.basis), h('td', { class: 'num' }, r.score_ms ?? '-'),
        h('td', { class: 'num' }, r.measured ? r.measured.rtt_ms + ' ms' : '-'),
        h('td', { class: 'num' }, r.measured ? Math.round(r.measured.loss * 100) + '%' : '-'),
        h('td', { class: 'num' }, r.measured ? r.measured.age_s + ' s' : '-'),
        h('td', { class: 'num' }, r.distance_km ?? '-'), h('td', null, r.health),
        ...rankExtra.map((k) => h('td', null, typeof r[k] === 'object' ? JSON.stringify(r[k]) : String(r[k] ?? ''))))));
    paintSwatches(tbl);
    parts.push(h('div', { class: 'scroll' }, tbl));
    ui.out.replaceChildren(...parts);
    drawExplanation(x);
  }
  function drawExplanation(x) {
    ui.explain.replaceChildren();
    if (!x.place || !st.projection) return;
    const [cx, cy] = project(x.place.Lon, x.place.Lat);
    const shown = (x.ranking || []).filter((r, i) => r.chosen || i < 5);
    for (const r of shown) {
      const p = st.pos.get(r.id);
      if (!p) continue;
      svg('line', { class: 'x-line' + (r.chosen ? ' chosen' : ''), x1: cx, y1: cy, x2: p[0], y2: p[1], 'data-explain-edge': r.id }, ui.explain);
      if (r.score_ms != null) {
        svg('text', { class: 'x-label', x: p[0] + 9 / st.k, y: p[1] - 6 / st.k }, ui.explain).textContent = `${r.score_ms} ms${r.basis === 'measured' ? ' measured' : ''}`;
      }
    }
    svg('circle', { class: 'x-client', cx, cy }, ui.explain);
  }

  // ---- zoom and pan ----
  function setView(x, y, w) {
    w = Math.max(W / 32, Math.min(W, w));
    const hh = (w * H) / W;
    x = Math.max(0, Math.min(W - w, x));
    y = Math.max(0, Math.min(H - hh, y));
    st.viewBox = [x, y, w, hh];
    ui.map.setAttribute('viewBox', `${x} ${y} ${w} ${hh}`);
    const k = W / w;
    if (k !== st.k) {
      st.k = k;
      ui.map.style.setProperty('--k', k);
      if (st.map) renderMap(st.map);
    }
  }
  function zoomAt(f, px, py) {
    const [x, y, w, hh] = st.viewBox;
    if (px === undefined) { px = x + w / 2; py = y + hh / 2; }
    const nw = Math.max(W / 32, Math.min(W, w / f)), nh = (nw * H) / W;
    setView(px - ((px - x) * nw) / w, py - ((py - y) * nh) / hh, nw);
  }
  function svgPoint(ev) {
    const p = ui.map.createSVGPoint();
    p.x = ev.clientX; p.y = ev.clientY;
    return p.matrixTransform(ui.map.getScreenCTM().inverse());
  }
  ui.map.addEventListener('wheel', (ev) => { ev.preventDefault(); const p = svgPoint(ev); zoomAt(ev.deltaY < 0 ? 1.25 : 0.8, p.x, p.y); }, { passive: false });
  let drag = null;
  ui.map.addEventListener('pointerdown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, vb: st.viewBox.slice() }; st.dragged = false; });
  window.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 4) st.dragged = true;
    if (!st.dragged) return;
    const scale = drag.vb[2] / ui.map.clientWidth;
    setView(drag.vb[0] - dx * scale, drag.vb[1] - dy * scale, drag.vb[2]);
  });
  window.addEventListener('pointerup', () => { drag = null; setTimeout(() => { st.dragged = false; }, 0); });
  ui.map.addEventListener('keydown', (ev) => {
    const [x, y, w] = st.viewBox;
    const step = w / 8;
    const keys = { '+': () => zoomAt(1.25), '=': () => zoomAt(1.25), '-': () => zoomAt(0.8), '0': () => setView(0, 0, W),
      ArrowLeft: () => setView(x - step, y, w), ArrowRight: () => setView(x + step, y, w), ArrowUp: () => setView(x, y - step, w), ArrowDown: () => setView(x, y + step, w) };
    if (keys[ev.key] && ev.target === ui.map) { ev.preventDefault(); keys[ev.key](); }
  });
  $('zoom-in').addEventListener('click', () => zoomAt(1.5));
  $('zoom-out').addEventListener('click', () => zoomAt(1 / 1.5));
  $('zoom-reset').addEventListener('click', () => setView(0, 0, W));

  // ---- polling ----
  async function refreshMap() {
    const q = new URLSearchParams({ family: st.family });
    if (st.property) q.set('property', st.property);
    if (st.version) q.set('since', st.version);
    const m = await api('/v1/ui/map?' + q.toString());
    if (m.unchanged) {
      if (st.map) st.map.built = m.built;
      return false;
    }
    st.version = m.version;
    renderMap(m);
    // The explanation follows the map: asked again, it shows what the new
    // map answers.
    if (st.explained && st.explainParams) explain(st.explainParams, false, true);
    return true;
  }
  async function refreshActivity() {
    st.activity = await api('/v1/ui/activity?limit=50');
    if (st.tab === 'activity') renderActivity();
    if ($('edges-details').open) renderTables();
  }
  async function tick() {
    if (st.busy) return;
    st.busy = true;
    try {
      await refreshMap();
      st.lastOK = Date.now();
      st.lastError = '';
    } catch (err) {
      st.lastError = err.message;
    } finally {
      st.busy = false;
      showLive();
    }
  }
  // slowTick refreshes the rest, once a second: the activity every 5 s,
  // the matrix every 10 s and the fleet and events every 2 s while shown.
  async function slowTick() {
    if (st.slowBusy) return;
    st.slowBusy = true;
    st.tick++;
    try {
      if (st.tick % 5 === 0) await refreshActivity();
      if (st.tab === 'matrix' && st.tick % 10 === 0) await refreshMatrix();
      if (st.tab === 'fleet' && st.tick % 2 === 0) await refreshGeneric('/v1/nodes', 'fleet-table');
      if (st.tab === 'events' && st.tick % 2 === 0) await refreshEvents();
    } catch (err) {
      st.lastError = err.message;
    } finally {
      st.slowBusy = false;
    }
  }
  function showLive() {
    const stale = Date.now() - st.lastOK > STALE_MS;
    ui.live.classList.toggle('stale', stale && st.lastOK > 0);
    ui.live.textContent = stale && st.lastError
      ? `not updating: ${st.lastError}`
      : `live · map of ${st.map ? fmtTime(st.map.built) : '-'} · checked ${fmtTime(st.lastOK)}`;
  }

  // ---- measurements ----
  function matrixQuery() {
    const m = st.matrix;
    const q = new URLSearchParams({ group: m.group, sort: m.sort, offset: m.offset, limit: m.limit, col_offset: m.col_offset, col_limit: m.col_limit });
    if (m.q) q.set('q', m.q);
    if (m.edge) q.set('edge', m.edge);
    return q.toString();
  }
  async function refreshMatrix() {
    const v = await api('/v1/ui/matrix?' + matrixQuery());
    st.matrix.last = v;
    const head = [h('th', { scope: 'col' }, v.group === 'target' ? 'Target' : v.group === 'place' ? 'Place' : 'Country'),
      h('th', { scope: 'col' }, v.group === 'target' ? 'Place' : 'Targets'), h('th', { scope: 'col' }, 'Best edge'),
      ...v.edges.map((e) => h('th', { scope: 'col', class: 'num' }, e))];
    table($('matrix-table'), head, v.rows.map((r) => {
      const key = v.group === 'target' ? explainButton({ target: r.key }, 'target') : r.key;
      if (v.group === 'target') key.textContent = r.key;
      return h('tr', null, h('th', { scope: 'row' }, key), h('td', null, v.group === 'target' ? r.label || '-' : r.targets),
        h('td', null, r.best_edge ? `${r.best_edge} ${r.best_rtt_ms} ms` : '-'),
        ...r.cells.map((c, i) => (c
          ? h('td', { class: 'num' + (c.stale ? ' stale' : '') + (v.edges[i] === r.best_edge ? ' best' : ''), title: `${v.edges[i]}: ${c.n} target(s), age ${c.age_s} s${c.stale ? ' (stale)' : ''}` },
            `${c.rtt_ms ? c.rtt_ms + ' ms' : 'no connect'} · ${Math.round(c.loss * 100)}% · ${Math.round(c.age_s)}s`)
          : h('td', { class: 'num muted' }, '·'))));
    }));
    $('matrix-info').textContent = `rows ${v.total ? v.offset + 1 : 0}–${v.offset + v.rows.length} of ${v.total}; edges ${v.total_edges ? v.col_offset + 1 : 0}–${v.col_offset + v.edges.length} of ${v.total_edges}; stale after ${v.max_age_s} s`;
    $('matrix-prev').disabled = v.offset === 0;
    $('matrix-next').disabled = v.offset + v.rows.length >= v.total;
    $('matrix-cprev').disabled = v.col_offset === 0;
    $('matrix-cnext').disabled = v.col_offset + v.edges.length >= v.total_edges;
  }
  const matrixAgain = () => refreshMatrix().catch((err) => { $('matrix-info').textContent = 'error: ' + err.message; });
  $('matrix-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(st.matrix, { group: $('matrix-group').value, q: $('matrix-q').value.trim(), edge: $('matrix-edge').value.trim(), sort: $('matrix-sort').value, offset: 0, col_offset: 0 });
    matrixAgain();
  });
  const page = (field, by) => () => { st.matrix[field] = Math.max(0, st.matrix[field] + by * st.matrix[field === 'offset' ? 'limit' : 'col_limit']); matrixAgain(); };
  $('matrix-prev').addEventListener('click', page('offset', -1));
  $('matrix-next').addEventListener('click', page('offset', 1));
  $('matrix-cprev').addEventListener('click', page('col_offset', -1));
  $('matrix-cnext').addEventListener('click', page('col_offset', 1));

  // ---- activity ----
  function spark(series) {
    const s = svg('svg', { class: 'spark', viewBox: '0 0 120 18', role: 'img', 'aria-label': `per minute, oldest first: ${series.join(' ')}` });
    const max = Math.max(1, ...series);
    series.forEach((n, i) => { if (n) svg('rect', { x: i * 2, y: 18 - (18 * n) / max, width: 1.6, height: (18 * n) / max }, s); });
    return s;
  }
  function renderActivity() {
    const a = st.activity;
    if (!a) return;
    $('activity-info').textContent = `${a.total} answers since ${new Date(a.since).toLocaleTimeString()} (${a.covered_minutes} of ${a.minutes} minutes counted), busiest first.`;
    const rows = (list, more, label) => {
      const out = list.map((s) => h('tr', null, h('td', null, label ? label(s) : s.key), h('td', { class: 'num' }, s.total), h('td', null, spark(s.per_minute))));
      if (more) out.push(h('tr', null, h('td', { class: 'muted' }, `${more} more`), h('td'), h('td')));
      return out;
    };
    table($('activity-edges'), ['Edge', 'Answers', 'Per minute'], rows(a.edges, a.more_edges));
    table($('activity-regions'), ['Country', 'Answers', 'Per minute'], rows(a.regions, a.more_regions));
    table($('activity-places'), ['Place', 'Answers', 'Per minute'], rows(a.places, a.more_places));
  }

  // ---- fleet and events (shown when the server has the endpoints) ----
  // The event log, newest first: what changed and who did it, failovers
  // and their reasons, GeoIP loads (GET /v1/events: oldest first).
  async function refreshEvents() {
    const v = await api('/v1/events?limit=200');
    const rows = (v.events || []).slice().reverse().map((e) => h('tr', { 'data-kind': e.kind, 'data-seq': String(e.seq) },
      h('td', null, new Date(e.time).toLocaleString()), h('td', null, e.kind),
      h('td', null, e.message + (e.reason && !e.message.includes(e.reason) ? ': ' + e.reason : '')),
      h('td', { class: 'num' }, e.serial ? String(e.serial) : '')));
    table($('events-table'), ['Time', 'Kind', 'What happened', 'Serial'], rows);
  }
  async function refreshGeneric(path, id) {
    let v = await api(path);
    if (!Array.isArray(v)) v = Object.values(v || {}).find(Array.isArray) || [];
    const cols = [...new Set(v.flatMap((o) => Object.keys(o || {})))].slice(0, 14);
    table($(id), cols, v.slice(0, 500).map((o) => h('tr', null, ...cols.map((c) => h('td', null, o[c] == null ? '' : typeof o[c] === 'object' ? JSON.stringify(o[c]) : String(o[c]))))));
  }

  // ---- tabs ----
  const TABS = ['map', 'matrix', 'activity', 'fleet', 'events'];
  function selectTab(name) {
    st.tab = name;
    for (const t of TABS) {
      const b = $('tab-' + t);
      b.setAttribute('aria-selected', String(t === name));
      b.tabIndex = t === name ? 0 : -1;
      $('view-' + t).hidden = t !== name;
    }
    if (name === 'matrix') matrixAgain();
    if (name === 'activity') renderActivity();
    if (name === 'fleet') refreshGeneric('/v1/nodes', 'fleet-table').catch(() => {});
    if (name === 'events') refreshEvents().catch(() => {});
  }
  for (const t of TABS) {
    const b = $('tab-' + t);
    b.addEventListener('click', () => selectTab(t));
    b.addEventListener('keydown', (ev) => {
      const visible = TABS.filter((x) => !$('tab-' + x).hidden);
      const i = visible.indexOf(t);
      const to = { ArrowRight: visible[(i + 1) % visible.length], ArrowLeft: visible[(i - 1 + visible.length) % visible.length], Home: visible[0], End: visible[visible.length - 1] }[ev.key];
      if (to) { ev.preventDefault(); selectTab(to); $('tab-' + to).focus(); }
    });
  }

  ui.property.addEventListener('change', () => { st.property = ui.property.value; st.version = ''; tick(); });
  ui.family.addEventListener('change', () => { st.family = ui.family.value; st.version = ''; tick(); });

  // ---- start ----
  async function start() {
    try {
      const s = await (await fetch('session.json', { cache: 'no-store', credentials: 'omit' })).json();
      if (s.token_required && !st.token) { askToken(); return; }
      if (!st.projection) await drawWorld();
      await refreshMap();
      performance.mark('edgemap-first-render');
      document.documentElement.dataset.rendered = 'true';
      st.lastOK = Date.now();
      showLive();
      await refreshActivity();
      if (!st.started) { st.started = true; setInterval(tick, MAP_POLL_MS); setInterval(slowTick, SLOW_MS); }
    } catch (err) {
      if (!(err instanceof AuthError)) { ui.live.textContent = 'not loaded: ' + err.message; ui.live.classList.add('stale'); }
    }
  }
  start();
})();
