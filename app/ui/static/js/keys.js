// Keys (admin scope): create one (its token shown once), list them, revoke one.
import { api } from "./api.js";
import { h, problem, shortId, when } from "./dom.js";

const SCOPES = ["predict", "train", "admin"];

export async function render(root, params, signal) {
  const body = h("tbody");
  const shown = h("div", { id: "new-token", role: "status" });
  const scope = h("select", { name: "scope", "aria-label": "scope" }, ...SCOPES.map((s) => h("option", { value: s }, s)));
  const name = h("input", { type: "text", name: "name", placeholder: "what it is for", "aria-label": "key name" });
  root.append(
    h("h1", {}, "API keys"),
    h("div", { class: "card" }, h("div", { class: "filters" }, scope, name, h("button", { id: "create-key", onclick: create }, "Create")), shown),
    h("div", { class: "table-wrap" }, h("table", { id: "keys" },
      h("thead", {}, h("tr", {}, ...["name", "scope", "prefix", "id", "created", "revoked", ""].map((t) => h("th", {}, t)))),
      body)),
  );

  async function create() {
    try {
      const key = await api("/keys", { method: "POST", json: { scope: scope.value, name: name.value.trim() || undefined }, signal });
      shown.replaceChildren(
        h("p", {}, "The token, shown only this once:"),
        h("p", { class: "token" }, key.key),
      );
      await list();
    } catch (error) {
      shown.replaceChildren(problem(error));
    }
  }

  async function revoke(key) {
    if (!confirm(`Revoke the key ${key.name} (${key.prefix}…)? Its requests are refused from now on.`)) return;
    try {
      await api(`/keys/${key.id}/revoke`, { method: "POST", signal });
    } catch (error) {
      shown.replaceChildren(problem(error));
    }
    await list();
  }

  async function list() {
    const page = await api("/keys?limit=200", { signal });
    body.replaceChildren(...page.items.map((key) => h("tr", { dataset: { key: key.id } },
      h("td", {}, key.name), h("td", {}, key.scope), h("td", {}, `${key.prefix}…`),
      h("td", { title: key.id }, shortId(key.id)), h("td", {}, when(key.created_at)), h("td", {}, when(key.revoked_at)),
      h("td", {}, key.revoked_at ? null : h("button", { class: "danger", onclick: () => revoke(key) }, "Revoke")))));
  }

  await list();
}
