// bellwether dashboard: small progressive enhancements; every page works without it.
(function () {
  "use strict";
  // Timestamps in the viewer's timezone (the server writes UTC).
  var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  document.querySelectorAll("time[data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) { el.textContent = format.format(when); el.title = el.getAttribute("datetime"); }
  });
  // Filters apply as soon as a choice changes.
  document.querySelectorAll("form.filters select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
