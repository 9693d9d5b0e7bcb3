// Streams the reply being written into the page, and refreshes the conversation when it
// ends. Without JavaScript the page refreshes itself until the reply is done.
"use strict";

function watchRun() {
  const run = document.getElementById("run");
  if (!run || !window.EventSource) return;
  const text = document.getElementById("run-text");
  const source = new EventSource(run.dataset.events + "?after=" + encodeURIComponent(run.dataset.after));
  source.onmessage = (event) => {
    text.textContent += JSON.parse(event.data).text;
  };
  source.addEventListener("end", () => {
    source.close();
    refreshConversation();
  });
  source.onerror = () => {
    // EventSource reconnects by itself (with Last-Event-ID); it gives up on an error page.
    if (source.readyState === EventSource.CLOSED) setTimeout(refreshConversation, 2000);
  };
}

async function refreshConversation() {
  // Swap in the server's rendering of the messages, leaving the message box as typed.
  const response = await fetch(location.pathname, { headers: { Accept: "text/html" } });
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById("live");
  if (fresh) document.getElementById("live").replaceWith(fresh);
  watchRun();
}

watchRun();

// The quiet countdown to the session's end, counted from the server's figure (never the
// browser's clock, which may be wrong).
function showCountdown() {
  const clock = document.querySelector(".session-clock");
  if (!clock) return;
  const ends = performance.now() + Number(clock.dataset.secondsLeft) * 1000;
  const label = clock.querySelector(".countdown");
  const tick = () => {
    const minutes = Math.round((ends - performance.now()) / 60000);
    label.textContent = minutes > 0 ? ` (in ${minutes} min)` : " (now)";
  };
  tick();
  setInterval(tick, 30000);
}

// Buttons that take a while say what is happening once pressed.
document.addEventListener("submit", (event) => {
  const button = event.target.querySelector("button[data-busy-label]");
  if (button) {
    button.textContent = button.dataset.busyLabel;
    button.setAttribute("aria-busy", "true");
  }
});

showCountdown();
