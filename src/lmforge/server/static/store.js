// What a reload of the playground keeps: the conversation (each reply with its model, a reply cut
// short marked so), the other tabs' last results, the drafts and settings typed in the tabs and the
// sidebar, the tab and each tab's model. Plain JavaScript loaded after playground.js, chat.js and
// tasks.js, whose state it reads and whose functions show the results again.
//
// It is kept in sessionStorage, not localStorage: that lives as long as the browser tab, so a
// reload (F5) brings everything back while a new tab starts fresh, two tabs on one server do not
// overwrite each other's conversation, and no conversation is left behind once the tab is closed.
// The API key is never stored: its box is none of the fields below.
"use strict";

const STORE_KEY = "lmforge-playground";
const STORE_VERSION = 1; // a stored state of another version is ignored
const KEPT_FIELDS = "main input, main textarea, aside input, aside textarea";

// What a reload now should bring back. A reply still streaming comes back cut short, "interrupted"
// (the page reading it is gone); a turn with no reply yet is undone, its message back in the box.
function snapshot() {
  const fields = {};
  for (const field of document.querySelectorAll(KEPT_FIELDS)) {
    fields[field.id] = field.type === "checkbox" ? field.checked : field.value;
  }
  let history = state.history;
  let stats = $("chat-stats").textContent;
  const turn = state.pending;
  if (turn && turn.reply) {
    const reply = { role: "assistant", content: turn.reply, model: turn.model, cut: "interrupted" };
    history = [...history, { role: "user", content: turn.text }, reply];
    stats = "interrupted";
  } else if (turn && !fields.message) {
    fields.message = turn.text;
  }
  const shown = { ...state.shown };
  const completion = shown.completion;
  if (completion && completion.live) {
    // still streaming: what came so far, cut short (nothing yet: nothing to keep)
    if (completion.text) shown.completion = { ...completion, live: false, stats: "interrupted" };
    else delete shown.completion;
  }
  return { version: STORE_VERSION, task: state.task, models: state.chosen, fields, history, stats, shown };
}

function save() {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(snapshot()));
  } catch (_) {
    // storage full or turned off: the page works on, and a reload starts fresh, not from an
    // older state that this one could not replace
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch (_) {
      // no storage at all
    }
  }
}

const isText = (value) => typeof value === "string";
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

function isMessage(m) {
  return (
    isObject(m) &&
    (m.role === "user" || m.role === "assistant") &&
    isText(m.content) &&
    (m.model === undefined || isText(m.model)) &&
    (m.cut === undefined || m.cut === "stopped" || m.cut === "interrupted")
  );
}

const isScore = (value) => typeof value === "number" && Number.isFinite(value);
const listOf = (value, check) => Array.isArray(value) && value.every(check);
const isLabel = (r) => isObject(r) && isText(r.label) && isScore(r.score);
const isAnswer = (a) => isObject(a) && isText(a.answer) && isScore(a.score) && isScore(a.start) && isScore(a.end);

// Each one-shot tab's stored result: the shape it must have, and how it is shown again.
const SHOWN = {
  completion: {
    fits: (v) => isObject(v) && isText(v.prompt) && isText(v.text) && isText(v.stats),
    show: showCompletion,
  },
  translation: { fits: (v) => isObject(v) && listOf(v.texts, isText), show: showTranslations },
  classification: {
    fits: (v) =>
      isObject(v) &&
      listOf(v.texts, isText) &&
      listOf(v.results, (ranked) => listOf(ranked, isLabel)) &&
      v.results.length === v.texts.length,
    show: showClassifications,
  },
  qa: {
    fits: (v) =>
      isObject(v) &&
      isText(v.context) &&
      listOf(v.answers, isAnswer),
    show: showAnswers,
  },
};

// The stored state, or null: none, corrupt JSON, another version or shape (then it is removed).
function stored() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORE_KEY));
  } catch (_) {
    saved = undefined; // not JSON, or no storage
  }
  const fits =
    isObject(saved) &&
    saved.version === STORE_VERSION &&
    Object.hasOwn(TASKS, saved.task) &&
    isObject(saved.models) &&
    isObject(saved.fields) &&
    Array.isArray(saved.history) &&
    saved.history.every(isMessage) &&
    isText(saved.stats) &&
    (saved.shown === undefined || isObject(saved.shown));
  if (fits) return saved;
  if (saved !== null) {
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch (_) {
      // no storage: nothing to remove
    }
  }
  return null;
}

// Back as it was. Whether the kept tab and models are still served is seen once the server has
// said what it serves: a tab no model can do now gives way to the first that can (loadModels), a
// model no longer served to the tab's first (fillModels).
function restore() {
  const saved = stored();
  if (!saved) return;
  state.task = saved.task;
  for (const [task, id] of Object.entries(saved.models)) {
    if (Object.hasOwn(TASKS, task) && isText(id)) state.chosen[task] = id;
  }
  for (const field of document.querySelectorAll(KEPT_FIELDS)) {
    const value = saved.fields[field.id];
    if (field.type === "checkbox" && typeof value === "boolean") field.checked = value;
    else if (field.type !== "checkbox" && isText(value)) field.value = value;
  }
  state.history = saved.history.map(({ role, content, model, cut }) => ({ role, content, model, cut }));
  for (const { role, content, model, cut } of state.history) {
    const view = addMessage(role, content, model);
    if (cut) markCut(view, cut);
  }
  $("chat-stats").textContent = saved.stats;
  for (const [task, shown] of Object.entries(saved.shown || {})) {
    const kind = Object.hasOwn(SHOWN, task) ? SHOWN[task] : null;
    if (kind && kind.fits(shown)) {
      state.shown[task] = shown;
      kind.show(shown);
    } // a result of another shape is passed over: its tab starts empty
  }
}

// The sidebar's settings back to the page's defaults (the model, the conversation and drafts stay).
function resetSettings() {
  for (const field of document.querySelectorAll("aside input, aside textarea")) field.value = field.defaultValue;
  save();
}
