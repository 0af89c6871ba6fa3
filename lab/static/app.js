"use strict";

// The session lives in sessionStorage: it survives a reload but not the tab.
const SESSION_KEY = "day21-lab.session";

const byId = (id) => document.getElementById(id);

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (session && session.token && session.expiresAt * 1000 > Date.now()) return session;
  } catch {
    // Missing or corrupted entry: treat as signed out.
  }
  sessionStorage.removeItem(SESSION_KEY);
  return null;
}

function saveSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
  renderSession();
}

async function api(method, path, body, { auth = true } = {}) {
  const headers = { Accept: "application/json" };
  const session = auth ? loadSession() : null;
  if (session) headers.Authorization = `Bearer ${session.token}`;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api${path}`, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Empty or non-JSON body; the status says enough.
  }
  if (response.status === 401 && session) saveSession(null);
  if (!response.ok) {
    throw new Error((data && data.error) || `${method} /api${path} failed (${response.status})`);
  }
  return data;
}

function showMessage(text, kind = "info") {
  const message = byId("message");
  message.textContent = text;
  message.className = `message ${kind}`;
  message.hidden = !text;
}

function renderSession() {
  const session = loadSession();
  byId("session-status").textContent = session
    ? `Signed in as ${session.user.name} (${session.user.email})`
    : "Not signed in";
  byId("logout").hidden = !session;
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function onRegister(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const user = await api("POST", "/auth/register", formData(form), { auth: false });
    form.reset();
    byId("login-form").elements.email.value = user.email;
    showMessage(`Account created for ${user.email}. You can log in now.`, "ok");
  } catch (error) {
    showMessage(error.message, "error");
  }
}

async function onLogin(event) {
  event.preventDefault();
  const form = event.target;
  try {
    const { token, expiresAt, user } = await api("POST", "/auth/login", formData(form), {
      auth: false,
    });
    form.reset();
    saveSession({ token, expiresAt, user });
    showMessage(`Welcome, ${user.name}.`, "ok");
    await loadProducts();
  } catch (error) {
    showMessage(error.message, "error");
  }
}

async function onLogout() {
  try {
    await api("POST", "/auth/logout");
  } catch {
    // The session may already be gone server-side; forget it here either way.
  }
  saveSession(null);
  showMessage("Logged out.", "info");
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderProducts(products) {
  const table = byId("products-table");
  const rows = products.map((product) => {
    const tr = document.createElement("tr");
    const price = Number(product.price);
    tr.append(
      cell(product.name ?? ""),
      cell(product.description || ""),
      cell(Number.isFinite(price) ? price.toFixed(2) : "", "num"),
      cell(String(product.stock ?? ""), "num"),
    );
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  byId("products-status").textContent = rows.length ? "" : "No products yet.";
}

async function loadProducts() {
  const status = byId("products-status");
  status.textContent = "Loading…";
  try {
    const data = await api("GET", "/products");
    renderProducts(Array.isArray(data) ? data : (data && data.products) || []);
  } catch (error) {
    byId("products-table").hidden = true;
    status.textContent = `Could not load products: ${error.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("register-form").addEventListener("submit", onRegister);
  byId("login-form").addEventListener("submit", onLogin);
  byId("logout").addEventListener("click", onLogout);
  byId("refresh").addEventListener("click", loadProducts);
  renderSession();
  loadProducts();
});
