// The debug console: streams the app's events (Server-Sent Events) into a table, newest first.
(function () {
  "use strict";
  var root = document.getElementById("console");
  if (!root || !window.EventSource) { return; }
  var rows = document.getElementById("events");
  var pause = document.getElementById("pause");
  var clear = document.getElementById("clear");
  var filter = document.getElementById("filter");
  var status = document.getElementById("status");
  var paused = false;
  var held = [];
  var MAX_ROWS = 500;

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function show(event) {
    var wanted = filter.value.trim();
    var tr = document.createElement("tr");
    tr.dataset.channel = event.channel || "";
    tr.className = "kind-" + event.kind;
    tr.appendChild(cell(new Date(event.at_ms).toISOString().slice(11, 23)));
    tr.appendChild(cell(event.kind));
    tr.appendChild(cell(event.channel));
    tr.appendChild(cell(event.socket_id));
    // In a cluster, each line says which node it happened on.
    tr.appendChild(cell(event.node ? "[" + event.node + "] " + event.detail : event.detail));
    tr.hidden = wanted !== "" && tr.dataset.channel.indexOf(wanted) === -1;
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childNodes.length > MAX_ROWS) { rows.removeChild(rows.lastChild); }
  }

  var source = new EventSource(root.dataset.source);
  source.addEventListener("open", function () { status.textContent = "live"; });
  source.addEventListener("error", function () { status.textContent = "reconnecting…"; });
  source.addEventListener("debug", function (message) {
    var event = JSON.parse(message.data);
    if (paused) { held.push(event); status.textContent = "paused (" + held.length + " waiting)"; return; }
    show(event);
  });
  source.addEventListener("lagged", function (message) {
    show({ at_ms: Date.now(), kind: "lagged", detail: JSON.parse(message.data).detail });
  });
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { held.forEach(show); held = []; status.textContent = "live"; }
  });
  clear.addEventListener("click", function () { rows.textContent = ""; });
  filter.addEventListener("input", function () {
    var wanted = filter.value.trim();
    Array.prototype.forEach.call(rows.childNodes, function (tr) {
      tr.hidden = wanted !== "" && tr.dataset.channel.indexOf(wanted) === -1;
    });
  });
})();
