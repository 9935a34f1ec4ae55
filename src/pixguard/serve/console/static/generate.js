// pixguard console, the generate page: start a job, follow its progress, show results.
// Uses console.js (loaded first): api, notify, el, fmt.
"use strict";

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

document.addEventListener("DOMContentLoaded", setupGenerate);
