// haru.js: the Haru tracker. One beacon per pageview, custom event or engagement
// report; no cookies, no storage (it only reads the localStorage.haru_ignore opt-out).
//
// LINKS is a build-time constant (see internal/jsbuild): the haru.links.js variant
// compiles in outbound-link and file-download tracking; haru.js leaves it out.
;((w, d) => {
  // The embed tag is a classic script (defer or async), so currentScript is set.
  var s = d.currentScript
  var nav = navigator
  var loc = w.location
  var attr = (name) => s.getAttribute('data-' + name)
  var hashMode = attr('hash') != null
  // Tokens are base64url, so they need no escaping.
  var api = (attr('api') || new URL(s.src).origin) + '/api/collect?t=' + attr('token')
  var off
  try {
    off = localStorage.haru_ignore == 'true'
  } catch (e) {}
  off =
    off ||
    nav.webdriver ||
    loc.protocol == 'file:' ||
    (attr('allow-localhost') == null && /^(localhost|127\.|\[::1\]$)/.test(loc.hostname)) ||
    (attr('respect-dnt') != null && (nav.doNotTrack == '1' || nav.globalPrivacyControl))

  var path = () => loc.pathname + (hashMode ? loc.hash : '')

  // send posts one event. sendBeacon survives the page unloading; with a string body it
  // goes as text/plain, which needs no CORS preflight. fetch(keepalive) is the fallback
  // when the beacon queue is full or sendBeacon is missing.
  var send = (name, props, p, u, dur) => {
    if (off) return
    var b = { n: name, p: p || path(), u: u || loc.href, r: d.referrer, sw: screen.width, sh: screen.height }
    if (hashMode) b.h = true
    if (dur) b.d = dur
    if (props) {
      b.props = {}
      // Values must be strings; ingest refuses more than 30 properties.
      for (var k in props) b.props[k] = '' + props[k]
    }
    b = JSON.stringify(b)
    if (!(nav.sendBeacon && nav.sendBeacon(api, b))) fetch(api, { method: 'POST', body: b, keepalive: true })
  }

  // Engagement: visible time accumulates in `acc` while `since` marks the start of the
  // current visible stretch (falsy while hidden). flush sends what accumulated since the
  // last send and resets it, so a tab switched away and back is never counted twice.
  // Leaving the page stops the clock, so time spent in the back/forward cache is not
  // counted either.
  var lastPath, lastURL, since, acc
  var flush = (leaving) => {
    if (since) acc += Date.now() - since
    since = !leaving && d.visibilityState == 'visible' && Date.now()
    if (acc > 0) send('engagement', 0, lastPath, lastURL, acc)
    acc = 0
  }

  var pageview = () => {
    var p = path()
    if (p != lastPath) {
      flush()
      lastPath = p
      lastURL = loc.href
      send('pageview')
    }
  }

  var on = (target, type, fn) => target.addEventListener(type, fn)

  // Clicks on elements tagged data-haru-event="Name" (with data-haru-prop-key="value"
  // properties), and in the links variant outbound links and file downloads. The beacon
  // outlives the page, so a click that navigates away needs no delay.
  var click = (e) => {
    var t = e.target
    var el = t.closest && t.closest('[data-haru-event]')
    if (LINKS && e.button == 2) return
    if (el) {
      var props = {}
      for (var a of el.attributes) {
        var m = a.name.match(/^data-haru-prop-(.+)/)
        if (m) props[m[1]] = a.value
      }
      send(el.getAttribute('data-haru-event'), props)
    } else if (LINKS && t.closest && (el = t.closest('a[href]')) && /^https?:$/.test(el.protocol)) {
      let exts = attr('downloads')
      if (
        exts != null &&
        new RegExp(
          '\\.(' + (exts || 'pdf|xlsx?|docx?|pptx?|csv|txt|zip|gz|rar|7z|dmg|exe|msi|apk|mp3|mp4|mov|wav|epub').replace(/,/g, '|') + ')$',
          'i'
        ).test(el.pathname)
      ) {
        send('File Download', { url: el.href })
      } else if (attr('outbound') != null && el.host != loc.host) {
        send('Outbound Link: Click', { url: el.href })
      }
    }
  }

  // window.haru('Signup', {props: {plan: 'pro'}}); calls made before the script loaded
  // wait in window.haru.q.
  var queued = (w.haru && w.haru.q) || []
  w.haru = (name, opts) => send(name, opts && opts.props)

  var start = () => {
    if (off) return
    pageview()
    queued.map((args) => w.haru(...args))
    var h = history
    for (var k of ['pushState', 'replaceState']) {
      let orig = h[k]
      h[k] = function () {
        orig.apply(this, arguments)
        pageview()
      }
    }
    on(w, 'popstate', pageview)
    if (hashMode) on(w, 'hashchange', pageview)
    on(d, 'visibilitychange', () => flush())
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
