// The dashboard: reads the view (period, interval, filters) from the page URL, loads
// it from the data routes, draws it, and keeps it current from the live stream.
(function () {
  'use strict';

  var root = document.getElementById('dashboard');
  if (!root) return;
  var base = root.getAttribute('data-base');
  var $ = function (sel, el) { return (el || document).querySelector(sel); };
  var $$ = function (sel, el) { return Array.prototype.slice.call((el || document).querySelectorAll(sel)); };

  var DIM_LABELS = {
    page: 'Page', entry_page: 'Entry page', exit_page: 'Exit page', hostname: 'Host', source: 'Source',
    utm_source: 'UTM source', utm_medium: 'UTM medium', utm_campaign: 'UTM campaign', utm_term: 'UTM term',
    utm_content: 'UTM content', country: 'Country', region: 'Region', browser: 'Browser', os: 'OS',
    device: 'Device', screen: 'Screen', event: 'Event'
  };
  var state = { data: null, metric: 'visitors', tabs: {}, propKey: null, es: null, retry: 0, seq: 0 };

  // --- the view, kept in the URL ---------------------------------------------------
  function view() {
    var q = new URLSearchParams(location.search);
    var v = { period: q.get('period') || 'today', from: q.get('from') || '', to: q.get('to') || '',
      interval: q.get('interval') || '', filters: [] };
    q.getAll('filter').forEach(function (f) {
      var i = f.indexOf(':'), j = f.indexOf(':', i + 1);
      if (i > 0 && j > i) v.filters.push({ dimension: f.slice(0, i), op: f.slice(i + 1, j), value: f.slice(j + 1) });
    });
    return v;
  }

  function query(v) {
    var q = new URLSearchParams();
    q.set('period', v.period);
    if (v.period === 'custom') { q.set('from', v.from); q.set('to', v.to); }
    if (v.interval) q.set('interval', v.interval);
    v.filters.forEach(function (f) { q.append('filter', f.dimension + ':' + f.op + ':' + f.value); });
    return q.toString();
  }

  function go(v) {
    history.pushState(null, '', location.pathname + '?' + query(v));
    load();
  }

  window.addEventListener('popstate', load);

  // --- controls ----------------------------------------------------------------------
  function syncControls(v) {
    $('#period').value = v.period;
    $('#interval').value = v.interval;
    $('#custom').hidden = v.period !== 'custom';
    $('#from').value = v.from;
    $('#to').value = v.to;
    $('#export').href = base + '/export.csv?' + query(v);
    var chips = $('#filters');
    chips.textContent = '';
    v.filters.forEach(function (f, i) {
      var chip = el('span', 'chip');
      chip.appendChild(el('span', 'dim', dimLabel(f.dimension)));
      var op = el('button', 'op', f.op === 'is' ? 'is' : 'is not');
      op.type = 'button';
      op.title = 'Switch between is and is not';
      op.addEventListener('click', function () {
        var nv = view();
        nv.filters[i].op = nv.filters[i].op === 'is' ? 'is_not' : 'is';
        go(nv);
      });
      chip.appendChild(op);
      chip.appendChild(el('span', 'val', f.value || '(none)'));
      var x = el('button', 'remove', '×');
      x.type = 'button';
      x.setAttribute('aria-label', 'Remove filter');
      x.addEventListener('click', function () {
        var nv = view();
        nv.filters.splice(i, 1);
        go(nv);
      });
      chip.appendChild(x);
      chips.appendChild(chip);
    });
  }

  $('#period').addEventListener('change', function () {
    var v = view();
    v.period = this.value;
    if (v.period === 'custom') {
      $('#custom').hidden = false;
      if (!v.from) { var t = new Date().toISOString().slice(0, 10); $('#from').value = $('#to').value = t; }
      return;
    }
    v.interval = '';
    go(v);
  });
  $('#apply-range').addEventListener('click', function () {
    var v = view();
    v.period = 'custom';
    v.from = $('#from').value;
    v.to = $('#to').value;
    if (v.from && v.to) go(v);
  });
  $('#interval').addEventListener('change', function () {
    var v = view();
    v.interval = this.value;
    go(v);
  });
  $('#controls').addEventListener('submit', function (e) { e.preventDefault(); });

  function addFilter(dimension, value, op) {
    var v = view();
    v.filters = v.filters.filter(function (f) { return f.dimension !== dimension; });
    v.filters.push({ dimension: dimension, op: op || 'is', value: value });
    go(v);
  }

  // --- loading and live updates --------------------------------------------------------
  function load() {
    var v = view();
    syncControls(v);
    var qs = query(v);
    // Only the latest view's answer is drawn: an earlier one may arrive after it.
    var seq = ++state.seq;
    fetch(base + '/dashboard?' + qs, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (!r.ok) throw new Error(errorText(r.status, body));
          return body;
        });
      })
      .then(function (d) { if (seq === state.seq) { showError(''); render(d); } })
      .catch(function (e) { if (seq === state.seq) showError(e.message); });
    listen(qs);
  }

  function errorText(status, body) {
    if (status === 401) return 'Your session has ended: log in again to see this dashboard.';
    if (status === 404) return 'This dashboard no longer exists.';
    return (body && body.error) || ('Error ' + status);
  }

  function showError(msg) {
    var p = $('#dash-error');
    p.hidden = !msg;
    p.textContent = msg;
  }

  // listen keeps one live stream open for the current view. EventSource reconnects by
  // itself after a dropped connection; when the server refuses (session ended, site
  // deleted, link revoked) it stops, and a plain request tells which.
  function listen(qs) {
    if (state.es) state.es.close();
    if (!window.EventSource) return;
    var es = new EventSource(base + '/live?' + qs);
    state.es = es;
    es.addEventListener('open', function () { state.retry = 0; liveState('live'); });
    es.addEventListener('stats', function (e) {
      if (es !== state.es) return;
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; /* a malformed frame: keep the last view */ }
      // The figures are current again: an earlier failure no longer holds.
      showError('');
      render(d);
    });
    es.addEventListener('error', function () {
      if (es !== state.es) return;
      if (es.readyState === EventSource.CONNECTING) { liveState('reconnecting'); return; }
      liveState('offline');
      fetch(base + '/dashboard?' + qs, { credentials: 'same-origin' }).then(function (r) {
        // Refused for good (session ended, site gone, bad view): say so, stop retrying.
        if (r.status >= 400 && r.status < 500) {
          return r.json().catch(function () { return {}; }).then(function (b) { showError(errorText(r.status, b)); });
        }
        // The data answers but the stream was refused: a 503 with Retry-After means the
        // site is watched in as many distinct views as the server computes; wait that long.
        return fetch(base + '/live?' + qs, { method: 'HEAD', credentials: 'same-origin' }).then(function (l) {
          var wait = l.status === 503 && +l.headers.get('Retry-After');
          if (wait) {
            liveState('busy');
            setTimeout(function () { if (es === state.es) listen(qs); }, 1000 * wait);
            return;
          }
          state.retry = Math.min(state.retry + 1, 6);
          setTimeout(function () { if (es === state.es) listen(qs); }, 1000 * Math.pow(2, state.retry - 1));
        });
      }).catch(function () {
        state.retry = Math.min(state.retry + 1, 6);
        setTimeout(function () { if (es === state.es) listen(qs); }, 1000 * Math.pow(2, state.retry - 1));
      });
    });
  }

  function liveState(s) {
    var n = $('#live-state');
    n.textContent = { live: '● live', reconnecting: 'reconnecting…', offline: 'offline',
      busy: 'live paused: too many different views of this site are open' }[s] || '';
    n.className = 'live-state ' + s;
  }

  // --- drawing -------------------------------------------------------------------------
  function render(d) {
    if (!d || !d.summary) return;
    state.data = d;
    state.renderedAt = Date.now();
    $('#online b').textContent = fmt(d.online || 0);
    $$('#figures .figure').forEach(function (b) {
      var m = b.getAttribute('data-metric');
      var s = d.summary[m] || {};
      $('.value', b).textContent = fmtMetric(m, s.value);
      var ch = $('.change', b);
      if (s.change === null || s.change === undefined) {
        ch.textContent = '';
        ch.className = 'change';
      } else {
        var up = s.change > 0, better = m === 'bounce_rate' ? !up : up;
        ch.textContent = (up ? '↑' : s.change < 0 ? '↓' : '') + Math.abs(Math.round(s.change)) + '%';
        ch.className = 'change ' + (s.change === 0 ? '' : better ? 'good' : 'bad');
        ch.title = 'Previous period: ' + fmtMetric(m, s.previous);
      }
    });
    drawChart(d);
    $$('.panel').forEach(drawPanel);
  }

  $$('#figures .figure').forEach(function (b) {
    b.addEventListener('click', function () {
      state.metric = b.getAttribute('data-metric');
      $$('#figures .figure').forEach(function (x) { x.classList.toggle('active', x === b); });
      if (state.data) drawChart(state.data);
    });
  });

  var chart = null;
  function drawChart(d) {
    var m = state.metric;
    var series = d.series || [];
    var hasMetric = series.length && series[0][m] !== undefined;
    if (!hasMetric) m = 'visitors';
    var xs = series.map(function (p) { return Date.parse(p.date) / 1000; });
    var ys = series.map(function (p) { return p[m] || 0; });
    var box = $('#chart');
    var width = Math.max(box.clientWidth, 200);
    var styles = getComputedStyle(document.documentElement);
    var accent = styles.getPropertyValue('--accent').trim() || '#4f6bed';
    var fg = styles.getPropertyValue('--muted').trim() || '#777';
    var grid = styles.getPropertyValue('--line').trim() || '#ddd';
    if (!window.uPlot) return;
    var interval = (d.period && d.period.interval) || 'day';
    var opts = {
      width: width, height: 240, legend: { show: false }, cursor: { points: { size: 6 } },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid },
          values: interval === 'hour' ? '{HH}:{mm}' : interval === 'month' ? '{MMM} {YYYY}' : '{MMM} {D}' },
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 50 }
      ],
      series: [{}, { label: labelOf(m), stroke: accent, width: 2, fill: accent + '22', points: { show: xs.length < 40 } }],
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), (d.period && d.period.timezone) || 'UTC'); }
    };
    if (chart) chart.destroy();
    box.textContent = '';
    chart = new uPlot(opts, [xs, ys], box);
    box.setAttribute('data-points', String(xs.length));
    box.setAttribute('data-total', String(ys.reduce(function (a, b) { return a + b; }, 0)));
  }

  window.addEventListener('resize', function () {
    if (chart) chart.setSize({ width: Math.max($('#chart').clientWidth, 200), height: 240 });
  });

  function drawPanel(p) {
    var name = p.getAttribute('data-panel');
    var dim = state.tabs[name] || $('.tabs button', p).getAttribute('data-dim');
    var rows = $('.rows', p);
    rows.textContent = '';
    if (dim === 'props' && state.propKey) return drawPropValues(p, rows);
    propDraws[name] = null; // an answer still on its way has no place here now
    var list = (state.data.panels || {})[dim] || [];
    // Entry and exit rows count visits; events and properties count events.
    var metric = dim === 'event' || dim === 'props' ? 'events' : dim === 'entry_page' || dim === 'exit_page' ? 'visits' : 'visitors';
    if (!list.length) { rows.appendChild(el('p', 'empty muted', 'Nothing yet')); return; }
    var max = Math.max.apply(null, list.map(function (r) { return r[metric] || 0; })) || 1;
    list.forEach(function (r) {
      var n = r[metric];
      var row = el('div', 'row');
      var bar = el('div', 'bar');
      bar.style.width = (100 * (n || 0) / max).toFixed(1) + '%';
      row.appendChild(bar);
      var label = el('button', 'label', r.value === '' ? '(none)' : r.value);
      label.type = 'button';
      label.title = dim === 'props' ? 'Show the values of ' + r.value : 'Filter by ' + (DIM_LABELS[dim] || dim) + ' ' + r.value;
      label.addEventListener('click', function () {
        if (dim === 'props') { state.propKey = r.value; drawPanel(p); return; }
        addFilter(dim, r.value, 'is');
      });
      row.appendChild(label);
      if (dim !== 'props') {
        var ex = el('button', 'exclude', '≠');
        ex.type = 'button';
        ex.title = 'Exclude ' + r.value;
        ex.addEventListener('click', function () { addFilter(dim, r.value, 'is_not'); });
        row.appendChild(ex);
      }
      row.appendChild(el('span', 'num', fmt(n || 0)));
      rows.appendChild(row);
    });
  }

  // drawPropValues lists the values of one custom property, read from the breakdown route.
  // Every render draws the panel again, and answers may come back out of order: only the
  // panel's latest request may fill it. Until it answers, the last answer for the same
  // key and view stays on screen.
  var propDraws = {};
  function drawPropValues(p, rows) {
    var key = state.propKey, name = p.getAttribute('data-panel');
    var url = base + '/breakdown?dimension=' + encodeURIComponent('prop.' + key) + '&limit=10&' + query(view());
    var mine = propDraws[name] = { url: url, results: (propDraws[name] || {}).url === url ? propDraws[name].results : [] };
    var fill = function () {
      rows.textContent = '';
      var back = el('button', 'link back', '← ' + key);
      back.type = 'button';
      back.addEventListener('click', function () { state.propKey = null; drawPanel(p); });
      rows.appendChild(back);
      mine.results.forEach(function (r) {
        var row = el('div', 'row');
        var label = el('button', 'label', r.value);
        label.type = 'button';
        label.addEventListener('click', function () { addFilter(propDim(key), r.value, 'is'); });
        row.appendChild(label);
        row.appendChild(el('span', 'num', fmt(r.events !== undefined ? r.events : r.visitors || 0)));
        rows.appendChild(row);
      });
    };
    fill();
    fetch(url, { credentials: 'same-origin' })
      .then(function (r) { return r.json(); })
      .then(function (b) {
        if (propDraws[name] !== mine) return; // a later render owns the panel
        mine.results = b.results || [];
        fill();
      }, function () { /* keep what is shown; the next render asks again */ });
  }

  // A filter is dimension:op:value, so ':' (and '%', the escape) in a property key are
  // percent-encoded in the filter's dimension; the server decodes them.
  function propDim(key) { return 'prop.' + key.replace(/%/g, '%25').replace(/:/g, '%3A'); }
  function propKeyOf(dim) {
    try { return decodeURIComponent(dim.slice(5)); } catch (e) { return dim.slice(5); }
  }

  $$('.panel').forEach(function (p) {
    $$('.tabs button', p).forEach(function (b) {
      b.addEventListener('click', function () {
        state.tabs[p.getAttribute('data-panel')] = b.getAttribute('data-dim');
        state.propKey = null;
        $$('.tabs button', p).forEach(function (x) { x.classList.toggle('active', x === b); });
        if (state.data) drawPanel(p);
      });
    });
  });

  // --- formatting ----------------------------------------------------------------------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function dimLabel(d) { return d.indexOf('prop.') === 0 ? 'Property ' + propKeyOf(d) : DIM_LABELS[d] || d; }
  function labelOf(m) {
    var b = $('#figures .figure[data-metric="' + m + '"] .name');
    return b ? b.textContent : m;
  }
  function fmt(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(n >= 1e5 ? 0 : 1) + 'k';
    return String(Math.round(n * 100) / 100);
  }
  function fmtMetric(m, v) {
    if (v === null || v === undefined) return '–';
    if (m === 'bounce_rate') return Math.round(v) + '%';
    if (m === 'visit_duration') {
      var s = Math.round(v);
      return s < 60 ? s + 's' : Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    }
    if (m === 'views_per_visit') return (Math.round(v * 100) / 100).toString();
    return fmt(v);
  }

  // The live stream pushes only when data changes; "online now" (the last 5 minutes)
  // must also fall when traffic stops, so a visible dashboard idle for a minute reloads.
  setInterval(function () {
    if (document.visibilityState === 'visible' && state.renderedAt && Date.now() - state.renderedAt >= 60000) {
      state.renderedAt = Date.now();
      var seq = state.seq;
      fetch(base + '/dashboard?' + query(view()), { credentials: 'same-origin' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (d) { if (d && seq === state.seq) render(d); }, function () {});
    }
  }, 15000);

  load();
})();
