// fsup's dashboard: one Alpine component (CSP build: no eval), snapshot then stream.
//
// Auth as seed 003: if the session cookie is not good, fetch the token from the loopback-only
// bootstrap, open a session with it (the server sets the HttpOnly rm_session cookie), and drop
// the token: it lives in one function's local variable, never in a URL or in storage. Every
// request then rides on the cookie plus the X-Fsup-Request header the server's cross-site check
// wants. The fleet and the searches are fetched once (snapshot), then kept current from
// /api/v1/events; rows are keyed and patched in place, never rebuilt per event.
"use strict";

const API = "/api/v1";
const LOG_KEEP = 500;
const PAGE = 50;
const FLEET_EVENTS = [
  "formation_state_changed", "formation_health_changed", "formation_deployed",
  "formation_updated", "formation_rolled_back", "formation_deleted", "formation_update_aborted",
];
// The timeline's length on the formation page (GET /formations/{id}/events keeps 1,000).
const TIMELINE_KEEP = 50;
// Reasons of a transition that no one asked for: the process went by itself (docs/decisions.md,
// "Events"). After one, an earlier action's note no longer tells the truth.
const UNREQUESTED = ["exited", "unhealthy", "port_taken", "start_failed", "gave_up"];
// What the event stream says of a formation: a snapshot fetched while an event arrived is
// older than the event for these, and must not overwrite them (fetchFormation).
const EVENT_FIELDS = ["status", "pid", "version", "restart_count", "deleting", "healthy",
  "uptime_s", "uptime_at", "cpu_percent", "rss_bytes"];
// The header's order of states; any other state is counted after these.
const STATES = ["running", "starting", "restarting", "stopping", "stopped", "crashed", "unknown"];
// Linux signal numbers, for "killed by SIGKILL" (an exit code of -9 from Python's subprocess).
const SIGNALS = {
  1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
  8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
  14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ", 31: "SIGSYS",
};
const SEARCH_EVENTS = [
  "search_created", "search_updated", "search_state_changed", "search_progress",
  "search_stats", "search_hit_found", "search_completed",
];

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, body, bearer) {
  const headers = { "X-Fsup-Request": "1", Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (bearer) headers.Authorization = "Bearer " + bearer;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, "DOWN", "fsup is not answering");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "HTTP_" + response.status,
      error.message || response.statusText);
  }
  return data;
}

// Open a session: the token is read, used once, and forgotten when this function returns.
async function openSession() {
  const boot = await request("GET", "/auth/bootstrap");
  await request("POST", "/session", undefined, boot.token);
}

// How a process ended, in words: "exited with code 1", "killed by SIGKILL"; "" when unknown.
function exitWords(code) {
  if (typeof code !== "number") return "";
  if (code >= 0) return "exited with code " + code;
  return "killed by " + (SIGNALS[-code] || "signal " + -code);
}

// What a timeline event says, in words: the transition and why, how a process ended, what an
// update did or why it failed.
function timelineWords(type, d) {
  if (type === "formation_state_changed") {
    const how = d.exit ? d.exit.description : (d.error || "");
    return d.from + " \u2192 " + d.to + " (" + d.reason + ")" + (how ? ": " + how : "");
  }
  if (type === "formation_health_changed") return d.healthy ? "healthy" : "unhealthy: " + (d.error || "");
  if (type === "formation_updated" || type === "formation_rolled_back") {
    return d.previous_version + " \u2192 " + d.version;
  }
  if (type === "formation_update_aborted") {
    return d.kind + " to " + d.version + " failed (" + d.stage + "): " + (d.error || d.code || "");
  }
  if (type === "formation_deployed") return "version " + (d.version || "");
  return "";
}

// "YYYY-MM-DD HH:MM:SS" for another day, "HH:MM:SS" for today (the browser's time zone).
function dayAndClock(date) {
  const today = new Date();
  if (date.toDateString() === today.toDateString()) return clock(date);
  const day = [date.getFullYear(), date.getMonth() + 1, date.getDate()]
    .map((n) => String(n).padStart(2, "0")).join("-");
  return day + " " + clock(date);
}

// HH:MM:SS in the browser's time zone, whatever its locale.
function clock(date) {
  return [date.getHours(), date.getMinutes(), date.getSeconds()]
    .map((n) => String(n).padStart(2, "0")).join(":");
}

// One log line: its time when it has one (`ts`, RFC 3339), then its text.
function logLine(item) {
  const li = document.createElement("li");
  li.className = "log-" + item.stream;
  if (item.ts) {
    const time = document.createElement("time");
    time.dateTime = item.ts;
    const at = new Date(item.ts);
    time.textContent = isNaN(at) ? item.ts : clock(at) + "." +
      String(at.getMilliseconds()).padStart(3, "0");
    li.append(time, " ");
  }
  li.append(item.line);
  return li;
}

// Where the version that wrote the lines changes (an update, a rollback): a mark naming it.
function versionMark(version) {
  const li = document.createElement("li");
  li.className = "log-version";
  li.textContent = version ? "\u2014 version " + version + " \u2014"
    : "\u2014 from an older fsup (no time, no version) \u2014";
  return li;
}

// When an uptime was read, so that the page can count on from it (uptimeText).
function stamped(item) {
  if (item && Object.prototype.hasOwnProperty.call(item, "uptime_s")) item.uptime_at = Date.now();
  return item;
}

function byId(list) {
  const map = new Map();
  list.forEach((item, index) => map.set(item.id, index));
  return map;
}

document.addEventListener("alpine:init", () => {
  window.Alpine.data("dashboard", () => ({
    view: "fleet",
    conn: "loading",
    banner: "",
    // True once the event stream is open and the snapshot taken after it is loaded; false from
    // the moment the stream fails. While false, rows are greyed and every action is disabled.
    synced: false,
    lostAt: null,
    // The clock the uptimes count on (a second's tick): an uptime read 4 s ago is 4 s more.
    now: Date.now(),
    loading: true,
    fleet: [],
    status: null,
    current: null,
    busy: false,
    actionNote: "",
    actionError: "",
    logNote: "",
    logFollow: true,
    logStream: "all",
    // The formation's timeline (issue 19, item 2): its event envelopes, newest first, once
    // loaded; live events of the formation are put on top.
    timeline: null,
    // Issue 19, item 4: the fleet's last samples by formation id (its rows' CPU sparklines),
    // and the formation page's whole hour (its four charts); null until loaded.
    sparks: {},
    history: null,
    searches: [],
    searchId: null,
    thread: null,
    results: { items: [], total: 0 },
    filter: "",
    sort: "recent",
    offset: 0,
    limit: PAGE,
    unseen: 0,
    newKeyword: "",
    newMode: "full",
    confirmText: "",

    async init() {
      this._events = null;
      this._logs = null;
      this._pending = null;
      this._retry = 1000;
      this._epoch = 0;
      this._seen = new Map(); // formation id -> how many of its events were applied
      this._hitBuffer = [];
      this._confirm = null;
      window.addEventListener("hashchange", () => this.route());
      // A hidden page fetches no history; shown again, it catches up at once.
      document.addEventListener("visibilitychange", () => this.loadHistory());
      // Stopped while the page is not live: an uptime it cannot check does not count on.
      setInterval(() => { if (this.live()) this.now = Date.now(); }, 1000);
      await this.connect();
    },

    // -- connection -----------------------------------------------------------------------

    async connect() {
      try {
        await this.ensureSession();
      } catch (err) {
        this.failed(err);
        return;
      }
      this.openEvents();
      await this.refresh();
      this.route();
    },

    // On fsup's own machine a fresh session is one bootstrap away, so the page opens one
    // at once (no failed request to show in the console). Elsewhere the bootstrap is
    // refused (403), and the page carries on with the cookie it has, if that is still good.
    async ensureSession() {
      try {
        await openSession();
      } catch (err) {
        if (err.status !== 403) throw err;
        await request("GET", "/session/check");
      }
    },

    // A call that survives an expired session: open a new one and try once more.
    async call(method, path, body) {
      try {
        return await request(method, path, body);
      } catch (err) {
        if (err.status !== 401) throw err;
        await openSession();
        return await request(method, path, body);
      }
    },

    failed(err) {
      if (err.status === 0) {
        this.conn = "down";
        this.unsync();
        this.retryLater();
      } else if (err.status === 401 || err.status === 403) {
        this.conn = "expired";
        this.banner = "The session has expired and this browser cannot open a new one " +
          "(the token is handed out to fsup's own machine only). " + err.message;
      } else {
        this.banner = err.message;
      }
    },

    // The stream failed (or a request found fsup down): what the page shows may be stale from
    // now on, until the stream is open again and a fresh snapshot is loaded.
    unsync() {
      this._epoch += 1;
      if (this.synced) this.lostAt = new Date();
      this.synced = false;
    },

    retryLater() {
      const wait = this._retry;
      this._retry = Math.min(this._retry * 2, 10000);
      setTimeout(() => this.connect(), wait);
    },

    openEvents() {
      if (this._events) this._events.close();
      const source = new EventSource(API + "/events");
      this._events = source;
      let opened = false;
      source.addEventListener("open", () => {
        this.conn = "live";
        this.banner = "";
        this._retry = 1000;
        // A reconnect may have missed events (fsup restarted, or the stream ended): the
        // snapshot is the truth; the first open follows the snapshot fetched in connect().
        if (opened) this.refresh();
        opened = true;
      });
      source.addEventListener("error", () => {
        this.unsync();
        if (source.readyState === EventSource.CLOSED) {
          // Refused (401: session gone) or fsup down: find out which, then start again.
          this.conn = "reconnecting";
          source.close();
          this._events = null;
          setTimeout(() => this.connect(), this._retry);
          this._retry = Math.min(this._retry * 2, 10000);
        } else {
          this.conn = "reconnecting";
        }
      });
      const handle = (event) => this.onEvent(JSON.parse(event.data));
      for (const type of [...FLEET_EVENTS, ...SEARCH_EVENTS, "status", "overflow", "reset"]) {
        source.addEventListener(type, handle);
      }
    },

    onEvent(event) {
      if (this._pending) {
        this._pending.push(event);
        return;
      }
      this.apply(event);
    },

    apply(event) {
      const type = event.type;
      if (type === "overflow" || type === "reset") {
        this.refresh();
      } else if (type === "status") {
        this.applyStatus(event.data);
        this.loadHistory(); // the 5 s tick: the history has a new sample by now
      } else if (type.startsWith("formation_")) {
        this.applyFormation(type, event.data);
        this.noteTimeline(event);
      } else if (type.startsWith("search_")) {
        this.applySearch(type, event.search_id, event.data);
      }
    },

    // Snapshot first; events that arrive meanwhile are held and applied on top of it.
    async refresh() {
      this._pending = [];
      const epoch = this._epoch;
      try {
        const [fleet, searches, status] = await Promise.all([
          this.call("GET", "/formations"),
          this.call("GET", "/searches"),
          this.call("GET", "/status"),
        ]);
        this.mergeFleet(fleet.formations);
        this.mergeSearches(searches.searches);
        this.applyStatus(status);
        if (this.current) await this.loadFormation(this.current.id);
        if (this.searchId) await this.loadThread(this.searchId);
        // Live again only if the stream did not fail meanwhile (it may still be opening: the
        // template asks for both, `live()`).
        if (epoch === this._epoch) {
          this.synced = true;
        }
      } catch (err) {
        this.failed(err);
      } finally {
        const held = this._pending || [];
        this._pending = null;
        this.loading = false;
        held.forEach((event) => this.apply(event));
      }
    },

    // -- fleet ------------------------------------------------------------------------------

    mergeFleet(items) {
      const seen = new Set(items.map((item) => item.id));
      const index = byId(this.fleet);
      for (const item of items) {
        stamped(item);
        const at = index.get(item.id);
        if (at === undefined) this.fleet.push(item);
        else Object.assign(this.fleet[at], item);
      }
      for (let i = this.fleet.length - 1; i >= 0; i--) {
        if (!seen.has(this.fleet[i].id)) this.fleet.splice(i, 1);
      }
      this.fleet.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    },

    row(id) {
      return this.fleet.find((item) => item.id === id);
    },

    applyFormation(type, data) {
      const id = data.formation_id;
      const row = this.row(id);
      this._seen.set(id, (this._seen.get(id) || 0) + 1);
      if (type === "formation_deleted") {
        const at = this.fleet.indexOf(row);
        if (at >= 0) this.fleet.splice(at, 1);
        if (this.current && this.current.id === id) this.current = null;
        return;
      }
      const patch = {};
      if (type === "formation_state_changed") {
        Object.assign(patch, { status: data.to, pid: data.pid, version: data.version,
          restart_count: data.restart_count });
        // A delete's stop: the row stays until formation_deleted, saying so.
        if (data.reason === "delete") patch.deleting = true;
        if (data.to !== "running") {
          Object.assign(patch, { cpu_percent: null, rss_bytes: null, uptime_s: null });
        }
        if (data.to === "running") patch.uptime_s = 0;
        // The process went by itself: an earlier action's note is no longer the truth.
        if (UNREQUESTED.includes(data.reason) && this.current && this.current.id === id) {
          this.actionNote = "";
        }
      } else if (type === "formation_health_changed") {
        patch.healthy = data.healthy;
      } else {
        for (const key of ["version", "status", "pid", "port"]) {
          if (data[key] !== undefined) patch[key] = data[key];
        }
      }
      stamped(patch);
      if (row) Object.assign(row, patch);
      if (this.current && this.current.id === id) Object.assign(this.current, patch);
      // A new formation, or a new version: its full row (versions, description) from the API.
      // An exit: its reason and exit code (last_error, last_exit_code) from the snapshot too.
      if (!row || type === "formation_updated" || type === "formation_rolled_back" ||
          type === "formation_deployed" ||
          (type === "formation_state_changed" && UNREQUESTED.includes(data.reason))) {
        this.reloadRow(id);
      }
    },

    reloadRow(id) {
      return this.coalesce("row:" + id, () => this.fetchRow(id));
    },

    // A formation's snapshot, with what events said meanwhile kept (they are newer).
    async fetchFormation(id) {
      const seen = this._seen.get(id);
      const item = stamped(await this.call("GET", "/formations/" + encodeURIComponent(id)));
      const row = this.row(id);
      if (this._seen.get(id) !== seen && row) {
        for (const key of EVENT_FIELDS) if (key in row) item[key] = row[key];
      }
      return item;
    },

    async fetchRow(id) {
      try {
        const item = await this.fetchFormation(id);
        const row = this.row(id);
        if (row) Object.assign(row, item);
        else this.mergeFleet([...this.fleet.map((r) => r), item]);
        if (this.current && this.current.id === id) Object.assign(this.current, item);
      } catch (err) {
        if (err.status !== 404) this.failed(err);
      }
    },

    applyStatus(status) {
      this.status = status;
      for (const [id, figures] of Object.entries(status.processes || {})) {
        stamped(figures);
        const row = this.row(id);
        if (row) Object.assign(row, figures);
        if (this.current && this.current.id === id) Object.assign(this.current, figures);
      }
    },

    // -- routing ----------------------------------------------------------------------------

    route() {
      const hash = location.hash.replace(/^#\/?/, "");
      const [section, id] = hash.split("/").map(decodeURIComponent);
      this.closeLogs();
      if (section === "f" && id) {
        this.view = "formation";
        if (!this.current || this.current.id !== id) {
          this.actionNote = "";
          this.actionError = "";
          this.timeline = null;
          this.history = null;
        }
        // The log list is inside the formation's template: opened once it is on the page;
        // the timeline once the formation it belongs to is known.
        const loaded = this.loadFormation(id);
        loaded.then(() => this.$nextTick()).then(() => this.openLogs(id));
        loaded.then(() => this.loadTimeline(id));
        loaded.then(() => this.loadHistory());
      } else if (section === "searches") {
        this.view = "searches";
        this.current = null;
        if (id) this.loadThread(id);
        else { this.searchId = null; this.thread = null; }
      } else {
        this.view = "fleet";
        this.current = null;
        this.loadHistory();
      }
    },

    // -- history (charts and sparklines) -----------------------------------------------------

    // What the page shows of the history, fetched again on each `status` tick (5 s) while the
    // page is live and visible: the fleet's sparklines or the formation's charts, not both.
    loadHistory() {
      if (!this.live() || document.hidden) return Promise.resolve();
      if (this.view === "fleet") return this.coalesce("history:fleet", () => this.fetchSparks());
      if (this.view === "formation" && this.current) {
        const id = this.current.id;
        return this.coalesce("history:" + id, () => this.fetchHistory(id));
      }
      return Promise.resolve();
    },

    async fetchSparks() {
      try {
        this.sparks = (await this.call("GET", "/history?points=" + SPARK_POINTS)).formations;
      } catch (err) {
        this.failed(err);
      }
    },

    async fetchHistory(id) {
      try {
        const answer = await this.call("GET", "/formations/" + encodeURIComponent(id) + "/history");
        if (this.current && this.current.id === id) this.history = answer.samples;
      } catch (err) {
        if (err.status !== 404) this.failed(err);
      }
    },

    // A fleet row's CPU over the last 5 minutes (an SVG path; "" before any sample).
    sparkPath(id) {
      const samples = this.sparks[id] || [];
      const values = samples.map((s) => s.cpu_percent);
      return linePath(values, SPARK_POINTS, 60, 16, scaleTop(values, 1));
    },
    sparkTitle(id) {
      const values = (this.sparks[id] || []).map((s) => s.cpu_percent);
      if (!values.length) return "";
      return "CPU, last " + (spanText(this.sparks[id]) || "5 s") + ": up to " +
        this.percent(scaleTop(values, 0));
    },
    charts() {
      return formationCharts(this.history || [], { percent: this.percent, bytes: this.bytes });
    },
    historySpan() {
      const span = spanText(this.history || []);
      return span ? "last " + span + ", one sample every 5 s" : "one sample every 5 s";
    },

    async loadFormation(id) {
      try {
        this.current = await this.fetchFormation(id);
      } catch (err) {
        // fsup down: keep what the page shows (greyed); only a 404 means it is gone.
        if (err.status === 404) this.current = null;
        else this.failed(err);
      }
    },

    // What happened to the formation, newest first: its kept events (across restarts of fsup).
    async loadTimeline(id) {
      try {
        const path = "/formations/" + encodeURIComponent(id) + "/events?limit=" + TIMELINE_KEEP;
        const answer = await this.call("GET", path);
        if (this.current && this.current.id === id) this.timeline = answer.events.slice().reverse();
      } catch (err) {
        if (err.status !== 404) this.failed(err);
      }
    },

    // A live event of the formation on its page goes on top of its timeline.
    noteTimeline(event) {
      const data = event.data || {};
      if (this.timeline === null || !this.current || this.current.id !== data.formation_id) return;
      this.timeline.unshift(event);
      if (this.timeline.length > TIMELINE_KEEP) this.timeline.length = TIMELINE_KEEP;
    },

    eventTime(event) { return event.ts ? dayAndClock(new Date(event.ts)) : ""; },
    eventType(event) { return event.type.replace(/^formation_/, "").replace(/_/g, " "); },
    eventSummary(event) { return timelineWords(event.type, event.data || {}); },

    // -- one formation: actions and its log -------------------------------------------------

    async act(action) {
      const id = this.current.id;
      this.busy = true;
      this.actionNote = action + "…";
      this.actionError = "";
      try {
        const answer = await this.call("POST", "/formations/" + encodeURIComponent(id) + "/" + action);
        this.actionNote = action + ": done at " + clock(new Date()) + " (" +
          (answer.status || "ok") + ")";
      } catch (err) {
        this.actionNote = "";
        this.actionError = action + " failed: " + err.message;
      } finally {
        this.busy = false;
      }
    },

    askDelete() {
      const id = this.current.id;
      this.confirm("Delete formation " + id + "? Its process is stopped and its versions removed.",
        async () => {
          this.busy = true;
          try {
            await this.call("DELETE", "/formations/" + encodeURIComponent(id));
            location.hash = "#/";
          } catch (err) {
            this.actionError = "delete failed: " + err.message;
          } finally {
            this.busy = false;
          }
        });
    },

    confirm(text, then) {
      this.confirmText = text;
      this._confirm = then;
      this.$refs.confirm.showModal();
    },

    confirmAnswer(yes) {
      const then = this._confirm;
      this._confirm = null;
      this.$refs.confirm.close();
      if (yes && then) then();
    },

    confirmClosed() {
      this._confirm = null;
    },

    // The log keeps the reader's place: it sticks to the bottom only while following; a scroll
    // up by the reader stops following (the Follow button starts it again). One stream or
    // both: the server sends only the chosen one (`stream=`), history included.
    openLogs(id) {
      this.closeLogs();
      const list = this.$refs.log;
      if (!list) return;
      list.replaceChildren();
      this.logNote = "Waiting for log lines…";
      const query = new URLSearchParams({ follow: "true", lines: "100", stream: this.logStream });
      const url = API + "/formations/" + encodeURIComponent(id) + "/logs?" + query;
      const source = new EventSource(url);
      this._logs = source;
      list.onscroll = () => this.logScrolled(list);
      if (!list.dataset.watched) { // the list outlives its streams: listen once
        list.dataset.watched = "1";
        const touched = () => { this._logTouchedAt = performance.now(); };
        for (const kind of ["wheel", "touchmove", "keydown", "pointerdown"]) {
          list.addEventListener(kind, touched, { passive: true });
        }
      }
      let queue = [];
      let scheduled = false;
      let version; // of the last line shown: a mark where the next one's differs
      const flush = () => {
        scheduled = false;
        const fragment = document.createDocumentFragment();
        for (const item of queue) {
          if ((item.version || null) !== version) {
            version = item.version || null;
            fragment.append(versionMark(version));
          }
          fragment.append(logLine(item));
        }
        queue = [];
        list.append(fragment);
        let removed = 0;
        while (list.childElementCount > LOG_KEEP) {
          removed += list.firstElementChild.offsetHeight;
          list.firstElementChild.remove();
        }
        if (this.logFollow) list.scrollTop = list.scrollHeight;
        else if (removed) list.scrollTop = Math.max(0, list.scrollTop - removed);
      };
      source.addEventListener("open", () => { // a reconnect resends
        list.replaceChildren();
        version = undefined;
      });
      source.addEventListener("log", (event) => {
        this.logNote = "";
        queue.push(JSON.parse(event.data));
        if (!scheduled) { scheduled = true; requestAnimationFrame(flush); }
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) this.logNote = "The log stream ended.";
      });
    },

    // A scroll that leaves the bottom just after the reader touched the list (wheel, key,
    // touch, scrollbar) is the reader's: following stops there. Scrolls the page or the
    // layout makes (new lines, old ones trimmed, the list shown again) never stop it.
    logScrolled(list) {
      if (!this.logFollow || performance.now() - (this._logTouchedAt || -1e9) > 1000) return;
      const fromBottom = list.scrollHeight - list.scrollTop - list.clientHeight;
      if (fromBottom > 8) this.logFollow = false;
    },

    followLog() {
      this.logFollow = true;
      const list = this.$refs.log;
      if (list) list.scrollTop = list.scrollHeight;
    },

    setLogStream(event) {
      this.logStream = event.target.value;
      if (this.current) this.openLogs(this.current.id);
    },

    closeLogs() {
      if (this._logs) this._logs.close();
      this._logs = null;
    },

    // -- searches ---------------------------------------------------------------------------

    mergeSearches(items) {
      const index = byId(this.searches);
      const seen = new Set(items.map((item) => item.id));
      for (const item of items) {
        const at = index.get(item.id);
        if (at === undefined) this.searches.push(item);
        else Object.assign(this.searches[at], item);
      }
      for (let i = this.searches.length - 1; i >= 0; i--) {
        if (!seen.has(this.searches[i].id)) this.searches.splice(i, 1);
      }
      this.searches.sort((a, b) => (a.updated_at < b.updated_at ? 1 : -1));
    },

    // Many events can ask for the list at once (a burst of hits for a search the sidebar
    // does not know yet): one request is in flight at a time, and one more follows it if
    // anything asked meanwhile.
    reloadSearches() {
      return this.coalesce("searches", async () => {
        try {
          this.mergeSearches((await this.call("GET", "/searches")).searches);
        } catch (err) {
          this.failed(err);
        }
      });
    },

    coalesce(key, task) {
      const runs = this._runs || (this._runs = new Map());
      const entry = runs.get(key);
      if (entry) {
        entry.again = true;
        return entry.done;
      }
      const fresh = { again: false, done: null };
      fresh.done = (async () => {
        do {
          fresh.again = false;
          await task();
        } while (fresh.again);
        runs.delete(key);
      })();
      runs.set(key, fresh);
      return fresh.done;
    },

    applySearch(type, id, data) {
      const item = this.searches.find((s) => s.id === id);
      if (type === "search_created" || (!item && data.state !== "deleted")) {
        this.reloadSearches();
      } else if (type === "search_state_changed") {
        if (data.state === "deleted") {
          if (item) this.searches.splice(this.searches.indexOf(item), 1);
          if (this.searchId === id) location.hash = "#/searches";
          return;
        }
        item.state = data.state;
        item.updated_at = event_time();
      } else if (type === "search_hit_found" && item) {
        item.summary.hits += 1;
      }
      if (!this.thread || this.searchId !== id) return;
      const thread = this.thread;
      if (type === "search_state_changed") {
        thread.search.state = data.state;
        if (data.state === "running") this.loadThread(id);
      } else if (type === "search_progress") {
        thread.progress = data;
      } else if (type === "search_stats") {
        thread.telemetry = data;
      } else if (type === "search_completed") {
        Object.assign(thread, { progress: data.progress, telemetry: data.telemetry });
      } else if (type === "search_hit_found") {
        this.results.total += 1;
        this.queueHit(data);
      }
    },

    // Hits arrive in bursts: they join the page once per frame. Only the first page of the
    // newest-first order takes them in (trimmed to one page); elsewhere they are counted.
    queueHit(hit) {
      if (this.sort !== "recent" || this.offset !== 0 || this.filter) {
        this.unseen += 1;
        return;
      }
      this._hitBuffer.push(hit);
      if (this._hitBuffer.length > 1) return;
      requestAnimationFrame(() => {
        const fresh = this._hitBuffer.reverse();
        this._hitBuffer = [];
        const known = new Set(this.results.items.map((h) => h.result_id));
        const items = fresh.filter((h) => !known.has(h.result_id)).concat(this.results.items);
        this.results.items = items.slice(0, this.limit);
      });
    },

    async loadThread(id) {
      this.searchId = id;
      try {
        const detail = await this.call("GET", "/searches/" + encodeURIComponent(id));
        if (this.searchId !== id) return;
        if (!this.thread || this.thread.search.id !== id) {
          this.offset = 0;
          this.filter = "";
        }
        this.thread = detail;
        await this.loadResults();
      } catch (err) {
        if (err.status === 404) { this.thread = null; return; }
        this.failed(err);
      }
    },

    async loadResults() {
      const id = this.searchId;
      const query = new URLSearchParams({ limit: this.limit, offset: this.offset, sort: this.sort });
      if (this.filter) query.set("q", this.filter);
      try {
        const page = await this.call("GET", "/searches/" + encodeURIComponent(id) + "/results?" + query);
        if (this.searchId !== id) return;
        this.results = { items: page.items, total: page.total };
        this.unseen = 0;
      } catch (err) {
        this.failed(err);
      }
    },

    setFilter(event) {
      this.filter = event.target.value.trim();
      this.offset = 0;
      this.loadResults();
    },

    setSort(event) {
      this.sort = event.target.value;
      this.offset = 0;
      this.loadResults();
    },

    page(step) {
      this.offset = Math.max(0, this.offset + step * this.limit);
      this.loadResults();
    },

    async createSearch() {
      const keyword = this.newKeyword.trim();
      if (!keyword) return;
      try {
        const detail = await this.call("POST", "/searches",
          { keyword, mode: this.newMode, autostart: true });
        this.newKeyword = "";
        await this.reloadSearches();
        location.hash = "#/searches/" + detail.search.id;
      } catch (err) {
        this.banner = "Could not create the search: " + err.message;
      }
    },

    async searchAct(action) {
      const id = this.searchId;
      try {
        this.thread = await this.call("POST", "/searches/" + encodeURIComponent(id) + "/" + action);
        if (action === "rerun") { this.offset = 0; await this.loadResults(); }
      } catch (err) {
        this.banner = action + " failed: " + err.message;
      }
    },

    askDeleteSearch() {
      const id = this.searchId;
      this.confirm("Delete the search “" + this.thread.search.keyword + "” and its results?",
        async () => {
          try {
            await this.call("DELETE", "/searches/" + encodeURIComponent(id));
            location.hash = "#/searches";
          } catch (err) {
            this.banner = "delete failed: " + err.message;
          }
        });
    },

    async exportSearch() {
      try {
        const data = await this.call("POST", "/searches/" + encodeURIComponent(this.searchId) + "/export");
        const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = "search-" + this.searchId + ".json";
        link.click();
        setTimeout(() => URL.revokeObjectURL(link.href), 1000);
      } catch (err) {
        this.banner = "export failed: " + err.message;
      }
    },

    async logout() {
      try {
        await request("POST", "/session/logout");
      } catch (err) { /* already gone */ }
      if (this._events) this._events.close();
      this.closeLogs();
      this.conn = "expired";
      this.banner = "Logged out. Reload the page to open a new session.";
    },

    // -- text for the template --------------------------------------------------------------

    connText() {
      return { loading: "connecting…", live: "live", reconnecting: "reconnecting…",
        down: "fsup is down", expired: "no session" }[this.conn];
    },
    // Counted from the rows, which follow the event stream: never a tick behind.
    summaryText() {
      if (this.loading) return "";
      const counts = new Map(STATES.map((state) => [state, 0]));
      for (const row of this.fleet) counts.set(row.status, (counts.get(row.status) || 0) + 1);
      return [...counts].filter(([, n]) => n > 0).map(([s, n]) => n + " " + s).join(" · ");
    },
    // Live: the stream is open and the snapshot taken since is loaded.
    live() { return this.synced && this.conn === "live"; },
    // The log keeper cannot be had: output goes to files without times (status, every 5 s).
    keeperText() {
      const keeper = this.status && this.status.log_keeper;
      if (!keeper || !keeper.error || !this.live()) return "";
      return "Logs are not being stamped: " + keeper.error + ". Output goes to stdout.log and " +
        "stderr.log without times until fsup can start its log keeper again.";
    },
    offlineText() {
      if (this.live() || this.conn === "expired" || this.conn === "loading") return "";
      if (this.conn === "live") return "fsup is back; reloading the current state…";
      const since = this.lostAt ? " since " + clock(this.lostAt) : "";
      return "fsup is not answering" + since + "; reconnecting… What you see may be out of " +
        "date, and actions are disabled until it is back.";
    },
    // Buttons follow the state (and nothing can be done while the page is not live).
    canAct() { return this.live() && !this.busy && this.current && !this.current.deleting; },
    canStart() { return this.canAct() && !["running", "starting"].includes(this.current.status); },
    canStop() { return this.canAct() && !["stopped", "stopping"].includes(this.current.status); },
    canRollback() {
      const versions = (this.current && this.current.versions) || [];
      return this.canAct() && versions.indexOf(this.current.version) > 0;
    },
    rollbackTitle() {
      return this.canRollback() || !this.current ? "" : "No older version is kept to roll back to";
    },
    // Why a formation that went by itself is down: its exit and its reason, if it has them.
    whyText(row) {
      if (!["crashed", "restarting"].includes(row.status)) return "";
      return [exitWords(row.last_exit_code), row.last_error || ""].filter(Boolean).join(": ");
    },
    exitText(row) { return exitWords(row.last_exit_code) || "—"; },
    // A formation being deleted says so (its process may take its whole stop timeout; the
    // badge keeps the colour of its real state, stopping).
    stateText(row) { return row.deleting ? "deleting" : row.status; },
    // Health and uptime belong to a running process; for any other state they would be stale.
    uptimeText(row) {
      if (row.status !== "running" || typeof row.uptime_s !== "number") return "—";
      return this.duration(row.uptime_s + Math.max(0, this.now - (row.uptime_at || this.now)) / 1000);
    },
    healthText(row) {
      if (row.status !== "running") return "—";
      if (row.healthy === true) return "healthy";
      if (row.healthy === false) return "unhealthy";
      return "—";
    },
    dash(value) { return value === null || value === undefined ? "—" : String(value); },
    sources(hit) { return (hit.sources || []).join(", "); },
    percent(value) { return typeof value === "number" ? value.toFixed(1) + " %" : "—"; },
    bytes(value) {
      if (typeof value !== "number") return "—";
      const units = ["B", "KiB", "MiB", "GiB"];
      let n = value, i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return n.toFixed(i ? 1 : 0) + " " + units[i];
    },
    duration(seconds) {
      if (typeof seconds !== "number") return "—";
      const s = Math.floor(seconds);
      if (s < 60) return s + " s";
      if (s < 3600) return Math.floor(s / 60) + " min";
      if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
      return Math.floor(s / 86400) + " d";
    },
    ago(ts) {
      if (!ts) return "";
      const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
      return s < 60 ? "just now" : this.duration(s) + " ago";
    },
    tele(name) {
      const t = this.thread && this.thread.telemetry;
      return t && typeof t[name] === "number" ? t[name] : 0;
    },
    progressText() {
      const p = this.thread.progress || {};
      return (p.phase || "idle") + " · " + (p.percent || 0) + " %";
    },
    pageText() {
      const total = this.results.total;
      if (!total) return "0 of 0";
      return (this.offset + 1) + "–" + Math.min(this.offset + this.limit, total) + " of " + total;
    },
  }));
});

function event_time() {
  return new Date().toISOString();
}
