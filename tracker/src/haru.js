// haru.js: the Haru tracker. One beacon per pageview, custom event or engagement
// report; no cookies, no storage (it only reads the localStorage.haru_ignore opt-out).
//
// LINKS is a build-time constant (see internal/jsbuild): the haru.links.js variant
// compiles in outbound-link and file-download tracking; haru.js leaves it out.
;((w, d) => {
  // A second copy of the script on the page would count everything twice: the first
  // one marks window.haru.
  if (w.haru?.k) return
  // The embed tag is a classic script (defer or async), so currentScript is set.
  var s = d.currentScript
  var opt = s.dataset
  var nav = navigator
  var loc = w.location
  var hashMode = 'hash' in opt
  // Tokens are base64url, so they need no escaping.
  var api = (opt.api || new URL(s.src).origin) + '/api/collect?t=' + opt.token
  var off
  try {
    off = localStorage.haru_ignore == 'true'
  } catch {}
  // Ingest takes only http(s) pages: not file:, about:srcdoc or about:blank frames,
  // data: or app schemes such as capacitor:.
  off =
    off ||
    nav.webdriver ||
    !/^https?:$/.test(loc.protocol) ||
    (!('allowLocalhost' in opt) && /^(localhost|127\.[\d.]+|\[::1\])$/.test(loc.hostname)) ||
    ('respectDnt' in opt && (nav.doNotTrack == 1 || nav.globalPrivacyControl))

  // Ingest refuses a path over 2,048 bytes and a URL over 4,096, so longer ones are cut.
  // A URL the browser serialized is ASCII (it percent-encodes the rest and punycodes the
  // host), so a character is a byte. The path carries the fragment itself in hash mode,
  // and no h is sent: with h, ingest would append u's fragment to a path cut before it.
  var path = () => (loc.pathname + (hashMode ? loc.hash : '')).slice(0, 2048)

  // post sends one body with fetch(keepalive), which outlives the page like sendBeacon
  // but, unlike it, sees the answer: a 429, a 5xx (ingest could not make the event
  // durable, as during a NATS election) or a network error is retried after 1, 2 and
  // 4 s, then given up. A text/plain body needs no CORS preflight; ingest allows any
  // origin to read the answer.
  var post = (b, n = 3) =>
    fetch(api, { method: 'POST', body: b, keepalive: true })
      .catch((e) => e)
      .then((r) => r.status < 429 || (n-- && setTimeout(post, 4e3 >> n, b, n)))

  // The current page: its path, URL and the start of its current visible stretch.
  var lastPath, lastURL, since

  // send posts one event of the current page (d is left out of the JSON when undefined).
  var send = (name, props, dur) => {
    var b = { n: name, p: lastPath, u: lastURL, r: d.referrer.slice(0, 4096), sw: screen.width, sh: screen.height, d: dur, i: Date.now() }
    if (props) {
      b.props = {}
      // Values must be strings; ingest refuses more than 30 properties.
      for (var k in props) b.props[k] = '' + props[k]
    }
    post(JSON.stringify(b))
  }

  // Engagement: `since` marks the start of the current visible stretch (falsy while
  // hidden). flush reports the stretch and starts the next one if the page is visible,
  // so a tab switched away and back is never counted twice. Leaving the page (1) stops
  // the clock, so time spent in the back/forward cache is not counted either.
  var flush = (leaving) => {
    var t = since && Date.now() - since
    since = leaving != 1 && !d.hidden && Date.now()
    // Ingest refuses a report over 24 hours.
    if (t > 0) send('engagement', 0, Math.min(t, 864e5))
  }

  var pageview = () => {
    var p = path()
    if (p != lastPath) {
      flush()
      lastPath = p
      lastURL = loc.href.slice(0, 4096)
      send('pageview')
    }
  }

  var on = (target, type, fn) => target.addEventListener(type, fn)

  // Clicks on elements tagged data-haru-event="Name" (with data-haru-prop-key="value"
  // properties), and in the links variant outbound links and file downloads. The request
  // outlives the page, so a click that navigates away needs no delay.
  var click = (e) => {
    var t = e.target
    var el = t.closest?.('[data-haru-event]')
    if (LINKS && e.button == 2) return
    if (el) {
      var props = {}
      for (var a of el.attributes) {
        var m = a.name.match(/^data-haru-prop-(.+)/)
        if (m) props[m[1]] = a.value
      }
      send(el.dataset.haruEvent, props)
    } else if (LINKS && (el = t.closest?.('a[href]')) && /^https?:$/.test(el.protocol)) {
      let exts = opt.downloads
      // Ingest refuses a property value over 256 bytes: a longer URL (ASCII, as above)
      // loses its query and fragment, and is cut if still too long.
      let url = el.href[256] ? (el.origin + el.pathname).slice(0, 256) : el.href
      if (
        exts != null &&
        new RegExp(
          '\\.(' + (exts || 'pdf|xlsx?|docx?|pptx?|csv|txt|zip|gz|rar|7z|dmg|exe|msi|apk|mp3|mp4|mov|wav|epub').replace(/,/g, '|') + ')$',
          'i'
        ).test(el.pathname)
      ) {
        send('File Download', { url })
      } else if ('outbound' in opt && el.host != loc.host) {
        send('Outbound Link: Click', { url })
      }
    }
  }

  // window.haru('Signup', {props: {plan: 'pro'}}). Calls made before the script loaded
  // wait in window.haru.q, and calls made before the first pageview (while the page is
  // prerendering) in queued, sent after it. Nothing is sent before start, and start
  // does nothing when the tracker is off.
  var queued = w.haru?.q || []
  ;(w.haru = (name, opts) => (lastPath ? send(name, opts?.props) : queued.push([name, opts]))).k = 1

  var start = () => {
    if (off) return
    pageview()
    queued.map((args) => w.haru(...args))
    var h = history
    for (var k of ['pushState', 'replaceState']) {
      let orig = h[k]
      h[k] = (...args) => {
        orig.apply(h, args)
        pageview()
      }
    }
    on(w, 'popstate', pageview)
    if (hashMode) on(w, 'hashchange', pageview)
    on(d, 'visibilitychange', flush)
    on(w, 'pagehide', () => flush(1))
    // A page restored from the back/forward cache is a new visit to it, as a reload
    // would be.
    on(w, 'pageshow', (e) => {
      if (e.persisted) {
        lastPath = 0
        pageview()
      }
    })
    on(d, 'click', click)
    // A middle click opens a link in a new tab.
    if (LINKS) on(d, 'auxclick', click)
  }

  // A prerendered page counts once the visitor actually opens it.
  if (d.prerendering) on(d, 'prerenderingchange', start)
  else start()
})(window, document)
