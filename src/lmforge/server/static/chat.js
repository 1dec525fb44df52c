// The playground's chat tab: the transcript, a turn sent with the conversation so far, Stop and
// Clear. Plain JavaScript loaded after playground.js, whose helpers ($, post, begin, finish, ...)
// it uses. Model and user text are only ever written with textContent, never as HTML.
"use strict";

// The transcript stays at its bottom while a reply grows, unless the user scrolled up to read.
const FOLLOW_PX = 30; // "at the bottom": this close to it

function atBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight <= FOLLOW_PX;
}

function showText(view, text) {
  const log = $("transcript");
  const follow = atBottom(log);
  view.textContent = text; // text, never HTML
  if (follow) log.scrollTop = log.scrollHeight;
}

// A message in the transcript; a reply names the model that wrote it (the model may change between
// turns), in its heading and its accessible name ("Assistant, MODEL").
function addMessage(role, text, model) {
  const item = document.createElement("div");
  item.className = `message ${role}`;
  item.setAttribute("role", "article");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  item.setAttribute("aria-label", model ? `${who.textContent}, ${model}` : who.textContent);
  if (model) {
    const name = document.createElement("span");
    name.className = "model";
    name.textContent = model;
    who.append(" ", name);
  }
  const content = document.createElement("div");
  content.className = "content";
  content.dir = "auto"; // its own direction, isolated: right-to-left text or controls stay inside
  content.textContent = text;
  item.append(who, content);
  $("transcript").append(item);
  $("transcript").scrollTop = $("transcript").scrollHeight;
  return content;
}

// A reply cut short (Stop, a lost connection, an error mid-stream) stays, marked as such.
function markCut(replyView, why) {
  const note = document.createElement("span");
  note.className = "cut";
  note.textContent = why;
  replyView.parentElement.append(note);
}

async function sendChat() {
  const text = $("message").value; // sent as typed (leading spaces of code count)
  if (!text.trim()) throw new SettingError("type a message first");
  const model = requireModel();
  const settings = sampling();
  const system = $("system-prompt").value.trim();
  const conversation = state.conversation;
  const turns = [...state.history.map(({ role, content }) => ({ role, content })), { role: "user", content: text }];
  const messages = system ? [{ role: "system", content: system }, ...turns] : turns;
  const turn = { text, model, reply: "" };
  state.pending = turn; // what a reload in mid-reply keeps (store.js)
  const signal = begin("stop-chat");
  const userView = addMessage("user", text);
  const replyView = addMessage("assistant", "", model);
  replyView.parentElement.classList.add("streaming");
  $("transcript").setAttribute("aria-busy", "true"); // a screen reader reads the reply once, when done
  $("message").value = "";
  $("chat-stats").textContent = "";
  // the turn joins the history: the reply with its model and, if cut short, how
  const keep = (cut) => {
    const reply = { role: "assistant", content: turn.reply, model, ...(cut ? { cut } : {}) };
    state.history = [...state.history, { role: "user", content: text }, reply];
  };
  const started = performance.now();
  try {
    const pick = (choice) => choice.delta && choice.delta.content;
    const body = { model, messages, ...settings };
    const { usage, finishReason, first } = await stream("v1/chat/completions", body, signal, pick, (piece) => {
      turn.reply += piece;
      showText(replyView, turn.reply);
    });
    if (state.conversation === conversation) keep(null);
    stats("chat-stats", usage, finishReason, started, first, model);
  } catch (e) {
    if (state.conversation !== conversation) throw e; // cleared meanwhile: nothing to keep or put back
    if (turn.reply) {
      const why = e.name === "AbortError" ? "stopped" : "interrupted";
      keep(why); // what came is kept
      markCut(replyView, why);
      $("chat-stats").textContent = why;
    } else {
      // nothing came: the turn is undone and the message goes back into the box, unless the user
      // has typed a new one there meanwhile
      userView.parentElement.remove();
      replyView.parentElement.remove();
      if (!$("message").value) $("message").value = text;
    }
    throw e;
  } finally {
    if (state.pending === turn) state.pending = null;
    replyView.parentElement.classList.remove("streaming");
    $("transcript").removeAttribute("aria-busy");
    finish("stop-chat");
    save(); // store.js
  }
}

// Clear forgets the conversation, the stored one too (the settings and the draft stay).
function clearChat() {
  state.conversation += 1;
  state.pending = null;
  if (state.busy && !$("stop-chat").disabled) state.busy.abort(); // a chat reply, not another tab's work
  state.history = [];
  $("transcript").replaceChildren();
  $("chat-stats").textContent = "";
  clearError();
  save();
  $("message").focus();
}
