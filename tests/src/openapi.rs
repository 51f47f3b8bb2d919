//! Checks requests against Meeting BaaS's published OpenAPI documents (`fixtures/meeting-baas/
//! openapi/v1.json` and `v2.json`): the operation exists, every query parameter is declared,
//! path parameters match their schemas, and the body validates against the operation's
//! request schema (JSON Schema 2020-12, `#/components/...` references resolved).

use crate::fake_api::Call;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

struct Doc {
    doc: Value,
    /// `components`, with `$id`/`$schema` keywords removed (fragment-only `$id`s would change
    /// the base of references).
    components: Value,
}

fn strip_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("$id");
            map.remove("$schema");
            map.values_mut().for_each(strip_ids);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_ids),
        _ => {}
    }
}

fn load(name: &str) -> Doc {
    let doc = crate::fixture_json(&format!("meeting-baas/openapi/{name}"));
    let mut components = doc.get("components").cloned().unwrap_or(json!({}));
    strip_ids(&mut components);
    Doc { doc, components }
}

fn docs() -> &'static [Doc; 2] {
    static DOCS: OnceLock<[Doc; 2]> = OnceLock::new();
    DOCS.get_or_init(|| [load("v1.json"), load("v2.json")])
}

/// A path template (`/calendar_events/{uuid}/bot`) against a path; the path parameters.
fn match_template(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (ts, ps) in t.iter().zip(&p) {
        if let Some(name) = ts.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if ps.is_empty() {
                return None;
            }
            params.push((name.to_string(), ps.to_string()));
        } else if ts != ps {
            return None;
        }
    }
    Some(params)
}

fn validate(doc: &Doc, schema: &Value, instance: &Value) -> Result<(), String> {
    let mut schema = schema.clone();
    strip_ids(&mut schema);
    let wrapped = match schema {
        Value::Object(mut map) => {
            map.insert("components".into(), doc.components.clone());
            Value::Object(map)
        }
        other => {
            let mut map = Map::new();
            map.insert("allOf".into(), json!([other]));
            map.insert("components".into(), doc.components.clone());
            Value::Object(map)
        }
    };
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&wrapped)
        .map_err(|e| format!("schema does not compile: {e}"))?;
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// `Ok` when `call` is a valid request for one of the documents.
pub fn check(call: &Call) -> Result<(), String> {
    let method = call.method.to_ascii_lowercase();
    let mut problems = Vec::new();
    for doc in docs() {
        let Some(paths) = doc.doc["paths"].as_object() else { continue };
        for (template, item) in paths {
            let Some(params) = match_template(template, &call.path) else { continue };
            let Some(op) = item.get(&method) else { continue };
            match check_operation(doc, item, op, &params, call) {
                Ok(()) => return Ok(()),
                Err(e) => problems.push(format!("{} {template}: {e}", call.method)),
            }
        }
    }
    if problems.is_empty() {
        Err(format!("no operation {} {} in the OpenAPI documents", call.method, call.path))
    } else {
        Err(problems.join(" | "))
    }
}

fn check_operation(
    doc: &Doc,
    item: &Value,
    op: &Value,
    path_params: &[(String, String)],
    call: &Call,
) -> Result<(), String> {
    let declared: Vec<&Value> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(item["parameters"].as_array().into_iter().flatten())
        .collect();
    for (name, value) in path_params {
        let param = declared
            .iter()
            .find(|p| p["in"] == "path" && p["name"] == name.as_str())
            .ok_or_else(|| format!("path parameter {name} is not declared"))?;
        if let Some(schema) = param.get("schema") {
            validate(doc, schema, &Value::String(value.clone())).map_err(|e| format!("path parameter {name}: {e}"))?;
        }
    }
    let sent: Vec<&str> = call
        .query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split('=').next().unwrap_or_default())
        .collect();
    for name in &sent {
        if !declared.iter().any(|p| p["in"] == "query" && p["name"] == *name) {
            return Err(format!("query parameter {name} is not declared"));
        }
    }
    // Each value, decoded, must fit its declared schema (numbers and booleans as such).
    let url = reqwest::Url::parse(&format!("http://x/?{}", call.query.as_deref().unwrap_or_default()))
        .map_err(|e| format!("the query does not parse: {e}"))?;
    for (name, value) in url.query_pairs() {
        let Some(schema) =
            declared.iter().find(|p| p["in"] == "query" && p["name"] == name.as_ref()).and_then(|p| p.get("schema"))
        else {
            continue;
        };
        let as_string = Value::String(value.to_string());
        let typed = serde_json::from_str::<Value>(&value).ok().filter(|v| v.is_number() || v.is_boolean());
        let fits =
            validate(doc, schema, &as_string).is_ok() || typed.is_some_and(|v| validate(doc, schema, &v).is_ok());
        if !fits {
            return Err(format!("query parameter {name}={value:?} does not fit its schema"));
        }
    }
    for required in declared.iter().filter(|p| p["in"] == "query" && p["required"] == true) {
        let name = required["name"].as_str().unwrap_or_default();
        if !sent.contains(&name) {
            return Err(format!("required query parameter {name} is missing"));
        }
    }
    match op.get("requestBody") {
        Some(body) => {
            let schema = &body["content"]["application/json"]["schema"];
            if call.body.is_empty() {
                return if body["required"] == true { Err("the request body is required".into()) } else { Ok(()) };
            }
            let instance: Value = serde_json::from_slice(&call.body).map_err(|e| format!("body is not JSON: {e}"))?;
            validate(doc, schema, &instance).map_err(|e| format!("body: {e}"))
        }
        None if !call.body.is_empty() => Err("the operation takes no request body".into()),
        None => Ok(()),
    }
}

/// Panics naming every call that is not valid.
pub fn assert_valid(calls: &[Call]) {
    let bad: Vec<String> =
        calls.iter().filter_map(|c| check(c).err().map(|e| format!("{} {}: {e}", c.method, c.path))).collect();
    assert!(bad.is_empty(), "requests not valid for the OpenAPI documents:\n{}", bad.join("\n"));
}

/// `Ok` when `body`, answered to `call` with `status`, is valid for the operation's documented
/// response (JSON Schema of `responses.{status}`). A 2xx the operation does not document is an
/// error; an error status it does not document (v1 documents none) is not checked.
pub fn check_answer(call: &Call, status: u16, body: &[u8]) -> Result<(), String> {
    let method = call.method.to_ascii_lowercase();
    for doc in docs() {
        let Some(paths) = doc.doc["paths"].as_object() else { continue };
        // The most specific template first: `/calendar_events/` before `/calendar_events/{uuid}`.
        let mut matching: Vec<(&String, &Value)> =
            paths.iter().filter(|(t, _)| match_template(t, &call.path).is_some()).collect();
        matching.sort_by_key(|(t, _)| t.matches('{').count());
        for (template, item) in matching {
            let Some(op) = item.get(&method) else { continue };
            let Some(response) = op["responses"].get(status.to_string()) else {
                return if (200..300).contains(&status) {
                    Err(format!("{} {template} documents no {status} answer", call.method))
                } else {
                    Ok(())
                };
            };
            let Some(schema) = response.get("content").and_then(|c| c.get("application/json")).map(|c| &c["schema"])
            else {
                return Ok(());
            };
            let instance: Value = serde_json::from_slice(body)
                .map_err(|e| format!("{} {template}: the answer is not JSON: {e}", call.method))?;
            return validate(doc, schema, &instance).map_err(|e| format!("{} {template} {status}: {e}", call.method));
        }
    }
    Err(format!("no operation {} {} in the OpenAPI documents", call.method, call.path))
}

/// Panics naming every answer of `api` (the simulator) that is not valid for the documents.
pub fn assert_answers_valid(answered: &[(Call, u16, Vec<u8>)]) {
    let bad: Vec<String> = answered
        .iter()
        .filter(|(c, _, _)| !c.path.starts_with("/_"))
        .filter_map(|(c, s, b)| check_answer(c, *s, b).err().map(|e| format!("{} {} -> {s}: {e}", c.method, c.path)))
        .collect();
    assert!(bad.is_empty(), "answers not valid for the OpenAPI documents:\n{}", bad.join("\n"));
}
