//! The OpenAPI document as this instance serves it: the bundled
//! `openapi.json`, with what depends on configuration filled in (the
//! interface names a request may name, the participant limit), so that it
//! describes exactly what this server accepts.

use super::State;
use serde_json::{json, Value};

const BUNDLED: &str = include_str!("openapi.json");

pub fn document(state: &State) -> String {
    let mut doc: Value = serde_json::from_str(BUNDLED).expect("openapi.json is valid JSON (tested)");
    let names: Vec<&str> = state.home.interfaces.iter().map(|i| i.name.as_str()).collect();
    fill(&mut doc, &names, state.config.max_participants);
    doc.to_string()
}

fn fill(v: &mut Value, interfaces: &[&str], max_participants: usize) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for key in ["from_interface", "to_interface", "interface"] {
                    if let Some(p) = props.get_mut(key) {
                        p["enum"] = json!(interfaces);
                    }
                }
                if let Some(p) = props.get_mut("max_participants") {
                    p["maximum"] = json!(max_participants);
                }
            }
            map.values_mut().for_each(|x| fill(x, interfaces, max_participants));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| fill(x, interfaces, max_participants)),
        _ => {}
    }
}
