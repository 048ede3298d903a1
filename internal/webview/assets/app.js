// dmsync web view: renders the daemon's state from its websocket (/ws).
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function dur(sec) {
  if (sec < 0) sec = 0;
  if (sec < 1) return "now";
  if (sec < 60) return Math.round(sec) + "s";
  if (sec < 3600) return Math.floor(sec / 60) + "m " + Math.round(sec % 60) + "s";
  if (sec < 86400) return Math.floor(sec / 3600) + "h " + Math.floor((sec % 3600) / 60) + "m";
  return Math.floor(sec / 86400) + "d " + Math.floor((sec % 86400) / 3600) + "h";
}
const zero = (t) => !t || t.startsWith("0001-");
const ago = (t, now) => zero(t) ? "never" : dur((now - Date.parse(t)) / 1000) + " ago";
const short = (id) => id && id.length > 12 ? id.slice(0, 12) + "…" : (id || "");

// The volume's state, from what the daemon reports.
function volState(v) {
  if ((v.legs || []).some((l) => !l.ok)) return ["degraded leg", "bad"];
  if (!v.peer) return ["not replicated", ""];
  if (v.synced) return ["synced", "ok"];
  const k = v.state_kind || (v.peer_up ? "syncing" : "peer-unreachable");
  return [k, k === "syncing" || k === "starting" ? "warn" : "bad"];
}

function cellColor(f) {
  if (f <= 0) return "#dcfce7";
  // light amber to deep red as the cell fills with pending regions
  const h = 45 - 45 * f, l = 70 - 30 * f;
  return `hsl(${h}, 90%, ${l}%)`;
}

function renderVolume(v, now) {
  const [state, cls] = volState(v);
  const rp = v.synced ? "now (in sync)" : zero(v.last_consistent) ? "none yet" : dur((now - Date.parse(v.last_consistent)) / 1000) + " behind";
  const legs = (v.legs || []).map((l) => `<span class="leg ${l.ok ? "ok" : "bad"}">leg ${l.index} · ${esc(l.device)} · ${esc(l.health)}</span>`).join("");
  const map = (v.pending_map || []).map((f, i) => `<i title="cell ${i}: ${(f * 100).toFixed(0)}% pending" style="background:${cellColor(f)}"></i>`).join("");
  const peer = v.peer ? `${esc(short(v.peer))} ${esc(v.peer_addr)} <span class="badge ${v.peer_up ? "ok" : "bad"}">${v.peer_up ? "up" : "down"}</span>` : "—";
  return `<div class="volume" data-volume="${esc(v.name)}">
    <div class="title"><h3>${esc(v.name)}</h3><span class="badge ${cls}">${state}</span><span class="muted">${esc(v.state)}</span></div>
    <div class="stats">
      <div><span class="k">peer</span>${peer}</div>
      <div><span class="k">size</span>${bytes(v.size)}</div>
      <div><span class="k">pending</span>${bytes(v.pending_bytes)} (${v.pending_regions} of ${v.regions} regions)</div>
      <div><span class="k">rate</span>${bytes(v.rate)}/s</div>
      <div><span class="k">ETA</span>${v.eta_ns > 0 ? dur(v.eta_ns / 1e9) : "—"}</div>
      <div><span class="k">recovery point</span>${rp}</div>
      <div><span class="k">last ack</span>${ago(v.last_ack, now)}</div>
      <div><span class="k">read / sent</span>${bytes(v.bytes_read)} / ${bytes(v.bytes_sent)}</div>
    </div>
    <div class="legs">${legs || '<span class="muted">legs not reported</span>'}</div>
    ${map ? `<div class="map">${map}</div><div class="legend">pending regions across the volume (${(v.pending_map || []).length} cells; green: replicated, red: all pending)</div>` : ""}
  </div>`;
}

// p returns the latency quantile q of a log request histogram (upper bound of its bucket, in µs).
function quantile(r, q) {
  const want = r.count * q;
  let cum = 0;
  for (let i = 0; i < r.buckets.length; i++) {
    cum += r.buckets[i];
    if (cum >= want) return i < r.buckets.length - 1 ? Math.pow(2, i) : Infinity;
  }
  return Infinity;
}
const us = (x) => x === Infinity ? "> 4s" : x >= 1000 ? (x / 1000).toFixed(1) + " ms" : x + " µs";

function renderLog(log) {
  if (!log) return '<p class="muted">counters not available</p>';
  const rows = (log.requests || []).map((r) => `<tr><td>${esc(r.name)}</td><td class="num">${r.count}</td>
    <td class="num">${us(Math.round(r.sum_ns / r.count / 1000))}</td><td class="num">&lt; ${us(quantile(r, 0.99))}</td></tr>`).join("");
  return `<table><thead><tr><th>request</th><th class="num">answered</th><th class="num">mean</th><th class="num">p99</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="4" class="muted">no requests yet</td></tr>'}</tbody></table>
    <p>${log.syncs} store syncs, ${(log.sync_time_ns / 1e9).toFixed(2)} s syncing.
    ${log.store_error ? `<span class="badge bad">store failed</span> ${esc(log.store_error)}` : ""}</p>`;
}

function render(s) {
  const now = Date.parse(s.time) || Date.now();
  $("node").textContent = s.node ? "node " + short(s.node) : "no node identity";
  $("version").textContent = s.version ? "dmsyncd " + s.version : "";
  $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  const vols = s.volumes || [];
  const synced = vols.filter((v) => v.synced).length;
  const pending = vols.reduce((a, v) => a + (v.pending_bytes || 0), 0);
  const failedLegs = vols.reduce((a, v) => a + (v.legs || []).filter((l) => !l.ok).length, 0);
  $("summary").innerHTML = `<div><b>${vols.length}</b>volumes</div><div><b>${synced}</b>synced</div>
    <div><b>${bytes(pending)}</b>pending</div><div><b class="${failedLegs ? "bad" : ""}">${failedLegs}</b>failed legs</div>
    <div><b>${(s.receives || []).length}</b>received replicas</div>`;
  $("volumes").innerHTML = vols.length ? vols.map((v) => renderVolume(v, now)).join("") : '<p class="muted">no volumes</p>';
  const errs = s.errors || [];
  $("errors").hidden = !errs.length;
  $("errors").innerHTML = errs.map((e) => `<div>${esc(e)}</div>`).join("");
  const rc = s.receives || [];
  $("receives").innerHTML = rc.length ? `<thead><tr><th>volume</th><th>from</th><th>image</th><th class="num">size</th><th>state</th></tr></thead><tbody>` +
    rc.map((r) => `<tr><td>${esc(r.volume)}</td><td>${esc(short(r.from))}</td><td>${esc(r.image)}</td><td class="num">${bytes(r.size)}</td>
      <td>${r.error ? `<span class="badge bad">error</span> ${esc(r.error)}` : r.applying ? '<span class="badge warn">applying</span>' : '<span class="badge ok">consistent</span>'}</td></tr>`).join("") + "</tbody>"
    : '<tbody><tr><td class="muted">none</td></tr></tbody>';
  $("log").innerHTML = renderLog(s.log);
  document.title = `dmsync — ${vols.length} volumes, ${synced} synced`;
}

const kindClass = { "leg-failed": "bad", "peer-down": "bad", "store-failed": "bad", "verify-differences": "bad", "leg-repaired": "ok", "peer-up": "ok", "consistent-point": "ok" };
let shown = [];
function addEvents(evs) {
  for (const e of evs) if (!shown.length || e.seq > shown[0].seq) shown.unshift(e);
  shown = shown.slice(0, 50);
  $("events").innerHTML = shown.length ? shown.map((e) => `<li data-seq="${e.seq}"><time>${new Date(Date.parse(e.time)).toLocaleTimeString()}</time>
    <span class="badge ${kindClass[e.kind] || ""}">${esc(e.kind)}</span> ${esc(e.message)}</li>`).join("") : '<li class="muted">none yet</li>';
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "badge ok"; };
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "hello") { shown = []; addEvents(msg.events || []); }
    if (msg.state) render(msg.state);
    if (msg.type === "event") addEvents([msg.event]);
    if (msg.type === "reload") ws.close();
  };
  ws.onclose = () => { $("conn").textContent = "disconnected — retrying"; $("conn").className = "badge bad"; setTimeout(connect, 2000); };
}
connect();
