// Validates Kubernetes resources against their published schemas, offline and strictly.
//
//   node tests/k8s-schemas/validate.mjs < resources.json
//
// Input: a JSON array of resources (apiVersion, kind, metadata, spec, ...). Output: a JSON
// array with one verdict per resource, {resource, schema, errors}; `schema` is null when no
// installed package has a schema for the resource's apiVersion and kind. Exit status 0
// when every resource has a schema and passes it, 1 otherwise.
//
// The schemas come from the packages pinned in package.json, which compile the published
// CRD schemas (Istio) or OpenAPI definitions generated from the Go API types (Gateway
// API, Envoy Gateway, Kubernetes) into validate functions: types, enums, required fields,
// patterns and bounds. Those functions, like the API server's OpenAPI v3 schemas, do not
// say "additionalProperties: false"; the API server refuses undeclared fields anyway
// (`kubectl apply --validate=strict`). To do the same, the resource is handed to the
// validate function through proxies that record which fields the function looks up: an
// object whose schema declares properties has every declared name looked up, so a field
// of the resource that was never looked up is one the schema does not declare. Objects
// whose keys the function enumerates (maps, additionalProperties) and objects it does not
// look into at all (free-form JSON such as a plugin configuration) accept any field, as
// x-kubernetes-preserve-unknown-fields does.

const PACKAGES = {
  "": "kubernetes-models",
  apps: "kubernetes-models",
  "networking.istio.io": "@kubernetes-models/istio",
  "extensions.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "telemetry.istio.io": "@kubernetes-models/istio",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
};

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind)) {
    return null;
  }
  const slash = apiVersion.lastIndexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = apiVersion.slice(slash + 1);
  const pkg = PACKAGES[group];
  if (!pkg || !/^v[0-9]+((alpha|beta)[0-9]+)?$/.test(version)) return null;
  const path = group === "" ? `${pkg}/${version}/${kind}` : `${pkg}/${group}/${version}/${kind}`;
  try {
    const model = (await import(path))[kind];
    if (model && model.apiVersion === apiVersion && model.kind === kind) return { path, model };
  } catch (e) {
    if (!["ERR_MODULE_NOT_FOUND", "ERR_PACKAGE_PATH_NOT_EXPORTED"].includes(e.code)) throw e;
  }
  return null;
}

// A copy of `value` in which every object is a proxy recording what is looked up in it.
function traced(value, path, objects) {
  if (Array.isArray(value)) return value.map((v, i) => traced(v, `${path}/${i}`, objects));
  if (value === null || typeof value !== "object") return value;
  const seen = { path, fields: Object.keys(value), looked: new Set(), enumerated: false };
  objects.push(seen);
  const copy = {};
  for (const [k, v] of Object.entries(value)) copy[k] = traced(v, `${path}/${k}`, objects);
  const note = (k) => typeof k === "string" && seen.looked.add(k);
  return new Proxy(copy, {
    get(target, key, receiver) {
      note(key);
      return Reflect.get(target, key, receiver);
    },
    has(target, key) {
      note(key);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor(target, key) {
      note(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
    ownKeys(target) {
      seen.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function undeclared(objects) {
  const errors = [];
  for (const o of objects) {
    if (o.enumerated || o.looked.size === 0) continue;
    for (const f of o.fields) {
      if (!o.looked.has(f)) errors.push(`${o.path}/${f}: field not declared by the schema`);
    }
  }
  return errors;
}

async function check(resource) {
  const found = await modelFor(resource?.apiVersion, resource?.kind);
  if (!found) return { schema: null, errors: [`no schema installed for ${resource?.apiVersion} ${resource?.kind}`] };
  const objects = [];
  const errors = [];
  try {
    found.model.prototype.validate.call(traced(resource, "", objects));
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    for (const err of e.errors) {
      errors.push(`${err.instancePath || "/"}: ${err.message}${err.params ? " " + JSON.stringify(err.params) : ""}`);
    }
  }
  errors.push(...undeclared(objects));
  return { schema: found.path, errors };
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const resources = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const verdicts = [];
for (const r of resources) {
  verdicts.push({ resource: `${r?.kind} ${r?.metadata?.name}`, ...(await check(r)) });
}
process.stdout.write(JSON.stringify(verdicts, null, 1) + "\n");
process.exit(verdicts.every((v) => v.schema && v.errors.length === 0) ? 0 : 1);
