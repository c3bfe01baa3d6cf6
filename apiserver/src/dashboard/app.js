// The wasmkube dashboard: plain JavaScript against the Kubernetes API of the
// server that serves it. Lists are kept live by watches (list, then
// `?watch=1&resourceVersion=…` streamed as JSON lines); usage comes from
// metrics.k8s.io every few seconds. The token stays in sessionStorage.
"use strict";

const TOKEN_KEY = "wasmkube-token";
const METRICS_EVERY_MS = 5000;
const SAMPLES = 30;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  namespace: "",
  nodes: new Map(),
  pods: new Map(),
  deployments: new Map(),
  events: new Map(),
  namespaces: new Map(),
  nodeUsage: new Map(),
  podUsage: new Map(), // key → {cpu: [], mem: []}
  watches: [],
  logs: null,
  armedDelete: null,
};

const $ = (sel) => document.querySelector(sel);

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (state.token) h.Authorization = "Bearer " + state.token;
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  const resp = await fetch(path, Object.assign({}, opts, { headers: headers(opts.headers) }));
  if (resp.status === 401) {
    logout(state.token ? "The server did not accept the token (401)." : "");
    throw new Error("unauthorized");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!resp.ok) {
    const msg = body && body.message ? body.message : resp.status + " " + resp.statusText;
    throw new Error(msg);
  }
  return body;
}

const key = (o) => (o.metadata.namespace ? o.metadata.namespace + "/" : "") + o.metadata.name;

// List `path`, then follow its watch; `map` mirrors the collection and
// `render` runs after every change. On a dropped stream or a 410 it lists again.
function keep(path, map, render) {
  const ctl = { stopped: false, abort: null };
  state.watches.push(ctl);
  (async () => {
    while (!ctl.stopped) {
      try {
        const list = await api(path);
        map.clear();
        for (const o of list.items || []) map.set(key(o), o);
        render();
        const rv = list.metadata.resourceVersion;
        const abort = new AbortController();
        ctl.abort = abort;
        const sep = path.includes("?") ? "&" : "?";
        const resp = await fetch(path + sep + "watch=1&allowWatchBookmarks=true&resourceVersion=" + encodeURIComponent(rv),
          { headers: headers(), signal: abort.signal });
        if (!resp.ok || !resp.body) throw new Error("watch " + resp.status);
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            const ev = JSON.parse(line);
            if (ev.type === "ERROR") throw new Error("watch expired");
            if (ev.type === "BOOKMARK") continue;
            if (ev.type === "DELETED") map.delete(key(ev.object));
            else map.set(key(ev.object), ev.object);
            render();
          }
        }
      } catch (e) {
        if (ctl.stopped) return;
        status("reconnecting: " + e.message);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
}

function status(text) { $("#status-line").textContent = text; }

function el(tag, attrs, children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "onclick") e.addEventListener("click", v);
    else e[k] = v;
  }
  for (const c of children || []) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function inNamespace(o) { return !state.namespace || o.metadata.namespace === state.namespace; }

function age(ts) {
  if (!ts) return "";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

// Kubernetes quantities: CPU in cores ("250m", "1", "12345n"), memory in bytes ("64Mi", "1G").
function quantity(q) {
  if (q === undefined || q === null) return NaN;
  const m = String(q).match(/^([0-9.]+)([a-zA-Z]*)$/);
  if (!m) return NaN;
  const n = parseFloat(m[1]);
  const unit = { "": 1, n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
    Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 }[m[2]];
  return unit === undefined ? NaN : n * unit;
}

function cores(n) { return isNaN(n) ? "–" : n >= 1 ? n.toFixed(2) : Math.round(n * 1000) + "m"; }
function bytes(n) {
  if (isNaN(n)) return "–";
  const units = ["B", "Ki", "Mi", "Gi", "Ti"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + units[i];
}

function nodeReady(n) {
  const c = ((n.status || {}).conditions || []).find((c) => c.type === "Ready");
  return c ? c.status : "Unknown";
}

function podStatus(p) {
  if (p.metadata.deletionTimestamp) return "Terminating";
  const cs = ((p.status || {}).containerStatuses || []);
  for (const c of cs) {
    const st = c.state || {};
    if (st.waiting && st.waiting.reason) return st.waiting.reason;
    if (st.terminated && st.terminated.reason && (p.status.phase === "Running")) return st.terminated.reason;
  }
  return (p.status || {}).phase || "Pending";
}

function statusClass(s) {
  if (s === "Running" || s === "Succeeded" || s === "Completed" || s === "True") return "ok";
  if (s === "Pending" || s === "ContainerCreating" || s === "Terminating") return "warn";
  return "bad";
}

function renderNodes() {
  const tbody = $("#nodes tbody");
  tbody.replaceChildren();
  const podsPerNode = new Map();
  for (const p of state.pods.values()) {
    const n = (p.spec || {}).nodeName;
    if (n) podsPerNode.set(n, (podsPerNode.get(n) || 0) + 1);
  }
  for (const n of [...state.nodes.values()].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))) {
    const cap = (n.status || {}).capacity || {};
    const use = state.nodeUsage.get(n.metadata.name) || {};
    const ready = nodeReady(n);
    const addr = (((n.status || {}).addresses) || []).find((a) => a.type === "InternalIP");
    tbody.append(el("tr", { "data-node": n.metadata.name }, [
      el("td", {}, [n.metadata.name]),
      el("td", { class: "status " + statusClass(ready) }, [ready === "True" ? "Ready" : ready === "False" ? "NotReady" : "Unknown"]),
      el("td", { class: "num" }, [cores(quantity(use.cpu)) + " / " + cores(quantity(cap.cpu))]),
      el("td", { class: "num" }, [bytes(quantity(use.memory)) + " / " + bytes(quantity(cap.memory))]),
      el("td", { class: "num" }, [(podsPerNode.get(n.metadata.name) || 0) + " / " + (cap.pods || "–")]),
      el("td", {}, [addr ? addr.address : ""]),
    ]));
  }
}

async function scale(d, delta) {
  const replicas = Math.max(0, ((d.spec || {}).replicas || 0) + delta);
  const path = "/apis/apps/v1/namespaces/" + d.metadata.namespace + "/deployments/" + d.metadata.name + "/scale";
  try {
    await api(path, { method: "PATCH", headers: { "Content-Type": "application/merge-patch+json" },
      body: JSON.stringify({ spec: { replicas } }) });
    status("scaled " + key(d) + " to " + replicas);
  } catch (e) { status("scaling " + key(d) + ": " + e.message); }
}

function renderDeployments() {
  const tbody = $("#deployments tbody");
  tbody.replaceChildren();
  for (const d of [...state.deployments.values()].filter(inNamespace).sort((a, b) => key(a).localeCompare(key(b)))) {
    const want = (d.spec || {}).replicas || 0;
    const ready = (d.status || {}).readyReplicas || 0;
    const image = (((d.spec.template || {}).spec || {}).containers || []).map((c) => c.image).join(", ");
    tbody.append(el("tr", { "data-deploy": key(d) }, [
      el("td", {}, [d.metadata.namespace]),
      el("td", {}, [d.metadata.name]),
      el("td", { class: "num ready " + (ready === want ? "ok" : "warn") }, [ready + "/" + want]),
      el("td", { class: "num" }, [
        el("button", { class: "scale-down", title: "one replica less", onclick: () => scale(d, -1) }, ["−"]),
        el("span", { class: "replicas" }, [" " + want + " "]),
        el("button", { class: "scale-up", title: "one replica more", onclick: () => scale(d, 1) }, ["+"]),
      ]),
      el("td", {}, [image]),
    ]));
  }
}

function sparkline(samples, label) {
  const c = el("canvas", { class: "spark", width: 120, height: 24, title: label });
  const ctx = c.getContext("2d");
  if (ctx && samples.length > 1) {
    const max = Math.max(...samples) || 1;
    ctx.strokeStyle = "#243b6b";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    samples.forEach((v, i) => {
      const x = (i / (SAMPLES - 1)) * 118 + 1;
      const y = 22 - (v / max) * 20;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  return c;
}

async function deletePod(p, button) {
  const k = key(p);
  if (state.armedDelete !== k) {
    state.armedDelete = k;
    button.textContent = "Confirm delete";
    return;
  }
  state.armedDelete = null;
  try {
    await api("/api/v1/namespaces/" + p.metadata.namespace + "/pods/" + p.metadata.name, { method: "DELETE" });
    status("deleting " + k);
  } catch (e) { status("deleting " + k + ": " + e.message); }
}

function renderPods() {
  const tbody = $("#pods tbody");
  tbody.replaceChildren();
  for (const p of [...state.pods.values()].filter(inNamespace).sort((a, b) => key(a).localeCompare(key(b)))) {
    const k = key(p);
    const st = podStatus(p);
    const restarts = ((p.status || {}).containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
    const use = state.podUsage.get(k) || { cpu: [], mem: [] };
    const lastCpu = use.cpu.length ? use.cpu[use.cpu.length - 1] : NaN;
    const lastMem = use.mem.length ? use.mem[use.mem.length - 1] : NaN;
    const del = el("button", { class: "delete danger" }, [state.armedDelete === k ? "Confirm delete" : "Delete"]);
    del.addEventListener("click", () => deletePod(p, del));
    tbody.append(el("tr", { "data-pod": k }, [
      el("td", {}, [p.metadata.namespace]),
      el("td", {}, [p.metadata.name]),
      el("td", { class: "phase " + statusClass(st) }, [st]),
      el("td", { class: "num" }, [restarts]),
      el("td", {}, [(p.spec || {}).nodeName || ""]),
      el("td", { class: "num" }, [age(p.metadata.creationTimestamp)]),
      el("td", { class: "num cpu" }, [sparkline(use.cpu, "CPU"), " " + cores(lastCpu)]),
      el("td", { class: "num mem" }, [sparkline(use.mem, "memory"), " " + bytes(lastMem)]),
      el("td", {}, [
        el("button", { class: "logs", onclick: () => showLogs(p) }, ["Logs"]), " ", del,
      ]),
    ]));
  }
  renderNodes();
}

function renderEvents() {
  const tbody = $("#events tbody");
  tbody.replaceChildren();
  const evs = [...state.events.values()].filter(inNamespace)
    .sort((a, b) => Date.parse(b.lastTimestamp || b.eventTime || b.metadata.creationTimestamp || 0) -
                    Date.parse(a.lastTimestamp || a.eventTime || a.metadata.creationTimestamp || 0))
    .slice(0, 40);
  for (const e of evs) {
    const obj = e.involvedObject || {};
    tbody.append(el("tr", {}, [
      el("td", { class: "num" }, [age(e.lastTimestamp || e.eventTime || e.metadata.creationTimestamp)]),
      el("td", { class: e.type === "Warning" ? "bad" : "" }, [e.type || ""]),
      el("td", {}, [e.reason || ""]),
      el("td", {}, [(obj.kind || "").toLowerCase() + "/" + (obj.name || "")]),
      el("td", {}, [e.message || ""]),
    ]));
  }
}

function renderNamespaces() {
  const sel = $("#namespace");
  const names = [...state.namespaces.values()].map((n) => n.metadata.name).sort();
  sel.replaceChildren(el("option", { value: "" }, ["all"]), ...names.map((n) => el("option", { value: n }, [n])));
  sel.value = state.namespace;
}

async function showLogs(p) {
  if (state.logs) state.logs.abort();
  const abort = new AbortController();
  state.logs = abort;
  $("#logs-view").hidden = false;
  $("#logs-pod").textContent = key(p);
  const pre = $("#logs");
  pre.textContent = "";
  const path = "/api/v1/namespaces/" + p.metadata.namespace + "/pods/" + p.metadata.name + "/log?follow=true&tailLines=200";
  try {
    const resp = await fetch(path, { headers: headers({ Accept: "*/*" }), signal: abort.signal });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      pre.textContent = body.message || resp.status + " " + resp.statusText;
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pre.textContent += decoder.decode(value, { stream: true });
      // Keep the view bounded and scrolled to the end.
      if (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-100000);
      pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.textContent += "\n[" + e.message + "]";
  }
}

async function pollMetrics() {
  try {
    const nodes = await api("/apis/metrics.k8s.io/v1beta1/nodes");
    state.nodeUsage.clear();
    for (const n of nodes.items || []) state.nodeUsage.set(n.metadata.name, n.usage || {});
    const pods = await api("/apis/metrics.k8s.io/v1beta1/pods");
    const seen = new Set();
    for (const p of pods.items || []) {
      const k = key(p);
      seen.add(k);
      let cpu = 0, mem = 0;
      for (const c of p.containers || []) { cpu += quantity((c.usage || {}).cpu) || 0; mem += quantity((c.usage || {}).memory) || 0; }
      const u = state.podUsage.get(k) || { cpu: [], mem: [] };
      u.cpu.push(cpu); u.mem.push(mem);
      if (u.cpu.length > SAMPLES) { u.cpu.shift(); u.mem.shift(); }
      state.podUsage.set(k, u);
    }
    for (const k of [...state.podUsage.keys()]) if (!seen.has(k)) state.podUsage.delete(k);
    renderPods();
  } catch (e) {
    if (e.message !== "unauthorized") status("metrics: " + e.message);
  }
}

async function start() {
  let who = "";
  try {
    const review = await api("/apis/authentication.k8s.io/v1/selfsubjectreviews", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview" }),
    });
    who = (((review || {}).status || {}).userInfo || {}).username || "";
  } catch (e) {
    if (e.message === "unauthorized") return;
    $("#login-error").textContent = e.message;
    showLogin();
    return;
  }
  $("#who").textContent = who ? "logged in as " + who : "";
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#logout").hidden = false;
  $("#ns-label").hidden = false;
  keep("/api/v1/namespaces", state.namespaces, renderNamespaces);
  keep("/api/v1/nodes", state.nodes, renderNodes);
  keep("/api/v1/pods", state.pods, renderPods);
  keep("/apis/apps/v1/deployments", state.deployments, renderDeployments);
  keep("/api/v1/events", state.events, renderEvents);
  pollMetrics();
  state.metricsTimer = setInterval(pollMetrics, METRICS_EVERY_MS);
  // Ages move on even when nothing changes.
  state.ageTimer = setInterval(() => { renderPods(); renderEvents(); }, 10000);
}

function showLogin() {
  $("#app-view").hidden = true;
  $("#logout").hidden = true;
  $("#ns-label").hidden = true;
  $("#login-view").hidden = false;
  $("#token").focus();
}

function logout(message) {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  for (const w of state.watches) { w.stopped = true; if (w.abort) w.abort.abort(); }
  state.watches = [];
  if (state.logs) state.logs.abort();
  clearInterval(state.metricsTimer);
  clearInterval(state.ageTimer);
  $("#login-error").textContent = message || "";
  showLogin();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token").value.trim();
    $("#token").value = "";
    sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  $("#logout").addEventListener("click", () => logout(""));
  $("#logs-close").addEventListener("click", () => {
    if (state.logs) state.logs.abort();
    $("#logs-view").hidden = true;
  });
  $("#namespace").addEventListener("change", (ev) => {
    state.namespace = ev.target.value;
    renderDeployments(); renderPods(); renderEvents();
  });
  // Behind `kubectl proxy` no token is needed: try without one first.
  start();
});
