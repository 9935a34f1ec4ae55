// pixguard console, the moderate page: classify dropped or picked images, show result cards.
// Uses console.js (loaded first): api, notify, el, fmt, thumbnail.
"use strict";

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

document.addEventListener("DOMContentLoaded", setupModerate);
