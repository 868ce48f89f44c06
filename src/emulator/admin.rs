//! The admin API below `/emulator/`: read, replace and merge-patch the document, queue and
//! clear faults, read and clear the request log, read the guest attributes. No
//! `Metadata-Flavor` is needed and these requests are neither logged nor faulted.

use tinyjson::JsonValue;

use super::fault::Fault;
use super::http::{Request, Response};
use super::tree;
use super::{Shared, SERVER_HEADER};

fn json(status: u16, value: &JsonValue) -> Response {
    let mut body = tree::to_json(value);
    body.push('\n');
    Response::new(status, "application/json", body).with("Server", SERVER_HEADER)
}

fn text(status: u16, msg: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", format!("{}\n", msg))
        .with("Server", SERVER_HEADER)
}

fn bad(msg: &str) -> Response {
    text(400, &format!("bad request: {}", msg))
}

fn body_json(req: &Request) -> Result<JsonValue, Response> {
    let body = std::str::from_utf8(&req.body).map_err(|_| bad("the body is not UTF-8"))?;
    crate::json::parse_json(body).map_err(|e| bad(&format!("the body is not JSON: {}", e)))
}

/// Answers one admin request.
pub(super) fn handle(shared: &Shared, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    let method = req.method.as_str();
    let allowed = match path {
        "/emulator/metadata" => "GET, PUT, PATCH",
        "/emulator/faults" => "GET, POST, DELETE",
        "/emulator/requests" | "/emulator/guest-attributes" => "GET, DELETE",
        _ => return text(404, &format!("no admin resource {}", req.path)),
    };
    match (path, method) {
        ("/emulator/metadata", "GET") => json(200, &shared.lock().doc),
        ("/emulator/metadata", "PUT") => match body_json(req) {
            Err(resp) => resp,
            Ok(doc @ JsonValue::Object(_)) => {
                shared.set_document(doc.clone());
                json(200, &doc)
            }
            Ok(_) => bad("the document must be a JSON object"),
        },
        ("/emulator/metadata", "PATCH") => match body_json(req) {
            Err(resp) => resp,
            Ok(patch) => match shared.patch_document(patch) {
                Ok(at) => {
                    let field = ("changedAtMicros".to_string(), JsonValue::Number(at as f64));
                    json(200, &JsonValue::Object([field].into_iter().collect()))
                }
                Err(e) => bad(&e),
            },
        },
        ("/emulator/faults", "GET") => {
            let faults = shared.lock().faults.iter().map(Fault::to_json).collect();
            json(200, &JsonValue::Array(faults))
        }
        ("/emulator/faults", "POST") => {
            let value = match body_json(req) {
                Ok(v) => v,
                Err(resp) => return resp,
            };
            let items = match &value {
                JsonValue::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            let parsed: Result<Vec<Fault>, String> = items.iter().map(Fault::from_json).collect();
            match parsed {
                Err(e) => bad(&e),
                Ok(faults) => {
                    let mut st = shared.lock();
                    st.faults.extend(faults);
                    let queued = JsonValue::Number(st.faults.len() as f64);
                    json(
                        200,
                        &JsonValue::Object([("queued".to_string(), queued)].into_iter().collect()),
                    )
                }
            }
        }
        ("/emulator/faults", "DELETE") => {
            shared.lock().faults.clear();
            text(200, "faults cleared")
        }
        ("/emulator/requests", "GET") => {
            let records = shared.lock().log.iter().map(|r| r.to_json()).collect();
            json(200, &JsonValue::Array(records))
        }
        ("/emulator/requests", "DELETE") => {
            shared.clear_log();
            text(200, "request log cleared")
        }
        ("/emulator/guest-attributes", "GET") => {
            let tree = shared.lock().guest_json();
            json(200, &tree)
        }
        ("/emulator/guest-attributes", "DELETE") => {
            let mut st = shared.lock();
            st.guest.clear();
            shared.bump(&mut st);
            text(200, "guest attributes cleared")
        }
        _ => text(405, &format!("{} is not allowed on {}", method, path)).with("Allow", allowed),
    }
}
