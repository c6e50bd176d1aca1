// bellwether dashboard: small progressive enhancements; every page works without it.
(function () {
  "use strict";
  // Timestamps in the viewer's timezone (the server writes UTC).
  var withTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var dayOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  document.querySelectorAll("time[data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    var format = el.dataset.local === "date" ? dayOnly : withTime;
    if (!isNaN(when)) { el.textContent = format.format(when); el.title = el.getAttribute("datetime"); }
  });
  // Calendar days in the viewer's locale (a day has no timezone).
  var calendar = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });
  document.querySelectorAll("time[data-day]").forEach(function (el) {
    var day = new Date(el.getAttribute("datetime") + "T00:00:00Z");
    if (!isNaN(day)) { el.textContent = calendar.format(day); }
  });
  // Amounts with the viewer's locale's digit grouping (the server writes 12,500).
  var whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  document.querySelectorAll("data[data-unit]").forEach(function (el) {
    var value = Number(el.getAttribute("value"));
    if (!isNaN(value)) { el.textContent = whole.format(value) + " " + el.dataset.unit; }
  });
  // Plain numbers and percentages in numeric cells in the viewer's locale (the server
  // writes 1,234.5 and 35%): only cells whose whole text is one number with a grouping
  // comma, decimals or a percent sign (bare digits, such as ids, stay as written).
  var plain = /^(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+\.\d+|-?\d+(?=%))(%?)$/;
  document.querySelectorAll("td.num, dd[data-value], td[data-value]").forEach(function (el) {
    if (el.children.length > 0) { return; }
    var m = plain.exec(el.textContent.trim());
    if (!m) { return; }
    var n = Number(m[1].replace(/,/g, ""));
    var decimals = (m[1].split(".")[1] || "").length;
    var options = { minimumFractionDigits: decimals, maximumFractionDigits: decimals };
    if (m[2]) { options.style = "percent"; n = n / 100; }
    if (!isNaN(n)) { el.textContent = new Intl.NumberFormat(undefined, options).format(n); }
  });
  // On a phone the navigation folds behind a Menu button (without the script it stays open).
  document.documentElement.classList.add("js");
  document.querySelectorAll("header.top button.menu").forEach(function (button) {
    button.addEventListener("click", function () {
      var open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", open ? "true" : "false");
      button.closest("header").classList.toggle("open", open);
    });
  });
  // Under 600 px every data table's rows become cards (CSS); each cell is labelled with its
  // column's heading (grouped headings joined: "Renewed ARR") unless it has a label already
  // (without the script tables scroll in their box).
  var columnLabels = function (head) {
    var grid = [];
    Array.prototype.forEach.call(head.rows, function (row, r) {
      grid[r] = grid[r] || [];
      var c = 0;
      Array.prototype.forEach.call(row.cells, function (cell) {
        while (grid[r][c] !== undefined) { c++; }
        for (var i = 0; i < (cell.rowSpan || 1); i++) {
          grid[r + i] = grid[r + i] || [];
          for (var j = 0; j < (cell.colSpan || 1); j++) { grid[r + i][c + j] = cell.textContent.trim(); }
        }
      });
    });
    var labels = [];
    (grid[0] || []).forEach(function (_, c) {
      var parts = [];
      grid.forEach(function (row) { var t = row[c]; if (t && parts.indexOf(t) < 0) { parts.push(t); } });
      labels.push(parts.join(" "));
    });
    return labels;
  };
  document.querySelectorAll("table.data").forEach(function (table) {
    if (!table.tHead) { return; }
    var heads = columnLabels(table.tHead);
    table.classList.add("cards");
    table.querySelectorAll("tbody tr").forEach(function (row) {
      Array.prototype.forEach.call(row.children, function (cell, i) {
        if (cell.tagName === "TD" && !cell.hasAttribute("data-label") && heads[i]) { cell.setAttribute("data-label", heads[i]); }
      });
    });
  });
  // Destructive forms ask first (data-confirm holds the question).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
  // Copy buttons: the text to copy is in data-copy.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      if (!navigator.clipboard) { return; }
      navigator.clipboard.writeText(button.dataset.copy).then(function () { button.textContent = "Copied"; });
    });
  });
  // Filters apply on their button, never on change (WCAG 3.2.2: an arrow key in a select
  // must not reload the page).
})();
