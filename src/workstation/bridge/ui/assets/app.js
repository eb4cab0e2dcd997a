// fileagent's page: plain JavaScript and web components, no build step.
// Everything from files, printers and agents is put in as text (never as
// HTML). The page talks only to the fileagent process that served it.

const csrf = document.querySelector('meta[name="csrf"]').content;

// --- helpers -------------------------------------------------------------

/** An element with attributes, properties (on*) and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Where the keyboard focus is, as a selector that finds it again after a redraw. */
function focusKey() {
  const active = document.activeElement;
  if (!active || active === document.body) return null;
  const parts = [];
  for (let node = active; node && node !== document.body; node = node.parentElement) {
    for (const attr of ['data-job', 'data-agent', 'data-file', 'data-local', 'data-action']) {
      if (node.hasAttribute?.(attr)) parts.unshift(`[${attr}="${CSS.escape(node.getAttribute(attr))}"]`);
    }
  }
  return parts.length ? parts.join(' ') : null;
}

/** Replaces a container's children, keeping the keyboard focus where it was. */
function redraw(container, children) {
  const key = container.contains(document.activeElement) ? focusKey() : null;
  container.replaceChildren(...children);
  if (key) container.querySelector(key)?.focus();
}

function bytes(n) {
  if (n === undefined || n === null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function duration(secs) {
  if (secs === undefined || secs === null || !isFinite(secs)) return '';
  secs = Math.max(0, Math.round(secs));
  const h = Math.floor(secs / 3600), m = Math.floor(secs % 3600 / 60), s = secs % 60;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

function rate(r) { return r ? `${(r / 1e6).toFixed(1)} MB/s` : ''; }

/** A change, with the page's CSRF token; resolves to the answer's text. */
async function post(url, body) {
  const answer = await fetch(url, {
    method: 'POST', body, headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin',
  });
  const text = await answer.text();
  if (!answer.ok) throw new Error(text || `${answer.status} ${answer.statusText}`);
  return text;
}

function remembered(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}
function remember(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode */ }
}

// --- the state, from the process's event stream --------------------------

const store = {
  state: { agents: [], groups: {}, jobs: [] },
  listeners: new Set(),
  set(state) { this.state = state; for (const f of this.listeners) f(state); },
  watch(f) { this.listeners.add(f); f(this.state); },
};

function follow() {
  const link = document.getElementById('link');
  const events = new EventSource('events');
  events.addEventListener('state', (e) => {
    link.textContent = 'live';
    link.classList.remove('bad');
    store.set(JSON.parse(e.data));
  });
  events.addEventListener('error', () => {
    // The browser retries by itself unless the answer was a refusal (a
    // restarted process knows no session): then only a new link helps.
    link.textContent = events.readyState === EventSource.CLOSED
      ? 'this page is no longer let in (was fileagent restarted?): run `fileagent ui` for a new link'
      : 'lost the connection to fileagent: is `fileagent ui` (or the bridge) still running? Retrying…';
    link.classList.add('bad');
  });
}

// Local uploads: the file on its way from the browser into fileagent,
// before the agents' transfers (jobs) take over.
const local = {
  items: new Map(), next: 1, listeners: new Set(),
  changed() { for (const f of this.listeners) f(); },
};

// --- <fa-send>: drop files, choose printers and what to do ----------------

class FaSend extends HTMLElement {
  connectedCallback() {
    this.targets = new Set(remembered('fileagent.targets', []));
    this.print = remembered('fileagent.print', false);
    this.input = el('input', {
      type: 'file', multiple: true, class: 'visually-hidden', id: 'files',
      accept: '.gcode,.gco,.g,.bgcode,.ufp,.3mf',
      onchange: () => { this.send([...this.input.files]); this.input.value = ''; },
    });
    this.zone = el('div', { class: 'drop' },
      el('p', {}, 'Drop print files anywhere on this page, or'),
      el('button', { class: 'primary', type: 'button', onclick: () => this.input.click() }, 'Choose files…'),
      this.input);
    this.printers = el('fieldset', {}, el('legend', {}, 'Send to'));
    this.mode = el('fieldset', {}, el('legend', {}, 'Then'),
      this.radio(false, 'Upload only'), this.radio(true, 'Upload and print (when the printer is idle and its bed clear)'));
    this.message = el('p', { class: 'note', role: 'status', 'aria-live': 'polite' });
    this.replaceChildren(el('section', { 'aria-labelledby': 'send-title' },
      el('h2', { id: 'send-title' }, 'Send files'), this.zone, this.printers, this.mode, this.message));
    store.watch((state) => this.render(state));
    this.listenForDrops();
  }

  radio(value, text) {
    return el('label', {}, el('input', {
      type: 'radio', name: 'then', checked: this.print === value,
      onchange: () => { this.print = value; remember('fileagent.print', value); },
    }), text);
  }

  render(state) {
    const key = JSON.stringify([state.agents.map((a) => a.name), state.groups]);
    if (key === this.rendered) return;
    this.rendered = key;
    const box = (id, text) => el('label', {}, el('input', {
      type: 'checkbox', checked: this.targets.has(id),
      onchange: (e) => {
        if (e.target.checked) this.targets.add(id); else this.targets.delete(id);
        remember('fileagent.targets', [...this.targets]);
      },
    }), text);
    const legend = this.printers.querySelector('legend');
    const boxes = [
      ...state.agents.map((a) => box(`a:${a.name}`, a.name)),
      ...Object.entries(state.groups).map(([g, members]) => box(`g:${g}`, `${g} (group: ${members.join(', ')})`)),
    ];
    if (!boxes.length) boxes.push(el('span', { class: 'note' }, 'No paired printer yet: pair with one first (`fileagent pair HOST CODE`).'));
    this.printers.replaceChildren(legend, ...boxes);
  }

  listenForDrops() {
    const overlay = document.getElementById('dropping');
    let depth = 0;
    const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes('Files');
    document.addEventListener('dragenter', (e) => { if (hasFiles(e)) { depth++; overlay.hidden = false; this.zone.classList.add('over'); } });
    document.addEventListener('dragleave', () => { if (--depth <= 0) { depth = 0; overlay.hidden = true; this.zone.classList.remove('over'); } });
    document.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
    document.addEventListener('drop', (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth = 0; overlay.hidden = true; this.zone.classList.remove('over');
      this.send([...e.dataTransfer.files]);
    });
  }

  send(files) {
    const known = new Set([
      ...store.state.agents.map((a) => `a:${a.name}`),
      ...Object.keys(store.state.groups).map((g) => `g:${g}`),
    ]);
    const to = [...this.targets].filter((t) => known.has(t));
    if (!files.length) return;
    if (!to.length) {
      this.message.textContent = 'Choose at least one printer to send to.';
      this.message.classList.add('error');
      return;
    }
    this.message.classList.remove('error');
    this.message.textContent = `Sending ${files.length} file${files.length === 1 ? '' : 's'}…`;
    let left = files.length;
    const done = () => {
      if (--left === 0) this.message.textContent = `${files.length} file${files.length === 1 ? '' : 's'} handed to fileagent: the transfers below go on without this page.`;
    };
    for (const file of files) upload(file, to, this.print, done);
  }
}

/** Hands one file to fileagent (the agents' transfers follow as jobs). */
function upload(file, to, print, done) {
  const id = local.next++;
  const xhr = new XMLHttpRequest();
  const item = { id, name: file.name, size: file.size, sent: 0, error: null, xhr };
  local.items.set(id, item);
  const query = new URLSearchParams({ to: to.join(','), name: file.name, print: String(print) });
  xhr.open('POST', `send?${query}`);
  xhr.setRequestHeader('X-CSRF-Token', csrf);
  xhr.upload.addEventListener('progress', (e) => { item.sent = e.loaded; local.changed(); });
  xhr.addEventListener('load', () => {
    if (xhr.status === 200) local.items.delete(id);
    else item.error = xhr.responseText || `${xhr.status}`;
    local.changed();
    done();
  });
  xhr.addEventListener('error', () => { item.error = 'fileagent could not be reached'; local.changed(); });
  xhr.addEventListener('abort', () => { local.items.delete(id); local.changed(); });
  xhr.send(file);
  local.changed();
}

// --- <fa-jobs>: every transfer, its progress and outcome ------------------

const RUNNING = new Set(['connecting', 'sending', 'storing', 'following']);
const WORDS = {
  connecting: 'connecting', sending: 'sending', storing: 'storing', following: 'stored, checking the printer',
  stored: 'stored', started: 'started', waiting: 'stored, waiting', exists: 'not sent', failed: 'failed', cancelled: 'cancelled',
};

class FaJobs extends HTMLElement {
  connectedCallback() {
    this.summary = el('p', { class: 'summary', role: 'status', 'aria-live': 'polite' });
    this.body = el('tbody');
    this.section = el('section', { 'aria-labelledby': 'jobs-title', hidden: true },
      el('h2', { id: 'jobs-title' }, 'Transfers'), this.summary,
      el('table', {}, el('thead', {}, el('tr', {},
        el('th', {}, 'File'), el('th', {}, 'Printer'), el('th', {}, 'Progress'),
        el('th', { class: 'hide-narrow' }, 'Rate'), el('th', { class: 'hide-narrow' }, 'Left'),
        el('th', {}, 'Outcome'), el('th', {}, el('span', { class: 'visually-hidden' }, 'Actions')))),
      this.body));
    this.replaceChildren(this.section);
    const draw = () => this.render(store.state);
    store.watch(draw);
    local.listeners.add(draw);
  }

  render(state) {
    const rows = [];
    for (const item of local.items.values()) {
      rows.push(el('tr', { 'data-local': item.id },
        el('td', {}, item.name), el('td', {}, 'fileagent (this computer)'),
        el('td', { class: 'bar' }, el('progress', { max: item.size || 1, value: item.sent, 'aria-label': `${item.name} into fileagent` }), `${item.size ? Math.floor(100 * item.sent / item.size) : 100} % of ${bytes(item.size)}`),
        el('td', { class: 'hide-narrow num' }), el('td', { class: 'hide-narrow num' }),
        el('td', { class: item.error ? 'state-failed' : '' }, item.error ?? 'reading…'),
        el('td', {}, el('div', { class: 'actions' }, item.error
          ? el('button', { type: 'button', 'data-action': 'dismiss', onclick: () => { local.items.delete(item.id); local.changed(); } }, 'Dismiss')
          : el('button', { type: 'button', 'data-action': 'cancel', onclick: () => item.xhr.abort() }, 'Cancel')))));
    }
    for (const job of state.jobs) rows.push(this.row(job));
    this.section.hidden = rows.length === 0;
    redraw(this.body, rows);
    this.summary.textContent = summary(state.jobs);
  }

  row(job) {
    const pct = job.size ? Math.floor(100 * job.done / job.size) : 100;
    const action = (name, text) => el('button', {
      type: 'button', 'data-action': name,
      onclick: () => post(`jobs/${job.id}/${name}`).catch((e) => alert(e.message)),
    }, text);
    const actions = RUNNING.has(job.state)
      ? [action('cancel', 'Cancel')]
      : [
        ...(['failed', 'cancelled'].includes(job.state) ? [action('retry', 'Retry')] : []),
        ...(job.state === 'exists' ? [action('replace', 'Replace')] : []),
        action('dismiss', 'Dismiss'),
      ];
    const outcome = [WORDS[job.state] ?? job.state, job.text && job.text !== WORDS[job.state] ? `: ${job.text}` : ''].join('');
    return el('tr', { 'data-job': job.id, 'data-state': job.state },
      el('td', {}, job.file, job.print ? el('span', { class: 'note' }, ' (print)') : ''),
      el('td', {}, job.agent),
      el('td', { class: 'bar' }, el('progress', { max: 100, value: pct, 'aria-label': `${job.file} to ${job.agent}` }), `${pct} % of ${bytes(job.size)}`),
      el('td', { class: 'hide-narrow num' }, rate(job.rate)),
      el('td', { class: 'hide-narrow num' }, RUNNING.has(job.state) ? duration(job.eta) : ''),
      el('td', { class: `state-${job.state}` }, outcome),
      el('td', {}, el('div', { class: 'actions' }, actions)));
  }
}

/** "3 of 3 stored, 2 started, 1 waiting": the transfers on the page. */
function summary(jobs) {
  if (!jobs.length) return '';
  const count = (...states) => jobs.filter((j) => states.includes(j.state)).length;
  const stored = count('stored', 'started', 'waiting', 'following');
  const parts = [`${stored} of ${jobs.length} stored`];
  const started = count('started'), waiting = count('waiting'), running = jobs.filter((j) => RUNNING.has(j.state) && j.state !== 'following').length;
  const failed = count('failed', 'exists'), cancelled = count('cancelled');
  if (started) parts.push(`${started} started`);
  if (waiting) parts.push(`${waiting} waiting`);
  if (running) parts.push(`${running} under way`);
  if (failed) parts.push(`${failed} failed`);
  if (cancelled) parts.push(`${cancelled} cancelled`);
  return parts.join(', ');
}

// --- <fa-board>: every paired printer ------------------------------------

const WAITING = new Set(['received', 'uploading', 'uploaded', 'failed', 'skipped', 'interrupted', 'unknown']);

class FaBoard extends HTMLElement {
  connectedCallback() {
    this.cards = el('div', { class: 'cards' });
    this.replaceChildren(el('section', { 'aria-labelledby': 'board-title' },
      el('h2', { id: 'board-title' }, 'Printers'), this.cards));
    store.watch((state) => this.render(state));
  }

  render(state) {
    if (state.config_error) {
      this.cards.replaceChildren(el('p', { class: 'error' }, state.config_error));
      return;
    }
    if (!state.agents.length) {
      this.cards.replaceChildren(el('p', { class: 'note' }, 'No paired printer yet: pair with one first (`fileagent pair HOST CODE`).'));
      return;
    }
    redraw(this.cards, state.agents.map((a) => card(a)));
  }
}

function card(agent) {
  const p = agent.printer;
  const busy = p && Object.entries(p.flags ?? {}).some(([k, v]) => v && ['printing', 'paused', 'pausing', 'cancelling', 'finishing'].includes(k));
  // A printer that reports an error (Klipper's print_stats, OctoPrint's
  // error flag) is not shown as ready, whatever else it says.
  const failing = p?.flags?.error === true;
  const badge = !agent.reachable
    ? el('span', { class: 'badge down' }, 'unreachable')
    : busy ? el('span', { class: 'badge busy' }, p.text)
      : failing ? el('span', { class: 'badge down' }, p.text)
        : p?.connected ? el('span', { class: 'badge up' }, p.text) : el('span', { class: 'badge down' }, 'no printer');
  const facts = [];
  const fact = (term, ...value) => facts.push(el('dt', {}, term), el('dd', {}, ...value));
  if (!agent.reachable) fact('Why', agent.error ?? '');
  if (p) {
    fact('Printer', p.text);
    if (p.job) fact('File', p.job);
    if (p.completion !== undefined && p.completion !== null) {
      fact('Progress', el('progress', { max: 100, value: p.completion, 'aria-label': `${agent.name} print progress` }), ` ${p.completion.toFixed(1)} %`);
    }
    if (p.print_time !== undefined && p.print_time !== null) fact('Elapsed', duration(p.print_time));
    if (p.print_time_left !== undefined && p.print_time_left !== null) fact('Left', duration(p.print_time_left));
    const temps = Object.entries(p.temperatures ?? {}).map(([name, t]) => `${name} ${Math.round(t.actual ?? 0)}/${Math.round(t.target ?? 0)} °C`);
    if (temps.length) fact('Heaters', temps.join(', '));
  }
  if (agent.bed) fact('Bed', agent.bed);
  // Files not printed yet; without forwarding (no state), every stored file.
  const waiting = (agent.files ?? []).filter((f) => !f.state || WAITING.has(f.state));
  const list = waiting.length
    ? el('ul', {}, waiting.map((f) => fileRow(agent, f)))
    : el('p', { class: 'note' }, agent.files_error ?? (agent.reachable ? 'No files waiting.' : ''));
  return el('article', { class: 'card', 'data-agent': agent.name },
    el('h3', {}, el('span', {}, agent.name), badge),
    el('p', { class: 'addr' }, agent.address),
    el('dl', {}, facts),
    el('h4', {}, `Waiting files (${waiting.length})`),
    list);
}

function fileRow(agent, file) {
  const act = (what, text, primary) => el('button', {
    type: 'button', class: primary ? 'primary' : '', 'data-action': what,
    onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      try {
        await post(`agents/${encodeURIComponent(agent.name)}/${what}?${new URLSearchParams({ name: file.name })}`);
      } catch (err) {
        alert(err.message);
      } finally {
        button.disabled = false;
      }
    },
  }, text);
  return el('li', { 'data-file': file.name },
    el('span', { class: 'name' }, file.name),
    el('span', { class: 'note' }, `${file.state ?? 'stored'} · ${bytes(file.size)}${file.reason ? ` · ${file.reason}` : ''}`),
    el('div', { class: 'actions' },
      ['received', 'uploaded'].includes(file.state) ? act('print', 'Print now', true) : null,
      act('remove', 'Remove')));
}

customElements.define('fa-send', FaSend);
customElements.define('fa-jobs', FaJobs);
customElements.define('fa-board', FaBoard);
follow();
