// Live folder view: the server sends "change" (server-sent events) when the folder changes; the first
// page is fetched again from the API and the rows rebuilt with textContent (never HTML from mail).
(function () {
  "use strict";
  const body = document.body;
  const folder = body.dataset.folder;
  if (!folder || body.dataset.live !== "1" || !window.EventSource) {
    return;
  }
  const enc = encodeURIComponent;
  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }
  function row(m) {
    const tr = document.createElement("tr");
    tr.className = m.seen ? "seen" : "unread";
    tr.dataset.id = m.id;
    const subject = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/folders/" + enc(folder) + "/messages/" + enc(m.id);
    link.textContent = m.subject || "(no subject)";
    subject.appendChild(link);
    tr.append(cell(m.from), subject, cell(m.date), cell(String(m.size)));
    return tr;
  }
  async function refresh() {
    const url = "/api/v1/folders/" + enc(folder) + "/messages?page=1&per_page=" + enc(body.dataset.perPage);
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) {
      return;
    }
    const page = await response.json();
    document.getElementById("messages").replaceChildren(...page.messages.map(row));
    document.getElementById("count").textContent = String(page.total);
  }
  const events = new EventSource("/events?folder=" + enc(folder));
  events.addEventListener("change", refresh);
})();
