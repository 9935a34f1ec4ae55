// pixguard console, the review page (/review and /escalations): one item at a time or a
// grid, keyboard shortcuts, undo, and the explanation overlay fetched on first reveal.
// Uses console.js (loaded first): api, notify, el, fmt, thumbnail.
"use strict";

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

document.addEventListener("DOMContentLoaded", setupReview);
