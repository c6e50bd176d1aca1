/*! bellwether activity.js: counts active time, never idle time.
 *
 * Sends a Segment `track` event named "Active Ping" at most once a minute, and only while
 * the tab is visible and the person typed, clicked, scrolled, touched or moved the mouse in
 * the last 60 seconds. bellwether counts a minute as active only when something happened in
 * it, so these pings cover long reads without counting a forgotten open tab.
 *
 * Use beside analytics.js (the ping goes through `analytics.track`), or alone:
 *   <script>window.bellwetherActivity = {host: "https://bw.example.com", writeKey: "wk_...", userId: "u-1"}</script>
 *   <script src="https://bw.example.com/js/activity.js" async></script>
 * The same settings may be given as data-host, data-write-key, data-user-id and
 * data-group-id attributes on the script tag. Without a userId an anonymousId is kept in
 * localStorage.
 */
(function () {
  "use strict";
  var PING_EVERY_MS = 60000;   // at most one ping a minute
  var ACTIVE_WINDOW_MS = 60000; // activity within the last minute counts
  var CHECK_EVERY_MS = 5000;
  if (window.__bellwetherActivity) return;
  window.__bellwetherActivity = true;

  var tag = document.currentScript || {};
  var data = (tag.dataset) || {};
  var settings = window.bellwetherActivity || {};
  var host = (settings.host || data.host || (tag.src ? new URL(tag.src).origin : "")).replace(/\/$/, "");
  var writeKey = settings.writeKey || data.writeKey;
  var lastActivity = -Infinity;
  var lastPing = -Infinity;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }

  function anonymousId() {
    try {
      var id = localStorage.getItem("bellwether_anonymous_id");
      if (!id) {
        id = uuid();
        localStorage.setItem("bellwether_anonymous_id", id);
      }
      return id;
    } catch (e) {
      return uuid();
    }
  }

  function send() {
    var properties = { path: location.pathname, title: document.title };
    if (window.analytics && typeof window.analytics.track === "function") {
      window.analytics.track("Active Ping", properties);
      return;
    }
    if (!host || !writeKey) return;
    var message = {
      type: "track",
      event: "Active Ping",
      messageId: uuid(),
      writeKey: writeKey,
      properties: properties,
      context: { library: { name: "bellwether-activity", version: "1" } }
    };
    var userId = settings.userId || data.userId;
    if (userId) message.userId = String(userId); else message.anonymousId = anonymousId();
    var groupId = settings.groupId || data.groupId;
    if (groupId) message.context.groupId = String(groupId);
    // text/plain keeps this a simple request: no CORS preflight; the reply is not needed.
    fetch(host + "/v1/track", { method: "POST", body: JSON.stringify(message), headers: { "Content-Type": "text/plain" }, keepalive: true, mode: "no-cors" })
      .catch(function () {});
  }

  function check() {
    var now = Date.now();
    if (document.visibilityState !== "visible") return;
    if (now - lastActivity > ACTIVE_WINDOW_MS) return;
    if (now - lastPing < PING_EVERY_MS) return;
    lastPing = now;
    send();
  }

  function activity() {
    lastActivity = Date.now();
    check();
  }

  ["keydown", "click", "scroll", "mousemove", "touchstart", "wheel"].forEach(function (name) {
    window.addEventListener(name, activity, { passive: true, capture: true });
  });
  document.addEventListener("visibilitychange", check);
  setInterval(check, CHECK_EVERY_MS);
})();
