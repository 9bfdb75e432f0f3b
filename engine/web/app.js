// @ts-check
// The hotpath web client: plain JavaScript, no framework, no build step. It talks to the API
// documented at /openapi.json; `scripts/check-web-types` type-checks every call below against
// a TypeScript client generated from that document (the `import('hotpath-api')` types).
"use strict";

/** @typedef {import('hotpath-api').components['schemas']} S */
/** @typedef {import('hotpath-api').paths} Paths */
/** @typedef {S['ActionAnswer']} ActionAnswer */
/** @typedef {S['GameView']} GameView */
/** @typedef {{game: string, token: string, name: string, joinUrl?: string}} Session */
/** @typedef {{id: string | null, event: string, data: any}} SseEvent */

const SESSION_KEY = "hotpath.session";
const MAX_STORED_ANSWERS = 30;

/** @param {string} id */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el;
}

/**
 * @template {string} K
 * @param {K} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node | string)[]} [children]
 * @returns {K extends keyof HTMLElementTagNameMap ? HTMLElementTagNameMap[K] : HTMLElement}
 */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c);
  return /** @type {any} */ (el);
}

// ---------------------------------------------------------------------------------------------
// The API: one typed function per operation the page uses, each with its path as the document
// spells it. The types come from the OpenAPI document, so a renamed field or route fails the
// type check.

class ApiFailure extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * @template {keyof Paths} P
 * @param {"GET" | "POST"} method
 * @param {P} template the path as the OpenAPI document names it
 * @param {Record<string, string>} params values of its `{…}` segments
 * @param {string | null} token
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
async function call(method, template, params, token, body) {
  const path = String(template).replace(/\{(\w+)\}/g, (_, name) => encodeURIComponent(params[name]));
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = json && json.error;
    throw new ApiFailure(resp.status, err ? err.code : "http", err ? err.message : `HTTP ${resp.status}`);
  }
  return json;
}

const api = {
  /** @returns {Promise<S['ScenarioList']>} */
  scenarios: () => call("GET", "/v1/scenarios", {}, null),
  /** @param {string} admin @param {S['CreateGame']} body @returns {Promise<S['GameCreated']>} */
  createGame: (admin, body) => call("POST", "/v1/games", {}, admin, body),
  /** @param {string} admin @param {string} game @param {S['AddPlayer']} body @returns {Promise<S['PlayerAdded']>} */
  addPlayer: (admin, game, body) => call("POST", "/v1/games/{game_id}/players", { game_id: game }, admin, body),
  /** @param {string} admin @param {string} game @returns {Promise<S['Invite']>} */
  invite: (admin, game) => call("GET", "/v1/games/{game_id}/invite", { game_id: game }, admin),
  /** @param {string} game @param {S['JoinGame']} body @returns {Promise<S['PlayerAdded']>} */
  join: (game, body) => call("POST", "/v1/games/{game_id}/join", { game_id: game }, null, body),
  /** @param {string} token @param {string} game @returns {Promise<GameView>} */
  game: (token, game) => call("GET", "/v1/games/{game_id}", { game_id: game }, token),
  /** @param {string} token @param {string} game @param {S['ActionRequest']} body @returns {Promise<ActionAnswer>} */
  act: (token, game, body) => call("POST", "/v1/games/{game_id}/actions", { game_id: game }, token, body),
};

/** @type {keyof Paths} */
const EVENTS_PATH = "/v1/games/{game_id}/events";

// ---------------------------------------------------------------------------------------------
// State

/** @type {Session | null} */
let session = null;
/** @type {GameView | null} */
let view = null;
/** @type {AbortController | null} */
let following = null;
/** Event ids already shown: the stream is at-least-once. */
const seen = new Set();
/** Streamed replies by request id: the chunks of the newest attempt, by index. */
/** @type {Map<string, {attempt: number, chunks: string[], done: boolean, stakeholder: string}>} */
const replies = new Map();

function loadSession() {
  try {
    return /** @type {Session | null} */ (JSON.parse(localStorage.getItem(SESSION_KEY) || "null"));
  } catch {
    return null;
  }
}

/** @param {Session | null} s */
function saveSession(s) {
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

/** @param {string} game */
const lastIdKey = (game) => `hotpath.last-event-id.${game}`;
/** @param {string} game */
const answersKey = (game) => `hotpath.answers.${game}`;

// ---------------------------------------------------------------------------------------------
// Formatting

/** @param {number | null | undefined} ms */
function age(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms} ms old`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s old`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min old`;
  return `${Math.round(ms / 3_600_000)} h old`;
}

/** @param {string} id */
function stakeholderName(id) {
  for (const scene of view ? view.scenes : []) {
    for (const s of scene.stakeholders) if (s.id === id) return s.name;
  }
  return id;
}

/**
 * The badge of a piece: its source, its age, and what it was made for when the answer says.
 * Fields the engine may add later (`provenance`, `served_for`) are shown when present.
 * @param {any} piece
 */
function badge(piece) {
  const source = String(piece.source || "unknown");
  const wrap = h("span", { class: "provenance" }, [
    h("span", { class: "badge", "data-source": source }, [source]),
  ]);
  const old = age(piece.age_ms);
  if (old) wrap.append(" ", h("span", { class: "age" }, [old]));
  /** @type {string[]} */
  const details = [];
  const p = piece.provenance;
  if (p && typeof p === "object") {
    if (p.made_for) details.push(`made for ${p.made_for}`);
    if (p.model) details.push(`model ${p.model}`);
    if (p.prompt_version) details.push(`prompt ${p.prompt_version}`);
    if (p.world_version !== undefined && p.world_version !== null) details.push(`world v${p.world_version}`);
  }
  if (piece.served_for) details.push(`served for ${piece.served_for}`);
  if (details.length) wrap.append(" ", h("span", { class: "made-for" }, [details.join(" · ")]));
  return wrap;
}

// ---------------------------------------------------------------------------------------------
// Rendering

function showConnection(/** @type {string} */ state, /** @type {string} */ text) {
  const el = $("connection");
  el.dataset.state = state;
  el.textContent = text;
}

function renderConflicts() {
  const list = $("conflicts");
  list.replaceChildren();
  for (const c of view ? view.conflicts : []) {
    const meter = h("meter", {
      min: "0",
      max: String(c.resolve_at),
      value: String(c.intensity),
      "aria-label": `${c.name} intensity`,
    });
    list.append(
      h("li", { "data-conflict": c.id }, [
        h("strong", {}, [c.name]),
        " — phase ",
        h("span", { class: "phase" }, [c.phase_name || c.phase]),
        ", intensity ",
        h("span", { class: "intensity" }, [String(c.intensity)]),
        `/${c.resolve_at}`,
        c.resolved ? " (resolved)" : "",
        " ",
        meter,
      ]),
    );
  }
}

function renderScenes() {
  const scene = /** @type {HTMLSelectElement} */ ($("scene"));
  const scenes = view ? view.scenes : [];
  // A game's scenes never change: build the options once, so a refresh never disturbs a choice.
  if (scene.options.length !== scenes.length) {
    const keep = scene.value;
    scene.replaceChildren(...scenes.map((s) => h("option", { value: s.id }, [s.name])));
    if (keep) scene.value = keep;
  }
  renderTargets();
}

function renderTargets() {
  const sceneId = /** @type {HTMLSelectElement} */ ($("scene")).value;
  const target = /** @type {HTMLSelectElement} */ ($("target"));
  if (target.dataset.scene === sceneId) return;
  target.dataset.scene = sceneId;
  const keep = target.value;
  target.replaceChildren(h("option", { value: "" }, ["(nobody)"]));
  const scene = view ? view.scenes.find((s) => s.id === sceneId) : undefined;
  for (const s of scene ? scene.stakeholders : []) {
    target.append(h("option", { value: s.id }, [`${s.name}, ${s.role}`]));
  }
  if ([...target.options].some((o) => o.value === keep)) target.value = keep;
  $("scene-description").textContent = scene ? scene.description : "";
}

/**
 * One answer: the action, then every piece with its badge.
 * @param {ActionAnswer} a
 * @param {{text: string, scene: string, target?: string | null}} asked
 */
function renderAnswer(a, asked) {
  const item = h("li", { class: "answer", "data-seq": String(a.seq) });
  const heading = h("h4", {}, [
    `Turn ${a.turn} · you ${a.kind}`,
    asked.target ? ` ${stakeholderName(asked.target)}` : "",
    `: “${asked.text}”`,
  ]);
  item.append(heading);
  if (a.degraded) item.append(h("p", { class: "degraded" }, ["degraded: a backend was slow, pieces fell back to rules"]));

  const reactions = h("ul", { class: "reactions", "aria-label": "Reactions" });
  for (const r of a.reactions) {
    reactions.append(
      h("li", { class: "reaction piece", "data-stakeholder": r.stakeholder_id, "data-source": r.source }, [
        h("span", { class: "who" }, [stakeholderName(r.stakeholder_id)]),
        " ",
        badge(r),
        h("p", { class: "said" }, [r.text]),
        h("p", { class: "did" }, [`${r.behaviour} (${r.intent})`]),
      ]),
    );
  }
  item.append(h("h5", {}, ["Reactions"]), reactions);

  item.append(
    h("div", { class: "narration piece", "data-source": a.narration.source }, [
      h("h5", {}, ["Narration ", badge(a.narration)]),
      h("p", {}, [a.narration.text]),
    ]),
  );

  const social = h("div", { class: "social piece", "data-source": a.social.source }, [
    h("h5", {}, ["Gossip and reputation ", badge(a.social)]),
  ]);
  const gossip = h("ul", { class: "gossip" });
  for (const g of a.social.gossip) {
    gossip.append(h("li", {}, [`${stakeholderName(g.from)} about ${stakeholderName(g.about)}: “${g.line}”`]));
  }
  if (a.social.gossip.length) social.append(gossip);
  const rep = Object.entries(a.social.reputation);
  if (rep.length) {
    social.append(
      h("p", { class: "reputation" }, [
        "Reputation: ",
        rep.map(([who, v]) => `${stakeholderName(who)} ${v > 0 ? "+" : ""}${v}`).join(", "),
      ]),
    );
  }
  item.append(social);

  const canon = h("div", { class: "canon piece", "data-source": a.canon.source }, [
    h("h5", {}, ["Canon ", badge(a.canon)]),
  ]);
  if (a.canon.references.length) {
    const refs = h("ul", {});
    for (const c of a.canon.references) refs.append(h("li", {}, [`${stakeholderName(c.stakeholder_id)}: ${c.line}`]));
    canon.append(refs);
  } else {
    canon.append(h("p", { class: "hint" }, ["no canon yet"]));
  }
  item.append(canon);

  if (a.dispatched.length) {
    item.append(
      h("p", { class: "dispatched hint" }, [
        `Queued for the slow path: ${a.dispatched.map((d) => d.kind).join(", ")}`,
      ]),
    );
  }
  if (a.dialogue_request_id) item.append(replyBox(a.dialogue_request_id, asked.target || ""));
  $("story").prepend(item);
}

/**
 * The element of a streamed reply, created on first need (a chunk may arrive before the answer).
 * @param {string} requestId
 * @param {string} stakeholder
 */
function replyBox(requestId, stakeholder) {
  const existing = document.querySelector(`.reply[data-request="${CSS.escape(requestId)}"]`);
  if (existing) return existing;
  const box = h("div", { class: "reply", "data-request": requestId, "data-state": "waiting", "aria-live": "polite" }, [
    h("h5", {}, [
      `${stakeholderName(stakeholder)} replies `,
      h("span", { class: "reply-state" }, ["(waiting for the model…)"]),
    ]),
    h("p", { class: "reply-text" }),
  ]);
  const r = replies.get(requestId);
  if (r) paintReply(box, r);
  return box;
}

/** @param {Element} box @param {{chunks: string[], done: boolean}} r */
function paintReply(box, r) {
  const text = box.querySelector(".reply-text");
  if (text) {
    text.replaceChildren(...r.chunks.map((c) => h("span", { class: "word" }, [c ?? ""])));
  }
  /** @type {HTMLElement} */ (box).dataset.state = r.done ? "done" : "streaming";
  const state = box.querySelector(".reply-state");
  if (state) state.textContent = r.done ? "(complete)" : "(streaming…)";
}

/** @param {any} d a dialogue.chunk or dialogue.done event */
function onDialogue(kind, d) {
  let r = replies.get(d.request_id);
  if (!r) {
    r = { attempt: d.attempt || 1, chunks: [], done: false, stakeholder: d.stakeholder_id };
    replies.set(d.request_id, r);
  }
  if (kind === "dialogue.chunk") {
    if (r.done || d.attempt < r.attempt) return; // an earlier attempt's chunk
    if (d.attempt > r.attempt) {
      r.attempt = d.attempt;
      r.chunks = [];
    }
    r.chunks[d.index] = d.text;
  } else {
    r.done = true;
    // Keep the streamed words when they add up to the whole reply; else show the whole.
    if (r.chunks.join("") !== d.text) r.chunks = [d.text];
  }
  let box = document.querySelector(`.reply[data-request="${CSS.escape(d.request_id)}"]`);
  if (!box) {
    // No answer on this page for it (another tab, or a reload): show it on its own.
    box = replyBox(d.request_id, d.stakeholder_id);
    $("story").prepend(h("li", { class: "answer standalone" }, [box]));
  }
  paintReply(box, r);
}

// ---------------------------------------------------------------------------------------------
// The live feed: SSE read with fetch (EventSource cannot send the Authorization header), so the
// page sends `Last-Event-ID` itself when it reconnects.

/** @param {SseEvent} ev */
function onEvent(ev) {
  if (!session) return;
  if (ev.id) {
    if (seen.has(ev.id)) return;
    seen.add(ev.id);
    localStorage.setItem(lastIdKey(session.game), ev.id);
    $("last-event-id").textContent = ev.id;
  }
  const d = ev.data || {};
  let summary = "";
  switch (ev.event) {
    case "action.applied":
      summary = `turn ${d.turn}: ${d.kind} in ${d.scene_id}`;
      $("turn").textContent = String(d.turn);
      break;
    case "state.updated":
      if (view) {
        let phaseChanged = false;
        for (const c of d.conflicts || []) {
          const known = view.conflicts.find((k) => k.id === c.conflict_id);
          if (known) {
            if (known.phase !== c.phase_id) {
              known.phase_name = "";
              phaseChanged = true;
            }
            known.phase = c.phase_id;
            known.intensity = c.intensity;
            known.resolved = c.resolved;
          }
        }
        view.turn = d.turn;
        renderConflicts();
        // The event names the phase by id; the game's state has its name.
        if (phaseChanged) void refreshGame().catch(() => {});
      }
      summary = (d.conflicts || []).map((/** @type {any} */ c) => `${c.conflict_id} ${c.phase_id} ${c.intensity}`).join(", ");
      break;
    case "dialogue.chunk":
      onDialogue(ev.event, d);
      summary = `${d.stakeholder_id} #${d.index}: ${d.text}`;
      break;
    case "dialogue.done":
      onDialogue(ev.event, d);
      summary = `${d.stakeholder_id} finished`;
      break;
    case "content.ready":
      summary = `${d.what}`;
      break;
    case "job.queued":
    case "job.started":
    case "job.completed":
    case "job.failed":
      summary = `${d.kind}${d.error ? `: ${d.error}` : ""}`;
      break;
    case "reset":
      summary = "the stream could not resume from our last id: state reloaded";
      void refreshGame();
      break;
    default:
      summary = "";
  }
  const feed = $("feed");
  feed.prepend(
    h("li", { "data-kind": ev.event, "data-id": ev.id || "" }, [
      h("span", { class: "kind" }, [ev.event]),
      " ",
      summary,
    ]),
  );
  while (feed.children.length > 200) feed.lastElementChild?.remove();
}

/** @param {string} block one SSE event block */
function parseBlock(block) {
  /** @type {SseEvent} */
  const ev = { id: null, event: "message", data: null };
  let data = "";
  let any = false;
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") ev.id = value;
    else if (field === "event") ev.event = value;
    else if (field === "data") data += (data ? "\n" : "") + value;
    else continue;
    any = true;
  }
  if (!any) return null;
  try {
    ev.data = data ? JSON.parse(data) : null;
  } catch {
    ev.data = data;
  }
  return ev;
}

async function follow() {
  const mine = new AbortController();
  following = mine;
  let delay = 500;
  while (session && following === mine) {
    const s = session;
    const last = localStorage.getItem(lastIdKey(s.game));
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${s.token}`, Accept: "text/event-stream" };
    if (last) headers["Last-Event-ID"] = last;
    const path = EVENTS_PATH.replace("{game_id}", encodeURIComponent(s.game)) + (last ? "" : "?from=start");
    try {
      showConnection("connecting", last ? `Resuming after ${last}…` : "Connecting…");
      const resp = await fetch(path, { headers, signal: mine.signal, cache: "no-store" });
      if (!resp.ok || !resp.body) throw new Error(`events: HTTP ${resp.status}`);
      showConnection("live", last ? `Live (resumed after ${last})` : "Live");
      delay = 500;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const ev = parseBlock(buf.slice(0, end));
          buf = buf.slice(end + 2);
          if (ev) onEvent(ev);
        }
      }
      throw new Error("the event stream ended");
    } catch (e) {
      if (following !== mine || mine.signal.aborted) return;
      showConnection("reconnecting", `Disconnected (${e instanceof Error ? e.message : e}); reconnecting…`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Flows

/** @param {unknown} e */
function message(e) {
  if (e instanceof ApiFailure) return `${e.message} (${e.status} ${e.code})`;
  return e instanceof Error ? e.message : String(e);
}

async function refreshGame() {
  if (!session) return;
  view = await api.game(session.token, session.game);
  $("game-title").textContent = view.title;
  $("turn").textContent = String(view.turn);
  renderConflicts();
  renderScenes();
}

/** @param {Session} s */
async function enter(s) {
  session = s;
  saveSession(s);
  if (location.hash !== `#game=${s.game}`) history.replaceState(null, "", `#game=${s.game}`);
  $("start").hidden = true;
  $("game").hidden = false;
  $("player-name").textContent = s.name;
  const link = /** @type {HTMLAnchorElement} */ ($("join-link-out"));
  $("join-link-line").hidden = !s.joinUrl;
  if (s.joinUrl) {
    link.href = s.joinUrl;
    link.textContent = s.joinUrl;
  }
  await refreshGame();
  // The answers this browser saw survive a reload; the feed resumes from the last event id.
  const stored = JSON.parse(sessionStorage.getItem(answersKey(s.game)) || "[]");
  for (const { answer, asked } of stored) renderAnswer(answer, asked);
  void follow();
  /** @type {HTMLTextAreaElement} */ ($("text")).focus();
}

function leave() {
  if (following) following.abort();
  following = null;
  session = null;
  saveSession(null);
  history.replaceState(null, "", "/");
  location.reload();
}

async function onNewGame(/** @type {SubmitEvent} */ e) {
  e.preventDefault();
  const form = /** @type {HTMLFormElement} */ (e.target);
  const data = new FormData(form);
  const admin = String(data.get("admin-token") || "").trim();
  $("start-error").textContent = "";
  try {
    const created = await api.createGame(admin, { scenario: String(data.get("scenario")) });
    const name = String(data.get("name") || "");
    const player = await api.addPlayer(admin, created.game_id, { name });
    const invite = await api.invite(admin, created.game_id);
    await enter({
      game: created.game_id,
      token: player.token,
      name,
      joinUrl: new URL(invite.join_path, location.origin).href,
    });
  } catch (err) {
    $("start-error").textContent = message(err);
  }
}

/** @param {string} link @returns {{game: string, invite: string} | null} */
function parseJoinLink(link) {
  const hash = link.includes("#") ? link.slice(link.indexOf("#") + 1) : link;
  const params = new URLSearchParams(hash);
  const game = params.get("game");
  const invite = params.get("invite");
  return game && invite ? { game, invite } : null;
}

async function onJoin(/** @type {SubmitEvent} */ e) {
  e.preventDefault();
  const data = new FormData(/** @type {HTMLFormElement} */ (e.target));
  $("start-error").textContent = "";
  const parsed = parseJoinLink(String(data.get("link") || ""));
  if (!parsed) {
    $("start-error").textContent = "That is not a join link: it needs #game=…&invite=…";
    return;
  }
  const name = String(data.get("name") || "");
  try {
    const player = await api.join(parsed.game, { name, invite: parsed.invite });
    await enter({ game: parsed.game, token: player.token, name });
  } catch (err) {
    $("start-error").textContent = message(err);
  }
}

async function onAct(/** @type {SubmitEvent} */ e) {
  e.preventDefault();
  if (!session) return;
  const s = session;
  const form = /** @type {HTMLFormElement} */ (e.target);
  const data = new FormData(form);
  const kind = String(data.get("kind") || "");
  const target = String(data.get("target") || "");
  /** @type {S['ActionRequest']} */
  const body = { scene_id: String(data.get("scene_id")), text: String(data.get("text") || "") };
  if (kind) body.kind = /** @type {S['ActionKind']} */ (kind);
  if (target) body.target = target;
  const button = /** @type {HTMLButtonElement} */ ($("act-button"));
  button.disabled = true;
  $("act-error").textContent = "";
  try {
    const answer = await api.act(s.token, s.game, body);
    const asked = { text: body.text, scene: body.scene_id, target: body.target };
    renderAnswer(answer, asked);
    const stored = JSON.parse(sessionStorage.getItem(answersKey(s.game)) || "[]");
    stored.push({ answer, asked });
    sessionStorage.setItem(answersKey(s.game), JSON.stringify(stored.slice(-MAX_STORED_ANSWERS)));
    $("turn").textContent = String(answer.turn);
    /** @type {HTMLTextAreaElement} */ ($("text")).value = "";
  } catch (err) {
    $("act-error").textContent = message(err);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  $("new-game-form").addEventListener("submit", (e) => void onNewGame(/** @type {SubmitEvent} */ (e)));
  $("join-form").addEventListener("submit", (e) => void onJoin(/** @type {SubmitEvent} */ (e)));
  $("act-form").addEventListener("submit", (e) => void onAct(/** @type {SubmitEvent} */ (e)));
  $("scene").addEventListener("change", renderTargets);
  $("leave").addEventListener("click", leave);

  const fromHash = parseJoinLink(location.hash);
  const stored = loadSession();
  if (fromHash && !(stored && stored.game === fromHash.game)) {
    // Opened a join link: ask for a name.
    /** @type {HTMLInputElement} */ ($("join-link")).value = location.href;
    /** @type {HTMLInputElement} */ ($("join-name")).focus();
  } else if (stored) {
    try {
      await enter(stored);
      return;
    } catch (err) {
      $("start-error").textContent = `Could not resume the saved game: ${message(err)}`;
      session = null;
      $("start").hidden = false;
      $("game").hidden = true;
    }
  }
  try {
    const { scenarios } = await api.scenarios();
    const select = $("scenario");
    select.replaceChildren(...scenarios.map((n) => h("option", { value: n }, [n])));
  } catch (err) {
    $("start-error").textContent = message(err);
  }
}

void main();
