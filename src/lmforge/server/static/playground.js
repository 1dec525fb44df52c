// The lmforge playground: plain JavaScript, no build step. This file: the state, settings, tabs
// and completion; api.js: the calls to the server; chat.js: the chat tab; tasks.js: the
// translation, classification and question-answering tabs; store.js: what a reload keeps. It talks
// only to the server's own OpenAI-compatible API (/v1/...).
// Model text is only ever written with textContent, never as HTML.
"use strict";

// Each tab's task: the models that can do it, and what model to serve for it when none can.
const TASKS = {
  chat: {
    accepts: (m) => m.task === "text-generation" && m.chat,
    needs: "a text-generation model with a chat template",
  },
  completion: { accepts: (m) => m.task === "text-generation", needs: "a text-generation model" },
  translation: { accepts: (m) => m.task === "translation", needs: "a translation (encoder-decoder) model" },
  classification: { accepts: (m) => m.task === "text-classification", needs: "a text-classification model" },
  qa: { accepts: (m) => m.task === "question-answering", needs: "a question-answering (span) model" },
};

const state = {
  task: "chat",
  models: [], // /v1/models' entries; none until the server answered
  chosen: {}, // each tab's model: {task: model id}
  apiKey: "",
  history: [], // the conversation: [{role, content}], a reply with its model and, cut short, its cut
  pending: null, // the chat turn in flight: {text, model, reply so far}
  conversation: 0, // counts Clears: a reply in flight for a cleared conversation changes nothing
  busy: null, // the AbortController of the request in flight
  offline: false, // the last request could not reach the server
  shown: {}, // each one-shot tab's last result, as shown (completion, translation, classification, qa)
};

const $ = (id) => document.getElementById(id);

// --- errors and status ------------------------------------------------------------------------

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

async function guarded(work) {
  clearError();
  try {
    await work();
  } catch (e) {
    if (e.name === "AbortError") return; // the Stop button
    if (e instanceof NetworkError) {
      state.offline = true;
      $("connection").textContent = "cannot reach the server";
    }
    showError(e instanceof ApiError || e instanceof SettingError ? e.message : `${e.name}: ${e.message}`);
  }
}

// --- models -------------------------------------------------------------------------------------

async function loadModels() {
  clearError();
  const response = await reach("v1/models", {});
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("connection").textContent = "this server needs an API key";
    if (state.apiKey) showError((await errorOf(response)).message);
    $("api-key").focus();
    return;
  }
  if (!response.ok) throw await errorOf(response);
  state.models = (await response.json()).data;
  $("key-form").hidden = !state.apiKey;
  showConnected();
  noteMissingTasks();
  // the tab kept from before a reload, unless no served model can do its task now
  selectTab(available(state.task) ? state.task : (Object.keys(TASKS).find(available) ?? state.task));
  $("transcript").scrollTop = $("transcript").scrollHeight; // a kept conversation, shown at its end
}

function showConnected() {
  state.offline = false;
  const n = state.models.length;
  $("connection").textContent = `connected: ${n} model${n === 1 ? "" : "s"}`;
}

function fillModels() {
  const select = $("model");
  const previous = select.value;
  const usable = state.models.filter(TASKS[state.task].accepts);
  select.replaceChildren(
    ...usable.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = `${m.id} (context ${m.context_length})`;
      return option;
    })
  );
  // the tab's own choice, else the model of the tab before; one no longer served is passed over
  const wanted = [state.chosen[state.task], previous].find((id) => usable.some((m) => m.id === id));
  if (wanted) select.value = wanted;
  if (usable.length) state.chosen[state.task] = select.value;
  select.disabled = usable.length === 0;
  for (const button of document.querySelectorAll("main form button[type=submit]")) {
    button.disabled = usable.length === 0 || state.busy !== null;
  }
}

// --- settings -----------------------------------------------------------------------------------

class SettingError extends Error {}

// A number field: empty -> undefined (the server's default); not a number -> a clear error.
function numberSetting(id, name, integer) {
  const input = $(id);
  if (input.value.trim() === "") {
    if (input.validity.badInput) throw new SettingError(`${name}: not a number`);
    return undefined;
  }
  const value = Number(input.value);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new SettingError(`${name}: ${input.value} is not ${integer ? "an integer" : "a number"}`);
  }
  // past 2^53 a JavaScript number is rounded (2^64 would be sent as 18446744073709552000)
  if (integer && !Number.isSafeInteger(value)) {
    throw new SettingError(`${name}: ${input.value} is past what the page can send exactly (-9007199254740991 to 9007199254740991)`);
  }
  return value;
}

function sampling() {
  const body = {
    temperature: numberSetting("temperature", "Temperature", false),
    top_p: numberSetting("top-p", "Top p", false),
    repetition_penalty: numberSetting("repetition-penalty", "Repetition penalty", false),
    max_tokens: numberSetting("max-tokens", "Max tokens", true),
    seed: numberSetting("seed", "Seed", true),
  };
  for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key];
  // empty: null, which fills the room the prompt leaves in the model's context (a completion's
  // absent max_tokens would mean 16, and a fixed default would not fit a small model's context)
  if (body.max_tokens === undefined) body.max_tokens = null;
  return body;
}

function requireModel() {
  const model = $("model").value;
  if (!model) throw new SettingError(`no served model can do this: it needs ${TASKS[state.task].needs}`);
  return model;
}

function lines(id) {
  const texts = $(id)
    .value.split("\n")
    .map((t) => t.trim())
    .filter((t) => t);
  if (texts.length === 0) throw new SettingError("type some text first");
  return texts;
}

// --- busy state: one request at a time ------------------------------------------------------------

function begin(stopId) {
  const focused = document.activeElement;
  state.busy = new AbortController();
  if (stopId) $(stopId).disabled = false;
  fillModels();
  refocus(focused);
  return state.busy.signal;
}

function finish(stopId) {
  const focused = document.activeElement;
  state.busy = null;
  if (stopId) $(stopId).disabled = true;
  fillModels();
  refocus(focused);
}

// A focused button that got disabled (Send, Stop) would leave the focus on <body>: it goes to the
// tab's first field (the message, the prompt, ...) instead.
function refocus(focused) {
  if (focused && focused.disabled) $(`panel-${state.task}`).querySelector("textarea, input").focus();
}

// The rate counts the tokens after the first over the time after the first: the wait for the
// first token is the prompt's processing (and any queue), not generation. A reply whose text filled
// the model's context (the server refuses a max_tokens over the room the prompt leaves, and a chat
// without one fills that room) says so: "length" alone read as Max tokens.
function stats(id, usage, finishReason, started, first, model) {
  const parts = [];
  if (usage) {
    const now = performance.now();
    const n = usage.completion_tokens;
    parts.push(`${n} tokens in ${((now - started) / 1000).toFixed(1)} s`);
    if (first !== null) parts.push(`first after ${((first - started) / 1000).toFixed(1)} s`);
    if (first !== null && n > 1 && now > first) {
      parts.push(`${((n - 1) / ((now - first) / 1000)).toFixed(1)} tokens/s after the first`);
    }
    parts.push(`prompt ${usage.prompt_tokens} tokens`);
  }
  const card = state.models.find((m) => m.id === model);
  const full = usage && card && usage.prompt_tokens + usage.completion_tokens >= card.context_length;
  if (finishReason === "length" && full) parts.push(`finish: length (the model's context of ${card.context_length} tokens is full)`);
  else if (finishReason) parts.push(`finish: ${finishReason}`);
  $(id).textContent = parts.join(" · ");
}

// --- completion -----------------------------------------------------------------------------------

async function sendCompletion() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) throw new SettingError("type a prompt first");
  const model = requireModel();
  const settings = sampling();
  const signal = begin("stop-completion");
  const out = $("completion-output");
  // what the tab shows, kept for a reload (store.js); live while it streams
  const shown = (state.shown.completion = { prompt, text: "", stats: "", live: true });
  showCompletion(shown);
  out.setAttribute("aria-busy", "true"); // a screen reader reads the completion once, when done
  const started = performance.now();
  try {
    const pick = (choice) => choice.text;
    const body = { model, prompt, ...settings };
    const { usage, finishReason, first } = await stream("v1/completions", body, signal, pick, (piece) => {
      shown.text += piece;
      out.querySelector(".generated").textContent = shown.text;
    });
    stats("completion-stats", usage, finishReason, started, first, model);
  } catch (e) {
    if (e.name === "AbortError") $("completion-stats").textContent = "stopped"; // what came stays
    else if (shown.text) $("completion-stats").textContent = "interrupted";
    throw e;
  } finally {
    shown.live = false;
    shown.stats = $("completion-stats").textContent;
    out.removeAttribute("aria-busy");
    finish("stop-completion");
  }
}

function showCompletion({ prompt, text, stats }) {
  const out = $("completion-output");
  out.querySelector(".prompt-echo").textContent = prompt;
  out.querySelector(".generated").textContent = text;
  $("completion-stats").textContent = stats;
}

// --- tabs and wiring ----------------------------------------------------------------------------------

// A tab is offered only when a served model can do its task: none is shown before the server
// has said what it serves, and a tab that could do nothing is not shown at all.
function available(task) {
  return state.models.some(TASKS[task].accepts);
}

// The tabs left out, said under the tabs with the model each would need.
function noteMissingTasks() {
  const missing = Object.keys(TASKS).filter((task) => !available(task));
  const named = missing.map((task) => `${$(`tab-${task}`).textContent} needs ${TASKS[task].needs}`);
  const note = $("missing-tasks");
  note.hidden = missing.length === 0;
  note.textContent =
    `Not offered, as no served model can do them: ${named.join("; ")}. ` +
    "Give lmforge serve such a model's directory to get the tab.";
}

function selectTab(task) {
  state.task = task;
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const selected = tab.dataset.task === task;
    tab.hidden = !available(tab.dataset.task);
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected || tab.hidden;
  }
  $("sampling").hidden = task !== "chat" && task !== "completion";
  $("system-box").hidden = task !== "chat";
  clearError();
  fillModels();
}

function onSubmit(id, work) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    if (!state.busy) guarded(work);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab.dataset.task));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const shown = tabs.filter((t) => !t.hidden);
      const next = shown[(shown.indexOf(tab) + step + shown.length) % shown.length];
      selectTab(next.dataset.task);
      next.focus();
    });
  }
  onSubmit("chat-form", sendChat); // chat.js
  onSubmit("completion-form", sendCompletion);
  onSubmit("translation-form", sendTranslation);
  onSubmit("classification-form", sendClassification);
  onSubmit("qa-form", sendQuestion); // tasks.js
  // an Enter that ends an IME composition belongs to the IME (keyCode 229: some browsers' way to say so)
  const composing = (event) => event.isComposing || event.keyCode === 229;
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !composing(event)) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !composing(event)) {
      event.preventDefault();
      $("completion-form").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    const stop = document.querySelector("button.stop:not(:disabled)");
    if (event.key === "Escape" && !composing(event) && stop) stop.click(); // stops what streams
  });
  $("clear").addEventListener("click", clearChat);
  $("reset-settings").addEventListener("click", resetSettings); // store.js
  $("model").addEventListener("change", () => {
    state.chosen[state.task] = $("model").value;
  });
  // what a reload keeps is written at each change, each chat turn's end, and when the page goes
  document.addEventListener("change", save);
  document.addEventListener("visibilitychange", () => document.visibilityState === "hidden" && save());
  window.addEventListener("pagehide", save);
  for (const id of ["stop-chat", "stop-completion"]) {
    $(id).addEventListener("click", () => state.busy && state.busy.abort());
  }
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    guarded(loadModels);
  });
  restore(); // store.js
  selectTab(state.task);
  guarded(loadModels);
});
