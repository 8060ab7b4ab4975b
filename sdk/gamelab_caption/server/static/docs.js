// The /docs page: renders this server's own /openapi.json, with no assets from elsewhere.
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function schemaName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map(schemaName).join(" | ");
  if (schema.type === "array") return `${schemaName(schema.items)}[]`;
  if (schema.format === "binary") return "file";
  return schema.type || "object";
}

function constraints(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`>= ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`<= ${schema.maximum}`);
  if (schema.maxLength !== undefined) parts.push(`at most ${schema.maxLength} chars`);
  if (schema.default !== undefined) parts.push(`default ${JSON.stringify(schema.default)}`);
  return parts.join(", ");
}

function table(headings, rows) {
  const wrap = element("div", null, "table-wrap");
  const grid = element("table");
  const head = element("tr");
  headings.forEach((heading) => head.append(element("th", heading)));
  grid.append(head);
  rows.forEach((cells) => {
    const row = element("tr");
    cells.forEach((cell) => row.append(element("td", cell)));
    grid.append(row);
  });
  wrap.append(grid);
  return wrap;
}

function operation(path, method, spec) {
  const box = element("section", null, "operation");
  const title = element("h3");
  title.append(element("span", method, `method ${method}`), element("span", path, "path"));
  box.append(title);
  if (spec.summary) box.append(element("p", spec.summary));
  if (spec.description && spec.description !== spec.summary) {
    box.append(element("p", spec.description, "muted"));
  }
  const parameters = spec.parameters || [];
  if (parameters.length) {
    box.append(
      table(
        ["Parameter", "In", "Type", "Rules", "Description"],
        parameters.map((p) => [
          p.name + (p.required ? " *" : ""),
          p.in,
          schemaName(p.schema),
          constraints(p.schema || {}),
          p.description || (p.schema && p.schema.description) || "",
        ])
      )
    );
  }
  if (spec.requestBody) {
    const types = Object.keys(spec.requestBody.content || {});
    box.append(element("p", `Body: ${types.join(", ")}`, "small"));
  }
  const responses = Object.entries(spec.responses || {}).map(([status, response]) => {
    const json = (response.content || {})["application/json"];
    return [status, response.description || "", json ? schemaName(json.schema) : ""];
  });
  box.append(table(["Status", "Meaning", "JSON"], responses));
  return box;
}

function schemas(components) {
  const box = element("section");
  Object.entries(components).forEach(([name, schema]) => {
    const part = element("section", null, "operation");
    part.append(element("h3", name));
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties || {}).map(([field, property]) => [
      field + (required.has(field) ? " *" : ""),
      schemaName(property),
      property.description || "",
    ]);
    part.append(table(["Field", "Type", "Description"], rows));
    box.append(part);
  });
  return box;
}

async function render() {
  const root = document.getElementById("docs");
  const spec = await (await fetch("/openapi.json")).json();
  root.replaceChildren(
    element("h2", `${spec.info.title} ${spec.info.version}`),
    element("p", spec.info.description || "", "muted")
  );
  const link = element("p", null, "small");
  const raw = element("a", "/openapi.json");
  raw.href = "/openapi.json";
  link.append("The machine-readable description: ", raw, " (OpenAPI " + spec.openapi + ").");
  root.append(link, element("h2", "Endpoints"));
  Object.entries(spec.paths).forEach(([path, methods]) => {
    Object.entries(methods).forEach(([method, op]) => root.append(operation(path, method, op)));
  });
  root.append(element("h2", "Schemas"), schemas((spec.components || {}).schemas || {}));
}

render().catch((error) => {
  document.getElementById("docs").textContent = `Could not read /openapi.json: ${error}`;
});
