// The upload page: send an image to the API, show its caption, attention and games.
// Plain browser JavaScript, no build step, no external assets.
"use strict";

const MAX_GAMES = 5;
const $ = (id) => document.getElementById(id);
const state = { health: null, attention: null, word: null, request: 0, previewUrl: null };

function setStatus(text, busy = false) {
  $("status").textContent = text;
  $("status").classList.toggle("busy", busy);
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function loadHealth() {
  try {
    const response = await fetch("/healthz");
    state.health = await response.json();
    $("model").textContent = `Model: ${state.health.model}`;
    $("max-size").textContent = `${Math.floor(state.health.max_upload_bytes / 2 ** 20)} MB`;
  } catch (error) {
    $("model").textContent = "The server does not answer";
  }
}

// Low attention stays see-through (cool, faint); high attention is warm and opaque.
const RAMP = [
  [49, 54, 149, 0.0],
  [69, 117, 180, 0.15],
  [116, 173, 209, 0.3],
  [254, 224, 144, 0.45],
  [244, 109, 67, 0.6],
  [215, 48, 39, 0.7],
];
function rampColour(value) {
  const position = Math.min(Math.max(value, 0), 1) * (RAMP.length - 1);
  const low = Math.floor(position);
  const high = Math.min(low + 1, RAMP.length - 1);
  const t = position - low;
  return RAMP[low].map((channel, i) => channel + (RAMP[high][i] - channel) * t);
}

// Size the preview to fit the panel and the screen, so the heatmap canvas laid over the
// image box covers exactly the image (no letterboxing), small images scaled up too.
function fitPreview() {
  const image = $("preview");
  if (!image.naturalWidth || $("figure").hidden) return;
  const maxWidth = $("figure").clientWidth;
  const maxHeight = window.innerHeight * (window.innerWidth <= 720 ? 0.5 : 0.65);
  const scale = Math.min(maxWidth / image.naturalWidth, maxHeight / image.naturalHeight);
  image.style.width = `${Math.floor(image.naturalWidth * scale)}px`;
  image.style.height = `${Math.floor(image.naturalHeight * scale)}px`;
}

function drawHeatmap() {
  const canvas = $("heatmap");
  const attention = state.attention;
  const visible = Boolean(attention) && $("show-attention").checked;
  canvas.hidden = !visible;
  if (!visible) {
    $("attention-label").textContent = "";
    return;
  }
  const map = state.word === null ? attention.mean : attention.steps[state.word];
  const [rows, columns] = attention.grid;
  canvas.width = columns;
  canvas.height = rows;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(columns, rows);
  const values = map.flat();
  const low = Math.min(...values);
  const high = Math.max(...values);
  values.forEach((value, i) => {
    const scaled = high > low ? (value - low) / (high - low) : 0.5;
    const [r, g, b, alpha] = rampColour(scaled);
    pixels.data.set([r, g, b, alpha * 255].map(Math.round), i * 4);
  });
  context.putImageData(pixels, 0, 0); // the browser scales it smoothly to the image
  $("attention-label").textContent =
    state.word === null ? "Mean over the caption" : `Where it looked for “${attention.words[state.word]}”`;
}

function renderCaption(body) {
  const caption = $("caption");
  caption.replaceChildren();
  state.attention = body.attention || null;
  state.word = null;
  const words = body.caption ? body.caption.split(" ") : [];
  if (!words.length) caption.textContent = "(no caption)";
  words.forEach((word, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = word;
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => {
      state.word = state.word === i ? null : i;
      caption.querySelectorAll("button").forEach((other, j) => {
        other.setAttribute("aria-pressed", String(state.word === j));
      });
      $("show-attention").checked = true;
      drawHeatmap();
    });
    caption.append(button, " ");
  });
  const alternatives = $("alternatives");
  alternatives.replaceChildren(
    ...body.alternatives.map((alternative) => {
      const item = document.createElement("li");
      item.textContent = alternative.caption || "(empty)";
      return item;
    })
  );
  $("alternatives-box").hidden = body.alternatives.length === 0;
  const timings = body.timings_ms;
  $("timings").textContent = `${body.model} · ${Math.round(timings.total)} ms`;
  $("result").hidden = false;
  drawHeatmap();
}

const KIND_NAMES = {
  cover: "cover", back_cover: "back cover", screenshot: "screenshot",
  title_screen: "title screen", logo: "logo", physical: "cartridge or disc",
  fan_art: "fan art", mix: "mix image", name: "name",
};

// Why a game matched, in words: the text read and what it matched, the image it resembles.
function describeEvidence(evidence) {
  return evidence
    .map((item) => {
      const kind = KIND_NAMES[item.kind] || item.kind;
      if (item.source === "text") {
        return `Read “${item.read}”, matching its ${kind} “${item.matched}”`;
      }
      return `Looks like its ${kind} (${item.score.toFixed(2)})`;
    })
    .join(" · ");
}

function renderGames(games) {
  $("games-box").hidden = !games;
  if (!games) return;
  const list = $("games");
  list.replaceChildren();
  if (!games.length) {
    const item = document.createElement("li");
    item.className = "muted";
    item.textContent = "No game found.";
    list.append(item);
  }
  const best = Math.max(...games.map((game) => game.score), 1e-6);
  games.slice(0, MAX_GAMES).forEach((game) => {
    const item = document.createElement("li");
    item.className = "game";
    let cover;
    if (game.cover_url) {
      cover = document.createElement("img");
      cover.src = game.cover_url;
      cover.alt = `Cover of ${game.name}`;
      cover.loading = "lazy";
    } else {
      cover = document.createElement("div");
      cover.className = "no-cover";
    }
    const text = document.createElement("div");
    const name = document.createElement("p");
    name.className = "game-name";
    name.textContent = game.name || game.game_id;
    const meta = document.createElement("p");
    meta.className = "game-meta";
    meta.textContent = [game.platform, `confidence ${Math.round(game.score * 100)}%`]
      .filter(Boolean)
      .join(" · ");
    const why = document.createElement("p");
    why.className = "game-why";
    why.textContent = describeEvidence(game.evidence || []);
    const meter = document.createElement("div");
    meter.className = "meter";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, game.score / best)) * 100}%`;
    meter.append(fill);
    text.append(name, meta, why, meter);
    item.append(cover, text);
    list.append(item);
  });
}

async function upload(file) {
  const request = ++state.request;
  showError("");
  setStatus("Looking at the image…", true);
  const search = Boolean(state.health && state.health.games_indexed);
  const url = `${search ? "/v1/search" : "/v1/caption"}?return_attention=true&k=${MAX_GAMES}`;
  const form = new FormData();
  form.append("image", file);
  let response;
  let body = {};
  try {
    response = await fetch(url, { method: "POST", body: form });
    body = await response.json().catch(() => ({}));
  } catch (error) {
    if (request !== state.request) return;
    setStatus("");
    showError("The server could not be reached. Is it still running?");
    return;
  }
  if (request !== state.request) return; // a newer upload has started
  if (!response.ok) {
    setStatus("");
    const detail = typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    showError(response.status === 503 ? `${detail} (busy: try again in a moment)` : detail);
    return;
  }
  setStatus(search ? "Done: the caption and the closest games." : "Done.");
  renderCaption(body);
  renderGames(search ? body.games : null);
}

function choose(file) {
  if (!file) return;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  state.attention = null;
  $("preview").src = state.previewUrl;
  $("figure").hidden = false;
  $("result").hidden = true;
  $("games-box").hidden = true;
  $("heatmap").hidden = true;
  document.body.classList.add("has-image");
  upload(file);
}

function setUp() {
  const dropzone = $("dropzone");
  $("file-input").addEventListener("change", (event) => choose(event.target.files[0]));
  ["dragenter", "dragover"].forEach((type) =>
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    dropzone.addEventListener(type, () => dropzone.classList.remove("dragging"))
  );
  // Drops anywhere count (the zone's bubble up here): the browser would open the file instead.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    choose(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((entry) => entry.type.startsWith("image/"));
    if (item) choose(item.getAsFile());
  });
  $("show-attention").addEventListener("change", drawHeatmap);
  $("preview").addEventListener("load", fitPreview);
  window.addEventListener("resize", fitPreview);
  loadHealth();
}

setUp();
