// Haru pages: copy buttons, confirmations, the default timezone, and the live
// "waiting for the first event" state of a site.
(function () {
  'use strict';

  function copyText(text, button) {
    var done = function () {
      var label = button.textContent;
      button.textContent = 'Copied';
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text) && done(); });
    } else if (fallbackCopy(text)) {
      done();
    }
  }

  // fallbackCopy copies without the async clipboard API, which plain-HTTP pages lack.
  function fallbackCopy(text) {
    var ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.className = 'offscreen';
    document.body.appendChild(ta);
    ta.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok;
  }

  document.addEventListener('click', function (e) {
    var b = e.target.closest('[data-copy]');
    if (!b) return;
    var el = document.querySelector(b.getAttribute('data-copy'));
    if (el) copyText(el.textContent.trim(), b);
  });

  document.addEventListener('submit', function (e) {
    var msg = e.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });

  document.querySelectorAll('[data-default-tz]').forEach(function (input) {
    if (input.value) return;
    try { input.value = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (e) { input.value = 'UTC'; }
  });

  var status = document.getElementById('site-status');
  if (status && window.EventSource) {
    var es = new EventSource(status.getAttribute('data-src'));
    es.addEventListener('status', function (e) {
      var receiving = JSON.parse(e.data) === 'receiving';
      status.classList.toggle('waiting', !receiving);
      status.classList.toggle('receiving', receiving);
      status.querySelector('.label').textContent = receiving ? 'Receiving data' : 'Waiting for the first event…';
    });
  }
})();
