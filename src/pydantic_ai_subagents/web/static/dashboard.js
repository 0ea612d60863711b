// The subagent task dashboard. Every text that comes from the API (which includes text written by models) is
// written with textContent or a DOM property, never parsed as HTML.
'use strict';
(() => {
  const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
  // The events that report a transition: their `status` and `timestamp` are those of a step of the task's history.
  const TRANSITIONS = new Set([
    'TaskCreated', 'TaskStarted', 'TaskQuestionAsked', 'TaskAnswered', 'TaskCompleted', 'TaskFailed', 'TaskCancelled',
  ]);
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
  const $ = (id) => document.getElementById(id);
  const tree = $('tree');
  const empty = $('empty');
  const noMatch = $('no-match');
  const counts = $('counts');
  const shown = $('shown');
  const connection = $('connection');
  const toastBox = $('toast');
  const template = $('task-template');
  const search = $('search');
  const stateFilter = $('state-filter');
  const scopeFilter = $('scope-filter');
  const drawer = $('drawer');
  const confirmBox = $('confirm');

  const tasks = new Map(); // task id -> task JSON, as the API returned it
  const nodes = new Map(); // task id -> its <li>
  let children = new Map(); // task id -> the tasks its subagent started (among those shown by the API)
  const retries = new Map(); // task id -> the TaskRetrying events this page received for it
  let fetchedAt = performance.now();

  if (scope) {
    const label = $('scope');
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

  // ------------------------------------------------------------------ words and numbers

  const numbers = new Intl.NumberFormat('en');

  function plural(count, word, many = word + 's') {
    return `${numbers.format(count)} ${count === 1 ? word : many}`;
  }

  function usageText(u) {
    return [plural(u.requests, 'request'), plural(u.tool_calls, 'tool call'), plural(u.total_tokens, 'token')].join(' · ');
  }

  const USAGE_KEYS = ['requests', 'tool_calls', 'input_tokens', 'output_tokens', 'total_tokens'];

  function usageMinus(a, b) {
    const out = {};
    for (const key of USAGE_KEYS) out[key] = Math.max(0, a[key] - b[key]);
    return out;
  }

  function usagePlus(a, b) {
    const out = {};
    for (const key of USAGE_KEYS) out[key] = a[key] + b[key];
    return out;
  }

  // A task's own usage: the API's `usage` holds each finished subtask's usage too (`subtask_usage`).
  function ownUsage(task) {
    return usageMinus(task.usage, task.subtask_usage);
  }

  // This task and every task below it that the page knows, live ones included.
  function treeUsage(task, seen = new Set()) {
    seen.add(task.id);
    let total = ownUsage(task);
    for (const child of children.get(task.id) || []) {
      if (!seen.has(child.id)) total = usagePlus(total, treeUsage(child, seen));
    }
    return total;
  }

  function hasSubtasks(task) {
    return (children.get(task.id) || []).length > 0 || task.subtask_usage.requests > 0 || task.live_subtasks > 0;
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + ' s';
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
    return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // ------------------------------------------------------------------ loading

  // A reply and the event stream come on different connections, so a view read before an event can arrive after
  // it. Of two copies of a task, the page keeps the later: a view with a lower revision, or with fewer steps than
  // the events have shown, is older than what the page has (the refresh that follows each event brings the newer).
  function later(current, view) {
    if (!current) return view;
    return view.revision < current.revision || view.history.length < current.history.length ? current : view;
  }

  // An ISO 8601 time in microseconds since the epoch (views end with `Z`, events with `+00:00`).
  function micros(iso) {
    const fraction = /\.(\d+)/.exec(iso);
    return Date.parse(iso.replace(/\.\d+/, '')) * 1000 + Number(((fraction ? fraction[1] : '') + '000000').slice(0, 6));
  }

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
    const known = new Set(tasks.keys());
    try {
      const response = await fetch(apiUrl('tasks'), { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (!response.ok) {
        toast('Could not load the tasks: HTTP ' + response.status);
        return;
      }
      const data = await response.json();
      fetchedAt = performance.now();
      // A task the page learned of while this read was under way (a reply's) is kept though it is not listed.
      const read = new Map(data.tasks.map((view) => [view.id, later(tasks.get(view.id), view)]));
      for (const [id, task] of tasks) if (!read.has(id) && !known.has(id)) read.set(id, task);
      tasks.clear();
      for (const [id, task] of read) tasks.set(id, task);
      // The retries of tasks no longer listed (pruned) go too; those of a task created since the read stay.
      for (const [id, seen] of retries) {
        if (!tasks.has(id) && Date.now() - new Date(seen[seen.length - 1].timestamp) > 60_000) retries.delete(id);
      }
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

  // ------------------------------------------------------------------ filters

  function matches(task) {
    const state = task.status.state;
    const wanted = stateFilter.value;
    if (wanted === 'live' ? TERMINAL.has(state) : wanted && wanted !== state) return false;
    const words = search.value.trim().toLowerCase();
    if (!words) return true;
    const haystack = [
      task.id, task.subagent, task.description, task.result, task.error, task.partial_result, task.question, task.note,
    ].filter((text) => typeof text === 'string').join('\n').toLowerCase();
    return words.split(/\s+/).every((word) => haystack.includes(word));
  }

  // The conversation a task belongs to: its own scope, or that of the top-level task above it.
  function inConversation(task, wanted) {
    for (let t = task, hops = 0; t && hops < 64; t = tasks.get(t.parent_task_id), hops += 1) {
      if (t.scope === wanted) return true;
    }
    return false;
  }

  function updateScopeChoices() {
    // A subtask runs in its parent subagent's own conversation: only top-level tasks name the user's conversations.
    const tops = [...tasks.values()].filter((t) => !t.parent_task_id || !tasks.has(t.parent_task_id));
    const scopes = [...new Set(tops.map((t) => t.scope))].sort();
    const current = [...scopeFilter.options].slice(1).map((o) => o.value);
    if (scopes.join('\n') === current.join('\n')) return;
    const chosen = scopeFilter.value;
    while (scopeFilter.options.length > 1) scopeFilter.lastElementChild.remove();
    for (const value of scopes) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = value;
      scopeFilter.append(option);
    }
    scopeFilter.value = scopes.includes(chosen) ? chosen : '';
  }

  // ------------------------------------------------------------------ rendering

  function render() {
    children = new Map();
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
    updateScopeChoices();
    const conversation = scopeFilter.value;
    let matching = 0;
    // A task is shown when it matches the filters, or when a task below it does (then as context, dimmed).
    const build = (task) => {
      const own = matches(task) && (!conversation || inConversation(task, conversation));
      if (own) matching += 1;
      const below = (children.get(task.id) || []).map(build).filter((li) => li !== null);
      if (!own && below.length === 0) return null;
      const li = nodeFor(task);
      li.classList.toggle('context', !own);
      place(li.querySelector(':scope > ul.children'), below);
      return li;
    };
    place(tree, roots.map(build).filter((li) => li !== null));
    for (const [id, li] of nodes) {
      if (!tasks.has(id)) {
        li.remove();
        nodes.delete(id);
      }
    }
    empty.hidden = tasks.size > 0;
    noMatch.hidden = tasks.size === 0 || matching > 0;
    let live = 0;
    for (const task of tasks.values()) if (!TERMINAL.has(task.status.state)) live += 1;
    counts.textContent = tasks.size ? `${plural(tasks.size, 'task')}, ${live} live` : '';
    const filtering = search.value.trim() || stateFilter.value || conversation;
    shown.textContent = filtering && tasks.size ? `${matching} of ${plural(tasks.size, 'task')} match` : '';
    renderDrawer();
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
      li.querySelector('.cancel-hard').addEventListener('click', (e) => confirmHardCancel(id, e.currentTarget));
      li.querySelector('.details').addEventListener('click', () => openDrawer(id));
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

  function outputOf(task) {
    if (task.error !== null) return ['Error', task.error];
    if (task.result !== null) return ['Result', task.result];
    if (task.partial_result !== null) return ['Partial result', task.partial_result];
    return ['', null];
  }

  function update(li, task) {
    const state = task.status.state;
    const card = li.querySelector(':scope > .card');
    li.className = 'task state-' + state;
    li.dataset.state = state;
    li.classList.toggle('selected', drawer.dataset.taskId === task.id && !drawer.hidden);
    setText(card, '.badge', LABELS[state] || state);
    card.querySelector('.badge').title = 'since ' + new Date(task.status.timestamp).toLocaleTimeString();
    setText(card, '.subagent', task.subagent);
    setText(card, '.task-id', task.id.slice(0, 8));
    card.querySelector('.task-id').title = task.id;
    setText(card, '.mode', task.mode + (task.depth > 1 ? ` · depth ${task.depth}` : ''));
    setText(card, '.description', task.description);
    const attempts = card.querySelector('.attempts-badge');
    attempts.hidden = task.attempts <= 1;
    attempts.textContent = task.attempts > 1 ? `${task.attempts} attempts` : '';
    const followUp = card.querySelector('.follow-up-badge');
    followUp.hidden = !task.continued_from;
    followUp.title = task.continued_from ? 'Continues task ' + task.continued_from : '';
    const parent = hasSubtasks(task);
    setText(card, '.usage', (parent ? 'own: ' : '') + usageText(ownUsage(task)));
    const total = card.querySelector('.usage-total');
    total.hidden = !parent;
    total.textContent = parent ? 'with subtasks: ' + usageText(treeUsage(task)) : '';

    const terminal = TERMINAL.has(state);
    const soft = card.querySelector('.cancel-soft');
    const hard = card.querySelector('.cancel-hard');
    soft.hidden = hard.hidden = terminal;
    soft.disabled = task.cancel !== null;
    hard.disabled = task.cancel !== null && task.cancel.kind === 'hard';

    const waiting = state === 'waiting_for_answer' && task.question !== null;
    card.querySelector('.question-box').hidden = !waiting;
    setText(card, '.question', waiting ? task.question : '');

    const [label, text] = outputOf(task);
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

  // ------------------------------------------------------------------ the detail drawer

  let activity = null; // the activity JSON of the drawer's task, once read
  let activityFor = ''; // `${id}:${state}` it was read for: read again when the task's state changes
  let steerReply = null; // { id, text, ok }: the server's reply to the last message sent from the drawer
  let continueReply = null; // { id, text }: why the last follow-up asked for from the drawer was not started

  function openDrawer(id) {
    if (drawer.dataset.taskId !== id) {
      steerReply = null;
      continueReply = null;
      drawer.querySelector('.steer-input').value = '';
      drawer.querySelector('.continue-input').value = '';
    }
    drawer.dataset.taskId = id;
    drawer.hidden = false;
    document.body.classList.add('drawer-open');
    activity = null;
    activityFor = '';
    for (const [taskId, li] of nodes) li.classList.toggle('selected', taskId === id);
    renderDrawer();
  }

  function closeDrawer() {
    drawer.hidden = true;
    document.body.classList.remove('drawer-open');
    delete drawer.dataset.taskId;
    for (const li of nodes.values()) li.classList.remove('selected');
  }

  async function loadActivity(task) {
    const key = `${task.id}:${task.status.state}`;
    if (activityFor === key) return;
    activityFor = key;
    try {
      const response = await fetch(apiUrl(`tasks/${encodeURIComponent(task.id)}/activity`), {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
      });
      // A failed read is shown as such; the next change of the task's state reads again.
      const data = response.ok ? await response.json() : { task_id: task.id, error: 'HTTP ' + response.status };
      if (drawer.dataset.taskId === data.task_id && activityFor === key) {
        activity = data;
        renderDrawer();
      }
    } catch (error) {
      toast('Could not load the task details: ' + error);
    }
  }

  function item(list, cls, parts) {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    for (const [partClass, text] of parts) {
      const span = document.createElement('span');
      span.className = partClass;
      span.textContent = text;
      li.append(span);
    }
    list.append(li);
    return li;
  }

  function renderDrawer() {
    const id = drawer.dataset.taskId;
    if (drawer.hidden || !id) return;
    const task = tasks.get(id);
    if (!task) {
      closeDrawer();
      return;
    }
    const state = task.status.state;
    drawer.className = 'drawer state-' + state;
    drawer.dataset.state = state;
    setText(drawer, '.badge', LABELS[state] || state);
    setText(drawer, '.subagent', task.subagent);
    setText(drawer, '.drawer-id .task-id', task.id);
    setText(drawer, '.description', task.description);
    const parent = task.parent_task_id ? ` · started by task ${task.parent_task_id.slice(0, 8)}` : '';
    setText(drawer, '.meta', `${task.mode} · depth ${task.depth} · conversation ${task.scope}${parent}`);
    const attempt = drawer.querySelector('.attempt');
    attempt.hidden = task.attempts <= 1;
    attempt.textContent = task.attempts > 1
      ? `Attempt ${task.attempts}: the run was tried again after ${plural(task.attempts - 1, 'transient model failure')}.`
      : '';
    const followUp = drawer.querySelector('.follow-up');
    followUp.hidden = !task.continued_from;
    const link = drawer.querySelector('.follow-link');
    link.textContent = task.continued_from ? task.continued_from.slice(0, 8) : '';
    link.dataset.taskId = task.continued_from || '';
    link.disabled = !task.continued_from || !tasks.has(task.continued_from);
    link.title = link.disabled
      ? `Task ${task.continued_from} is no longer listed`
      : `Show task ${task.continued_from}, which this one continues`;
    renderSteer(task);

    const waiting = task.question !== null;
    drawer.querySelector('.question-section').hidden = !waiting;
    setText(drawer, '.question', waiting ? task.question : '');
    const [label, text] = outputOf(task);
    drawer.querySelector('.output-section').hidden = text === null;
    setText(drawer, '.output-label', label);
    setText(drawer, '.output-text', text === null ? '' : text);

    // The timeline: every state the task entered, when, and for how long.
    const timeline = drawer.querySelector('.timeline');
    timeline.replaceChildren();
    const tried = (retries.get(task.id) || []).slice();
    const retryStep = (retry) => {
      const li = item(timeline, 'step retry', [
        ['step-state', `retry: attempt ${retry.attempt}`],
        ['step-time', new Date(retry.timestamp).toLocaleTimeString()],
        ['step-duration', `waits ${retry.delay < 1 ? Math.round(retry.delay * 1000) + ' ms' : formatSeconds(retry.delay)}`],
      ]);
      li.title = retry.error;
      const why = document.createElement('span');
      why.className = 'step-error';
      why.textContent = retry.error;
      li.append(why);
    };
    task.history.forEach((entry, index) => {
      while (tried.length && new Date(tried[0].timestamp) < new Date(entry.timestamp)) retryStep(tried.shift());
      const start = new Date(entry.timestamp);
      const next = task.history[index + 1];
      const last = index === task.history.length - 1;
      let duration = '';
      if (next) duration = formatSeconds((new Date(next.timestamp) - start) / 1000);
      else if (!TERMINAL.has(entry.state)) duration = 'ongoing';
      const li = item(timeline, 'step state-' + entry.state, [
        ['step-state', LABELS[entry.state] || entry.state],
        ['step-time', start.toLocaleTimeString()],
        ['step-duration', duration],
      ]);
      li.dataset.state = entry.state;
      if (last) li.classList.add('current');
    });
    for (const retry of tried) retryStep(retry);

    // Usage: own, rolled up from finished subtasks, and the whole tree below as the page sees it.
    const rows = [['own', ownUsage(task)]];
    if (hasSubtasks(task)) {
      rows.push(['finished subtasks (in usage)', task.subtask_usage]);
      rows.push(['with every subtask', treeUsage(task)]);
    }
    const body = drawer.querySelector('.usage-table tbody');
    body.replaceChildren();
    for (const [name, u] of rows) {
      const tr = document.createElement('tr');
      for (const value of [name, numbers.format(u.requests), numbers.format(u.tool_calls), numbers.format(u.total_tokens)]) {
        const td = document.createElement('td');
        td.textContent = value;
        tr.append(td);
      }
      body.append(tr);
    }
    setText(drawer, '.usage-note', hasSubtasks(task)
      ? `The usage the API reports for this task includes each subtask's once the subtask ends; ` +
        `${plural(task.live_subtasks, 'subtask')} still running.`
      : '');

    loadActivity(task);
    renderContinue(task);
    const cost = drawer.querySelector('.cost');
    const note = drawer.querySelector('.tools-note');
    const calls = drawer.querySelector('.tool-calls');
    calls.replaceChildren();
    if (activity === null || activity.task_id !== id) {
      cost.textContent = '';
      note.textContent = 'Loading…';
      return;
    }
    if (activity.error) {
      cost.textContent = '';
      note.textContent = 'Could not read the tool calls: ' + activity.error;
      return;
    }
    if (!activity.transcript_available) {
      const why = TERMINAL.has(state)
        ? 'no transcript is kept for this task any more'
        : 'shown once the task has ended, from the transcript kept then';
      cost.textContent = 'Cost: ' + why + '.';
      note.textContent = why.charAt(0).toUpperCase() + why.slice(1) + '.';
      return;
    }
    const c = activity.cost;
    let costText = c.priced_requests
      ? `Cost of its own requests: $${c.total_usd.toFixed(4)} for ${plural(c.priced_requests, 'priced request')} ` +
        "(Pydantic AI's price data)"
      : 'Cost: no price known for its model';
    if (c.priced_requests && c.unpriced_requests) costText += `; ${plural(c.unpriced_requests, 'request')} without a known price not counted`;
    cost.textContent = costText + '.';
    const total = activity.tool_calls_total;
    note.textContent = total === 0
      ? 'No tool calls.'
      : `The last ${plural(activity.tool_calls.length, 'tool call')} of ${numbers.format(total)}, oldest first.`;
    for (const call of activity.tool_calls) {
      const li = item(calls, 'tool-call', [
        ['tool-name', call.tool_name],
        ['tool-args', call.args],
      ]);
      const result = document.createElement('pre');
      result.className = 'tool-result';
      result.textContent = call.result === null ? '(no result recorded)' : call.result;
      li.append(result);
    }
  }

  // Steering: a live task takes messages; a finished one keeps the list of those it took.
  function renderSteer(task) {
    const terminal = TERMINAL.has(task.status.state);
    const reply = steerReply && steerReply.id === task.id ? steerReply : null;
    drawer.querySelector('.steer-section').hidden = terminal && task.messages.length === 0 && reply === null;
    // A task being cancelled refuses messages (the server would answer `accepted: false`): no box, and why.
    const cancelling = !terminal && task.cancel !== null;
    drawer.querySelector('.steer-form').hidden = terminal || cancelling;
    const closed = drawer.querySelector('.steer-closed');
    closed.hidden = !cancelling;
    closed.textContent = cancelling ? `It is being cancelled (${task.cancel.kind}): it takes no more messages.` : '';
    const sent = drawer.querySelector('.sent-messages');
    sent.replaceChildren();
    for (const message of task.messages) item(sent, 'sent-message', [['sent-text', message]]);
    const box = drawer.querySelector('.steer-reply');
    box.hidden = reply === null;
    box.textContent = reply ? reply.text : '';
    box.classList.toggle('refused', reply !== null && !reply.ok);
  }

  // A completed task can be followed up: from this page when the app was given its subagent (`can_continue`),
  // else by the agent, whose toolset holds the subagent's config.
  function renderContinue(task) {
    const section = drawer.querySelector('.continue-section');
    section.hidden = task.status.state !== 'completed';
    const here = task.can_continue === true;
    section.querySelector('.continue-help').hidden = !here;
    section.querySelector('.continue-form').hidden = !here;
    section.querySelector('.continue-note').hidden = here;
    setText(section, '.continue-code', `task(..., subagent_type=${JSON.stringify(task.subagent)}, ` +
      `continue_task_id=${JSON.stringify(task.id)})`);
    const gone = !here && activity !== null && activity.task_id === task.id && activity.transcript_available === false;
    section.querySelector('.continue-gone').hidden = !gone;
    const reply = continueReply && continueReply.id === task.id ? continueReply : null;
    const box = section.querySelector('.continue-reply');
    box.hidden = reply === null;
    box.textContent = reply ? reply.text : '';
  }

  // Start the follow-up, then show it: its drawer opens in place of this one.
  async function continueTask(form) {
    const id = drawer.dataset.taskId;
    const input = form.querySelector('.continue-input');
    const text = input.value.trim();
    if (!id) return;
    if (!text) {
      toast('Type the follow-up first.');
      return;
    }
    const button = form.querySelector('.continue-button');
    button.disabled = true;
    try {
      const data = await post(id, 'continue', { message: text });
      if (data && data.task) {
        input.value = '';
        continueReply = null;
        toast('Started follow-up ' + data.task.id.slice(0, 8));
        openDrawer(data.task.id);
        return;
      }
      continueReply = { id, text: 'Not started: ' + (data && data.error ? data.error : 'no reply') };
    } catch (error) {
      continueReply = { id, text: 'Not started: ' + error };
    } finally {
      button.disabled = false;
    }
    renderDrawer();
  }

  async function steer(form) {
    const id = drawer.dataset.taskId;
    const input = form.querySelector('.steer-input');
    const text = input.value.trim();
    if (!id) return;
    if (!text) {
      toast('Type a message first.');
      return;
    }
    const button = form.querySelector('.steer-button');
    button.disabled = true;
    try {
      const data = await post(id, 'message', { message: text });
      if (data && data.accepted) {
        input.value = '';
        steerReply = { id, ok: true, text: 'Sent: the subagent reads it at its next turn.' };
      } else if (data && data.accepted === false) {
        steerReply = { id, ok: false, text: 'Not taken: the task cannot take a message now (it is being cancelled, or runs in another process).' };
      } else {
        steerReply = { id, ok: false, text: 'Not sent: ' + (data && data.error ? data.error : 'no reply') };
      }
    } catch (error) {
      steerReply = { id, ok: false, text: 'Not sent: ' + error };
    } finally {
      button.disabled = false;
    }
    renderDrawer();
  }

  async function copyId() {
    const id = drawer.dataset.taskId;
    if (!id) return;
    try {
      await navigator.clipboard.writeText(id);
      toast('Copied the task id ' + id);
    } catch {
      // No clipboard access (an insecure origin, or refused): select the id for Ctrl+C instead.
      const code = drawer.querySelector('.drawer-id .task-id');
      window.getSelection().selectAllChildren(code);
      toast('Press Ctrl+C to copy the selected id');
    }
  }

  drawer.querySelector('.close').addEventListener('click', closeDrawer);
  drawer.querySelector('.copy-id').addEventListener('click', copyId);
  drawer.querySelector('.follow-link').addEventListener('click', (e) => {
    const id = e.currentTarget.dataset.taskId;
    if (id && tasks.has(id)) openDrawer(id);
  });
  drawer.querySelector('.steer-form').addEventListener('submit', (e) => {
    e.preventDefault();
    steer(e.currentTarget);
  });
  drawer.querySelector('.continue-form').addEventListener('submit', (e) => {
    e.preventDefault();
    continueTask(e.currentTarget);
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !drawer.hidden && !confirmBox.open) closeDrawer();
  });

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
      scheduleRefresh();
      return { error: `${detail} (HTTP ${response.status})` };
    }
    if (data && data.task) {
      tasks.set(data.task.id, later(tasks.get(data.task.id), data.task));
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

  // A hard cancel stops the task's whole live subtree at once: say how many tasks, and let the user back out.
  let confirming = null;
  function confirmHardCancel(id, button) {
    const task = tasks.get(id);
    if (!task) return;
    const count = 1 + task.live_subtasks;
    confirmBox.querySelector('.confirm-text').textContent = count === 1
      ? `This stops the ${task.subagent} task now. It ends cancelled without a chance to wrap up.`
      : `This stops ${count} tasks now: the ${task.subagent} task and ${plural(task.live_subtasks, 'live subtask')} ` +
        'below it. They end cancelled without a chance to wrap up.';
    confirmBox.querySelector('.confirm-stop').textContent = count === 1 ? 'Stop 1 task' : `Stop ${count} tasks`;
    confirmBox.dataset.count = String(count);
    confirming = { id, button };
    confirmBox.showModal();
  }

  confirmBox.querySelector('.confirm-keep').addEventListener('click', () => {
    confirming = null;
    confirmBox.close();
  });
  confirmBox.querySelector('.confirm-stop').addEventListener('click', () => {
    const chosen = confirming;
    confirming = null;
    confirmBox.close();
    if (chosen) cancel(chosen.id, 'hard', chosen.button);
  });
  confirmBox.addEventListener('close', () => { confirming = null; });

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

  for (const control of [search, stateFilter, scopeFilter]) control.addEventListener('input', render);

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
    if (event.type === 'TaskRetrying') {
      // Kept even before the task is listed: the list has its count of attempts, only events tell the errors.
      const seen = retries.get(event.task_id) || [];
      if (!seen.some((r) => r.attempt === event.attempt)) {
        seen.push({ attempt: event.attempt, error: event.error, delay: event.delay, timestamp: event.timestamp });
        retries.set(event.task_id, seen);
      }
    }
    const task = tasks.get(event.task_id);
    if (!task) return; // a new task: the refresh brings it with everything it has
    if (TRANSITIONS.has(event.type)) {
      // A view read after this transition may have come first: then the task already has this step.
      const at = micros(event.timestamp);
      if (task.history.some((step) => step.state === event.status && micros(step.timestamp) === at)) return;
      task.history = [...task.history, { state: event.status, timestamp: event.timestamp }];
      task.status = { state: event.status, timestamp: event.timestamp };
      if (event.type === 'TaskQuestionAsked') task.question = event.question;
      if (event.type === 'TaskAnswered') task.question = null;
    }
    if (event.type === 'TaskRetrying') task.attempts = Math.max(task.attempts, event.attempt);
    if (event.type === 'TaskCancelRequested' && (task.cancel === null || event.cancel_kind === 'hard')) {
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
