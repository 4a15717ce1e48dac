//! The simulated Graph API's routes: what each call answers, the way Graph answers it
//! (its checks, its errors).

use std::sync::atomic::Ordering;

use hyper::Request;

use super::login::facebook_login;
use super::*;

pub(super) async fn handle(state: &State, req: Request<Bytes>) -> SimResponse {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.requests.lock().unwrap().push(GraphRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: authorization.clone(),
        body: req.body().clone(),
    });
    state.counter.fetch_add(1, Ordering::Relaxed);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    if let (&Method::GET, ["cdn", name]) = (req.method(), segments.as_slice()) {
        if let Some(location) = state.redirects.lock().unwrap().get(*name) {
            let mut r = respond(302, "text/plain", "moved");
            r.headers_mut()
                .insert("location", location.parse().expect("a valid location"));
            return r;
        }
        return match state.files.lock().unwrap().get(*name) {
            Some((content_type, bytes)) => respond(200, content_type, bytes.clone()),
            None => respond(404, "text/plain", "not found"),
        };
    }

    // The app's webhook (`POST /{app-id}/subscriptions`, as the app): Meta first checks
    // the callback with the verification handshake, and registers it only when the
    // challenge comes back.
    if let (&Method::POST, [_version, app, "subscriptions"]) = (req.method(), segments.as_slice())
        && *app == SIM_APP_ID
    {
        let secret = state.app_secret.lock().unwrap().clone().unwrap_or_default();
        if authorization.as_deref() != Some(format!("Bearer {SIM_APP_ID}|{secret}").as_str()) {
            return graph_error(400, 190, None, "Invalid OAuth access token signature.");
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(req.body())
            .into_owned()
            .collect();
        let (Some(object), Some(callback), Some(verify)) = (
            form.get("object"),
            form.get("callback_url"),
            form.get("verify_token"),
        ) else {
            return graph_error(
                400,
                100,
                None,
                "(#100) object, callback_url and verify_token are required",
            );
        };
        let client = state.url_client.lock().unwrap().clone().unwrap_or_default();
        let challenge = format!("{}", 1_000_000 + state.counter.load(Ordering::Relaxed));
        let check = client
            .get(callback.as_str())
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.challenge", challenge.as_str()),
                ("hub.verify_token", verify.as_str()),
            ])
            .send()
            .await;
        let echoed = match check {
            Ok(r) => r.text().await.unwrap_or_default() == challenge,
            Err(_) => false,
        };
        if !echoed {
            return graph_error(
                400,
                2200,
                None,
                "(#2200) callback verification failed: Callback verification failed with the following errors: HTTP Status Code = 403; HTTP Message = Forbidden",
            );
        }
        state.app_webhooks.lock().unwrap().insert(
            object.clone(),
            (
                callback.clone(),
                form.get("fields").cloned().unwrap_or_default(),
            ),
        );
        return json_response(200, json!({"success": true}));
    }

    // graph.instagram.com's token refresh: unversioned, the token in the query.
    if let (&Method::GET, ["refresh_access_token"]) = (req.method(), segments.as_slice()) {
        let param = |name: &str| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if param("grant_type").as_deref() != Some("ig_refresh_token") {
            return graph_error(400, 100, None, "(#100) grant_type must be ig_refresh_token");
        }
        let old = param("access_token").unwrap_or_default();
        let Some(account) = state.tokens.lock().unwrap().get(&old).cloned() else {
            return graph_error(
                400,
                190,
                None,
                "Error validating access token: Session has expired.",
            );
        };
        let mut refreshes = state.refreshes.lock().unwrap();
        let new = format!("IGAA-refreshed-{}-{}", account, refreshes.len() + 1);
        refreshes.push((old, new.clone()));
        state.tokens.lock().unwrap().insert(new.clone(), account);
        return json_response(
            200,
            json!({"access_token": new, "token_type": "bearer", "expires_in": 5_184_000}),
        );
    }

    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    if let Some(answer) = facebook_login(state, req.method(), &segments, &query, token) {
        return answer;
    }
    let page = token.and_then(|t| state.tokens.lock().unwrap().get(t).cloned());
    if page.is_none() {
        return graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        );
    }

    let page = page.expect("checked above");
    let instagram_login = state.instagram_logins.lock().unwrap().contains(&page);
    if let Some(answer) = super::inbox::answer(
        state,
        req.method(),
        &segments,
        &query,
        &page,
        instagram_login,
    ) {
        return answer;
    }
    match (req.method(), segments.as_slice()) {
        // An Instagram Login token: `user_id` is the professional account's id (the one
        // webhooks carry), `id` an app-scoped one.
        (&Method::GET, [_version, "me"]) if instagram_login => json_response(
            200,
            json!({"id": "27000000000000001", "user_id": page, "username": "sim.account"}),
        ),
        (&Method::GET, [_version, "me"]) => json_response(
            200,
            json!({"id": page, "name": format!("Simulated Page {page}")}),
        ),
        (&Method::GET, [_version, "app"]) => {
            json_response(200, json!({"id": SIM_APP_ID, "name": SIM_APP_NAME}))
        }
        (&Method::GET, [_version, target, "thread_owner"]) if *target == page => {
            let owner = state
                .thread_owners
                .lock()
                .unwrap()
                .get(&page)
                .cloned()
                .unwrap_or_else(|| SIM_APP_ID.to_owned());
            json_response(200, json!({"data": [{"thread_owner": {"app_id": owner}}]}))
        }
        (&Method::GET, [_version, target, "subscribed_apps"]) if *target == page => {
            // Every app installed on the Page, as Graph lists them.
            let mut data: Vec<Value> = state
                .other_apps
                .lock()
                .unwrap()
                .get(&page)
                .into_iter()
                .flatten()
                .map(|(id, name, fields)| {
                    json!({"category": "Business", "link": "https://example.invalid/", "name": name, "id": id, "subscribed_fields": fields})
                })
                .collect();
            let fields = state
                .subscriptions
                .lock()
                .unwrap()
                .get(&page)
                .cloned()
                .unwrap_or_default();
            if !fields.is_empty() {
                data.push(json!({"category": "Business", "link": "https://example.invalid/", "name": SIM_APP_NAME, "id": SIM_APP_ID, "subscribed_fields": fields}));
            }
            json_response(200, json!({ "data": data }))
        }
        (&Method::POST, [_version, target, "subscribed_apps"]) if *target == page => {
            let fields: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "subscribed_fields")
                .map(|(_, v)| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            if fields.is_empty() {
                return graph_error(400, 100, None, "(#100) subscribed_fields is required");
            }
            state.subscribe_calls.lock().unwrap().push(page.clone());
            state
                .subscriptions
                .lock()
                .unwrap()
                .insert(page.clone(), fields);
            if *state.success_as_text.lock().unwrap() {
                json_response(200, json!({"success": "true"}))
            } else {
                json_response(200, json!({"success": true}))
            }
        }
        (&Method::POST, [_version, target, "messages"]) => {
            if *target != "me" && *target != page {
                return graph_error(
                    400,
                    100,
                    None,
                    "(#100) The page id does not match the token",
                );
            }
            let mut held = state.hold_sends.subscribe();
            let _ = held.wait_for(|hold| !*hold).await;
            if let Some(f) = state.send_failures.lock().unwrap().pop_front() {
                let mut response = json_response(f.status, f.body);
                for (k, v) in f.headers {
                    response.headers_mut().insert(
                        hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        v.parse().unwrap(),
                    );
                }
                return response;
            }
            let fetcher = state.url_client.lock().unwrap().clone();
            match read_send(&req, &page, fetcher.as_ref()).await {
                // Instagram takes at most 1,000 bytes of text (Messenger 2,000 characters).
                Ok(message)
                    if message.text.as_ref().is_some_and(|t| t.len() > 1000)
                        && message.recipient["id"].as_str().is_some_and(|id| {
                            state.instagram_profiles.lock().unwrap().contains_key(id)
                        }) =>
                {
                    graph_error(
                        400,
                        100,
                        None,
                        "(#100) Length of param message[text] must be less than or equal to 1000",
                    )
                }
                Ok(mut message) => {
                    let mut sent = state.sent.lock().unwrap();
                    message.message_id = format!("m_sim_{}", sent.len() + 1);
                    let recipient_id = message.recipient.get("id").cloned().unwrap_or(json!(null));
                    let id = message.message_id.clone();
                    sent.push(message);
                    // Counted under the lock, as Motion's notifies are: counted after it,
                    // two sends at once could leave the count one short for good.
                    state.sent_count.send_replace(sent.len());
                    drop(sent);
                    json_response(200, json!({"recipient_id": recipient_id, "message_id": id}))
                }
                Err(why) => graph_error(400, 100, None, &why),
            }
        }
        // An answer to an Instagram comment, recorded like a comment on the comment.
        (&Method::POST, [_version, comment, "replies"]) => {
            let message = serde_json::from_slice::<Value>(req.body())
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned));
            let Some(message) = message.filter(|m| !m.is_empty()) else {
                return graph_error(400, 100, None, "(#100) message is required");
            };
            let mut comments = state.comments.lock().unwrap();
            let id = format!("{}", 18_000_000_000_000_000u64 + comments.len() as u64 + 1);
            comments.push(SentComment {
                object_id: (*comment).to_owned(),
                message: Some(message),
                photo: None,
                id: id.clone(),
                received_at: std::time::Instant::now(),
            });
            json_response(200, json!({ "id": id }))
        }
        (&Method::POST, [_version, object, "comments"]) => {
            if state.deleted.lock().unwrap().iter().any(|d| d == object) {
                return graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported post request. Object with ID does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                );
            }
            if let Some(f) = state.send_failures.lock().unwrap().pop_front() {
                return json_response(f.status, f.body);
            }
            match read_comment(&req).await {
                Ok((message, photo)) => {
                    let mut comments = state.comments.lock().unwrap();
                    let id = format!(
                        "{}_{}",
                        object.rsplit('_').next().unwrap_or(object),
                        900 + comments.len() + 1
                    );
                    comments.push(SentComment {
                        object_id: (*object).to_owned(),
                        message,
                        photo,
                        id: id.clone(),
                        received_at: std::time::Instant::now(),
                    });
                    json_response(200, json!({ "id": id }))
                }
                Err(why) => graph_error(400, 100, None, &why),
            }
        }
        (&Method::GET, [_version, node]) if query == "fields=instagram_business_account" => {
            if *node != page {
                return graph_error(
                    400,
                    100,
                    None,
                    "(#100) The page id does not match the token",
                );
            }
            let mut answer = json!({ "id": node });
            if let Some(ig) = state.linked_instagram.lock().unwrap().get(*node) {
                answer["instagram_business_account"] = json!({ "id": ig });
            }
            json_response(200, answer)
        }
        (&Method::GET, [_version, _account]) if query.starts_with("fields=mentioned_") => {
            let fields: String = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "fields")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            // mentioned_comment.comment_id(ID){…} or mentioned_media.media_id(ID){…}
            let (edge, rest) = fields.split_once('.').unwrap_or_default();
            // As Graph: a field the edge does not have fails the whole call (Mentioned
            // Media documents caption, comments, comments_count, id, like_count,
            // media_type, media_url, owner, timestamp and username — no permalink).
            if edge == "mentioned_media" {
                const DOCUMENTED: &[&str] = &[
                    "caption",
                    "comments",
                    "comments_count",
                    "id",
                    "like_count",
                    "media_type",
                    "media_url",
                    "owner",
                    "timestamp",
                    "username",
                ];
                let asked = rest
                    .split_once('{')
                    .map(|(_, f)| f.trim_end_matches('}'))
                    .unwrap_or_default();
                if let Some(bad) = asked.split(',').find(|f| !DOCUMENTED.contains(&f.trim())) {
                    return graph_error(
                        400,
                        100,
                        None,
                        &format!(
                            "(#100) Tried accessing nonexisting field ({bad}) on node type (ShadowIGMedia)"
                        ),
                    );
                }
            }
            let id = rest
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(id, _)| id)
                .unwrap_or_default();
            match state.mentions.lock().unwrap().get(id) {
                Some(answer) => json_response(200, json!({ edge: answer, "id": page })),
                None => graph_error(
                    400,
                    100,
                    None,
                    "(#100) Comments are disabled for this media or it is not available",
                ),
            }
        }
        (&Method::POST, [_version, _account, "mentions"]) => {
            let v: Value = serde_json::from_slice(req.body()).unwrap_or_default();
            let (Some(media), Some(message)) = (v["media_id"].as_str(), v["message"].as_str())
            else {
                return graph_error(400, 100, None, "(#100) media_id and message are required");
            };
            let target = v["comment_id"].as_str().unwrap_or(media).to_owned();
            let mut comments = state.comments.lock().unwrap();
            let id = format!("{}", 18_100_000_000_000_000u64 + comments.len() as u64 + 1);
            comments.push(SentComment {
                object_id: target,
                message: Some(message.to_owned()),
                photo: None,
                id: id.clone(),
                received_at: std::time::Instant::now(),
            });
            json_response(200, json!({ "id": id }))
        }
        (&Method::GET, [_version, media]) if query == "fields=permalink" => {
            match state.media.lock().unwrap().get(*media) {
                Some(link) => json_response(200, json!({"permalink": link, "id": media})),
                None => graph_error(400, 100, Some(33), "Unsupported get request."),
            }
        }
        (&Method::GET, [_version, psid]) => {
            if *state.refuse_profiles.lock().unwrap() {
                return graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                );
            }
            // An Instagram customer answers the fields Instagram's User Profile API has;
            // Messenger's first_name / last_name do not exist on them.
            if let Some((name, username)) = state.instagram_profiles.lock().unwrap().get(*psid) {
                let asked: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
                    .filter(|(k, _)| k == "fields")
                    .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                if let Some(other) = asked
                    .iter()
                    .find(|f| !["name", "username"].contains(&f.as_str()))
                {
                    return graph_error(
                        400,
                        100,
                        None,
                        &format!(
                            "(#100) Tried accessing nonexisting field ({other}) on node type (InstagramUser)"
                        ),
                    );
                }
                let mut answer = json!({"username": username, "id": psid});
                if let Some(name) = name {
                    answer["name"] = name.as_str().into();
                }
                return json_response(200, answer);
            }
            let names_only = *state.names_only.lock().unwrap();
            match state.profiles.lock().unwrap().get(*psid) {
                Some((first, last)) if names_only && query == "fields=name" => {
                    json_response(200, json!({"name": format!("{first} {last}"), "id": psid}))
                }
                Some(_) if names_only => graph_error(
                    400,
                    100,
                    Some(33),
                    "Unsupported get request. Object does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                ),
                Some((first, last)) => json_response(
                    200,
                    json!({"first_name": first, "last_name": last, "id": psid}),
                ),
                None => graph_error(400, 100, Some(33), "Unsupported get request."),
            }
        }
        _ => graph_error(400, 100, None, "Unknown path components"),
    }
}

/// A file sent in a multipart form: its name, content type and bytes.
pub(super) type FormFile = (String, String, Bytes);

/// The request's multipart form, if it is one: its text fields, and the file sent as
/// `file_field`.
pub(super) async fn read_form(
    req: &Request<Bytes>,
    file_field: &str,
) -> Result<Option<(HashMap<String, String>, Option<FormFile>)>, String> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Ok(None);
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| e.to_string())?;
    let body = req.body().clone();
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let (mut fields, mut file) = (HashMap::new(), None);
    while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
        let name = field.name().unwrap_or("").to_owned();
        if name == file_field {
            let file_name = field.file_name().unwrap_or("").to_owned();
            let ct = field
                .content_type()
                .map(|m| m.to_string())
                .unwrap_or_default();
            file = Some((
                file_name,
                ct,
                field.bytes().await.map_err(|e| e.to_string())?,
            ));
        } else {
            fields.insert(name, field.text().await.map_err(|e| e.to_string())?);
        }
    }
    Ok(Some((fields, file)))
}

/// Reads a comment call: JSON `{message}` or multipart `message` + `source` photo.
pub(super) async fn read_comment(
    req: &Request<Bytes>,
) -> Result<(Option<String>, Option<FormFile>), String> {
    if let Some((mut fields, photo)) = read_form(req, "source").await? {
        if photo.is_none() {
            return Err("(#100) source must be a photo".into());
        }
        return Ok((fields.remove("message"), photo));
    }
    let v: Value =
        serde_json::from_slice(req.body()).map_err(|e| format!("(#100) body is not JSON: {e}"))?;
    match v.get("message").and_then(|m| m.as_str()) {
        Some(m) if !m.is_empty() => Ok((Some(m.to_owned()), None)),
        _ => Err("(#100) message is required".into()),
    }
}

/// Reads a Send API call, JSON or multipart, the way Graph validates it.
pub(super) async fn read_send(
    req: &Request<Bytes>,
    page: &str,
    fetcher: Option<&reqwest::Client>,
) -> Result<SentMessage, String> {
    let mut fields: HashMap<String, Value> = HashMap::new();
    let mut attachment = None;
    if let Some((form, file)) = read_form(req, "filedata").await? {
        for (name, text) in form {
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            fields.insert(name, value);
        }
        let kind = fields
            .get("message")
            .and_then(|m| m.pointer("/attachment/type"))
            .and_then(|t| t.as_str())
            .ok_or("(#100) message.attachment.type is required with filedata")?
            .to_owned();
        let (file_name, ct, bytes) = file.ok_or("(#100) filedata is required")?;
        attachment = Some((kind, file_name, ct, bytes));
    } else {
        let v: Value = serde_json::from_slice(req.body())
            .map_err(|e| format!("(#100) body is not JSON: {e}"))?;
        for (k, val) in v.as_object().ok_or("(#100) body must be an object")? {
            fields.insert(k.clone(), val.clone());
        }
    }
    let recipient = fields
        .get("recipient")
        .cloned()
        .ok_or("(#100) recipient is required")?;
    let messaging_type = fields
        .get("messaging_type")
        .and_then(|v| v.as_str())
        .ok_or("(#100) messaging_type is required")?
        .to_owned();
    let tag = fields
        .get("tag")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if messaging_type == "MESSAGE_TAG" && tag.is_none() {
        return Err("(#100) tag is required for MESSAGE_TAG".into());
    }
    let message = fields.get("message").cloned().unwrap_or_default();
    let text = message
        .get("text")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    if let Some(t) = &text
        && t.chars().count() > 2000
    {
        return Err(
            "(#100) Length of param message[text] must be less than or equal to 2000".into(),
        );
    }
    // An attachment given by URL: fetched now, as Meta does, or the send fails.
    if let (None, Some(url), Some(kind)) = (
        &attachment,
        message
            .pointer("/attachment/payload/url")
            .and_then(|u| u.as_str()),
        message.pointer("/attachment/type").and_then(|t| t.as_str()),
    ) {
        let failed = || "(#100) Upload attachment failure.".to_owned();
        let response = match fetcher {
            Some(client) => client.get(url).send().await.map_err(|_| failed())?,
            None => reqwest::get(url).await.map_err(|_| failed())?,
        };
        if !response.status().is_success() {
            return Err(failed());
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let bytes = response.bytes().await.map_err(|_| failed())?;
        attachment = Some((kind.to_owned(), name, content_type, bytes));
    }
    if text.is_none() && attachment.is_none() {
        return Err("(#100) message must have text or an attachment".into());
    }
    Ok(SentMessage {
        page_id: page.to_owned(),
        recipient,
        messaging_type,
        tag,
        text,
        metadata: message
            .get("metadata")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        attachment,
        message_id: String::new(),
        received_at: std::time::Instant::now(),
    })
}
