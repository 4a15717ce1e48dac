//! Facebook Login in the simulated Graph: the token exchange, `debug_token`, a user's pages.

use super::*;

/// Facebook Login's calls: the token exchange and `debug_token` (which authenticate the
/// app by its id and secret) and a user's `/me/accounts`. `None`: not one of them.
pub(super) fn facebook_login(
    state: &State,
    method: &Method,
    segments: &[&str],
    query: &str,
    bearer: Option<&str>,
) -> Option<SimResponse> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let secret = state.app_secret.lock().unwrap().clone();
    // The app's own id and secret, as the OAuth calls carry them.
    let app_refused = || {
        if param("client_id").as_deref() != Some(SIM_APP_ID) {
            Some(graph_error(
                400,
                101,
                None,
                "Error validating application. Invalid application ID.",
            ))
        } else if secret.is_none() || param("client_secret") != secret {
            Some(graph_error(400, 1, None, "Error validating client secret."))
        } else {
            None
        }
    };
    // The app's own token (`{app-id}|{app-secret}`) as the bearer.
    let app_token_refused = || {
        let app_token = format!("{SIM_APP_ID}|{}", secret.clone().unwrap_or_default());
        (bearer != Some(app_token.as_str()))
            .then(|| graph_error(400, 190, None, "Invalid OAuth access token signature."))
    };
    let bad_token = || {
        graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        )
    };
    match (method, segments) {
        // The login dialog, the user already logged in and agreeing: back to the app.
        (&Method::GET, [_version, "dialog", "oauth"]) => {
            if param("client_id").as_deref() != Some(SIM_APP_ID) {
                return Some(respond(400, "text/plain", "Invalid App ID"));
            }
            let (Some(redirect), Some(state_param)) = (param("redirect_uri"), param("state"))
            else {
                return Some(respond(
                    400,
                    "text/plain",
                    "redirect_uri and state are needed",
                ));
            };
            let Ok(mut back) = url::Url::parse(&redirect) else {
                return Some(respond(400, "text/plain", "URL blocked"));
            };
            let user = state.login_as.lock().unwrap().clone()?;
            let mut codes = state.codes.lock().unwrap();
            let code = format!("AQD-login-code-{}", codes.len() + 1);
            codes.insert(code.clone(), (user, redirect, false));
            back.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state_param);
            let mut r = respond(302, "text/plain", "");
            r.headers_mut()
                .insert("location", back.as_str().parse().expect("a valid location"));
            Some(r)
        }
        (&Method::GET, [_version, "oauth", "access_token"]) if param("code").is_some() => {
            if let Some(refused) = app_refused() {
                return Some(refused);
            }
            let code = param("code").unwrap_or_default();
            let mut codes = state.codes.lock().unwrap();
            let Some((user, redirect, used)) = codes.get_mut(&code) else {
                return Some(graph_error(
                    400,
                    100,
                    Some(36008),
                    "Invalid verification code format.",
                ));
            };
            if *state.codes_expired.lock().unwrap() {
                return Some(graph_error(
                    400,
                    100,
                    Some(36007),
                    "This authorization code has expired.",
                ));
            }
            if *used {
                return Some(graph_error(
                    400,
                    100,
                    Some(36009),
                    "This authorization code has been used.",
                ));
            }
            if param("redirect_uri").as_ref() != Some(redirect) {
                return Some(graph_error(
                    400,
                    100,
                    Some(36008),
                    "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
                ));
            }
            *used = true;
            Some(json_response(
                200,
                json!({"access_token": user.clone(), "token_type": "bearer", "expires_in": 5_183_944}),
            ))
        }
        (&Method::GET, [_version, "oauth", "access_token"]) => {
            if let Some(refused) = app_refused() {
                return Some(refused);
            }
            if param("grant_type").as_deref() != Some("fb_exchange_token") {
                return Some(graph_error(400, 100, None, "Unsupported grant_type"));
            }
            let old = param("fb_exchange_token").unwrap_or_default();
            let mut users = state.users.lock().unwrap();
            let Some(user) = users.get(&old).cloned() else {
                return Some(bad_token());
            };
            let new = format!("EAAL-long-lived-{}", users.len() + 1);
            users.insert(
                new.clone(),
                SimUser {
                    long_lived: true,
                    ..user
                },
            );
            Some(json_response(
                200,
                json!({"access_token": new, "token_type": "bearer", "expires_in": 5_183_944}),
            ))
        }
        // The app asking about itself, with its own token.
        (&Method::GET, [_version, app]) if *app == SIM_APP_ID => {
            if let Some(refused) = app_token_refused() {
                return Some(refused);
            }
            Some(json_response(
                200,
                json!({"id": SIM_APP_ID, "name": SIM_APP_NAME}),
            ))
        }
        (&Method::GET, [_version, "debug_token"]) => {
            if let Some(refused) = app_token_refused() {
                return Some(refused);
            }
            let input = param("input_token").unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let page = state.tokens.lock().unwrap().get(&input).cloned();
            let mut data = if state.revoked.lock().unwrap().contains(&input) {
                json!({
                    "app_id": SIM_APP_ID, "type": "PAGE", "application": SIM_APP_NAME,
                    "is_valid": false, "scopes": [],
                    "error": {"code": 190, "subcode": 458, "message": format!("Error validating access token: The user has not authorized application {SIM_APP_ID}.")},
                })
            } else if let Some(user) = state.users.lock().unwrap().get(&input) {
                json!({
                    "app_id": SIM_APP_ID, "type": "USER", "application": SIM_APP_NAME,
                    "data_access_expires_at": 1_800_000_000, "expires_at": if user.long_lived { 1_790_000_000 } else { 1_780_000_000 },
                    "is_valid": true, "scopes": user.scopes, "user_id": "10000000000001",
                })
            } else if let Some(page) = page {
                // A Page token: never expires; the app's data access for 90 days.
                json!({
                    "app_id": SIM_APP_ID, "type": "PAGE", "application": SIM_APP_NAME,
                    "data_access_expires_at": now + 90 * 86_400, "expires_at": 0,
                    "is_valid": true, "issued_at": now - 86_400, "profile_id": page,
                    "scopes": ["pages_messaging", "pages_manage_metadata", "pages_read_engagement",
                               "pages_manage_engagement", "pages_show_list", "business_management",
                               "instagram_basic", "instagram_manage_messages", "instagram_manage_comments"],
                    "user_id": "10000000000001",
                })
            } else {
                json!({
                    "error": {"code": 190, "message": "Invalid OAuth access token."},
                    "is_valid": false, "scopes": [],
                })
            };
            if let Some(Value::Object(facts)) = state.token_facts.lock().unwrap().get(&input) {
                for (k, v) in facts {
                    data[k] = v.clone();
                }
            }
            Some(json_response(200, json!({ "data": data })))
        }
        (&Method::GET, [_version, "me", "accounts"]) => {
            let user = state.users.lock().unwrap().get(bearer?).cloned()?;
            let linked = state.linked_instagram.lock().unwrap().clone();
            // Since Graph v17, Pages of a business portfolio only with business_management.
            let business = state.business_pages.lock().unwrap().clone();
            let sees_business = user.scopes.iter().any(|s| s == "business_management");
            let mut data = Vec::new();
            for page in user
                .pages
                .iter()
                .filter(|p| sees_business || !business.contains(*p))
            {
                let token = SimGraph::page_token_for_user(user.long_lived, page);
                state
                    .tokens
                    .lock()
                    .unwrap()
                    .insert(token.clone(), page.clone());
                let mut entry = json!({
                    "access_token": token,
                    "category": "Software company",
                    "name": format!("Simulated Page {page}"),
                    "id": page,
                    "tasks": ["ADVERTISE", "ANALYZE", "CREATE_CONTENT", "MESSAGING", "MODERATE", "MANAGE"],
                });
                if let Some(ig) = linked.get(page) {
                    entry["instagram_business_account"] =
                        json!({"id": ig, "username": format!("sim.{ig}")});
                }
                data.push(entry);
            }
            Some(json_response(
                200,
                json!({"data": data, "paging": {"cursors": {"before": "QVFIU", "after": "QVFIU"}}}),
            ))
        }
        _ => None,
    }
}
