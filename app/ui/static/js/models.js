// Models: the versions of each name, their aliases (move and roll back, each confirmed),
// every move, the weights as files, and delete (the API refuses it while an alias points
// at the version).
import { api, download, query } from "./api.js";
import { h, percent, problem, shortId, when } from "./dom.js";
import { evaluationView } from "./evaluation.js";
import { link, updateParams } from "./view.js";

const FORMATS = ["pt", "safetensors", "onnx"];

export async function render(root, params, signal) {
  const everything = await api("/models?limit=200", { signal });
  const names = [...new Set(everything.items.map((m) => m.name))].sort();
  let name = params.get("name") || names[0];
  const list = h("ul", { class: "list", id: "model-names" });
  const detail = h("div", { class: "model-detail" });
  const message = h("div", { role: "status" });
  root.append(h("h1", {}, "Models"), message, h("div", { class: "split" }, h("nav", {}, list), detail));
  if (!names.length) {
    detail.append(h("p", { class: "muted" }, "No model yet: a job that succeeds registers one."));
    return;
  }

  function drawList() {
    list.replaceChildren(...names.map((n) => h("li", {}, h("a", {
      href: link("models", { name: n }), class: n === name ? "here" : null,
      onclick: (event) => { event.preventDefault(); name = n; updateParams({ name }); show(); },
    }, n))));
  }

  async function show() {
    drawList();
    const [versions, aliases] = await Promise.all([
      api(`/models${query({ name, limit: 200 })}`, { signal }),
      api(`/models/${encodeURIComponent(name)}/aliases`, { signal }),
    ]);
    const histories = await Promise.all(aliases.map((a) =>
      api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(a.alias)}/history?limit=20`, { signal })));
    detail.replaceChildren(
      h("h2", {}, `${name}: versions`),
      versionTable(versions.items),
      h("h2", {}, "Aliases"),
      aliasTable(aliases, versions.items),
      h("h2", {}, "Moves"),
      ...aliases.map((a, i) => historyTable(a.alias, histories[i])),
      evaluationView(versions.items[0]?.evaluation, `Evaluation of the newest version, ${shortId(versions.items[0]?.id)}, at its served epoch`),
    );
  }

  // Each change is confirmed, then shown with the API's answer, or its refusal.
  async function act(question, call) {
    if (!confirm(question)) return;
    try {
      await call();
      message.replaceChildren(h("p", { class: "muted" }, "Done."));
    } catch (error) {
      message.replaceChildren(problem(error));
    }
    await show();
  }

  function versionTable(versions) {
    const rows = versions.map((v) => h("tr", { dataset: { version: v.id } },
      h("td", { title: v.id }, shortId(v.id)),
      h("td", {}, when(v.created_at)),
      h("td", {}, v.network),
      h("td", {}, percent(v.metrics.val_accuracy)),
      h("td", {}, v.aliases.join(", ")),
      h("td", {}, h("a", { href: link("run", { id: v.job_id }) }, shortId(v.job_id))),
      h("td", {}, ...FORMATS.map((format) => h("button", {
        class: "quiet",
        onclick: () => download(`/models/${v.id}/weights?format=${format}`, `${v.name}-${v.id}.${format}`)
          .catch((error) => message.replaceChildren(problem(error))),
      }, format))),
      h("td", {}, h("button", {
        class: "danger",
        onclick: () => act(`Delete version ${v.id} of ${v.name} and its checkpoint?`, () => api(`/models/${v.id}`, { method: "DELETE", signal })),
      }, "Delete")),
    ));
    return h("div", { class: "table-wrap" }, h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, ...["version", "created", "network", "val accuracy", "aliases", "job", "weights", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
  }

  function aliasTable(aliases, versions) {
    const options = (selected) => versions.map((v) => h("option", { value: v.id, selected: v.id === selected }, `${shortId(v.id)} · ${when(v.created_at)}`));
    const move = (alias, select) => act(`Point ${name}@${alias} at version ${select.value}?`, () =>
      api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, { method: "PUT", json: { version_id: select.value }, signal }));
    const rows = aliases.map((a) => {
      const select = h("select", { "aria-label": `version for ${a.alias}` }, options(a.version_id));
      return h("tr", { dataset: { alias: a.alias } },
        h("td", {}, a.alias),
        h("td", { title: a.version_id, class: "points-at" }, shortId(a.version_id)),
        h("td", {}, when(a.moved_at)),
        h("td", {}, select, " ", h("button", { class: "move", onclick: () => move(a.alias, select) }, "Move")),
        h("td", {}, h("button", {
          class: "rollback",
          onclick: () => act(`Roll ${name}@${a.alias} back to where it pointed before?`, () =>
            api(`/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(a.alias)}/rollback`, { method: "POST", signal })),
        }, "Roll back")));
    });
    const newAlias = h("input", { type: "text", name: "alias", placeholder: "production", "aria-label": "new alias" });
    const newSelect = h("select", { "aria-label": "version for the new alias" }, options(versions[0]?.id));
    rows.push(h("tr", { class: "new-alias" },
      h("td", {}, newAlias), h("td", {}), h("td", {}),
      h("td", {}, newSelect, " ", h("button", { onclick: () => newAlias.value && move(newAlias.value.trim(), newSelect) }, "Set")),
      h("td", {})));
    return h("div", { class: "table-wrap" }, h("table", { id: "aliases" },
      h("thead", {}, h("tr", {}, ...["alias", "points at", "since", "move to", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)));
  }

  await show();
}

function historyTable(alias, moves) {
  const rows = moves.map((m) => h("tr", {},
    h("td", {}, when(m.moved_at)), h("td", {}, m.action),
    h("td", {}, shortId(m.from_version_id)), h("td", {}, shortId(m.to_version_id)), h("td", {}, shortId(m.moved_by))));
  return h("details", { open: true }, h("summary", {}, alias),
    h("div", { class: "table-wrap" }, h("table", { class: "history", dataset: { alias } },
      h("thead", {}, h("tr", {}, ...["when", "action", "from", "to", "by key"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))));
}
