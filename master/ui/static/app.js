// Sutra Grid dashboard: live updates over Server-Sent Events. Each fleet
// event re-fetches the open page and swaps its <main>, at most once a
// second; without JavaScript the pages work the same, only not live.
(function () {
  'use strict';
  if (!window.EventSource || !document.body.dataset.live) { return; }
  var status = document.getElementById('live');
  var pending = false, last = 0;
  function say(s) { if (status) { status.textContent = s; } }
  function refresh() {
    if (pending) { return; }
    var a = document.activeElement;
    if (a && (a.tagName === 'INPUT' || a.tagName === 'SELECT') && a.form && a.form.closest('#main')) {
      setTimeout(refresh, 2000); // do not wipe what the operator is typing
      return;
    }
    var wait = Math.max(0, last + 1000 - Date.now());
    pending = true;
    setTimeout(function () {
      last = Date.now();
      fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
        .then(function (r) {
          if (r.redirected || !r.ok) { throw new Error('HTTP ' + r.status); }
          return r.text();
        })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, 'text/html');
          var fresh = doc.getElementById('main'), cur = document.getElementById('main');
          if (!fresh || !cur) { return; }
          var focused = document.activeElement && document.activeElement.id;
          cur.replaceWith(fresh);
          if (focused) { var el = document.getElementById(focused); if (el) { el.focus(); } }
          document.dispatchEvent(new CustomEvent('sutra:refreshed'));
        })
        .catch(function () { say('live updates paused'); })
        .finally(function () { pending = false; });
    }, wait);
  }
  var es = new EventSource('/ui/events/stream');
  es.addEventListener('open', function () { say('● live'); });
  es.addEventListener('error', function () { say('reconnecting…'); });
  es.addEventListener('fleet', function () { refresh(); });
})();
