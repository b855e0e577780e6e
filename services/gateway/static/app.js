// The demo storefront: every call goes through the gateway's HTTP/JSON API (docs/api.md),
// as a real storefront's would. Plain browser JavaScript, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const VISITOR_KEY = "shopstream.visitor";
  const TOKEN_KEY = "shopstream.token";
  const ROW_K = 8;
  const SIMILAR_K = 6;
  const GRID_LIMIT = 60;
  // After an accepted event the row is fetched again every POLL_MS for POLL_FOR_MS: the
  // features worker applies an event within a few hundred milliseconds.
  const POLL_MS = 250;
  const POLL_FOR_MS = 2000;
  const CALL_TIMEOUT_S = 2;

  const state = {
    visitor: "",
    session: "",
    token: localStorage.getItem(TOKEN_KEY) || "",
    items: new Map(), // item id -> catalog item (proto JSON)
    category: "",
    categories: [], // names, in the catalog's order
    rowKey: "",
    product: null, // the item the product panel shows
    origin: null, // where the panel's item came from: {surface, recommendationId, position}
    pollUntil: 0,
    polling: false,
    lastEventAt: 0,
  };

  function randomHex(bytes) {
    const buf = new Uint8Array(bytes);
    crypto.getRandomValues(buf);
    return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function visitorId() {
    let id = localStorage.getItem(VISITOR_KEY);
    if (!id) {
      id = `visitor-${randomHex(6)}`;
      localStorage.setItem(VISITOR_KEY, id);
    }
    return id;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // -- the API ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, body) {
    const headers = { "Content-Type": "application/json", "X-Request-Timeout": String(CALL_TIMEOUT_S) };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
    const resp = await fetch(path, init);
    let data = {};
    try {
      data = await resp.json();
    } catch (_) {
      // not JSON (a proxy's error page): the status says enough
    }
    if (!resp.ok) {
      const err = data.error || {};
      throw new ApiError(resp.status, err.code || String(resp.status), err.message || resp.statusText);
    }
    return data;
  }

  function showError(err) {
    const box = $("error");
    if (!err) {
      box.hidden = true;
      return;
    }
    if (err.status === 401) $("token-bar").hidden = false;
    box.textContent = `${err.code || "error"}: ${err.message}`;
    box.hidden = false;
  }

  function remember(items) {
    for (const item of items) state.items.set(item.itemId, item);
  }

  async function ensureItems(ids) {
    const missing = ids.filter((id) => !state.items.has(id));
    for (let i = 0; i < missing.length; i += 100) {
      const chunk = missing.slice(i, i + 100);
      const data = await api(`/v1/catalog?limit=100&ids=${chunk.map(encodeURIComponent).join(",")}`);
      remember(data.items);
    }
  }

  // -- rendering ---------------------------------------------------------------------

  function hue(category) {
    // Categories in catalog order, spread by the golden angle so that neighbours differ.
    const index = state.categories.indexOf(category);
    if (index >= 0) return Math.round(index * 137.508) % 360;
    let h = 0;
    for (const ch of category) h = (h * 31 + ch.charCodeAt(0)) % 360;
    return h;
  }

  function swatch(el, item) {
    const category = (item && item.category) || "?";
    el.style.background = `hsl(${hue(category)}, 55%, 62%)`;
    el.textContent = category;
  }

  function price(item) {
    return item && item.price ? `${Number(item.price).toFixed(2)}` : "";
  }

  function card(itemId, origin, extra) {
    const item = state.items.get(itemId) || { itemId, title: `item ${itemId}`, category: "" };
    const el = document.createElement("button");
    el.type = "button";
    el.className = "card";
    el.dataset.itemId = itemId;
    el.dataset.category = item.category || "";
    if (origin && origin.position !== undefined) el.dataset.position = String(origin.position);
    const sw = document.createElement("div");
    sw.className = "swatch";
    swatch(sw, item);
    const title = document.createElement("div");
    title.className = "title";
    title.textContent = item.title || `item ${itemId}`;
    const sub = document.createElement("div");
    sub.className = "sub";
    sub.textContent = [item.category, price(item), item.inStock === false ? "out of stock" : ""]
      .filter(Boolean).join(" · ");
    el.append(sw, title, sub);
    if (extra && extra.reason && extra.reason.text) {
      const why = document.createElement("div");
      why.className = "reason";
      why.textContent = extra.reason.text;
      el.append(why);
    }
    el.addEventListener("click", () => {
      openProduct(itemId, origin);
      track("EVENT_TYPE_CLICK", itemId, origin);
    });
    return el;
  }

  function strategyLabel(strategy) {
    return { STRATEGY_PERSONALIZED: "personalized", STRATEGY_TRENDING: "trending" }[strategy] || strategy || "";
  }

  function metaText(resp, extra) {
    const parts = [strategyLabel(resp.strategy)];
    if (resp.modelVersion) parts.push(`model ${resp.modelVersion}`);
    if (resp.variant) parts.push(`variant ${resp.variant}`);
    if (resp.experiment) parts.push(`experiment ${resp.experiment}`);
    if (resp.recommendationId) parts.push(`list ${resp.recommendationId.slice(0, 8)}`);
    if (resp.degraded) parts.push(`degraded: ${resp.degradedReason}`);
    if (extra) parts.push(extra);
    return parts.filter(Boolean).join(" · ");
  }

  function renderRow(resp, updatedAfterMs) {
    const row = $("for-you");
    const items = resp.items || [];
    $("for-you-title").textContent =
      resp.strategy === "STRATEGY_PERSONALIZED" ? "Recommended for you" : "Trending now";
    row.replaceChildren(...items.map((it, position) =>
      card(it.itemId, { surface: "for-you", recommendationId: resp.recommendationId || "", position }, it)));
    row.dataset.strategy = resp.strategy || "";
    row.dataset.recommendationId = resp.recommendationId || "";
    row.dataset.modelVersion = resp.modelVersion || "";
    row.dataset.state = "ready";
    const extra = updatedAfterMs === undefined ? "" : `updated ${(updatedAfterMs / 1000).toFixed(2)} s after your last event`;
    $("for-you-meta").textContent = metaText(resp, extra);
  }

  async function refreshRow() {
    const resp = await api("/v1/recommend", { userId: state.visitor, k: ROW_K });
    const ids = (resp.items || []).map((it) => it.itemId);
    await ensureItems(ids);
    const key = `${resp.strategy}|${ids.join(",")}`;
    if (key !== state.rowKey) {
      state.rowKey = key;
      renderRow(resp, state.lastEventAt ? performance.now() - state.lastEventAt : undefined);
    }
  }

  async function pollRow() {
    state.pollUntil = performance.now() + POLL_FOR_MS;
    if (state.polling) return; // the running loop sees the new end
    state.polling = true;
    $("for-you").dataset.polling = "true";
    try {
      while (performance.now() < state.pollUntil) {
        try {
          await refreshRow();
          showError(null);
        } catch (err) {
          showError(err);
        }
        await sleep(POLL_MS);
      }
    } finally {
      state.polling = false;
      $("for-you").dataset.polling = "false";
    }
  }

  async function loadCatalog(category) {
    state.category = category;
    const query = `/v1/catalog?limit=${GRID_LIMIT}${category ? `&category=${encodeURIComponent(category)}` : ""}`;
    const data = await api(query);
    remember(data.items);
    state.categories = data.categories.map((c) => c.name);
    const nav = $("categories");
    const tabs = [{ name: "", items: data.categories.reduce((n, c) => n + c.items, 0) }, ...data.categories];
    nav.replaceChildren(...tabs.map((c) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = c.name === category ? "tab active" : "tab";
      b.dataset.category = c.name;
      b.textContent = `${c.name || "all"} (${c.items})`;
      b.addEventListener("click", () => loadCatalog(c.name).catch(showError));
      return b;
    }));
    $("grid").replaceChildren(...data.items.map((it) => card(it.itemId, { surface: "grid" })));
    $("grid").dataset.category = category;
  }

  async function openProduct(itemId, origin) {
    const item = state.items.get(itemId) || { itemId };
    state.product = item;
    state.origin = origin || null;
    $("product").hidden = false;
    $("product").dataset.itemId = itemId;
    swatch($("product-swatch"), item);
    $("product-title").textContent = item.title || `item ${itemId}`;
    $("product-category").textContent = item.category || "no category";
    $("product-brand").textContent = item.brand || "no brand";
    $("product-price").textContent = price(item);
    $("product-origin").textContent = origin && origin.surface !== "grid"
      ? `from "${origin.surface}" at position ${origin.position}` : "";
    $("similar").replaceChildren();
    $("similar-meta").textContent = "";
    try {
      const resp = await api("/v1/similar-items", { itemId, k: SIMILAR_K });
      const ids = (resp.items || []).map((it) => it.itemId);
      await ensureItems(ids);
      if (state.product !== item) return; // another product was opened meanwhile
      $("similar").replaceChildren(...resp.items.map((it, position) =>
        card(it.itemId, { surface: "similar", recommendationId: resp.recommendationId || "", position }, it)));
      $("similar-meta").textContent = metaText({ ...resp, strategy: "" });
    } catch (err) {
      $("similar-meta").textContent = err.status === 404
        ? "none yet: the model does not know this item" : `${err.code}: ${err.message}`;
    }
  }

  // -- events ------------------------------------------------------------------------

  async function track(type, itemId, origin) {
    const event = {
      eventId: `e-${randomHex(12)}`,
      userId: state.visitor,
      itemId,
      type,
      occurredAt: new Date().toISOString(),
      sessionId: state.session,
      context: { page: origin ? origin.surface : "product", device: "DEVICE_DESKTOP" },
    };
    // The served list the item came from, so the click or purchase is attributed to it.
    if (origin && origin.surface !== "grid") {
      if (origin.recommendationId) event.recommendationId = origin.recommendationId;
      event.position = origin.position;
    }
    const li = document.createElement("li");
    li.dataset.type = type;
    li.dataset.itemId = itemId;
    li.textContent = `${type.replace("EVENT_TYPE_", "")} ${itemId}` +
      (event.position !== undefined ? ` (${origin.surface} #${event.position})` : "");
    $("event-log").prepend(li);
    try {
      const resp = await api("/v1/events", { events: [event] });
      li.dataset.state = "accepted";
      li.textContent += resp.accepted === 1 ? " ✓" : " (not accepted)";
      state.lastEventAt = performance.now();
      showError(null);
      pollRow();
    } catch (err) {
      li.dataset.state = "failed";
      li.textContent += ` ✗ ${err.code}`;
      showError(err);
    }
  }

  // -- start -------------------------------------------------------------------------

  function startVisitor() {
    state.visitor = visitorId();
    state.session = sessionStorage.getItem("shopstream.session") || `s-${randomHex(6)}`;
    sessionStorage.setItem("shopstream.session", state.session);
    state.rowKey = "";
    state.lastEventAt = 0;
    $("visitor-id").textContent = state.visitor;
    $("event-log").replaceChildren();
    $("for-you").dataset.state = "loading";
    return refreshRow();
  }

  async function start() {
    const config = await api("/v1/demo-config");
    if (config.prometheus_url) {
      const link = $("ops-link");
      link.href = config.prometheus_url;
      link.hidden = false;
    }
    if (config.auth_required && !state.token) {
      $("token-bar").hidden = false;
      return;
    }
    await loadCatalog("");
    await startVisitor();
    showError(null);
  }

  for (const button of document.querySelectorAll("#product .actions button")) {
    button.addEventListener("click", () => {
      if (state.product) track(button.dataset.event, state.product.itemId, state.origin);
    });
  }
  $("product-close").addEventListener("click", () => {
    $("product").hidden = true;
    state.product = null;
  });
  $("new-visitor").addEventListener("click", () => {
    localStorage.removeItem(VISITOR_KEY);
    sessionStorage.removeItem("shopstream.session");
    $("product").hidden = true;
    startVisitor().catch(showError);
  });
  $("token-save").addEventListener("click", () => {
    state.token = $("token-input").value.trim();
    localStorage.setItem(TOKEN_KEY, state.token);
    $("token-bar").hidden = true;
    start().catch(showError);
  });

  start().catch(showError);
})();
