// Streams the reply being written into the page, and refreshes the conversation when it
// ends. Without JavaScript the page refreshes itself until the reply is done.
"use strict";

// Times come in UTC (<time datetime>); shown here in the reader's own time zone, and in
// lists as "5 min ago". Without script they stay in UTC.
const LOCAL_TIME = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", timeZoneName: "short",
});
const RELATIVE_TIME = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function localTime(iso) {
  return LOCAL_TIME.format(new Date(iso));
}

function relativeTime(iso) {
  const seconds = (new Date(iso) - Date.now()) / 1000;
  for (const [unit, size] of [["day", 86400], ["hour", 3600], ["minute", 60]]) {
    if (Math.abs(seconds) >= size) return RELATIVE_TIME.format(Math.round(seconds / size), unit);
  }
  return RELATIVE_TIME.format(0, "minute");
}

function showTimes(root = document) {
  for (const time of root.querySelectorAll("time[datetime][data-show]")) {
    time.title = time.title || time.textContent; // UTC, on hover
    time.textContent = time.dataset.show === "relative"
      ? relativeTime(time.dateTime)
      : localTime(time.dateTime);
  }
}

showTimes();

function watchRun() {
  const run = document.getElementById("run");
  if (!run || !window.EventSource) return;
  const text = document.getElementById("run-text");
  const status = document.getElementById("run-status");
  const source = new EventSource(run.dataset.events + "?after=" + encodeURIComponent(run.dataset.after));
  source.onmessage = (event) => {
    if (status) status.textContent = "writing…";
    text.textContent += JSON.parse(event.data).text;
  };
  source.addEventListener("phase", (event) => {
    if (status && JSON.parse(event.data).phase === "thinking") status.textContent = "Thinking…";
  });
  source.addEventListener("end", () => {
    source.close();
    const announcer = document.getElementById("announcer");
    if (announcer && run.dataset.kind !== "catch_up") {
      announcer.textContent = `The reply is done: ${text.textContent}`;
    }
    // A catch-up changes the whole page (the banner gives way to the message box).
    if (run.dataset.kind === "catch_up") location.reload();
    else refreshConversation();
  });
  source.onerror = () => {
    // EventSource reconnects by itself (with Last-Event-ID); it gives up on an error page.
    if (source.readyState !== EventSource.CLOSED) return;
    setTimeout(run.dataset.kind === "catch_up" ? () => location.reload() : refreshConversation, 2000);
  };
}

async function refreshConversation() {
  // Swap in the server's rendering of the messages, leaving the message box as typed.
  const response = await fetch(location.pathname, { headers: { Accept: "text/html" } });
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("live");
  if (fresh) {
    document.getElementById("live").replaceWith(fresh);
    showTimes(fresh);
    addCopyButtons(fresh);
  }
  watchRun();
}

watchRun();

// The idle timer. It counts down from the server's figure (never the browser's clock).
// When the session nears its end, a user who has done anything since the server last saw
// them keeps it going; one who really is away is given a resume code in a dialog.
function idleTimer() {
  const clock = document.querySelector(".session-clock[data-park-url]");
  const dialog = document.getElementById("idle-dialog");
  if (!clock || !dialog) return;
  const token = document.querySelector("input[name=csrf_token]").value;
  const warning = Number(clock.dataset.warningSeconds) * 1000;
  const label = clock.querySelector(".countdown");
  let endsAt = performance.now() + Number(clock.dataset.secondsLeft) * 1000;
  let seenAt = performance.now();
  let activeAt = performance.now();
  let parked = false;

  const post = async (url) => {
    const response = await fetch(url, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRFToken": token },
    });
    // Anything but JSON (the session ended, the login ran out) leads to a reload below.
    return response.headers.get("Content-Type") === "application/json" ? response.json() : {};
  };
  const present = () => {
    activeAt = performance.now();
  };
  for (const type of ["keydown", "pointerdown", "pointermove", "focus", "scroll"]) {
    window.addEventListener(type, present, { passive: true });
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") present();
  });
  const keepGoing = async () => {
    const answer = await post(clock.dataset.touchUrl);
    if (!(answer.seconds_left > 0)) return location.reload();
    endsAt = performance.now() + answer.seconds_left * 1000;
    seenAt = performance.now();
    parked = false;
  };

  setInterval(async () => {
    const left = endsAt - performance.now();
    const minutes = Math.round(left / 60000);
    label.textContent = minutes > 0 ? ` (in ${minutes} min)` : " (now)";
    if (parked || left > warning) return;
    if (activeAt > seenAt) return keepGoing();
    parked = true;
    const code = await post(clock.dataset.parkUrl);
    // Refused (too many codes this hour): no dialog, the session runs out as it would.
    if (code.error) return;
    if (!code.code) return location.reload(); // the session ended meanwhile
    const away = Math.round((performance.now() - activeAt) / 60000);
    dialog.querySelector(".away").textContent =
      away >= 1 ? `for ${away} minute${away === 1 ? "" : "s"}` : "for a little while";
    dialog.querySelector(".exchanges").textContent =
      code.exchanges === 1 ? "1 exchange is" : `${code.exchanges} exchanges are`;
    dialog.querySelector(".topic").textContent = code.last_topic;
    dialog.querySelector(".code").textContent = code.code;
    dialog.querySelector(".valid-until").textContent = localTime(code.valid_until);
    dialog.showModal();
  }, 1000);

  dialog.querySelector(".keep").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    present();
    keepGoing();
  });
  dialog.querySelector(".copy").addEventListener("click", async (event) => {
    const code = dialog.querySelector(".code");
    if (navigator.clipboard) {
      await navigator.clipboard.writeText(code.textContent);
      event.target.textContent = "Copied";
    } else {
      // No clipboard access (a page served over plain HTTP): select it for copying.
      getSelection().selectAllChildren(code);
    }
  });
}

// Buttons that take a while say what is happening once pressed.
document.addEventListener("submit", (event) => {
  const button = event.target.querySelector("button[data-busy-label]");
  if (button) {
    button.textContent = button.dataset.busyLabel;
    button.setAttribute("aria-busy", "true");
  }
});

idleTimer();

// This browser's copy of each conversation's newest messages, so that a conversation the
// server lost can be caught up from it. Kept for the 20 most recently seen conversations.
const COPY_PREFIX = "rc:copy:";
const COPIES_KEPT = 20;

function keepBrowserCopy() {
  const source = document.getElementById("browser-copy");
  if (!source || !window.localStorage) return;
  const copy = {
    title: source.dataset.title,
    savedAt: Date.now(),
    messages: JSON.parse(source.textContent),
  };
  try {
    localStorage.setItem(COPY_PREFIX + source.dataset.conversation, JSON.stringify(copy));
    const copies = Object.keys(localStorage).filter((key) => key.startsWith(COPY_PREFIX));
    copies
      .map((key) => [key, JSON.parse(localStorage.getItem(key)).savedAt || 0])
      .sort((a, b) => b[1] - a[1])
      .slice(COPIES_KEPT)
      .forEach(([key]) => localStorage.removeItem(key));
  } catch (error) {
    // Storage full or refused: the copy is a convenience, the server keeps the real thing.
  }
}

function offerBrowserCopy() {
  const form = document.querySelector("form.restore");
  if (!form || !window.localStorage) return;
  const saved = localStorage.getItem(COPY_PREFIX + form.dataset.conversation);
  if (!saved) return;
  const copy = JSON.parse(saved);
  form.querySelector("input[name=copy]").value = JSON.stringify(copy.messages);
  form.querySelector(".copy-title").textContent = copy.title || "this conversation";
  form.hidden = false;
}

keepBrowserCopy();
offerBrowserCopy();

// The message box is saved as it is typed: in this browser at once, on the server (so
// other devices see it) after a pause. A draft the server could not take (the login ran
// out, say) comes back from this browser when the page is open again. A message sent is
// kept here too until a page shows it stored: one the server refused unread (too large)
// or never got (the network failed) comes back into the box.
const DRAFT_PREFIX = "rc:draft:";
const SENT_PREFIX = "rc:sent:"; // message id -> the draft key it was sent from

function forgetStoredMessages() {
  for (const marker of Object.keys(localStorage)) {
    if (!marker.startsWith(SENT_PREFIX)) continue;
    if (!document.getElementById("m-" + marker.slice(SENT_PREFIX.length))) continue;
    localStorage.removeItem(localStorage.getItem(marker));
    localStorage.removeItem(marker);
  }
}

function keepDrafts() {
  if (!window.localStorage) return;
  forgetStoredMessages();
  const form = document.querySelector("form.composer");
  if (!form) return;
  const box = form.querySelector("textarea[name=text]");
  const key = DRAFT_PREFIX + (form.dataset.draftUrl || location.pathname);
  if (!box.value && localStorage.getItem(key)) box.value = localStorage.getItem(key);
  else if (box.value) localStorage.setItem(key, box.value); // the server's, or typed early
  let timer;
  box.addEventListener("input", () => {
    localStorage.setItem(key, box.value);
    if (!form.dataset.draftUrl) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      const body = new FormData();
      body.append("csrf_token", form.querySelector("input[name=csrf_token]").value);
      body.append("text", box.value);
      fetch(form.dataset.draftUrl, { method: "POST", body, redirect: "manual" });
    }, 800);
  });
  form.addEventListener("submit", () => {
    clearTimeout(timer);
    localStorage.setItem(key, box.value);
    for (const marker of Object.keys(localStorage)) {
      if (marker.startsWith(SENT_PREFIX) && localStorage.getItem(marker) === key) {
        localStorage.removeItem(marker); // an earlier try from this box, refused
      }
    }
    localStorage.setItem(SENT_PREFIX + form.querySelector("input[name=message_id]").value, key);
  });
}

keepDrafts();

// Deleting a conversation deletes what this browser kept of it too: its copy and its draft.
// (Logging out clears every copy and draft: the server answers with Clear-Site-Data.)
document.addEventListener("submit", (event) => {
  const id = event.target.dataset.forgetConversation;
  if (!id || !window.localStorage) return;
  localStorage.removeItem(COPY_PREFIX + id);
  localStorage.removeItem(DRAFT_PREFIX + "/c/" + id + "/draft");
});

// The message box: Enter sends, Shift+Enter starts a new line, and the box grows with its
// text. Escape stops the reply being written (unless a dialog is open: it closes that).
function composerKeys() {
  const form = document.querySelector("form.composer");
  if (form) {
    const box = form.querySelector("textarea[name=text]");
    const grow = () => {
      box.style.height = "auto";
      box.style.height = `${Math.min(box.scrollHeight + 2, innerHeight / 2)}px`;
    };
    box.addEventListener("input", grow);
    grow();
    box.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      if (box.value.trim()) form.requestSubmit();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || document.querySelector("dialog[open]")) return;
    const stop = document.querySelector("#run form[action$='/stop']");
    if (stop) stop.requestSubmit();
  });
}

composerKeys();

// Copy buttons: on each reply, and on each block of code in one.
async function copyText(button, text, fallback) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  } else {
    getSelection().selectAllChildren(fallback); // no clipboard here: selected to copy
  }
}

function addCopyButtons(root = document) {
  for (const target of root.querySelectorAll("article.message.assistant .text, .message .text pre")) {
    if (target.dataset.copyable) continue;
    target.dataset.copyable = "1";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button small secondary";
    button.textContent = "Copy";
    button.setAttribute("aria-label", target.tagName === "PRE" ? "Copy this code" : "Copy this reply");
    button.addEventListener("click", () => copyText(button, target.innerText, target));
    if (target.tagName === "PRE") target.before(button);
    else target.after(button);
  }
}

addCopyButtons();

// The list of conversations opens itself on a wide screen; on a phone it stays a drawer.
function openSidebar() {
  const sidebar = document.getElementById("sidebar");
  if (sidebar && matchMedia("(min-width: 60rem)").matches) sidebar.open = true;
}

openSidebar();
