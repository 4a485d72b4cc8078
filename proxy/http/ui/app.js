// tokengate's Settings › API Tokens page: login, the token list, create, comment, revoke, over the REST API
// of docs/http.md. The DOM is built with textContent only (the Content-Security-Policy forbids anything
// else), and a new token's value lives only in one input of the open dialog.
'use strict';

(function () {
  // ---- small helpers ---------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  function show(node, visible) { node.hidden = !visible; }

  // Where the hide-expired-and-revoked switch is remembered (this browser only).
  const HIDE_KEY = 'tokengate.hideInactive';
  // A password login's browser session is a token named like this (docs/http.md, POST /api/login).
  const WEB_SESSION_PREFIX = 'web_session_';
  // The request header a cookie-authenticated change must carry (docs/http.md, CSRF).
  const CSRF_HEADER = 'X-Tokengate-CSRF';

  // ---- the REST API --------------------------------------------------------------------------------------

  // An error as tokengate reports it: {code, message, detail, hint}, the fields of PostgreSQL's ErrorResponse.
  class ApiError extends Error {
    constructor(status, body) {
      super(body.message);
      this.status = status;
      this.code = body.code || '';
      this.detail = body.detail || '';
      this.hint = body.hint || '';
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
    if (method !== 'GET') headers[CSRF_HEADER] = '1';
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { code: '08006', message: 'Cannot reach tokengate.',
        detail: 'The request did not get an answer (' + e.message + ').',
        hint: 'Check that tokengate is running, then try again.' });
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      if (data && typeof data.message === 'string') throw new ApiError(res.status, data);
      throw new ApiError(res.status, { message: 'tokengate answered HTTP ' + res.status + ' without an explanation.' });
    }
    return data;
  }

  // ?user=NAME for the administrator's picker; empty when acting for oneself.
  function userQuery() {
    return state.forUser && state.forUser !== state.me.user ? '?user=' + encodeURIComponent(state.forUser) : '';
  }

  // ---- showing errors in words ---------------------------------------------------------------------------

  // Fills `box` with an error's message, detail and hint (or hides it for null).
  function showError(box, err) {
    box.replaceChildren();
    if (!err) { show(box, false); return; }
    box.append(el('p', { class: 'alert-message' }, err.message));
    if (err.detail) box.append(el('p', {}, err.detail));
    if (err.hint) box.append(el('p', { class: 'alert-hint' }, err.hint));
    show(box, true);
  }

  // A field's error next to it: the text, aria-invalid on the control.
  function fieldError(control, box, err) {
    if (!err) {
      box.replaceChildren();
      show(box, false);
      control.removeAttribute('aria-invalid');
      return;
    }
    box.replaceChildren(el('span', { class: 'alert-message' }, err.message), err.detail ? ' ' + err.detail : '');
    show(box, true);
    control.setAttribute('aria-invalid', 'true');
  }

  // A request that found the session gone (revoked, expired, logged out elsewhere): back to the login.
  function isSessionGone(err) { return err instanceof ApiError && err.status === 401; }

  function sessionGone(err) {
    state.me = null;
    showLogin({ message: 'Your session has ended: ' + err.message + (/[.!?]$/.test(err.message) ? '' : '.'),
      hint: 'Log in again.' });
  }

  function announce(text) {
    const box = $('announce');
    box.textContent = '';
    // A fresh text node in a live region is read out even when the words repeat.
    window.setTimeout(() => { box.textContent = text; }, 50);
  }

  // ---- times ---------------------------------------------------------------------------------------------

  const dateFormat = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  const relativeFormat = new Intl.RelativeTimeFormat('en', { numeric: 'always' });

  function relative(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 60) return seconds >= 0 ? 'in less than a minute' : 'just now';
    if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), 'minute');
    if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), 'hour');
    return relativeFormat.format(Math.round(seconds / 86400), 'day');
  }

  // A <time> element: local date and time, the UTC value as its datetime and title.
  function timeCell(iso, withRelative) {
    if (!iso) return el('span', { class: 'muted' }, 'never');
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return document.createTextNode(iso);
    const t = el('time', { datetime: iso, title: iso }, dateFormat.format(d));
    if (!withRelative) return t;
    return el('span', { class: 'time-pair' }, t, el('span', { class: 'relative' }, relative(d)));
  }

  // ---- state ---------------------------------------------------------------------------------------------

  const state = {
    me: null,          // GET /api/me
    forUser: null,     // whose tokens are shown (an administrator may pick another user)
    tokens: [],        // GET /api/tokens, newest first
    users: null,       // GET /api/users for administrators
    revoking: null,    // the token the revoke dialog is about
    listSeq: 0,        // answers to older list requests are dropped
  };

  function hideInactive() { return $('hide-inactive').checked; }

  // ---- login and logout ----------------------------------------------------------------------------------

  function loginMode() { return document.querySelector('input[name="login-mode"]:checked').value; }

  function applyLoginMode() {
    const token = loginMode() === 'token';
    show($('login-password-fields'), !token);
    show($('login-token-fields'), token);
    $('login-user').disabled = token;
    $('login-password').disabled = token;
    $('login-token').disabled = !token;
  }

  function showLogin(error) {
    document.title = 'Log in · tokengate';
    show($('loading'), false);
    show($('tokens-view'), false);
    show($('whoami'), false);
    show($('login-view'), true);
    showError($('login-error'), error || null);
    $('login-password').value = '';
    $('login-token').value = '';
    applyLoginMode();
    const first = loginMode() === 'token' ? $('login-token') : ($('login-user').value ? $('login-password') : $('login-user'));
    first.focus();
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const button = $('login-submit');
    const body = loginMode() === 'token'
      ? { token: $('login-token').value.trim() }
      : { user: $('login-user').value, password: $('login-password').value };
    if (loginMode() === 'token' ? !body.token : !body.user || !body.password) {
      showError($('login-error'), { message: loginMode() === 'token' ? 'Enter an API token.' : 'Enter a user name and a password.' });
      (loginMode() === 'token' ? $('login-token') : (!body.user ? $('login-user') : $('login-password'))).focus();
      return;
    }
    button.disabled = true;
    try {
      await api('POST', '/api/login', body);
      $('login-password').value = '';
      $('login-token').value = '';
      showError($('login-error'), null);
      await start(true);
    } catch (err) {
      showError($('login-error'), err);
      (loginMode() === 'token' ? $('login-token') : $('login-password')).focus();
    } finally {
      button.disabled = false;
    }
  }

  async function onLogout() {
    try {
      await api('POST', '/api/logout');
    } catch (err) {
      if (!isSessionGone(err)) { showError($('list-error'), err); return; }
    }
    state.me = null;
    state.users = null;
    state.tokens = [];
    $('tokens-box').replaceChildren();
    $('sessions-box').replaceChildren();
    history.replaceState(null, '', '/');
    showLogin({ message: 'You have logged out.' });
    $('login-error').className = 'notice';
  }

  // ---- the page once logged in ---------------------------------------------------------------------------

  async function start(afterLogin) {
    $('login-error').className = 'alert';
    let me;
    try {
      me = await api('GET', '/api/me');
    } catch (err) {
      show($('loading'), false);
      if (err.status === 401) { showLogin(afterLogin ? err : null); return; }
      showError($('page-error'), err);
      return;
    }
    state.me = me;
    showError($('page-error'), null);
    const params = new URLSearchParams(location.search);
    const wanted = params.get('user');
    state.forUser = me.is_admin && wanted ? wanted : me.user;
    if (!me.is_admin && wanted) history.replaceState(null, '', '/');

    $('who-user').textContent = me.user;
    $('who-role').textContent = me.is_admin ? 'administrator' : '';
    show($('who-role'), me.is_admin);
    show($('whoami'), true);
    show($('loading'), false);
    show($('login-view'), false);
    show($('tokens-view'), true);
    document.title = 'API tokens · tokengate';

    show($('new-token'), me.creates_tokens);
    const note = $('create-note');
    note.textContent = me.creates_tokens ? '' :
      'This browser logged in with an API token, and a session that logged in with a token cannot create ' +
      'tokens: a stolen token could otherwise make new ones that outlive its revocation. To create a token, ' +
      'log out and log in with your password.';
    show(note, !me.creates_tokens);

    await setUpPicker();
    await loadTokens();
    if (afterLogin) $('tokens-title').focus();
  }

  // The administrator's user picker. Others get none at all: not a hidden one.
  async function setUpPicker() {
    const old = $('user-picker-box');
    if (old) old.remove();
    if (!state.me.is_admin) return;
    const picker = el('select', { id: 'user-picker', onchange: onPick });
    const box = el('div', { id: 'user-picker-box', class: 'field field-inline' },
      el('label', { for: 'user-picker' }, 'Tokens of'), picker);
    $('toolbar').prepend(box);
    let users = [state.me.user];
    try {
      const answer = await api('GET', '/api/users');
      users = answer.users;
      showError($('picker-error'), null);
    } catch (err) {
      if (isSessionGone(err)) { sessionGone(err); return; }
      showError($('picker-error'), err);
    }
    if (!users.includes(state.me.user)) users.unshift(state.me.user);
    if (!users.includes(state.forUser)) users.push(state.forUser);
    state.users = users;
    picker.replaceChildren(...users.map((u) =>
      el('option', { value: u, selected: u === state.forUser }, u === state.me.user ? u + ' (you)' : u)));
  }

  function onPick() {
    state.forUser = $('user-picker').value;
    const url = state.forUser === state.me.user ? '/' : '/?user=' + encodeURIComponent(state.forUser);
    history.replaceState(null, '', url);
    loadTokens().then(() => announce('Showing the tokens of ' + state.forUser + '.'));
  }

  async function loadTokens() {
    const seq = ++state.listSeq;
    let answer;
    try {
      answer = await api('GET', '/api/tokens' + userQuery());
    } catch (err) {
      if (seq !== state.listSeq) return;
      if (isSessionGone(err)) { sessionGone(err); return; }
      state.tokens = [];
      renderTokens();
      showError($('list-error'), err);
      return;
    }
    if (seq !== state.listSeq) return;
    showError($('list-error'), null);
    state.tokens = answer.tokens.slice().sort((a, b) =>
      b.created_at.localeCompare(a.created_at) || a.name.localeCompare(b.name));
    renderTokens();
  }

  // ---- the token tables ----------------------------------------------------------------------------------

  const COLUMNS = [
    ['name', 'Name'], ['created_at', 'Created'], ['expires_at', 'Expires'], ['last_used_at', 'Last used'],
    ['status', 'Status'], ['comment', 'Comment'], ['created_by', 'Created by'], ['actions', 'Actions'],
  ];

  function isWebSession(t) { return t.name.startsWith(WEB_SESSION_PREFIX); }
  function isThisBrowser(t) { return state.me && t.user === state.me.user && t.name === state.me.token_name; }

  function renderTokens() {
    const hide = hideInactive();
    const apiTokens = state.tokens.filter((t) => !isWebSession(t));
    const sessions = state.tokens.filter(isWebSession);
    const visible = (list) => (hide ? list.filter((t) => t.status === 'active') : list);
    const other = state.forUser !== state.me.user;

    $('lede-user').textContent = state.forUser;
    const shownTokens = visible(apiTokens);
    const box = $('tokens-box');
    if (shownTokens.length === 0) {
      box.replaceChildren(emptyState(apiTokens.length - shownTokens.length, other));
    } else {
      box.replaceChildren(table(shownTokens, other ? 'API tokens of ' + state.forUser : 'Your API tokens',
        apiTokens.length - shownTokens.length));
    }
    const shownSessions = visible(sessions);
    show($('sessions-section'), shownSessions.length > 0);
    $('sessions-box').replaceChildren(shownSessions.length
      ? table(shownSessions, 'Browser sessions', sessions.length - shownSessions.length) : '');
  }

  function emptyState(hidden, other) {
    const who = other ? state.forUser + ' has' : 'You have';
    const box = el('div', { class: 'empty', id: 'empty-state' });
    if (hidden > 0) {
      box.append(el('p', { class: 'empty-title' }, who + ' no active API tokens.'),
        el('p', {}, hidden + (hidden === 1 ? ' expired or revoked token is' : ' expired or revoked tokens are') +
          ' hidden; turn off “Hide expired and revoked” to see ' + (hidden === 1 ? 'it' : 'them') + '.'));
      return box;
    }
    box.append(el('p', { class: 'empty-title' }, who + ' no API tokens yet.'),
      el('p', {}, 'A token lets a script, a CI job or a BI tool log in to PostgreSQL through tokengate as ' +
        (other ? state.forUser : 'you') + ', with the token as its password, so that it never needs ' +
        (other ? 'their' : 'your') + ' password. Each token can be given an expiry and revoked on its own at any time.'));
    if (state.me.creates_tokens) {
      box.append(el('p', {}, el('button', { type: 'button', class: 'button-primary', onclick: openCreate },
        'Create a token')));
    }
    return box;
  }

  function table(tokens, caption, hidden) {
    const captionText = caption + (hidden > 0 ? ' (' + hidden + ' expired or revoked hidden)' : '') + ', newest first';
    const head = el('thead', {}, el('tr', {}, COLUMNS.map(([key, label]) =>
      el('th', { scope: 'col', class: 'col-' + key }, key === 'actions' ? el('span', { class: 'visually-hidden' }, label) : label))));
    const body = el('tbody', {}, tokens.map(row));
    return el('table', { class: 'tokens' }, el('caption', {}, captionText), head, body);
  }

  // One cell, with the column's name shown before the value on narrow screens (where rows become cards).
  function cell(key, label, ...content) {
    return el('td', { class: 'col-' + key }, el('span', { class: 'cell-label', 'aria-hidden': 'true' }, label),
      el('div', { class: 'cell-value' }, ...content));
  }

  function row(t) {
    const active = t.status === 'active';
    const name = el('th', { scope: 'row', class: 'col-name' },
      el('span', { class: 'cell-label', 'aria-hidden': 'true' }, 'Name'),
      el('span', { class: 'token-name' }, t.name),
      isThisBrowser(t) ? el('span', { class: 'badge badge-self' }, 'this browser') : null);
    const status = el('span', { class: 'status status-' + t.status }, t.status);
    const tr = el('tr', { 'data-token': t.name, class: active ? '' : 'inactive' },
      name,
      cell('created_at', 'Created', timeCell(t.created_at, false)),
      cell('expires_at', 'Expires', timeCell(t.expires_at, t.status !== 'revoked')),
      cell('last_used_at', 'Last used', timeCell(t.last_used_at, false)),
      cell('status', 'Status', status),
      commentCell(t),
      cell('created_by', 'Created by', t.created_by),
      cell(active ? 'actions' : 'actions no-actions', 'Actions', active ? el('button', {
        type: 'button', class: 'button-danger button-small', 'aria-label': 'Revoke ' + t.name,
        onclick: () => openRevoke(t),
      }, 'Revoke') : null));
    return tr;
  }

  function commentCell(t) {
    const td = cell('comment', 'Comment');
    fillComment(td, t);
    return td;
  }

  function fillComment(td, t) {
    const label = td.querySelector('.cell-label');
    const text = t.comment === null || t.comment === '' ? el('span', { class: 'muted' }, 'none') : el('span', { class: 'comment-text' }, t.comment);
    const parts = [label, text];
    if (t.status === 'active') {
      parts.push(el('button', {
        type: 'button', class: 'button-quiet button-small edit-comment', 'aria-label': 'Edit comment of ' + t.name,
        onclick: () => editComment(td, t),
      }, 'Edit'));
    }
    td.replaceChildren(label, el('div', { class: 'cell-value' }, ...parts.slice(1)));
  }

  // Edit in place: the cell becomes a small form; Enter or Save sends it, Escape or Cancel puts the text back.
  function editComment(td, t) {
    const label = td.querySelector('.cell-label');
    const id = 'comment-' + Math.random().toString(36).slice(2);
    const input = el('input', { id, value: t.comment || '', autocomplete: 'off', 'aria-describedby': id + '-error' });
    const error = el('p', { id: id + '-error', class: 'field-error', hidden: true });
    const cancel = () => { fillComment(td, t); td.querySelector('.edit-comment').focus(); };
    const save = async (ev) => {
      ev.preventDefault();
      const value = input.value;
      const comment = value.trim() === '' ? null : value;
      saveButton.disabled = true;
      try {
        await api('PATCH', '/api/tokens/' + encodeURIComponent(t.name) + userQuery(), { comment });
      } catch (err) {
        saveButton.disabled = false;
        if (isSessionGone(err)) { sessionGone(err); return; }
        fieldError(input, error, err);
        input.focus();
        return;
      }
      t.comment = comment;
      fillComment(td, t);
      td.querySelector('.edit-comment').focus();
      announce('Comment of ' + t.name + ' saved.');
    };
    const saveButton = el('button', { type: 'submit', class: 'button-primary button-small' }, 'Save');
    const form = el('form', { class: 'comment-form', novalidate: true, onsubmit: save },
      el('label', { for: id, class: 'visually-hidden' }, 'Comment of ' + t.name),
      input, saveButton,
      el('button', { type: 'button', class: 'button-small', onclick: cancel }, 'Cancel'), error);
    input.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { ev.preventDefault(); cancel(); } });
    td.replaceChildren(label, el('div', { class: 'cell-value' }, form));
    input.focus();
    input.select();
  }

  // ---- create --------------------------------------------------------------------------------------------

  const createFields = () => ({
    name: [$('create-name'), $('create-name-error')],
    expiry: [$('create-expiry'), $('create-expiry-error')],
    comment: [$('create-comment'), $('create-comment-error')],
  });

  function clearCreateErrors() {
    for (const [control, box] of Object.values(createFields())) fieldError(control, box, null);
    $('create-date').removeAttribute('aria-invalid');
    showError($('create-error'), null);
  }

  function todayIso() {
    const d = new Date();
    return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0');
  }

  function openCreate() {
    const dialog = $('create-dialog');
    $('create-form').reset();
    clearCreateErrors();
    wipeCreated();
    show($('create-form'), true);
    show($('created-view'), false);
    $('create-date').min = todayIso();
    $('create-date').disabled = true;
    show($('create-date-box'), false);
    const other = state.forUser !== state.me.user;
    $('create-for').textContent = other ? 'For user ' + state.forUser + '.' : '';
    show($('create-for'), other);
    dialog.showModal();
    $('create-name').focus();
  }

  function onExpiryChange() {
    const byDate = document.querySelector('input[name="expiry"]:checked').value === 'date';
    $('create-date').disabled = !byDate;
    show($('create-date-box'), byDate);
    if (byDate) $('create-date').focus();
  }

  // The chosen expiry as a duration tokengate understands ("7d", or seconds until the end of the chosen day).
  function chosenDuration() {
    const choice = document.querySelector('input[name="expiry"]:checked').value;
    if (choice !== 'date') return { duration: choice };
    const value = $('create-date').value;
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
    if (!m) return { error: { message: 'Choose the day the token expires.' } };
    const end = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), 23, 59, 59);
    const seconds = Math.ceil((end.getTime() - Date.now()) / 1000);
    if (!(seconds > 0)) return { error: { message: 'The day must be today or later.' } };
    return { duration: seconds + 's' };
  }

  // Which field a refusal of CREATE API TOKEN is about, by its SQLSTATE (docs/sql.md, CREATE API TOKEN).
  function fieldOf(err) {
    switch (err.code) {
      case '42602': case '42622': case '42710': return 'name';
      case '22023': return /duration/i.test(err.message + ' ' + err.detail) ? 'expiry' : null;
      case '22001': return 'comment';
      case '22021': return /"comment"/.test(err.detail) ? 'comment' : /"name"/.test(err.detail) ? 'name' : null;
      default: return null;
    }
  }

  async function onCreate(ev) {
    ev.preventDefault();
    clearCreateErrors();
    const fields = createFields();
    const d = chosenDuration();
    if (d.error) {
      fieldError(fields.expiry[0], fields.expiry[1], d.error);
      $('create-date').setAttribute('aria-invalid', 'true');
      $('create-date').focus();
      return;
    }
    const body = { max_duration: d.duration };
    const name = $('create-name').value.trim();
    const comment = $('create-comment').value;
    if (name) body.name = name;
    if (comment.trim()) body.comment = comment;
    const button = $('create-submit');
    button.disabled = true;
    let created;
    try {
      created = await api('POST', '/api/tokens' + userQuery(), body);
    } catch (err) {
      button.disabled = false;
      if (isSessionGone(err)) { $('create-dialog').close(); sessionGone(err); return; }
      const field = fieldOf(err);
      if (field) {
        const [control, box] = fields[field];
        fieldError(control, box, err);
        const focusable = field === 'expiry' ? document.querySelector('input[name="expiry"]:checked') : control;
        focusable.focus();
      } else {
        showError($('create-error'), err);
        $('create-submit').focus();
      }
      return;
    }
    button.disabled = false;
    showCreated(created);
    loadTokens();
  }

  function showCreated(created) {
    show($('create-form'), false);
    show($('created-view'), true);
    $('created-title').textContent = 'Token ' + created.name + ' created';
    $('created-value').value = created.token;
    $('copy-status').textContent = '';
    const expires = new Date(created.expires_at);
    $('created-expiry').textContent = 'It expires ' + dateFormat.format(expires) + ' (' + relative(expires) + ').';
    $('created-example').textContent = 'PGPASSWORD=\'<the token>\' psql "host=' + location.hostname +
      ' port=… user=' + (state.forUser || state.me.user) + ' dbname=…"';
    $('created-title').focus();
  }

  // The value is dropped from the page as soon as the dialog closes, whichever way it closes.
  function wipeCreated() {
    $('created-value').value = '';
    $('copy-status').textContent = '';
  }

  async function onCopy() {
    const input = $('created-value');
    const status = $('copy-status');
    let ok = false;
    try {
      await navigator.clipboard.writeText(input.value);
      ok = true;
    } catch (e) {
      // No asynchronous clipboard (plain HTTP from another host is not a secure context): the old way.
      input.focus();
      input.select();
      try { ok = document.execCommand('copy'); } catch (e2) { ok = false; }
    }
    status.className = ok ? 'copy-status copy-ok' : 'copy-status copy-failed';
    status.textContent = ok ? 'Copied to the clipboard.' : 'Could not copy: the token is selected; copy it with Ctrl+C or ⌘C.';
    if (!ok) { input.focus(); input.select(); }
  }

  // ---- revoke --------------------------------------------------------------------------------------------

  function openRevoke(t) {
    state.revoking = t;
    const self = isThisBrowser(t);
    const other = state.forUser !== state.me.user;
    $('revoke-title').textContent = 'Revoke ' + (isWebSession(t) ? 'browser session' : 'token') + ' ' + t.name + '?';
    $('revoke-desc').textContent = self
      ? 'This is the session of this browser: revoking it logs you out.'
      : 'Whatever uses it is refused from its next login, and sessions that logged in with it end at once.' +
        (other ? ' It belongs to ' + t.user + '.' : '') + ' This cannot be undone.';
    $('revoke-confirm').textContent = 'Revoke ' + t.name;
    showError($('revoke-error'), null);
    $('revoke-dialog').showModal();
    $('revoke-cancel').focus();
  }

  async function onRevokeConfirm() {
    const t = state.revoking;
    if (!t) return;
    const button = $('revoke-confirm');
    button.disabled = true;
    try {
      await api('DELETE', '/api/tokens/' + encodeURIComponent(t.name) + userQuery());
    } catch (err) {
      button.disabled = false;
      if (isSessionGone(err)) { $('revoke-dialog').close(); sessionGone(err); return; }
      showError($('revoke-error'), err);
      return;
    }
    button.disabled = false;
    state.revoking = null;
    const self = isThisBrowser(t);
    $('revoke-dialog').close();
    if (self) {
      state.me = null;
      showLogin({ message: 'You revoked the session of this browser and are logged out.' });
      $('login-error').className = 'notice';
      return;
    }
    await loadTokens();
    announce('Token ' + t.name + ' revoked.');
    $('tokens-title').focus();
  }

  // ---- wiring --------------------------------------------------------------------------------------------

  function init() {
    const hide = $('hide-inactive');
    const remembered = window.localStorage.getItem(HIDE_KEY);
    hide.checked = remembered === null ? true : remembered === '1';
    hide.addEventListener('change', () => {
      window.localStorage.setItem(HIDE_KEY, hide.checked ? '1' : '0');
      if (state.me) renderTokens();
    });

    for (const r of document.querySelectorAll('input[name="login-mode"]')) r.addEventListener('change', applyLoginMode);
    $('login-form').addEventListener('submit', onLogin);
    $('logout').addEventListener('click', onLogout);
    $('new-token').addEventListener('click', openCreate);

    $('create-form').addEventListener('submit', onCreate);
    $('create-cancel').addEventListener('click', () => $('create-dialog').close());
    for (const r of document.querySelectorAll('input[name="expiry"]')) r.addEventListener('change', onExpiryChange);
    $('copy-token').addEventListener('click', onCopy);
    // The value goes before the dialog hides: a dialog's close event comes a
    // task later, and the page must not show a hidden token meanwhile.
    const wipeBeforeClosing = () => {
      state.createdTokenShown = state.createdTokenShown || $('created-value').value !== '';
      wipeCreated();
    };
    $('created-done').addEventListener('click', () => {
      wipeBeforeClosing();
      $('create-dialog').close();
    });
    $('create-dialog').addEventListener('cancel', wipeBeforeClosing);  // Escape
    $('create-dialog').addEventListener('close', () => {
      const hadToken = state.createdTokenShown || $('created-value').value !== '';
      state.createdTokenShown = false;
      wipeCreated();
      $('create-form').reset();
      show($('create-form'), true);
      show($('created-view'), false);
      const button = $('new-token');
      if (!button.hidden) button.focus();
      if (hadToken) announce('The new token is no longer shown.');
    });

    $('revoke-cancel').addEventListener('click', () => $('revoke-dialog').close());
    $('revoke-confirm').addEventListener('click', onRevokeConfirm);
    $('revoke-dialog').addEventListener('close', () => { state.revoking = null; });

    // Nothing of a new token may survive into the back-forward cache.
    window.addEventListener('pagehide', wipeCreated);

    start(false);
  }

  init();
}());
