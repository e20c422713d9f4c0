// Tern controller UI: live refresh of the server-rendered fragments on
// every change the event stream reports, and the forms (JSON API calls
// whose errors are shown next to their fields).
"use strict";

function refresh() {
  for (const el of document.querySelectorAll("[data-fragment]")) {
    let url = el.dataset.fragment;
    const batch = document.getElementById("batch-select");
    if (el.id === "timeline-box" && batch && batch.value) url += "?batch=" + batch.value;
    fetch(url).then(r => (r.ok ? r.text() : null)).then(html => {
      if (html !== null) el.innerHTML = html;
    });
  }
}

let pending = null;
function schedule() {
  if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 250);
}

function listen() {
  if (!document.querySelector("[data-fragment]")) return;
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.onopen = () => { live.classList.add("on"); schedule(); };
  events.onerror = () => live.classList.remove("on");
  events.onmessage = schedule;
}

// Puts each {path, message} next to its field (data-for = the path
// without the task prefix); what has no field goes to `fallback`.
function showErrors(form, errors, prefix, fallback) {
  for (const span of form.querySelectorAll(".error")) span.textContent = "";
  if (fallback) fallback.replaceChildren();
  for (const e of errors) {
    const field = e.path.startsWith(prefix) ? e.path.slice(prefix.length) : e.path;
    const span = form.querySelector(`.error[data-for="${CSS.escape(field)}"]`);
    if (span && !fallback) {
      span.textContent = e.message;
    } else if (fallback) {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = e.path || "file";
      li.append(code, ": " + e.message);
      fallback.append(li);
    } else {
      form.querySelector('.error[data-for=""]').textContent = (e.path ? e.path + ": " : "") + e.message;
    }
  }
}

async function send(method, url, body) {
  const r = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
  let json = null;
  try { json = await r.json(); } catch (_) { json = { error: r.statusText }; }
  return { ok: r.ok, status: r.status, json };
}

function submitted(result) {
  const p = document.getElementById("submit-result");
  const s = result.json;
  let text = `Batch ${s.batch}: ${s.tasks.length} task(s) under ${s.policy}, placed in ${s.placement_ms.toFixed(1)} ms.`;
  for (const [name, reason] of s.waiting) text += ` ${name} waits: ${reason}.`;
  p.textContent = text + " ";
  const a = document.createElement("a");
  a.href = "/";
  a.textContent = "Watch it";
  p.append(a);
}

function taskFromForm(form) {
  const v = name => form.elements[name].value.trim();
  const task = { name: v("name"), program: v("program") };
  if (v("args")) task.args = v("args").split(/\s+/);
  for (const key of ["cpu", "memory_mb"]) {
    if (v(key)) task[key] = Number.isNaN(Number(v(key))) ? v(key) : Number(v(key));
  }
  for (const key of ["gpu", "offload", "robust"]) task[key] = v(key) === "true";
  return { policy: v("policy"), tasks: [task] };
}

function readFile(input) {
  return new Promise((resolve, reject) => {
    const file = input.files[0];
    if (!file) return resolve(null);
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsText(file);
  });
}

function forms() {
  const taskForm = document.getElementById("task-form");
  if (taskForm) {
    taskForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const r = await send("POST", "/api/tasks", taskFromForm(taskForm));
      if (r.ok) { showErrors(taskForm, [], "", null); submitted(r); }
      else showErrors(taskForm, r.json.errors || [{ path: "", message: r.json.error }], "tasks[0].", null);
    });
  }
  const batchForm = document.getElementById("batch-form");
  if (batchForm) {
    batchForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const list = document.getElementById("batch-errors");
      const text = (await readFile(document.getElementById("batch-file"))) ?? document.getElementById("batch-text").value;
      const summary = batchForm.querySelector('.error[data-for="batch"]');
      if (!text.trim()) { list.replaceChildren(); summary.textContent = "choose a file or paste a batch"; return; }
      const r = await send("POST", "/api/tasks", text);
      if (r.ok) { list.replaceChildren(); summary.textContent = ""; submitted(r); return; }
      const errors = r.json.errors || [{ path: "", message: r.json.error }];
      showErrors(batchForm, errors, "", list);
      summary.textContent = `${errors.length} problem(s); nothing was submitted`;
    });
  }
  const nodeForm = document.getElementById("node-form");
  if (nodeForm) {
    nodeForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const body = { addr: nodeForm.elements.addr.value.trim(), local: nodeForm.elements.local.checked };
      const r = await send("POST", "/api/nodes", body);
      showErrors(nodeForm, r.ok ? [] : r.json.errors, "", null);
      if (r.ok) { nodeForm.reset(); refresh(); }
    });
  }
  const nodesForm = document.getElementById("nodes-form");
  if (nodesForm) {
    nodesForm.addEventListener("submit", async ev => {
      ev.preventDefault();
      const list = document.getElementById("nodes-errors");
      const text = await readFile(document.getElementById("nodes-file"));
      if (text === null) return;
      const r = await send("POST", "/api/nodes", text);
      list.replaceChildren();
      for (const item of r.json.results || [{ addr: "file", error: (r.json.errors || [{ message: r.json.error }])[0].message }]) {
        const li = document.createElement("li");
        li.textContent = item.error ? `${item.addr}: ${item.error}` : `${item.addr}: added as node ${item.id}`;
        list.append(li);
      }
      refresh();
    });
  }
  document.addEventListener("click", async ev => {
    const b = ev.target;
    if (!(b instanceof HTMLButtonElement)) return;
    let r = null;
    if (b.classList.contains("cancel")) r = await send("DELETE", `/api/tasks/${b.dataset.task}`);
    if (b.classList.contains("drain")) r = await send("POST", `/api/nodes/${b.dataset.node}/drain`);
    if (b.classList.contains("remove")) r = await send("DELETE", `/api/nodes/${b.dataset.node}`);
    if (r === null) return;
    const out = document.getElementById("node-action-error");
    if (out) out.textContent = r.ok ? "" : r.json.error;
    refresh();
  });
  const select = document.getElementById("batch-select");
  if (select) select.addEventListener("change", refresh);
}

document.addEventListener("DOMContentLoaded", () => { listen(); forms(); });
