// pixguard console: a little plain JavaScript over the same /v1 routes API clients use.
// This file holds what every page shares; each page adds its own script after it
// (both deferred, so they run in order once the page is parsed).
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

document.addEventListener("DOMContentLoaded", setupGrayscale);
