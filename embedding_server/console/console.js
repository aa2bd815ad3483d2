/* embedding-server console. Plain JavaScript, no dependencies, no build step; served under a strict CSP (no inline
   script or style, this origin only), so every element is built with the DOM API and styled by classes (colours
   computed here are set through element.style, which CSP allows). Data comes from the server's public routes
   (/api/embed, /api/encode, /api/generate, /v1/rerank) and the console's own JSON (/ui/config, /ui/api/...). */
(function () {
  "use strict";

  const BASE = location.pathname.replace(/\/ui\/?$/, "");  // "" unless served under a path prefix
  const ORIGIN = location.origin + BASE;
  const KEY_STORE = "embedding-server.console.api-key";
  const VIEWS = ["models", "live", "playground", "code"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POLL = { config: 5000, models: 3000, live: 2000 };
  const MAX_TEXTS = 64;
  const DEFAULT_TEXTS = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Embedding models map sentences to dense vectors.",
    "Vector search ranks documents by cosine similarity.",
    "The stock market fell sharply on Monday.",
  ];
  const DEFAULT_QUERY = "How do vector databases find similar documents?";
  const DEFAULT_DOCS = [
    "Vector search engines rank documents by cosine similarity to the query embedding.",
    "The quick brown fox jumps over the lazy dog.",
    "Approximate nearest neighbour indexes such as HNSW make similarity search fast.",
    "Bread is made from flour, water, yeast and salt.",
  ];

  const state = {
    config: null, models: null, view: null, locked: false, timers: {},
    run: null,  // the playground's last run: what the Code view shows
  };

  // ----- DOM helpers ------------------------------------------------------------------------------------------------
  const $ = (selector, root) => (root || document).querySelector(selector);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    append(node, children);
    return node;
  }

  function setProps(node, props) {
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else if (name === "data") for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      else if (name === "on") for (const [k, v] of Object.entries(value)) node.addEventListener(k, v);
      else if (name in node && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  // ----- formatting ---------------------------------------------------------------------------------------------------
  const nf = new Intl.NumberFormat("en-US");
  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return digits === undefined ? nf.format(value) : value.toFixed(digits);
  }
  function rate(value) {
    if (value === null || value === undefined) return "–";
    return value >= 100 ? nf.format(Math.round(value)) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }
  function bytes(n) {
    if (!n) return "0 MB";
    if (n >= 2 ** 30) return (n / 2 ** 30).toFixed(2) + " GB";
    return (n / 2 ** 20).toFixed(n >= 100 * 2 ** 20 ? 0 : 1) + " MB";
  }
  function ms(value) { return value === null || value === undefined ? "–" : value >= 100 ? value.toFixed(0) : value.toFixed(1); }
  function until(iso, now) {
    if (!iso) return "";
    const seconds = Math.round((Date.parse(iso) - now * 1000) / 1000);
    if (new Date(iso).getUTCFullYear() > 2200) return "never";
    if (seconds <= 0) return "now";
    const m = Math.floor(seconds / 60), s = seconds % 60, h = Math.floor(m / 60);
    return "in " + (h ? h + " h " + (m % 60) + " min" : m ? m + " min " + s + " s" : s + " s");
  }
  function clock(unixSeconds) { return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false }); }
  function shorten(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }
  function visible(token) { return token.replace(/\s/g, "␣") || "∅"; }  // a token's text, its spaces shown

  // ----- API --------------------------------------------------------------------------------------------------------
  class ApiFailure extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function apiKey() { try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; } }
  function setKey(key) {
    try { if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE); } catch (e) { /* storage off */ }
  }

  function messageOf(data, status) {
    if (data && typeof data === "object") {
      const e = data.error;
      if (e && typeof e === "object" && e.message) return e.message;
      if (typeof e === "string") return e;
      if (typeof data.detail === "string") return data.detail;
    }
    return typeof data === "string" && data ? data : "HTTP " + status;
  }

  async function api(path, body) {
    if (state.locked && path !== "/ui/config") throw new ApiFailure(401, "an API key is needed");
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = apiKey();
    if (key) headers.Authorization = "Bearer " + key;
    const response = await fetch(BASE + path, {
      method: body === undefined ? "GET" : "POST", headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
    if (response.status === 401) {
      lock(key ? "The server refused this key: " + messageOf(data, 401) : "");
      throw new ApiFailure(401, messageOf(data, 401));
    }
    if (!response.ok) throw new ApiFailure(response.status, messageOf(data, response.status));
    return data;
  }

  function notice(message) {
    const node = $("#notice");
    node.textContent = message || "";
    node.hidden = !message;
  }

  // ----- the API key --------------------------------------------------------------------------------------------------
  function lock(message) {
    setKey("");
    state.locked = true;
    $("#key-view").hidden = false;
    $("#key-error").textContent = message || "";
    $("#forget-key").hidden = true;
    for (const view of VIEWS) $("#view-" + view).hidden = true;
    $("#api-key").focus();
  }

  async function unlock(key) {
    setKey(key);
    state.locked = false;
    $("#key-error").textContent = "";
    try {
      await refreshModels();
    } catch (e) {
      if (!state.locked) $("#key-error").textContent = e.message;
      return;
    }
    $("#key-view").hidden = true;
    $("#forget-key").hidden = !state.config.api_key_required;
    $("#api-key").value = "";
    show(viewFromHash());
  }

  // ----- views and polling ---------------------------------------------------------------------------------------
  function viewFromHash() {
    const name = location.hash.replace(/^#/, "");
    return VIEWS.includes(name) ? name : "models";
  }

  function show(view) {
    state.view = view;
    for (const name of VIEWS) {
      const tab = $("#tab-" + name), panel = $("#view-" + name);
      const selected = name === view;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      panel.hidden = state.locked || !selected;
    }
    if (state.locked) return;
    if (view === "models") refreshModels().catch(report);
    if (view === "live") refreshLive().catch(report);
    if (view === "playground") fillModelSelect();
    if (view === "code") renderCode();
  }

  function report(error) {
    if (error instanceof ApiFailure && error.status === 401) return;  // the key form says it
    notice(error.message || String(error));
  }

  function every(name, ms, work) {
    clearInterval(state.timers[name]);
    state.timers[name] = setInterval(() => {
      if (document.hidden) return;
      work().catch((e) => { if (!(e instanceof ApiFailure && e.status === 401)) console.warn(name, e.message); });
    }, ms);
  }

  function setupTabs() {
    const tabs = VIEWS.map((v) => $("#tab-" + v));
    for (const tab of tabs) {
      tab.addEventListener("click", () => { location.hash = tab.dataset.view; });
      tab.addEventListener("keydown", (event) => {
        const i = tabs.indexOf(tab);
        const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
        if (next === undefined) return;
        event.preventDefault();
        const target = tabs[(next + tabs.length) % tabs.length];
        target.focus();
        location.hash = target.dataset.view;
      });
    }
    window.addEventListener("hashchange", () => show(viewFromHash()));
  }

  // ----- health and version (open: no key needed) ----------------------------------------------------------------
  async function refreshConfig() {
    const config = await api("/ui/config");
    state.config = config;
    $("#version").textContent = "v" + config.version;
    const pill = $("#health");
    pill.textContent = "health: " + config.health;
    pill.className = "pill " + (config.health === "ok" ? "ok" : config.health === "failed" ? "bad" : "warn");
    return config;
  }

  // ----- Models -------------------------------------------------------------------------------------------------------
  async function refreshModels() {
    const data = await api("/ui/api/models");
    state.models = data;
    renderModels();
    fillModelSelect();
    return data;
  }

  function renderModels() {
    const data = state.models;
    if (!data) return;
    renderMemory(data);
    const body = clear($("#models-table tbody"));
    for (const m of data.models) {
      const busy = m.state === "loading" || m.state === "unloading";
      const memory = m.loaded ? bytes(m.resident_bytes) : m.estimated_bytes ? "≈ " + bytes(m.estimated_bytes) + " to load" : "";
      body.append(el("tr", { data: { model: m.name, state: m.state } },
        el("th", { scope: "row" }, el("span", { class: "mono", text: m.name }),
          m.default ? [" ", el("span", { class: "tag", text: "default" })] : null,
          m.aliases.map((a) => [" ", el("span", { class: "tag", title: "alias", text: "= " + a })])),
        el("td", { data: { label: "Kind" }, text: m.kind }),
        el("td", { class: "num", data: { label: "Dimension" }, text: m.dimension ? num(m.dimension) : "–" }),
        el("td", { class: "num", data: { label: "Context" }, text: m.context_length ? num(m.context_length) : "–" }),
        el("td", { data: { label: "Pooling" }, text: m.pooling || (m.loaded ? "–" : "(on load)") }),
        el("td", { data: { label: "dtype" }, text: m.dtype }),
        el("td", { data: { label: "Outputs" } }, el("span", {}, m.outputs.map((o) => el("span", { class: "tag", text: o })))),
        el("td", { class: "state-" + m.state, data: { label: "State" }, text: m.state }),
        el("td", { class: "num", data: { label: "Memory" }, text: memory }),
        el("td", { data: { label: "Expires" }, text: m.loaded ? until(m.expires_at, data.now) || "never" : "" }),
        el("td", { data: { label: "" } }, el("div", { class: "actions" },
          el("button", { type: "button", text: m.loaded ? "Keep" : "Load", disabled: busy, "aria-label": (m.loaded ? "Keep " : "Load ") + m.name,
            data: { action: "load", model: m.name }, on: { click: () => loadModel(m.name, false) } }),
          el("button", { type: "button", text: "Unload", disabled: !m.loaded || busy, "aria-label": "Unload " + m.name,
            data: { action: "unload", model: m.name }, on: { click: () => loadModel(m.name, true) } })))));
    }
    $("#models-status").textContent = data.models.length + " models, " + data.loaded + " loaded" +
      (data.max_loaded_models ? " (at most " + data.max_loaded_models + " at once)" : "") +
      "; models loaded on demand stay " + data.keep_alive + " after their last request.";
  }

  function renderMemory(data) {
    const mem = data.memory, box = clear($("#memory"));
    const rest = Math.max(0, mem.resident_bytes - mem.models_bytes);
    if (mem.limit_bytes) {
      const share = (n) => Math.min(100, (100 * n) / mem.limit_bytes);
      box.append(el("div", {}, el("b", { text: "Memory: " + bytes(mem.resident_bytes) }),
        " of the " + bytes(mem.limit_bytes) + " limit (EMBED_MEMORY_LIMIT_MB) in use: models " + bytes(mem.models_bytes) +
        ", the rest of the process " + bytes(rest) + "; " + bytes(Math.max(0, mem.limit_bytes - mem.resident_bytes)) + " free."));
      const meter = el("div", { class: "meter", role: "meter", "aria-label": "memory used of the limit",
        "aria-valuemin": "0", "aria-valuemax": String(mem.limit_bytes), "aria-valuenow": String(mem.resident_bytes) },
      el("span", { class: "models", title: "models " + bytes(mem.models_bytes) }),
      el("span", { class: "rest", title: "rest of the process " + bytes(rest) }));
      meter.children[0].style.width = share(mem.models_bytes) + "%";
      meter.children[1].style.width = share(rest) + "%";
      box.append(meter);
    } else {
      box.append(el("div", {}, el("b", { text: "Memory: " + bytes(mem.resident_bytes) }),
        " resident (models " + bytes(mem.models_bytes) + "); no limit set (EMBED_MEMORY_LIMIT_MB=0)."));
    }
  }

  async function loadModel(name, unload) {
    const body = { model: name };
    const keep = $("#keep-alive").value;
    if (unload) body.keep_alive = 0;
    else if (keep) body.keep_alive = keep === "-1" ? -1 : keep;
    const status = $("#models-status");
    for (const b of document.querySelectorAll('#models-table button[data-model="' + CSS.escape(name) + '"]')) b.disabled = true;
    status.textContent = (unload ? "Unloading " : "Loading ") + name + "…";
    try {
      const started = performance.now();
      const answer = await api("/api/generate", body);
      status.textContent = name + ": " + answer.done_reason + " (" + ms(performance.now() - started) + " ms)";
      notice("");
    } catch (e) {
      report(e);
    }
    await refreshModels().catch(report);
  }

  // ----- Live -----------------------------------------------------------------------------------------------------------
  async function refreshLive() {
    const data = await api("/ui/api/stats");
    renderLive(data);
    return data;
  }

  function spark(series, opts) {
    // series: arrays of numbers or nulls (gaps), drawn on one scale; opts.classes: one class per series
    const W = 200, H = 48, pad = 3;
    const all = series.flat().filter((v) => v !== null && v !== undefined);
    const max = Math.max(opts.min || 0, ...all, 1e-9);
    const n = Math.max(2, ...series.map((s) => s.length));
    const x = (i) => pad + (i * (W - 2 * pad)) / (n - 1);
    const y = (v) => H - pad - (v / max) * (H - 2 * pad);
    const node = svg("svg", { class: "spark", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img",
      "aria-label": opts.label });
    node.append(svg("title", {}, opts.label));
    series.forEach((values, k) => {
      const cls = opts.classes[k];
      let run = [];
      const flush = () => {
        if (run.length === 1) node.append(svg("circle", { class: cls === "line" ? "dot" : "dot2", cx: run[0][0], cy: run[0][1], r: 1.8 }));
        else if (run.length > 1) node.append(svg("polyline", { class: cls, points: run.map((p) => p.join(",")).join(" ") }));
        run = [];
      };
      values.forEach((v, i) => {
        if (v === null || v === undefined) flush();
        else run.push([x(i).toFixed(1), y(v).toFixed(1)]);
      });
      flush();
    });
    return node;
  }

  function renderLive(data) {
    const pts = data.points, last = pts[pts.length - 1] || {};
    $("#live-window").textContent = "Last " + Math.round((data.now - data.since) / 60 * 10) / 10 + " min (since " + clock(data.since) +
      "), sampled every " + data.interval_s + " s: " + num(data.totals.requests) + " requests, " + num(data.totals.inputs) +
      " inputs, " + num(data.totals.tokens) + " tokens.";
    const queued = Object.entries(data.queue).map(([m, n]) => m + " " + n).join(", ");
    const cards = [
      ["requests", "Requests / s", rate(last.requests_per_s), [pts.map((p) => p.requests_per_s), pts.map((p) => p.failed_per_s)],
        last.failed_per_s ? rate(last.failed_per_s) + " failed / s" : "failed / s in orange"],
      ["inputs", "Inputs / s", rate(last.inputs_per_s), [pts.map((p) => p.inputs_per_s)], "texts embedded or scored"],
      ["tokens", "Tokens / s", rate(last.tokens_per_s), [pts.map((p) => p.tokens_per_s)], "through the forward passes"],
      ["queue", "Queue depth", num(Object.values(data.queue).reduce((a, b) => a + b, 0)), [pts.map((p) => p.queue)], queued ? "inputs waiting: " + queued : "inputs waiting"],
      ["memory", "Resident memory", bytes(data.resident_bytes), [pts.map((p) => p.resident_bytes)], "of the server process"],
    ];
    const box = clear($("#live-cards"));
    for (const [id, label, value, series, note] of cards) {
      box.append(el("div", { class: "card", data: { metric: id } },
        el("div", { class: "label", text: label }),
        el("div", { class: "value", text: value, data: { value: id } }),
        spark(series, { label: label + " over the window", classes: ["line", "line2"] }),
        el("div", { class: "label", text: note })));
    }
    const body = clear($("#routes-table tbody"));
    if (!data.routes.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No requests in the window yet." })));
    for (const r of data.routes) {
      body.append(el("tr", { data: { route: r.route, requests: r.requests } },
        el("th", { scope: "row", class: "mono", text: r.route }),
        el("td", { class: "num", text: num(r.requests) }),
        el("td", { class: "num", text: num(r.failed) }),
        el("td", { class: "num", text: ms(r.p50_ms) }),
        el("td", { class: "num", text: ms(r.p95_ms) }),
        el("td", {}, spark([r.points.map((p) => p.p50_ms), r.points.map((p) => p.p95_ms)],
          { label: "p50 (blue) and p95 (orange) latency of " + r.route + " per interval", classes: ["line", "line2"] }))));
    }
  }

  // ----- Playground ---------------------------------------------------------------------------------------------------
  function modelInfo(name) {
    return state.models && state.models.models.find((m) => m.name === name);
  }

  function fillModelSelect() {
    const select = $("#play-model");
    if (!state.models) return;
    const current = select.value || state.models.default_model;
    const names = state.models.models.map((m) => m.kind + ":" + m.name).join("|");
    if (select.dataset.names !== names) {
      clear(select);
      for (const [kind, label] of [["embedding", "Embedding models"], ["reranker", "Rerankers"]]) {
        const group = el("optgroup", { label });
        for (const m of state.models.models.filter((x) => x.kind === kind)) group.append(el("option", { value: m.name, text: m.name }));
        if (group.children.length) select.append(group);
      }
      select.dataset.names = names;
      select.value = modelInfo(current) ? current : state.models.default_model;
    }
    describeModel();
  }

  function describeModel() {
    const m = modelInfo($("#play-model").value);
    const rerank = !!m && m.kind === "reranker";
    $("#embed-inputs").hidden = rerank;
    $("#rerank-inputs").hidden = !rerank;
    $("#play-model-info").textContent = !m ? "" : m.kind === "reranker" ? "cross-encoder · context " + m.context_length :
      num(m.dimension) + " dimensions · context " + num(m.context_length) + (m.pooling ? " · " + m.pooling + " pooling" : "") +
      " · outputs " + m.outputs.join(", ") + (m.loaded ? "" : " · loads on first use");
  }

  function lines(text) { return text.split("\n").map((t) => t.trim()).filter(Boolean); }

  async function runPlayground(event) {
    if (event) event.preventDefault();
    const model = $("#play-model").value, m = modelInfo(model);
    if (!m) return;
    const button = $("#play-run"), status = $("#play-status");
    button.disabled = true;
    status.textContent = "Running…";
    notice("");
    try {
      if (m.kind === "reranker") await runRerank(m);
      else await runEmbed(m);
      status.textContent = "";
    } catch (e) {
      status.textContent = "";
      report(e);
    } finally {
      button.disabled = false;
    }
    refreshModels().catch(() => {});
  }

  async function runEmbed(m) {
    const texts = lines($("#play-texts").value);
    if (!texts.length) throw new Error("Type at least one text.");
    if (texts.length > MAX_TEXTS) throw new Error("At most " + MAX_TEXTS + " texts here.");
    const started = performance.now();
    const embed = await api("/api/embed", { model: m.name, input: texts });
    const roundTrip = performance.now() - started;
    const extras = m.outputs.filter((o) => o === "sparse" || o === "colbert");
    const [tokens, encoded] = await Promise.all([
      api("/ui/api/tokenize", { model: m.name, input: texts }),
      extras.length ? api("/api/encode", { model: m.name, input: texts, outputs: extras, sparse_format: "indices" }) : null,
    ]);
    state.run = { mode: "embed", model: m.name, texts, extras };
    renderEmbed(m, texts, embed, roundTrip, tokens, encoded);
  }

  function cosineMatrix(vectors) {
    const norms = vectors.map((v) => Math.sqrt(v.reduce((a, x) => a + x * x, 0)) || 1);
    return vectors.map((a, i) => vectors.map((b, j) => {
      let dot = 0;
      for (let k = 0; k < a.length; k++) dot += a[k] * b[k];
      return dot / (norms[i] * norms[j]);
    }));
  }

  function heatColor(value) {
    // -1 .. 1: blue .. white .. red (light backgrounds: the cell text stays dark)
    const t = Math.max(-1, Math.min(1, value));
    const hue = t >= 0 ? 8 : 215, light = 97 - Math.abs(t) * 45;
    return "hsl(" + hue + ", 80%, " + light.toFixed(1) + "%)";
  }

  function pca2(vectors) {
    // The vectors' coordinates on their first two principal axes: the eigenvectors of the centred Gram matrix
    // (n x n, Jacobi rotations), scaled by the square roots of their eigenvalues. Each axis' sign is chosen so that
    // its largest coordinate (in absolute value) is positive.
    const n = vectors.length, d = vectors[0].length;
    const mean = new Array(d).fill(0);
    for (const v of vectors) for (let k = 0; k < d; k++) mean[k] += v[k] / n;
    const c = vectors.map((v) => v.map((x, k) => x - mean[k]));
    const a = c.map((u) => c.map((w) => { let s = 0; for (let k = 0; k < d; k++) s += u[k] * w[k]; return s; }));
    const vecs = a.map((_, i) => a.map((__, j) => (i === j ? 1 : 0)));
    for (let sweep = 0; sweep < 100; sweep++) {
      let off = 0;
      for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p][q] * a[p][q];
      if (off < 1e-22) break;
      for (let p = 0; p < n; p++) {
        for (let q = p + 1; q < n; q++) {
          if (Math.abs(a[p][q]) < 1e-300) continue;
          const theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
          const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
          const cs = 1 / Math.sqrt(t * t + 1), sn = t * cs;
          for (let k = 0; k < n; k++) {
            const akp = a[k][p], akq = a[k][q];
            a[k][p] = cs * akp - sn * akq; a[k][q] = sn * akp + cs * akq;
          }
          for (let k = 0; k < n; k++) {
            const apk = a[p][k], aqk = a[q][k];
            a[p][k] = cs * apk - sn * aqk; a[q][k] = sn * apk + cs * aqk;
          }
          for (let k = 0; k < n; k++) {
            const vkp = vecs[k][p], vkq = vecs[k][q];
            vecs[k][p] = cs * vkp - sn * vkq; vecs[k][q] = sn * vkp + cs * vkq;
          }
        }
      }
    }
    const order = a.map((row, i) => [row[i], i]).sort((x, y) => y[0] - x[0]);
    const axes = [0, 1].map((r) => {
      const [value, i] = order[r] || [0, 0];
      const scale = Math.sqrt(Math.max(0, value));
      const coords = vecs.map((row) => (r < order.length ? row[i] * scale : 0));
      const big = coords.reduce((best, x) => (Math.abs(x) > Math.abs(best) ? x : best), 0);
      return big < 0 ? coords.map((x) => -x) : coords;
    });
    return { points: vectors.map((_, i) => [axes[0][i], axes[1][i]]), variance: order.slice(0, 2).map((o) => Math.max(0, o[0])),
      total: order.reduce((s, o) => s + Math.max(0, o[0]), 0) };
  }

  function pcaChart(vectors, texts) {
    const { points, variance, total } = pca2(vectors);
    const S = 320, pad = 30;
    const span = Math.max(1e-12, ...points.map((p) => Math.max(Math.abs(p[0]), Math.abs(p[1]))));
    const px = (x) => S / 2 + (x / span) * (S / 2 - pad);
    const py = (y) => S / 2 - (y / span) * (S / 2 - pad);
    const explained = total ? variance.map((v) => Math.round((100 * v) / total)) : [0, 0];
    const chart = svg("svg", { class: "pca", viewBox: "0 0 " + S + " " + S, role: "img",
      "aria-label": "2-D PCA projection of the vectors (" + explained[0] + "% and " + explained[1] + "% of the variance)" },
    svg("line", { class: "axis", x1: pad / 2, y1: S / 2, x2: S - pad / 2, y2: S / 2 }),
    svg("line", { class: "axis", x1: S / 2, y1: pad / 2, x2: S / 2, y2: S - pad / 2 }));
    const labels = [];  // label positions so far: a label that would cover another moves down a line
    points.forEach(([x, y], i) => {
      const lx = px(x) + 7;
      let ly = py(y) + 4;
      while (labels.some(([ox, oy]) => Math.abs(ox - lx) < 26 && Math.abs(oy - ly) < 11)) ly += 12;
      labels.push([lx, ly]);
      chart.append(svg("g", { "data-index": i, "data-x": x, "data-y": y },
        svg("title", {}, "T" + (i + 1) + ": " + texts[i]),
        svg("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 5 }),
        svg("text", { x: lx.toFixed(1), y: ly.toFixed(1) }, "T" + (i + 1))));
    });
    return el("figure", { class: "pca-figure" }, chart,
      el("figcaption", { class: "muted", text: "PCA: first two components, " + explained[0] + "% and " + explained[1] + "% of the variance." }));
  }

  function heatmap(matrix, texts) {
    const table = el("table", { class: "heat", id: "heatmap" },
      el("caption", { class: "sr-only", text: "Cosine similarity of every pair of texts" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, el("span", { class: "sr-only", text: "text" })),
        texts.map((t, j) => el("th", { scope: "col", title: t, text: "T" + (j + 1) })))));
    const body = el("tbody");
    matrix.forEach((row, i) => {
      const tr = el("tr", {}, el("th", { scope: "row", title: texts[i], text: "T" + (i + 1) + " " + shorten(texts[i], 28) }));
      row.forEach((value, j) => {
        const cell = el("td", { text: value.toFixed(3), title: "T" + (i + 1) + " · T" + (j + 1) + ": " + value.toFixed(6),
          data: { i, j, value: String(value) } });
        cell.style.backgroundColor = heatColor(value);
        tr.append(cell);
      });
      body.append(tr);
    });
    table.append(body);
    return table;
  }

  function renderEmbed(m, texts, embed, roundTrip, tokens, encoded) {
    const vectors = embed.embeddings, ctx = tokens.context_length;
    const counts = tokens.tokens.map((row) => Math.min(row.length, ctx));
    const out = clear($("#play-results"));
    out.append(el("div", { class: "summary", id: "play-summary" },
      el("span", {}, el("b", { text: num(texts.length) }), " texts"),
      el("span", {}, el("b", { text: num(vectors[0].length) }), " dimensions"),
      el("span", {}, el("b", { id: "total-tokens", text: num(embed.prompt_eval_count) }), " tokens"),
      el("span", {}, "server ", el("b", { text: ms(embed.total_duration / 1e6) }), " ms",
        embed.load_duration ? " (load " + ms(embed.load_duration / 1e6) + " ms)" : ""),
      el("span", {}, "round trip ", el("b", { text: ms(roundTrip) }), " ms")));
    out.append(el("div", { class: "results-grid" },
      el("div", {}, el("h3", { text: "Cosine similarity" }), el("div", { class: "scroll" }, heatmap(cosineMatrix(vectors), texts))),
      el("div", {}, el("h3", { text: "2-D projection" }), vectors.length >= 2 ? pcaChart(vectors, texts) :
        el("p", { class: "muted", text: "Two texts or more for a projection." }))));
    const rows = el("tbody");
    texts.forEach((t, i) => rows.append(el("tr", { data: { index: i, tokens: counts[i] } },
      el("th", { scope: "row", text: "T" + (i + 1) }), el("td", { text: t }),
      el("td", { class: "num", text: num(counts[i]) + (tokens.tokens[i].length > ctx ? " (cut from " + num(tokens.tokens[i].length) + ")" : "") }))));
    out.append(el("h3", { text: "Tokens" }), el("div", { class: "scroll" }, el("table", { class: "grid", id: "token-counts" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "#" }), el("th", { scope: "col", text: "Text" }),
        el("th", { scope: "col", class: "num", text: "Tokens (special included)" }))), rows)));
    if (encoded && encoded.sparse) out.append(sparseView(texts, tokens, encoded.sparse));
    if (encoded && encoded.colbert) out.append(colbertView(texts, tokens, encoded.colbert));
  }

  function sparseView(texts, tokens, sparse) {
    const weights = sparse.map((s) => new Map(s.indices.map((id, k) => [id, s.values[k]])));
    const max = Math.max(1e-9, ...sparse.flatMap((s) => s.values));
    const box = el("section", { id: "sparse", "aria-labelledby": "sparse-title" },
      el("h3", { id: "sparse-title", text: "Sparse (lexical) weights" }),
      el("p", { class: "muted", text: "Each token shaded by its weight in the text's sparse vector (BGE-M3's lexical matching); hover or focus a token for its weight." }));
    texts.forEach((t, i) => {
      const row = el("div", { class: "tokens", data: { text: i } });
      for (const tok of tokens.tokens[i].slice(0, tokens.context_length)) {
        const w = weights[i].get(tok.id) || 0;
        const chip = el("span", { class: "tok" + (tok.special ? " special" : "") + (w > 0 ? " weighted" : ""), tabindex: "0",
          title: visible(tok.text) + ": " + w.toFixed(4), text: visible(tok.text), data: { id: tok.id, weight: w } });
        if (w > 0) chip.style.backgroundColor = "hsl(35, 95%, " + (90 - 38 * (w / max)).toFixed(1) + "%)";  // opaque: dark text reads on it
        row.append(chip);
      }
      const top = [...weights[i].entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
      const byId = new Map(tokens.tokens[i].map((tok) => [tok.id, tok.text]));
      box.append(el("div", { class: "text-block" }, el("div", { class: "muted", text: "T" + (i + 1) + " · top: " +
        top.map(([id, w]) => visible(byId.get(id) || String(id)) + " " + w.toFixed(3)).join(", ") }), row));
    });
    return box;
  }

  function colbertView(texts, tokens, colbert) {
    const box = el("section", { id: "colbert", "aria-labelledby": "colbert-title" },
      el("h3", { id: "colbert-title", text: "ColBERT token matches" }));
    if (texts.length < 2) { box.append(el("p", { class: "muted", text: "Two texts or more: a query and a passage." })); return box; }
    const pick = (id, label, selected) => {
      const select = el("select", { id });
      texts.forEach((t, i) => select.append(el("option", { value: String(i), text: "T" + (i + 1) + " " + shorten(t, 40) })));
      select.value = String(selected);
      return [el("label", { for: id, text: label }), select];
    };
    const result = el("div");
    const controls = el("div", { class: "row" }, pick("colbert-query", "Query", 0), pick("colbert-passage", "Passage", 1));
    const draw = () => {
      const q = Number($("#colbert-query", box).value), p = Number($("#colbert-passage", box).value);
      clear(result).append(colbertMatches(texts, tokens, colbert, q, p));
    };
    controls.addEventListener("change", draw);
    box.append(el("p", { class: "muted", text: "For each query token, the passage token whose ColBERT vector is closest (MaxSim); the score is their mean, as FlagEmbedding's colbert_score." }), controls, result);
    setTimeout(draw, 0);
    return box;
  }

  function colbertMatches(texts, tokens, colbert, q, p) {
    const Q = colbert[q], P = colbert[p];
    const qTok = tokens.tokens[q].slice(1, 1 + Q.length), pTok = tokens.tokens[p].slice(1, 1 + P.length);
    const best = Q.map((u, i) => {
      let top = -Infinity, at = 0;
      P.forEach((v, j) => { let s = 0; for (let k = 0; k < u.length; k++) s += u[k] * v[k]; if (s > top) { top = s; at = j; } });
      return { i, j: at, sim: top };
    });
    const score = best.reduce((s, b) => s + b.sim, 0) / Math.max(1, best.length);
    const rows = el("tbody");
    for (const b of [...best].sort((x, y) => y.sim - x.sim).slice(0, 10)) {
      rows.append(el("tr", { data: { query: b.i, passage: b.j, sim: b.sim } },
        el("td", { class: "mono", text: qTok[b.i] ? visible(qTok[b.i].text) : "#" + b.i }),
        el("td", { class: "mono", text: pTok[b.j] ? visible(pTok[b.j].text) : "#" + b.j }),
        el("td", { class: "num", text: b.sim.toFixed(4) })));
    }
    return el("div", {}, el("p", {}, "ColBERT score of T" + (p + 1) + " for T" + (q + 1) + ": ",
      el("b", { id: "colbert-score", text: score.toFixed(4), data: { score: String(score) } })),
    el("div", { class: "scroll" }, el("table", { class: "grid", id: "colbert-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Query token" }), el("th", { scope: "col", text: "Best passage token" }),
        el("th", { scope: "col", class: "num", text: "Similarity" }))), rows)));
  }

  async function runRerank(m) {
    const query = $("#play-query").value.trim(), docs = lines($("#play-docs").value);
    if (!query || !docs.length) throw new Error("Type a query and at least one document.");
    const started = performance.now();
    const answer = await api("/v1/rerank", { model: m.name, query, documents: docs });
    const roundTrip = performance.now() - started;
    state.run = { mode: "rerank", model: m.name, query, docs };
    const out = clear($("#play-results"));
    out.append(el("div", { class: "summary", id: "play-summary" },
      el("span", {}, el("b", { text: num(docs.length) }), " documents"),
      el("span", {}, el("b", { text: num(answer.usage.total_tokens) }), " tokens"),
      el("span", {}, "round trip ", el("b", { text: ms(roundTrip) }), " ms")));
    const top = Math.max(1e-9, ...answer.results.map((r) => r.relevance_score));
    const rows = el("tbody");
    answer.results.forEach((r, rank) => {
      const bar = el("div", { class: "bar" });
      bar.style.width = Math.max(1, (100 * r.relevance_score) / top).toFixed(1) + "%";
      rows.append(el("tr", { data: { index: r.index, score: String(r.relevance_score) } },
        el("td", { class: "num", text: String(rank + 1) }), el("td", { class: "num", text: "D" + (r.index + 1) }),
        el("td", { class: "num", text: r.relevance_score.toFixed(4) }), el("td", { class: "bar-cell" }, bar),
        el("td", { text: docs[r.index] })));
    });
    out.append(el("h3", { text: "Documents, best first" }), el("div", { class: "scroll" }, el("table", { class: "grid", id: "rerank-table" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "num", text: "Rank" }), el("th", { scope: "col", class: "num", text: "Doc" }),
        el("th", { scope: "col", class: "num", text: "Score" }), el("th", { scope: "col", text: "" }), el("th", { scope: "col", text: "Document" }))), rows)));
  }

  // ----- Code ---------------------------------------------------------------------------------------------------------
  function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }
  function py(value) { return JSON.stringify(value); }  // JSON strings and lists of them are Python literals too
  function pyList(items) { return "[" + items.map(py).join(", ") + "]"; }

  function curl(path, body) {
    const key = state.config && state.config.api_key_required;
    return ["curl -s " + ORIGIN + path + " \\", "  -H 'Content-Type: application/json' \\",
      key ? '  -H "Authorization: Bearer $EMBED_API_KEY" \\' : null, "  -d " + shellQuote(JSON.stringify(body))]
      .filter(Boolean).join("\n");
  }

  function snippets() {
    const key = state.config && state.config.api_key_required;
    const run = state.run || currentForm();
    if (!run) return [];
    const m = modelInfo(run.model) || { name: run.model, outputs: ["dense"] };
    const isDefault = state.models && state.models.default_model === run.model;
    const rerankers = state.models ? state.models.models.filter((x) => x.kind === "reranker") : [];
    const out = [];
    const imp = key ? "import os\n" : "";
    if (run.mode === "embed") {
      const t = run.texts;
      out.push({ id: "curl-ollama", title: "curl · Ollama /api/embed", lang: "sh", code: curl("/api/embed", { model: run.model, input: t }) });
      out.push({ id: "curl-openai", title: "curl · OpenAI /v1/embeddings", lang: "sh", code: curl("/v1/embeddings", { model: run.model, input: t }) });
      if (isDefault) out.push({ id: "curl-tei", title: "curl · TEI /embed", lang: "sh", code: curl("/embed", { inputs: t }) });
      out.push({ id: "py-openai", title: "Python · openai", lang: "python", code: imp + "from openai import OpenAI\n\n" +
        "client = OpenAI(base_url=" + py(ORIGIN + "/v1") + ", api_key=" + (key ? 'os.environ["EMBED_API_KEY"]' : '"unused"') + ")\n" +
        "response = client.embeddings.create(model=" + py(run.model) + ", input=" + pyList(t) + ")\n" +
        "vectors = [item.embedding for item in response.data]\n" +
        'print(len(vectors), "vectors of", len(vectors[0]), "dimensions")' });
      out.push({ id: "py-ollama", title: "Python · ollama", lang: "python", code: imp + "from ollama import Client\n\n" +
        "client = Client(host=" + py(ORIGIN) + (key ? ', headers={"Authorization": "Bearer " + os.environ["EMBED_API_KEY"]}' : "") + ")\n" +
        "response = client.embed(model=" + py(run.model) + ", input=" + pyList(t) + ")\n" +
        "vectors = response.embeddings\n" +
        'print(len(vectors), "vectors of", len(vectors[0]), "dimensions")' });
      if (isDefault) {
        out.push({ id: "py-hf", title: "Python · huggingface_hub (TEI)", lang: "python", code: imp + "from huggingface_hub import InferenceClient\n\n" +
          "client = InferenceClient(model=" + py(ORIGIN) + (key ? ', api_key=os.environ["EMBED_API_KEY"]' : "") + ")\n" +
          "vectors = client.feature_extraction(" + pyList(t) + ").tolist()\n" +
          'print(len(vectors), "vectors of", len(vectors[0]), "dimensions")' });
      } else {
        out.push({ id: "py-hf", title: "Python · huggingface_hub (TEI)", note: "TEI's routes, which huggingface_hub's InferenceClient calls, serve the default model (" +
          (state.models ? state.models.default_model : "EMBED_MODEL") + "); choose it to see this client, or use the Ollama or OpenAI routes above for " + run.model + "." });
      }
      const extras = m.outputs.filter((o) => o === "sparse" || o === "colbert");
      if (extras.length) {
        const body = { model: run.model, input: t, outputs: ["dense"].concat(extras), sparse_tokens: extras.includes("sparse") };
        out.push({ id: "curl-encode", title: "curl · dense, sparse and ColBERT in one pass (/api/encode)", lang: "sh", code: curl("/api/encode", body) });
        out.push({ id: "py-encode", title: "Python · requests /api/encode", lang: "python", code: imp + "import requests\n\n" +
          "response = requests.post(" + py(ORIGIN + "/api/encode") + ", json={\"model\": " + py(run.model) + ", \"input\": " + pyList(t) +
          ", \"outputs\": " + pyList(body.outputs) + (body.sparse_tokens ? ', "sparse_tokens": True' : "") + "}" +
          (key ? ', headers={"Authorization": "Bearer " + os.environ["EMBED_API_KEY"]}' : "") + ")\n" +
          "response.raise_for_status()\nresult = response.json()\nvectors = result[\"dense\"]\n" +
          (body.sparse_tokens ? 'print(result["sparse_tokens"][0])' : 'print(len(result["colbert"][0]), "ColBERT vectors in the first text")') });
      }
    } else {
      out.push({ id: "curl-rerank", title: "curl · /v1/rerank (Cohere, Jina, vLLM shape)", lang: "sh",
        code: curl("/v1/rerank", { model: run.model, query: run.query, documents: run.docs }) });
      if (isDefault || rerankers.length === 1) {
        out.push({ id: "curl-tei-rerank", title: "curl · TEI /rerank", lang: "sh", code: curl("/rerank", { query: run.query, texts: run.docs }) });
      }
      out.push({ id: "py-cohere", title: "Python · cohere", lang: "python", code: imp + "import cohere\n\n" +
        "client = cohere.ClientV2(base_url=" + py(ORIGIN) + ", api_key=" + (key ? 'os.environ["EMBED_API_KEY"]' : '"unused"') + ")\n" +
        "response = client.rerank(model=" + py(run.model) + ", query=" + py(run.query) + ", documents=" + pyList(run.docs) + ")\n" +
        "ranking = [(r.index, r.relevance_score) for r in response.results]\nprint(ranking)" });
      out.push({ id: "py-rerank", title: "Python · requests /v1/rerank", lang: "python", code: imp + "import requests\n\n" +
        "response = requests.post(" + py(ORIGIN + "/v1/rerank") + ", json={\"model\": " + py(run.model) + ", \"query\": " + py(run.query) +
        ", \"documents\": " + pyList(run.docs) + "}" + (key ? ', headers={"Authorization": "Bearer " + os.environ["EMBED_API_KEY"]}' : "") + ")\n" +
        "response.raise_for_status()\nranking = [(r[\"index\"], r[\"relevance_score\"]) for r in response.json()[\"results\"]]\nprint(ranking)" });
    }
    out.push({ id: "curl-load", title: "curl · load " + run.model + " and keep it 30 minutes (Ollama)", lang: "sh",
      code: curl("/api/generate", { model: run.model, keep_alive: "30m" }) });
    out.push({ id: "curl-unload", title: "curl · unload " + run.model + " (Ollama's keep_alive 0, as `ollama stop`)", lang: "sh",
      code: curl("/api/generate", { model: run.model, keep_alive: 0 }) });
    return out;
  }

  function currentForm() {
    const m = modelInfo($("#play-model").value);
    if (!m) return null;
    if (m.kind === "reranker") return { mode: "rerank", model: m.name, query: $("#play-query").value.trim(), docs: lines($("#play-docs").value) };
    return { mode: "embed", model: m.name, texts: lines($("#play-texts").value) };
  }

  async function copy(text, button) {
    let done = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); done = true; } catch (e) { /* fall back */ }
    }
    if (!done) {
      const area = el("textarea", { class: "sr-only", "aria-hidden": "true" });
      area.value = text;
      document.body.append(area);
      area.select();
      try { done = document.execCommand("copy"); } catch (e) { done = false; }
      area.remove();
    }
    button.textContent = done ? "Copied" : "Select and copy";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  function renderCode() {
    const run = state.run || currentForm();
    $("#code-intro").textContent = !run ? "Run something in the Playground first." :
      (state.run ? "The requests of the last Playground run" : "The requests the Playground would send") + " (" + run.model + "), in each API this server speaks" +
      (state.config && state.config.api_key_required ? "; the key is read from the EMBED_API_KEY environment variable." : ".") +
      " Each embedding snippet leaves the vectors in `vectors`.";
    const list = clear($("#code-list"));
    for (const s of snippets()) {
      const block = el("div", { class: "code-block", data: { snippet: s.id } });
      const head = el("div", { class: "code-head" }, el("b", { text: s.title }));
      block.append(head);
      if (s.code) {
        const pre = el("pre", { tabindex: "0", "aria-label": s.title }, el("code", { class: "lang-" + s.lang, text: s.code }));
        head.append(el("button", { type: "button", text: "Copy", "aria-label": "Copy: " + s.title, on: { click: (e) => copy(s.code, e.currentTarget) } }));
        block.append(pre);
      }
      if (s.note) block.append(el("p", { class: "note muted", text: s.note }));
      list.append(block);
    }
  }

  // ----- start ----------------------------------------------------------------------------------------------------------
  async function start() {
    setupTabs();
    $("#play-texts").value = DEFAULT_TEXTS.join("\n");
    $("#play-query").value = DEFAULT_QUERY;
    $("#play-docs").value = DEFAULT_DOCS.join("\n");
    $("#play-form").addEventListener("submit", runPlayground);
    $("#play-form").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runPlayground(e);
    });
    $("#play-model").addEventListener("change", () => { state.run = null; describeModel(); });
    $("#models-refresh").addEventListener("click", () => refreshModels().catch(report));
    $("#key-form").addEventListener("submit", (e) => { e.preventDefault(); unlock($("#api-key").value.trim()); });
    $("#forget-key").addEventListener("click", () => lock(""));
    try {
      await refreshConfig();
    } catch (e) {
      notice("The server did not answer: " + e.message);
      return;
    }
    every("config", POLL.config, refreshConfig);
    every("models", POLL.models, () => (state.view === "models" && !state.locked ? refreshModels() : Promise.resolve()));
    every("live", POLL.live, () => (state.view === "live" && !state.locked ? refreshLive() : Promise.resolve()));
    if (state.config.api_key_required && !apiKey()) {
      lock("");
      show(viewFromHash());
      return;
    }
    try {
      await refreshModels();
    } catch (e) {
      report(e);
    }
    if (!state.locked) $("#forget-key").hidden = !state.config.api_key_required;
    show(viewFromHash());
  }

  start();
})();
