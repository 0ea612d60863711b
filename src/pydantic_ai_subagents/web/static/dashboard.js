// The subagent task dashboard. Every text that comes from the API (which includes text written by models) is
// written with textContent or a DOM property, never parsed as HTML.
'use strict';
(() => {
  const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
  const LIVE_REFRESH_SECONDS = 5;
  const LABELS = {
    pending: 'pending',
    running: 'running',
    waiting_for_answer: 'waiting for answer',
    completed: 'completed',
    failed: 'failed',
    cancelled: 'cancelled',
  };
  const scope = new URLSearchParams(window.location.search).get('scope');
  const tree = document.getElementById('tree');
  const empty = document.getElementById('empty');
  const counts = document.getElementById('counts');
  const connection = document.getElementById('connection');
  const toastBox = document.getElementById('toast');
  const template = document.getElementById('task-template');

  const tasks = new Map(); // task id -> task JSON, as the API returned it
  const nodes = new Map(); // task id -> its <li>
  let fetchedAt = performance.now();

  if (scope) {
    const label = document.getElementById('scope');
    label.textContent = 'scope: ' + scope;
    label.hidden = false;
  }

  // URLs are relative to the page, so the dashboard works under any prefix.
  function apiUrl(path) {
    const url = new URL(path, window.location.href);
    if (scope) url.searchParams.set('scope', scope);
    return url;
  }

  let toastTimer = 0;
  function toast(message) {
    toastBox.textContent = message;
    toastBox.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);
  }

  // ------------------------------------------------------------------ loading

  let refreshTimer = 0;
  let refreshing = false;
  let refreshAgain = false;
  let lastAttempt = 0;

  function scheduleRefresh(delay = 120) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, delay);
  }

  async function refresh() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    lastAttempt = performance.now();
    try {
      const response = await fetch(apiUrl('tasks'), { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (!response.ok) {
        toast('Could not load the tasks: HTTP ' + response.status);
        return;
      }
      const data = await response.json();
      fetchedAt = performance.now();
      tasks.clear();
      for (const task of data.tasks) tasks.set(task.id, task);
      render();
    } catch (error) {
      toast('Could not load the tasks: ' + error);
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh();
      }
    }
  }

  // ------------------------------------------------------------------ rendering

  function render() {
    const children = new Map();
    const roots = [];
    for (const task of tasks.values()) {
      const parent = task.parent_task_id;
      if (parent && tasks.has(parent)) {
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(task);
      } else {
        roots.push(task);
      }
    }
    const build = (task) => {
      const li = nodeFor(task);
      place(li.querySelector(':scope > ul.children'), (children.get(task.id) || []).map(build));
      return li;
    };
    place(tree, roots.map(build));
    for (const [id, li] of nodes) {
      if (!tasks.has(id)) {
        li.remove();
        nodes.delete(id);
      }
    }
    empty.hidden = tasks.size > 0;
    let live = 0;
    for (const task of tasks.values()) if (!TERMINAL.has(task.status.state)) live += 1;
    counts.textContent = tasks.size ? `${tasks.size} task${tasks.size === 1 ? '' : 's'}, ${live} live` : '';
    tick();
  }

  // Put `items` in `container`, in order, moving only what is out of place (so a focused input keeps its focus).
  function place(container, items) {
    items.forEach((item, index) => {
      const here = container.children[index];
      if (here !== item) container.insertBefore(item, here || null);
    });
    while (container.children.length > items.length) container.lastElementChild.remove();
  }

  function nodeFor(task) {
    let li = nodes.get(task.id);
    if (!li) {
      li = template.content.firstElementChild.cloneNode(true);
      li.dataset.taskId = task.id;
      const id = task.id;
      li.querySelector('.cancel-soft').addEventListener('click', (e) => cancel(id, 'soft', e.currentTarget));
      li.querySelector('.cancel-hard').addEventListener('click', (e) => cancel(id, 'hard', e.currentTarget));
      li.querySelector('.answer-form').addEventListener('submit', (e) => {
        e.preventDefault();
        answer(id, e.currentTarget);
      });
      nodes.set(task.id, li);
    }
    update(li, task);
    return li;
  }

  function setText(root, selector, text) {
    root.querySelector(selector).textContent = text;
  }

  function update(li, task) {
    const state = task.status.state;
    const card = li.querySelector(':scope > .card');
    li.className = 'task state-' + state;
    li.dataset.state = state;
    setText(card, '.badge', LABELS[state] || state);
    card.querySelector('.badge').title = 'since ' + new Date(task.status.timestamp).toLocaleTimeString();
    setText(card, '.subagent', task.subagent);
    setText(card, '.task-id', task.id.slice(0, 8));
    card.querySelector('.task-id').title = task.id;
    setText(card, '.mode', task.mode + (task.depth > 1 ? ` · depth ${task.depth}` : ''));
    setText(card, '.description', task.description);
    const u = task.usage;
    setText(card, '.usage', `${u.requests} req · ${u.tool_calls} tools · ${u.total_tokens} tok`);

    const terminal = TERMINAL.has(state);
    const soft = card.querySelector('.cancel-soft');
    const hard = card.querySelector('.cancel-hard');
    soft.hidden = hard.hidden = terminal;
    soft.disabled = task.cancel !== null;
    hard.disabled = task.cancel !== null && task.cancel.kind === 'hard';

    const waiting = state === 'waiting_for_answer' && task.question !== null;
    card.querySelector('.question-box').hidden = !waiting;
    setText(card, '.question', waiting ? task.question : '');

    let label = '';
    let text = null;
    if (task.error !== null) [label, text] = ['Error', task.error];
    else if (task.result !== null) [label, text] = ['Result', task.result];
    else if (task.partial_result !== null) [label, text] = ['Partial result', task.partial_result];
    card.querySelector('.output').hidden = text === null;
    setText(card, '.output-label', label);
    setText(card, '.output-text', text === null ? '' : text);

    const notes = [];
    if (task.cancel) notes.push(`${task.cancel.kind} cancel requested by ${task.cancel.requested_by}`);
    if (task.note) notes.push(task.note);
    const info = card.querySelector('.cancel-info');
    info.hidden = notes.length === 0;
    info.textContent = notes.join(' · ');
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + ' s';
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // Elapsed times run on between refreshes; usage has no event of its own, so live tasks are re-read now and then.
  function tick() {
    const since = (performance.now() - fetchedAt) / 1000;
    let anyLive = false;
    for (const [id, li] of nodes) {
      const task = tasks.get(id);
      if (!task) continue;
      const live = !TERMINAL.has(task.status.state);
      anyLive = anyLive || live;
      li.querySelector(':scope > .card .elapsed').textContent = formatSeconds(task.elapsed_seconds + (live ? since : 0));
    }
    const idle = (performance.now() - lastAttempt) / 1000;
    if (anyLive && idle > LIVE_REFRESH_SECONDS && !refreshing) scheduleRefresh(0);
  }

  // ------------------------------------------------------------------ actions

  async function post(id, action, body) {
    const response = await fetch(apiUrl(`tasks/${encodeURIComponent(id)}/${action}`), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const detail = data && typeof data.detail === 'string' ? data.detail : 'HTTP ' + response.status;
      toast(`Could not ${action}: ${detail}`);
    }
    if (data && data.task) {
      tasks.set(data.task.id, data.task);
      fetchedAt = performance.now();
      render();
    }
    scheduleRefresh();
    return data;
  }

  async function cancel(id, kind, button) {
    button.disabled = true;
    try {
      const data = await post(id, 'cancel', { kind });
      if (data && data.accepted === false) toast('That cancel was already requested.');
    } catch (error) {
      toast('Could not cancel: ' + error);
      button.disabled = false;
    }
  }

  async function answer(id, form) {
    const input = form.querySelector('.answer-input');
    const text = input.value.trim();
    if (!text) {
      toast('Type an answer first.');
      return;
    }
    const button = form.querySelector('.answer-button');
    button.disabled = true;
    try {
      const data = await post(id, 'answer', { answer: text });
      if (data && data.accepted) input.value = '';
      else if (data && data.accepted === false) toast('The task is not waiting for an answer any more.');
    } catch (error) {
      toast('Could not answer: ' + error);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ live updates

  function setConnection(state) {
    connection.dataset.state = state;
    connection.textContent = state;
  }

  function applyEvent(event) {
    if (event.type === 'Resync') {
      // Events were missed (the server no longer had them): read every task again.
      scheduleRefresh(0);
      return;
    }
    const task = tasks.get(event.task_id);
    if (!task) return; // a new task: the refresh brings it with everything it has
    task.status = { state: event.status, timestamp: event.timestamp };
    if (event.type === 'TaskQuestionAsked') task.question = event.question;
    if (event.type === 'TaskAnswered') task.question = null;
    if (event.type === 'TaskCancelRequested') {
      task.cancel = { kind: event.cancel_kind, requested_by: event.requested_by, requested_at: event.timestamp };
    }
    render();
  }

  let source = null;
  function connect() {
    setConnection('connecting');
    source = new EventSource(apiUrl('tasks/events'));
    source.onopen = () => {
      setConnection('live');
      scheduleRefresh(0);
    };
    source.onmessage = (message) => {
      try {
        applyEvent(JSON.parse(message.data));
      } catch (error) {
        toast('Unreadable event: ' + error);
      }
      scheduleRefresh();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (e.g. it is shutting down): try again a little later.
        setConnection('disconnected');
        setTimeout(connect, 5000);
      } else {
        setConnection('reconnecting');
      }
    };
  }

  setInterval(tick, 1000);
  refresh();
  connect();
})();
