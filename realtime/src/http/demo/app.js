// The demo page: live todos (a live query), cursors (broadcast) and who is online (presence),
// all through the SDK built from sdk-ts/. Writes go through the dev server's /demo/api/ (the
// service itself only reads); the page never changes its list itself, it shows what the live
// query delivers.

import { createClient } from './sdk/index.js'

const $ = (selector) => document.querySelector(selector)
const NAMES = ['ada', 'grace', 'alan', 'edsger', 'barbara', 'ken', 'margaret', 'linus']
const NAME_KEY = 'realtime-demo-name'

// Who: `?user=` wins, else the name this browser used last, else a new one. The same name is the
// same user (and the same todos) in every window.
const params = new URLSearchParams(location.search)
const name = (params.get('user') || localStorage.getItem(NAME_KEY) || NAMES[Math.floor(Math.random() * NAMES.length)])
  .trim()
  .slice(0, 24)
localStorage.setItem(NAME_KEY, name)
/** This window: its presence key, and the key of its cursor on the other screens. */
const tab = Math.random().toString(36).slice(2, 8)
const color = colorOf(name)

function colorOf(text) {
  let hash = 0
  for (const c of text.toLowerCase()) hash = (hash * 31 + c.charCodeAt(0)) >>> 0
  return `hsl(${hash % 360} 70% 45%)`
}

async function api(method, path, body) {
  const headers = { 'content-type': 'application/json' }
  if (session) headers.authorization = `Bearer ${session.token}`
  const response = await fetch(`api/${path}`, { method, headers, body: body && JSON.stringify(body) })
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}))
    throw new Error(problem.error || `${method} ${path}: ${response.status}`)
  }
  return response.status === 204 ? null : response.json()
}

// Sign in: the dev server signs a token for `name`; a new one is asked for before it expires.
let session = null
let sessionUntil = 0
async function accessToken() {
  if (!session || Date.now() > sessionUntil - 60_000) {
    const fresh = await api('POST', 'session', { name })
    sessionUntil = Date.now() + fresh.expires_in * 1000
    session = fresh
  }
  return session.token
}

const wsScheme = location.protocol === 'https:' ? 'wss' : 'ws'
const client = createClient(`${wsScheme}://${location.host}/socket`, { accessToken })
client.onConnection((state) => {
  const status = $('#status')
  status.textContent = state === 'open' ? 'live' : state
  status.dataset.state = state
})

// --- Todos: one live query, filtered by RLS to this user's rows ---

const todos = client.liveQuery({ schema: 'demo', table: 'todos' })
todos.onChange(renderTodos)

function renderTodos(rows) {
  const list = $('#todos')
  list.replaceChildren(
    ...[...rows]
      .sort((a, b) => a.id - b.id)
      .map((todo) => {
        const item = document.createElement('li')
        item.dataset.id = todo.id
        item.classList.toggle('done', todo.done)
        const box = document.createElement('input')
        box.type = 'checkbox'
        box.checked = todo.done
        box.onchange = () => api('PATCH', `todos/${todo.id}`, { done: box.checked }).catch(report)
        const title = document.createElement('span')
        title.className = 'title'
        title.textContent = todo.title
        const remove = document.createElement('button')
        remove.className = 'remove'
        remove.title = 'Delete'
        remove.textContent = '×'
        remove.onclick = () => api('DELETE', `todos/${todo.id}`).catch(report)
        item.append(box, title, remove)
        return item
      })
  )
  $('#empty').hidden = rows.length > 0
}

$('#add').onsubmit = (event) => {
  event.preventDefault()
  const input = $('#title')
  const title = input.value.trim()
  if (!title) return
  input.value = ''
  api('POST', 'todos', { title }).catch(report)
}

// --- Who is online (presence) and their cursors (broadcast), on one channel ---

const room = client
  .channel('demo-room', { presence: { key: tab } })
  .onPresence(({ state }) => renderOnline(state))
  .onBroadcast('cursor', ({ payload }) => showCursor(payload))

function renderOnline(state) {
  const entries = Object.entries(state).flatMap(([key, metas]) => metas.map((meta) => ({ key, ...meta })))
  entries.sort((a, b) => (a.key === tab ? -1 : b.key === tab ? 1 : a.name.localeCompare(b.name)))
  $('#online').replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement('li')
      item.dataset.key = entry.key
      const dot = document.createElement('span')
      dot.className = 'dot'
      dot.style.background = entry.color
      item.append(dot, `${entry.name}${entry.key === tab ? ' (this window)' : ''}`)
      return item
    })
  )
  // A window that left takes its cursor with it.
  for (const cursor of document.querySelectorAll('.cursor')) {
    if (!(cursor.dataset.key in state)) cursor.remove()
  }
}

/** The board's top-left corner: cursors are sent relative to it, so they land on the same card. */
function origin() {
  const rect = $('#board').getBoundingClientRect()
  return { x: rect.left + window.scrollX, y: rect.top + window.scrollY }
}

function showCursor({ key, name: who, color: hue, x, y, away }) {
  let cursor = document.querySelector(`.cursor[data-key="${CSS.escape(key)}"]`)
  if (away) {
    cursor?.remove()
    return
  }
  if (!cursor) {
    cursor = document.createElement('div')
    cursor.className = 'cursor'
    cursor.dataset.key = key
    cursor.innerHTML = '<svg width="18" height="18" viewBox="0 0 18 18"><path d="M1 1l6 16 2.5-6.5L16 8z"/></svg><span></span>'
    $('#cursors').append(cursor)
  }
  cursor.querySelector('span').textContent = who
  cursor.style.setProperty('--color', hue)
  const at = origin()
  cursor.style.transform = `translate(${at.x + x}px, ${at.y + y}px)`
}

// At most one cursor message per frame.
let pending = null
document.addEventListener('pointermove', (event) => {
  const first = pending === null
  const at = origin()
  pending = { x: Math.round(event.pageX - at.x), y: Math.round(event.pageY - at.y) }
  if (first) requestAnimationFrame(sendCursor)
})
document.documentElement.addEventListener('pointerleave', () => {
  pending = null
  if (room.joined) room.send('cursor', { key: tab, away: true }).catch(() => {})
})
function sendCursor() {
  if (pending && room.joined) room.send('cursor', { key: tab, name, color, ...pending }).catch(() => {})
  pending = null
}

$('#switch').onclick = (event) => {
  event.preventDefault()
  const next = prompt('Sign in as', name)?.trim()
  if (next) location.search = `?user=${encodeURIComponent(next)}`
}

function report(error) {
  const status = $('#status')
  status.textContent = error.message
  status.dataset.state = 'error'
}

$('#me').textContent = name
$('#me').style.color = color
await room.subscribe()
await room.track({ name, color })
renderTodos(await todos.ready)
// Everything is joined: tests wait for this.
document.body.dataset.live = 'true'
