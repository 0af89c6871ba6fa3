"use strict";

// The session lives in sessionStorage: it survives a reload but not the tab.
const SESSION_KEY = "day21-lab.session";
const FIELD_LABELS = { email: "Email", name: "Name", password: "Password", quantity: "Quantity" };

const byId = (id) => document.getElementById(id);
const products = new Map(); // id -> the product as last read
let detailId = null; // the product shown in the detail view

// ------------------------------------------------------------------ session

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

// Every change of session clears the forms that belonged to the previous state.
function setSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
  for (const id of ["register-form", "login-form", "order-form"]) byId(id).reset();
  renderSession();
}

function renderSession() {
  const session = loadSession();
  byId("session-status").textContent = session
    ? `Signed in as ${session.user.name} (${session.user.email})`
    : "Not signed in";
  byId("logout").hidden = !session;
  byId("account").hidden = Boolean(session);
  byId("my-area").hidden = !session;
  byId("order-form").hidden = !session;
  byId("order-signin").hidden = Boolean(session);
  if (!session) {
    byId("orders-table").tBodies[0].replaceChildren();
    byId("orders-table").hidden = true;
    byId("notifications-list").replaceChildren();
  }
}

// ---------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

function sentence(text) {
  const trimmed = String(text).trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

const fieldLabel = (field) => FIELD_LABELS[field] || field;

// A person-readable message for a failed call: never the raw body.
function readableError(status, data) {
  if (status >= 500) {
    const ref = data && typeof data.requestId === "string" ? ` (reference ${data.requestId})` : "";
    return `The lab could not answer right now${ref}. Please try again in a moment.`;
  }
  if (data && data.fields && typeof data.fields === "object") {
    const problems = Object.entries(data.fields).map(([f, p]) => `${fieldLabel(f)} ${p}`);
    if (problems.length) return sentence(problems.join("; "));
  }
  if (data && typeof data.error === "string" && data.error) {
    return sentence(data.error.replace(/field '(\w+)'/g, (_, f) => fieldLabel(f)));
  }
  if (status === 401) return "Please sign in first.";
  if (status === 403) return "You are not allowed to do that.";
  if (status === 404) return "That could not be found.";
  if (status === 429) return "Too many requests. Please wait a moment and try again.";
  return `The request failed (status ${status}).`;
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
  let response;
  try {
    response = await fetch(`/api${path}`, init);
  } catch {
    throw new ApiError("Could not reach the lab. Check your connection and try again.", 0, null);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Empty or non-JSON body; the status says enough.
  }
  if (response.ok) return data;
  if (response.status === 401 && session) {
    setSession(null);
    throw new ApiError("Your session has ended. Please sign in again.", 401, data);
  }
  throw new ApiError(readableError(response.status, data), response.status, data);
}

// ----------------------------------------------------------------- helpers

function showMessage(text, kind = "info") {
  const message = byId("message");
  message.textContent = text;
  message.className = `message ${kind}`;
}

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function cell(content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (className) td.className = className;
  return td;
}

function money(value) {
  const number = Number(value);
  return Number.isFinite(number) ? number.toFixed(2) : "";
}

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

const stockText = (stock) => (stock > 0 ? String(stock) : "Sold out");
const productName = (id) => (products.has(id) ? products.get(id).name : `Product #${id}`);

// Keeps the submit button from being pressed twice while its request runs.
async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}

// ----------------------------------------------------------------- account

async function onRegister(event) {
  event.preventDefault();
  const form = event.target;
  await busy(form.querySelector("button"), async () => {
    try {
      const user = await api("POST", "/auth/register", formData(form), { auth: false });
      form.reset();
      byId("login-email").value = user.email;
      showMessage(`Account created for ${user.email}. Sign in with your password.`, "ok");
      byId("login-password").focus();
    } catch (error) {
      showMessage(error.message, "error");
    }
  });
}

async function onLogin(event) {
  event.preventDefault();
  const form = event.target;
  await busy(form.querySelector("button"), async () => {
    try {
      const answer = await api("POST", "/auth/login", formData(form), { auth: false });
      setSession({ token: answer.token, expiresAt: answer.expiresAt, user: answer.user });
      showMessage(`Welcome, ${answer.user.name}. You are signed in.`, "ok");
      byId("products-heading").focus();
      await loadMine();
    } catch (error) {
      showMessage(error.message, "error");
      form.elements.password.value = "";
      form.elements.password.focus();
    }
  });
}

async function onLogout() {
  try {
    await api("POST", "/auth/logout");
  } catch {
    // The session may already be gone server-side; forget it here either way.
  }
  setSession(null);
  showMessage("You are signed out.", "info");
  byId("login-email").focus();
}

// ---------------------------------------------------------------- products

function renderProducts() {
  const rows = [...products.values()].map((product) => {
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.dataset.id = product.id;
    open.textContent = product.name ?? "";
    const tr = document.createElement("tr");
    tr.append(
      cell(open),
      cell(product.description || "", "wide"),
      cell(money(product.price), "num"),
      cell(stockText(product.stock), "num"),
    );
    return tr;
  });
  const table = byId("products-table");
  table.tBodies[0].replaceChildren(...rows);
  table.hidden = rows.length === 0;
  byId("products-status").textContent = rows.length ? "" : "No products yet.";
}

async function loadProducts() {
  const status = byId("products-status");
  status.textContent = "Loading…";
  try {
    const data = await api("GET", "/products");
    const list = Array.isArray(data) ? data : (data && data.products) || [];
    products.clear();
    for (const product of list) products.set(product.id, product);
    renderProducts();
    if (detailId !== null && products.has(detailId)) renderDetail(products.get(detailId));
  } catch (error) {
    byId("products-table").hidden = true;
    status.textContent = `Could not load products. ${error.message}`;
  }
}

function remember(product) {
  products.set(product.id, product);
  renderProducts();
  if (product.id === detailId) renderDetail(product);
}

function renderDetail(product) {
  detailId = product.id;
  byId("detail-heading").textContent = product.name;
  byId("detail-description").textContent = product.description || "No description.";
  byId("detail-price").textContent = money(product.price);
  byId("detail-stock").textContent = stockText(product.stock);
  byId("detail-id").textContent = String(product.id);
  const soldOut = !(product.stock > 0);
  byId("order-quantity").disabled = soldOut;
  byId("order-submit").disabled = soldOut;
  byId("detail").hidden = false;
}

async function openDetail(id) {
  try {
    remember(await api("GET", `/products/${id}`));
    renderDetail(products.get(id));
    byId("detail-heading").focus();
  } catch (error) {
    showMessage(error.message, "error");
  }
}

function closeDetail() {
  const id = detailId;
  detailId = null;
  byId("detail").hidden = true;
  byId("order-form").reset();
  const opener = byId("products-table").querySelector(`button[data-id="${id}"]`);
  (opener || byId("products-heading")).focus();
}

// ------------------------------------------------------------------ orders

async function onOrder(event) {
  event.preventDefault();
  const form = event.target;
  const product = products.get(detailId);
  const quantityInput = byId("order-quantity");
  const quantity = Number(quantityInput.value);
  if (!product) return;
  if (!Number.isInteger(quantity) || quantity < 1) {
    showMessage("Enter a quantity of at least 1.", "error");
    quantityInput.focus();
    return;
  }
  await busy(byId("order-submit"), async () => {
    try {
      const order = await api("POST", "/orders", { productId: product.id, quantity });
      form.reset();
      const fresh = await api("GET", `/products/${product.id}`).catch(() => null);
      remember(fresh || { ...product, stock: product.stock - quantity });
      const total = money(Number(order.unitPrice) * quantity);
      const text = `Order #${order.id} placed: ${quantity} × ${product.name} for ${total}.`;
      const noted = await api("POST", "/notifications", { subject: "Order placed", message: text })
        .then(() => true)
        .catch(() => false);
      const left = products.get(product.id).stock;
      const note = noted ? "" : " (The notification could not be saved.)";
      const stock = left > 0 ? `${left} left in stock.` : "It is now sold out.";
      showMessage(`${text} ${stock}${note}`, "ok");
      await loadMine();
    } catch (error) {
      if (error.status === 409 && Number.isInteger(error.data && error.data.available)) {
        // The orders service's answer when the stock is short: {"error": "insufficient stock"}.
        const available = error.data.available;
        remember({ ...product, stock: available });
        showMessage(
          available > 0
            ? `Not enough stock: you asked for ${quantity}, only ${available} left. Lower the quantity and try again.`
            : `Sorry, ${product.name} is sold out.`,
          "error",
        );
        quantityInput.focus();
      } else {
        showMessage(error.message, "error");
      }
    }
  });
  // busy() enabled the button again: a sold-out product keeps it disabled, and focus
  // leaves the disabled button for the product's heading.
  if (detailId !== product.id) return;
  renderDetail(products.get(product.id));
  if (byId("order-submit").disabled) byId("detail-heading").focus();
}

function renderOrders(orders) {
  const rows = orders.map((order) => {
    const tr = document.createElement("tr");
    tr.append(
      cell(`#${order.id}`),
      cell(productName(order.productId)),
      cell(String(order.quantity), "num"),
      cell(money(Number(order.unitPrice) * order.quantity), "num"),
      cell(when(order.createdAt), "wide"),
    );
    return tr;
  });
  byId("orders-table").tBodies[0].replaceChildren(...rows);
  byId("orders-table").hidden = rows.length === 0;
  byId("orders-status").textContent = rows.length ? "" : "No orders yet.";
}

function renderNotifications(notes) {
  const items = notes.map((note) => {
    const li = document.createElement("li");
    const title = document.createElement("strong");
    title.textContent = note.subject || "Notification";
    const body = document.createElement("span");
    body.textContent = note.message;
    const time = document.createElement("time");
    time.dateTime = note.createdAt;
    time.textContent = when(note.createdAt);
    li.append(title, body, time);
    return li;
  });
  byId("notifications-list").replaceChildren(...items);
  byId("notifications-status").textContent = items.length ? "" : "No notifications yet.";
}

// The signed-in user's orders and notifications (each shows its own error).
async function loadMine() {
  if (!loadSession()) return;
  const load = async (path, status, render) => {
    try {
      render(await api("GET", path));
    } catch (error) {
      byId(status).textContent = error.message;
    }
  };
  await Promise.all([
    load("/orders", "orders-status", (data) => renderOrders(Array.isArray(data) ? data : [])),
    load("/notifications", "notifications-status", (data) =>
      renderNotifications((data && data.notifications) || []),
    ),
  ]);
}

document.addEventListener("DOMContentLoaded", () => {
  byId("register-form").addEventListener("submit", onRegister);
  byId("login-form").addEventListener("submit", onLogin);
  byId("order-form").addEventListener("submit", onOrder);
  byId("logout").addEventListener("click", onLogout);
  byId("refresh").addEventListener("click", loadProducts);
  byId("detail-close").addEventListener("click", closeDetail);
  byId("products-table").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-id]");
    if (button) openDetail(Number(button.dataset.id));
  });
  byId("detail").addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeDetail();
  });
  renderSession();
  loadProducts().then(loadMine);
});
