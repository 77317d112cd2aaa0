// The web console's page: an xterm.js terminal joined to a guest's console
// through colinux's WebSocket (console bytes as binary messages both ways,
// events from colinux and resizes from here as JSON text messages).
"use strict";

// xterm.js makes <style> elements for its colours and cell sizes. The page's
// Content-Security-Policy lets in only styles that carry this response's
// nonce, which this script's own tag holds: give it to each one as it is made.
(() => {
  const nonce = document.currentScript.nonce;
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (tagName, options) {
    const element = createElement.call(this, tagName, options);
    if (String(tagName).toLowerCase() === "style") element.setAttribute("nonce", nonce);
    return element;
  };
})();

(() => {
  const name = document.body.dataset.name;
  const state = document.getElementById("state");
  const container = document.getElementById("terminal");
  const term = new Terminal({ scrollback: 10000, cursorBlink: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(container);
  fit.fit();
  term.focus();

  const token = new URLSearchParams(location.search).get("token") || "";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  // While the recent history is replayed, the terminal's answers to the
  // queries in it (where is the cursor? what are you?) were asked of some
  // earlier terminal: they are not sent to the guest.
  let replaying = false;
  let ended = false;

  function show(text, how) {
    state.textContent = text;
    state.className = how;
  }

  function end(text) {
    if (ended) return;
    ended = true;
    show(text, "ended");
    term.write(`\r\n\x1b[1m[${text}]\x1b[0m\r\n`);
    term.options.disableStdin = true;
  }

  function send(data) {
    if (!replaying && !ended && socket.readyState === WebSocket.OPEN) socket.send(data);
  }

  function sendSize() {
    if (socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ op: "resize", rows: term.rows, cols: term.cols }));
    }
  }

  socket.onopen = () => sendSize();
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    const message = JSON.parse(event.data);
    if (message.event === "attached") {
      replaying = true;
    } else if (message.event === "live") {
      term.write("", () => { replaying = false; });  // once the history has been shown
      show("connected", "live");
    } else if (message.event === "stopped") {
      end(`guest ${name} has stopped`);
    } else if (message.event === "closed") {
      end(`the web console was closed; guest ${name} keeps running`);
    } else if (message.event === "error") {
      end(message.message);
    }
  };
  socket.onclose = () => end("disconnected from colinux");

  term.onData((data) => send(encoder.encode(data)));
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  term.onResize(() => sendSize());
  new ResizeObserver(() => fit.fit()).observe(container);
})();
