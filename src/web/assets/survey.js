// bellwether survey snippet: on the customer's own pages, asks bellwether whether a survey
// is waiting for the signed-in person (one sent for the web snippet because bellwether has
// no email for them) and, if so, shows a small dismissable banner linking to its answer
// page. Configure like activity.js: window.bellwetherActivity = {host, writeKey, userId}.
(function () {
  "use strict";
  var config = window.bellwetherActivity || {};
  var script = document.currentScript;
  var host = config.host || (script && new URL(script.src).origin) || "";
  var writeKey = config.writeKey || (script && script.dataset.writeKey);
  var userId = config.userId || (script && script.dataset.userId);
  if (!writeKey || !userId || sessionStorage.getItem("bellwetherSurveyDismissed")) return;
  // The write key goes in a header, where proxies do not log it (not in the query).
  var url = host + "/v1/surveys/pending?userId=" + encodeURIComponent(userId);
  fetch(url, { credentials: "omit", headers: { Authorization: "Basic " + btoa(writeKey + ":") } }).then(function (response) {
    if (response.status !== 200) return null;
    return response.json();
  }).then(function (pending) {
    if (!pending || !pending.url) return;
    var banner = document.createElement("div");
    banner.setAttribute("role", "status");
    banner.style.cssText = "position:fixed;bottom:16px;right:16px;max-width:320px;padding:12px 14px;background:#0d1b2a;color:#fff;border-radius:8px;font:14px system-ui,sans-serif;z-index:2147483647;box-shadow:0 4px 16px rgba(0,0,0,.3)";
    var link = document.createElement("a");
    link.href = pending.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "Got a minute? Tell us how we are doing.";
    link.style.color = "#fff";
    var close = document.createElement("button");
    close.type = "button";
    close.textContent = "×";
    close.setAttribute("aria-label", "Dismiss");
    close.style.cssText = "margin-left:10px;background:none;border:0;color:#fff;font-size:18px;cursor:pointer";
    close.onclick = function () { sessionStorage.setItem("bellwetherSurveyDismissed", "1"); banner.remove(); };
    banner.appendChild(link);
    banner.appendChild(close);
    document.body.appendChild(banner);
  }).catch(function () {});
})();
