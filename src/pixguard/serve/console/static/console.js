// pixguard console: a little plain JavaScript over the same /v1 routes API clients use.
"use strict";

const csrfMeta = document.querySelector('meta[name="csrf-token"]');

async function api(method, path, body) {
  const headers = {};
  if (csrfMeta) headers["X-CSRF-Token"] = csrfMeta.content;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok && !(data && data.results)) {
    const message = data && data.message ? data.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.code = data && data.code;
    throw error;
  }
  return data;
}

function notify(message) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = message || "";
  box.hidden = !message;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function fmt(score) {
  return score === null || score === undefined ? "–" : Number(score).toFixed(4);
}

function setupGrayscale() {
  const box = document.getElementById("grayscale");
  if (!box) return;
  box.checked = localStorage.getItem("pixguard-grayscale") === "1";
  document.body.classList.toggle("grayscale", box.checked);
  box.addEventListener("change", () => {
    document.body.classList.toggle("grayscale", box.checked);
    localStorage.setItem("pixguard-grayscale", box.checked ? "1" : "0");
  });
}

// A blurred thumbnail: a button revealed by click, or Space/Enter while focused.
function thumbnail(src, alt, blurred) {
  const button = el("button", { type: "button", class: "thumb" + (blurred ? " blurred" : "") });
  button.append(el("img", { src, alt }));
  const label = () =>
    button.setAttribute(
      "aria-label",
      button.classList.contains("blurred") ? `${alt}: hidden, press to reveal` : `${alt}: shown, press to hide`,
    );
  label();
  button.addEventListener("click", () => {
    button.classList.toggle("blurred");
    label();
  });
  return button;
}

// --- moderate ------------------------------------------------------------------------

function setupModerate() {
  const cards = document.getElementById("cards");
  const input = document.getElementById("files");
  const drop = document.getElementById("drop");
  if (!cards || !input) return;
  const hasIndex = cards.dataset.hasIndex === "true";

  async function classify(files) {
    notify("");
    const images = Array.from(files).filter((f) => f.type.startsWith("image/") || f.type === "");
    if (!images.length) {
      notify("Pick image files (JPEG, PNG, GIF, WebP, …).");
      return;
    }
    const form = new FormData();
    for (const file of images) form.append("files", file, file.name);
    let body;
    try {
      body = await api("POST", "/v1/classify", form);
    } catch (error) {
      notify(`Could not classify: ${error.message}`);
      return;
    }
    for (const result of body.results) {
      const file = images[result.index];
      await renderCard(file, result);
    }
  }

  async function renderCard(file, result) {
    const flagged = result.error || result.label === "nsfw" || (result.action && result.action !== "allow") || result.bank_match;
    const card = el("article", { class: "result", "data-filename": file.name });
    card.append(thumbnail(URL.createObjectURL(file), file.name, Boolean(flagged)));
    card.append(el("h3", { text: file.name }));
    if (result.error) {
      card.append(el("p", { class: "error", text: `${result.error.code}: ${result.error.message}` }));
      cards.prepend(card);
      return;
    }
    const meter = el("meter", { min: "0", max: "1", low: "0.3", high: "0.7", optimum: "0", value: String(result.nsfw_score), "aria-label": "NSFW score" });
    card.append(meter);
    const facts = el("p", {});
    facts.append(el("span", { class: result.label === "nsfw" ? "label-nsfw" : "", text: result.label }), ` · score ${fmt(result.nsfw_score)}`);
    if (result.action) {
      facts.append(" · ", el("span", { class: `action ${result.action}`, text: result.action }));
    }
    card.append(facts);
    if (result.reason) card.append(el("p", { class: "hint", text: result.reason }));
    if (result.bank_nearest) {
      const text = `Known-bad bank: #${result.bank_nearest.id} similarity ${fmt(result.bank_nearest.similarity)}${result.bank_match ? " (match)" : ""}`;
      card.append(el("p", { class: result.bank_match ? "error" : "hint", text }));
    }
    cards.prepend(card);
    if (hasIndex) {
      try {
        const form = new FormData();
        form.append("files", file, file.name);
        const found = await api("POST", "/v1/index/search?k=3", form);
        const list = el("ul", { class: "similar", "aria-label": "Similar items in the index" });
        for (const hit of found.hits) list.append(el("li", { text: `#${hit.id} ${fmt(hit.similarity)} ${hit.source || ""}` }));
        if (!found.hits.length) list.append(el("li", { text: "No similar items in the index." }));
        card.append(list);
      } catch (error) {
        card.append(el("p", { class: "error", text: `Similar items: ${error.message}` }));
      }
    }
  }

  input.addEventListener("change", () => classify(input.files));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classify(event.dataTransfer.files);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
}

// --- review --------------------------------------------------------------------------

function setupReview() {
  const root = document.getElementById("review");
  if (!root) return;
  const queue = root.dataset.queue;
  const show = (id, visible) => (document.getElementById(id).hidden = !visible);
  const reveal = document.getElementById("reveal");
  const image = document.getElementById("item-image");
  const explainImage = document.getElementById("explain-image");
  const explainNote = document.getElementById("explain-note");
  const note = document.getElementById("note");
  const help = document.getElementById("help");
  const helpButton = document.getElementById("help-button");
  let current = null;
  let history = []; // decision ids this session, for undo
  let decided = 0;
  let busy = false;
  let grid = false;
  const GRID_SIZE = 12;

  let explained = null; // the item whose explanation was asked for

  function setReveal(visible) {
    reveal.classList.toggle("blurred", !visible);
    // Asked for on first reveal only: an item decided unseen costs no explanation,
    // and its claim still holds when the request arrives.
    if (visible && current && explained !== current) {
      explained = current;
      loadExplanation(current);
    }
    reveal.setAttribute("aria-label", visible ? "Image shown: press Space or click to hide" : "Image hidden: press Space or click to reveal");
  }

  // fetch() rather than <img src>: a failed explanation becomes a notice, never a
  // console error.
  function clearExplanation() {
    if (explainImage.src) URL.revokeObjectURL(explainImage.src);
    explainImage.removeAttribute("src");
    explainImage.hidden = true;
    explainNote.hidden = false;
    explainNote.textContent = "Reveal the item to see why the model flagged it.";
  }

  async function loadExplanation(item) {
    clearExplanation();
    explainNote.textContent = "Working out why…";
    let message = "No explanation for this item.";
    try {
      const response = await fetch(`/v1/review/items/${item.id}/explanation`, { credentials: "same-origin" });
      if (response.ok) {
        const blob = await response.blob();
        if (current !== item) return;
        explainImage.src = URL.createObjectURL(blob);
        explainImage.hidden = false;
        explainNote.hidden = true;
        return;
      }
      const body = await response.json().catch(() => null);
      if (body && body.message) message = `No explanation: ${body.message}`;
    } catch (_) {
      message = "Could not load the explanation.";
    }
    if (current !== item) return;
    explainNote.textContent = message;
  }

  function render(item, remaining) {
    current = item;
    document.getElementById("remaining").textContent = String(remaining);
    document.getElementById("done").textContent = String(decided);
    show("item", Boolean(item));
    show("empty", !item);
    if (!item) return;
    image.src = item.image_url;
    explained = null;
    clearExplanation();
    setReveal(false);
    document.getElementById("score").textContent = fmt(item.nsfw_score);
    document.getElementById("score-bar").value = item.nsfw_score || 0;
    document.getElementById("model-label").textContent = item.model_label || "–";
    document.getElementById("reason").textContent = item.reason + (item.bank_match ? " · known-bad bank match" : "");
    document.getElementById("source").textContent = item.source;
    document.getElementById("item-id").textContent = `#${item.id}`;
    note.value = "";
  }

  async function next() {
    if (grid) return loadGrid();
    try {
      const body = await api("GET", `/v1/review/next?limit=1&queue=${queue}`);
      render(body.items[0] || null, body.remaining);
    } catch (error) {
      notify(`Could not load the queue: ${error.message}`);
    }
  }

  async function decide(decision) {
    if (!current || busy) return;
    busy = true;
    notify("");
    try {
      const body = await api("POST", `/v1/review/${current.id}`, { decision, note: note.value || null });
      history.push(body.decision.id);
      if (decision !== "skip") decided += 1;
      await next();
    } catch (error) {
      notify(`Could not record "${decision}": ${error.message}`);
      if (error.status === 409) await next();
    } finally {
      busy = false;
    }
  }

  async function undo() {
    if (busy) return;
    const last = history.pop();
    if (last === undefined) {
      notify("Nothing to undo in this session.");
      return;
    }
    busy = true;
    try {
      const body = await api("POST", "/v1/review/undo", { decision_id: last });
      decided = Math.max(0, decided - 1);
      if (grid) {
        // The undone item is ours again: the grid claims it back with the others.
        await loadGrid();
        notify(`Undid the decision on item #${body.item.id}.`);
        return;
      }
      const stats = await api("GET", `/v1/review/next?limit=1&queue=${queue}`);
      // The undone item is ours again; show it first.
      render(body.item.id === (stats.items[0] || {}).id ? stats.items[0] : { ...body.item, image_url: `/v1/review/items/${body.item.id}/image` }, stats.remaining);
    } catch (error) {
      notify(`Could not undo: ${error.message}`);
    } finally {
      busy = false;
    }
  }

  // --- grid: several items at once, decided one by one or in bulk ---
  async function loadGrid() {
    const box = document.getElementById("grid");
    try {
      const body = await api("GET", `/v1/review/next?limit=${GRID_SIZE}&queue=${queue}`);
      document.getElementById("remaining").textContent = String(body.remaining);
      document.getElementById("done").textContent = String(decided);
      show("empty", body.items.length === 0);
      box.replaceChildren(...body.items.map(gridCard));
    } catch (error) {
      notify(`Could not load the queue: ${error.message}`);
    }
  }

  function gridCard(item) {
    const card = el("article", { class: "result", "data-id": String(item.id), "aria-label": `Item ${item.id}` });
    card.append(thumbnail(item.image_url, `Item ${item.id}`, true));
    card.append(el("meter", { min: "0", max: "1", low: "0.3", high: "0.7", optimum: "0", value: String(item.nsfw_score || 0), "aria-label": "NSFW score" }));
    card.append(el("p", { text: `#${item.id} · ${item.model_label || "–"} · score ${fmt(item.nsfw_score)}` }));
    card.append(el("p", { class: "hint", text: item.reason }));
    const box = el("input", { type: "checkbox", id: `select-${item.id}`, class: "select" });
    card.append(box, el("label", { for: `select-${item.id}`, text: "Select" }));
    return card;
  }

  async function decideGrid(ids, decision) {
    if (!ids.length || busy) return;
    busy = true;
    notify("");
    try {
      const body = await api("POST", "/v1/review/bulk", { decisions: ids.map((id) => ({ item_id: id, decision })) });
      for (const result of body.results) {
        if (result.ok) {
          history.push(result.decision.id);
          if (decision !== "skip") decided += 1;
        } else notify(`Item ${result.item_id}: ${result.error.message}`);
      }
      await loadGrid();
    } catch (error) {
      notify(`Could not record "${decision}": ${error.message}`);
    } finally {
      busy = false;
    }
  }

  function selectedIds() {
    return Array.from(document.querySelectorAll("#grid .select:checked")).map((box) => Number(box.closest(".result").dataset.id));
  }

  function focusedId() {
    const card = document.activeElement && document.activeElement.closest("#grid .result");
    return card ? Number(card.dataset.id) : null;
  }

  const modeButton = document.getElementById("mode");
  modeButton.addEventListener("click", async () => {
    grid = !grid;
    modeButton.setAttribute("aria-pressed", String(grid));
    modeButton.textContent = grid ? "Show one at a time" : "Show a grid";
    show("grid-view", grid);
    show("single-view", !grid);
    if (current) {
      // The single view's item stays claimed by us: the grid claims it again first.
      current = null;
    }
    await next();
  });
  document.getElementById("grid-allow").addEventListener("click", () => decideGrid(selectedIds(), "allow"));
  document.getElementById("grid-remove").addEventListener("click", () => decideGrid(selectedIds(), "remove"));

  function toggleHelp() {
    help.hidden = !help.hidden;
    helpButton.setAttribute("aria-expanded", String(!help.hidden));
  }

  for (const button of root.querySelectorAll("[data-decision]")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  document.getElementById("undo").addEventListener("click", undo);
  reveal.addEventListener("click", () => setReveal(reveal.classList.contains("blurred")));
  helpButton.addEventListener("click", toggleHelp);
  document.addEventListener("keydown", (event) => {
    if (event.target === note || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    const actions = { a: "allow", r: "remove", s: "skip" };
    if (queue !== "escalated") actions.e = "escalate";
    if (grid && key in actions) {
      const id = focusedId();
      if (id !== null) {
        event.preventDefault();
        decideGrid([id], actions[key]);
      }
    } else if (key in actions) {
      event.preventDefault();
      decide(actions[key]);
    } else if (key === " " && grid) {
      return; // the focused thumbnail's own button reveals it
    } else if (key === " ") {
      event.preventDefault();
      if (current) setReveal(reveal.classList.contains("blurred"));
    } else if (key === "z") {
      event.preventDefault();
      undo();
    } else if (key === "?") {
      event.preventDefault();
      toggleHelp();
    }
  });
  next();
}

// --- generate ------------------------------------------------------------------------

function setupGenerate() {
  const form = document.getElementById("generate-form");
  if (!form) return;
  const progress = document.getElementById("progress");
  const status = document.getElementById("status");
  const results = document.getElementById("results");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    notify("");
    results.replaceChildren();
    const data = new FormData(form);
    const body = { prompt: data.get("prompt") };
    for (const name of ["steps", "width", "height", "seed", "num_images"]) {
      if (data.get(name)) body[name] = Number(data.get(name));
    }
    if (data.get("control")) {
      const file = data.get("control_image");
      if (!file || !file.size) {
        notify("Pick a control image for ControlNet, or set Control to none.");
        return;
      }
      body.control = data.get("control");
      body.control_image = await base64Of(file);
      body.control_scale = Number(data.get("control_scale") || 1);
    }
    let job;
    try {
      job = await api("POST", "/v1/generate", body);
    } catch (error) {
      notify(`Could not start: ${error.message}`);
      return;
    }
    status.textContent = "Queued…";
    const events = new EventSource(job.events);
    events.onmessage = (message) => {
      const state = JSON.parse(message.data);
      progress.max = state.steps || 1;
      progress.value = state.step;
      status.textContent = `${state.status}: step ${state.step} of ${state.steps || "?"}`;
      if (["done", "failed", "cancelled"].includes(state.status)) {
        events.close();
        showResults(state);
      }
    };
    events.onerror = () => {
      events.close();
      notify("Lost the progress stream.");
    };
  });

  async function base64Of(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let binary = "";
    const CHUNK = 0x8000; // String.fromCharCode takes a bounded number of arguments
    for (let start = 0; start < bytes.length; start += CHUNK) {
      binary += String.fromCharCode(...bytes.subarray(start, start + CHUNK));
    }
    return btoa(binary);
  }

  function showResults(state) {
    if (state.error) notify(`Generation failed: ${state.error.message}`);
    for (const result of state.results) {
      const card = el("article", { class: "result" });
      if (result.image) {
        card.append(el("img", { src: result.image, alt: `Generated image, seed ${result.seed}` }));
        card.append(el("p", { text: `seed ${result.seed} · score ${fmt(result.nsfw_score)} · ${result.decision}` }));
      } else {
        card.append(
          el("p", { class: "blocked", role: "status", text: `Blocked by the safety gate (seed ${result.seed}, score ${fmt(result.nsfw_score)}). The image is not shown or kept.` }),
        );
      }
      results.append(card);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupGrayscale();
  setupModerate();
  setupReview();
  setupGenerate();
});
