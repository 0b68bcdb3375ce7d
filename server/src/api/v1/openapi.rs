//! The OpenAPI 3.0 document of `/api/v1`, written by hand next to the routes it describes.
//! [`ROUTES`] lists every route the router serves; `tests/it/api_v1.rs` checks the document's
//! paths and methods are exactly these, and the contract test (`server/tests/api-contract/`)
//! runs schemathesis against the served document.

use serde_json::{json, Value};

use crate::tenants::{Scope, LIMIT_NAMES};

/// Every route `/api/v1` serves: (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/apps"),
    ("post", "/api/v1/apps"),
    ("get", "/api/v1/apps/{app_id}"),
    ("patch", "/api/v1/apps/{app_id}"),
    ("delete", "/api/v1/apps/{app_id}"),
    ("post", "/api/v1/apps/{app_id}/keys/rotate"),
    ("post", "/api/v1/apps/{app_id}/keys/revoke"),
    ("get", "/api/v1/apps/{app_id}/webhooks"),
    ("post", "/api/v1/apps/{app_id}/webhooks"),
    ("patch", "/api/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("delete", "/api/v1/apps/{app_id}/webhooks/{webhook_id}"),
    ("get", "/api/v1/apps/{app_id}/usage"),
];

fn error_ref() -> Value {
    json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } })
}

/// The error answers every authenticated operation may give, plus `extra`.
fn errors(extra: &[&str]) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    for code in ["400", "401", "403", "429", "503"]
        .iter()
        .chain(extra.iter().filter(|c| **c != "400"))
    {
        map.insert(
            (*code).to_owned(),
            json!({ "$ref": format!("#/components/responses/E{code}") }),
        );
    }
    map
}

fn operation(
    id: &str,
    summary: &str,
    scope: Scope,
    ok: (&str, Value),
    extra_errors: &[&str],
    body: Option<&str>,
) -> Value {
    let mut responses = errors(extra_errors);
    responses.insert(ok.0.to_owned(), ok.1);
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "description": format!("Needs the `{scope}` scope."),
        "security": [{ "bearer": [] }],
        "responses": responses,
    });
    if let Some(schema) = body {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{schema}") }
            } }
        });
    }
    op
}

fn json_of(schema: &str, description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") }
        } }
    })
}

/// The OpenAPI links from an answer holding an app to the operations on that app (clients and
/// the contract test's stateful phase follow them).
fn with_app_links(mut response: Value) -> Value {
    let mut links = serde_json::Map::new();
    for id in [
        "getApp",
        "updateApp",
        "deleteApp",
        "rotateKey",
        "revokeKey",
        "listWebhooks",
        "addWebhook",
        "getUsage",
    ] {
        links.insert(
            id.to_owned(),
            json!({ "operationId": id, "parameters": { "app_id": "$response.body#/id" } }),
        );
    }
    response["links"] = Value::Object(links);
    response
}

fn path_param(name: &str) -> Value {
    json!({
        "name": name, "in": "path", "required": true,
        "schema": { "type": "string", "maxLength": 64 }
    })
}

fn limits_schema() -> Value {
    let mut properties = serde_json::Map::new();
    for name in LIMIT_NAMES {
        properties.insert(
            (*name).to_owned(),
            json!({ "type": "integer", "minimum": 0, "format": "int64" }),
        );
    }
    json!({
        "type": "object",
        "description": "Limits by name; 0 means unlimited.",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The document.
pub fn document() -> Value {
    let no_content = json!({ "description": "Done." });
    let app_id = path_param("app_id");
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Herald management API",
            "version": "1",
            "description": "Manage a tenant's apps, keys, webhooks and usage with a bearer token \
                            made in the dashboard (API tokens) or by `herald tokens create`."
        },
        "servers": [{ "url": "/" }],
        "paths": {
            "/api/v1/openapi.json": { "get": {
                "operationId": "openapi",
                "summary": "This document (no token needed).",
                "security": [],
                "responses": { "200": {
                    "description": "The OpenAPI document.",
                    "content": { "application/json": { "schema": { "type": "object" } } }
                } }
            } },
            "/api/v1/apps": {
                "get": {
                    "parameters": [
                        { "name": "limit", "in": "query", "required": false,
                          "schema": { "type": "integer", "minimum": 1, "maximum": 100 } },
                        { "name": "cursor", "in": "query", "required": false,
                          "schema": { "type": "string" } }
                    ],
                    "operationId": "listApps",
                    "summary": "List the tenant's apps, by id, a page at a time.",
                    "description": "Needs the `apps:read` scope.",
                    "security": [{ "bearer": [] }],
                    "responses": merged(errors(&["400"]), "200", json_of("AppPage", "A page of apps.")),
                },
                "post": operation("createApp", "Create an app (the answer holds its secret).",
                    Scope::AppsWrite, ("201", with_app_links(json_of("AppWithSecret", "The new app."))),
                    &["400", "409", "413", "415", "422"], Some("NewApp")),
            },
            "/api/v1/apps/{app_id}": {
                "parameters": [app_id.clone()],
                "get": operation("getApp", "One app (no secrets).", Scope::AppsRead,
                    ("200", json_of("App", "The app.")), &["404"], None),
                "patch": operation("updateApp", "Change an app's name, switches, origins, limits or Mercure settings.",
                    Scope::AppsWrite, ("200", json_of("App", "The app after the change.")),
                    &["400", "404", "409", "413", "415", "422"], Some("AppChanges")),
                "delete": operation("deleteApp", "Delete an app (its connections are closed).",
                    Scope::AppsWrite, ("204", no_content.clone()), &["404"], None),
            },
            "/api/v1/apps/{app_id}/keys/rotate": {
                "parameters": [app_id.clone()],
                "post": operation("rotateKey", "Add a new key pair; the old one works for the grace period.",
                    Scope::KeysWrite, ("200", json_of("AppWithSecret", "The app with its new key and secret.")),
                    &["400", "404", "409", "413", "415", "422"], Some("Rotation")),
            },
            "/api/v1/apps/{app_id}/keys/revoke": {
                "parameters": [app_id.clone()],
                "post": operation("revokeKey", "Revoke one of the app's key pairs (the other must still work).",
                    Scope::KeysWrite, ("200", json_of("App", "The app after the revocation.")),
                    &["400", "404", "409", "413", "415", "422"], Some("Revocation")),
            },
            "/api/v1/apps/{app_id}/webhooks": {
                "parameters": [app_id.clone()],
                "get": operation("listWebhooks", "The app's webhook endpoints.", Scope::WebhooksRead,
                    ("200", json_of("WebhookList", "The endpoints.")), &["404"], None),
                "post": operation("addWebhook", "Add a webhook endpoint.", Scope::WebhooksWrite,
                    ("201", {
                        let mut ok = json_of("Webhook", "The new endpoint.");
                        let parameters = json!({
                            "app_id": "$response.body#/app_id",
                            "webhook_id": "$response.body#/id"
                        });
                        ok["links"] = json!({
                            "updateWebhook": { "operationId": "updateWebhook", "parameters": parameters },
                            "removeWebhook": { "operationId": "removeWebhook", "parameters": parameters },
                        });
                        ok
                    }),
                    &["400", "404", "409", "413", "415", "422"], Some("NewWebhook")),
            },
            "/api/v1/apps/{app_id}/webhooks/{webhook_id}": {
                "parameters": [app_id.clone(), path_param("webhook_id")],
                "patch": operation("updateWebhook", "Change an endpoint's URL, events, channel prefix or headers (left out: unchanged).",
                    Scope::WebhooksWrite, ("200", json_of("Webhook", "The endpoint after the change.")),
                    &["400", "404", "409", "413", "415", "422"], Some("WebhookChanges")),
                "delete": operation("removeWebhook", "Remove a webhook endpoint.", Scope::WebhooksWrite,
                    ("204", no_content), &["404"], None),
            },
            "/api/v1/apps/{app_id}/usage": {
                "parameters": [app_id],
                "get": operation("getUsage", "The app's stored usage: today and the last 30 days.",
                    Scope::UsageRead, ("200", json_of("Usage", "The usage.")), &["404"], None),
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A management API token (`hrld_...`), scoped to one tenant and to: \
                                    apps:read, apps:write, keys:write, webhooks:read, webhooks:write, usage:read. \
                                    Setting an app's Mercure jwt_key or jwt_public_key needs keys:write \
                                    as well as apps:write; webhooks:read sees webhook URLs masked \
                                    unless the token also has webhooks:write."
                }
            },
            "responses": {
                "E400": { "description": "Malformed request (`invalid_json`, `invalid_cursor`, `invalid_limit`, `invalid_query`, `invalid_path`).", "content": error_ref() },
                "E401": { "description": "No token, or an invalid, expired or revoked one (`missing_token`, `invalid_token`, `token_expired`, `token_revoked`).", "content": error_ref() },
                "E403": { "description": "The token lacks the scope (`insufficient_scope`), or the tenant's plan forbids the change (`forbidden`).", "content": error_ref() },
                "E404": { "description": "No such app (or another tenant's) or endpoint (`app_not_found`, `not_found`).", "content": error_ref() },
                "E409": { "description": "The change clashes with what is stored (`conflict`).", "content": error_ref() },
                "E413": { "description": "The body is over 64 KiB (`body_too_large`).", "content": error_ref() },
                "E415": { "description": "The body is not JSON (`unsupported_media_type`).", "content": error_ref() },
                "E422": { "description": "A value is not acceptable (`validation_failed`).", "content": error_ref() },
                "E429": { "description": "Over the tenant's rate on this node (`rate_limited`), or the client address had 120 401 answers this minute (`too_many_unauthorized`); see Retry-After.", "content": error_ref() },
                "E503": { "description": "The store is busy or unreachable (`busy`, `unavailable`).", "content": error_ref() },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "pattern": "^[a-z_]+$" },
                            "message": { "type": "string" }
                        }
                    } }
                },
                "Limits": limits_schema(),
                "Mercure": {
                    "type": "object",
                    "required": ["jwt_key", "audience", "issuer", "anonymous", "history_size", "history_seconds"],
                    "properties": {
                        "jwt_key": { "type": "string", "enum": ["app_secret", "hs256", "public_key"] },
                        "audience": { "type": "string", "nullable": true },
                        "issuer": { "type": "string", "nullable": true },
                        "anonymous": { "type": "boolean" },
                        "history_size": { "type": "integer", "minimum": 0 },
                        "history_seconds": { "type": "integer", "minimum": 0 }
                    }
                },
                "MercureInput": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "jwt_key": { "type": "string", "description": "An HS256 key of 32 bytes or more (\"\": back to the app's secret)." },
                        "jwt_public_key": { "type": "string", "description": "A PEM public key (RS256 or ES256)." },
                        "audience": { "type": "string" },
                        "issuer": { "type": "string" },
                        "anonymous": { "type": "boolean" },
                        "history_size": { "type": "integer", "minimum": 0 },
                        "history_seconds": { "type": "integer", "minimum": 0 }
                    }
                },
                "App": {
                    "type": "object",
                    "required": ["id", "name", "key", "tenant_id", "plan", "enabled", "client_events",
                                 "subscription_count", "allowed_origins", "limits", "previous_key",
                                 "created_at", "mercure"],
                    "properties": {
                        "id": { "type": "string" },
                        "name": { "type": "string" },
                        "key": { "type": "string" },
                        "tenant_id": { "type": "string" },
                        "plan": { "type": "string" },
                        "enabled": { "type": "boolean" },
                        "client_events": { "type": "boolean" },
                        "subscription_count": { "type": "boolean" },
                        "allowed_origins": { "type": "array", "items": { "type": "string" } },
                        "limits": { "$ref": "#/components/schemas/Limits" },
                        "previous_key": {
                            "type": "object",
                            "nullable": true,
                            "required": ["key", "expires_at"],
                            "properties": {
                                "key": { "type": "string" },
                                "expires_at": { "type": "integer", "description": "Unix seconds; 0: until revoked." }
                            }
                        },
                        "created_at": { "type": "integer" },
                        "mercure": { "$ref": "#/components/schemas/Mercure" },
                        "secret": { "type": "string", "description": "Only in the answers that made it." }
                    }
                },
                "AppWithSecret": {
                    "allOf": [ { "$ref": "#/components/schemas/App" }, { "type": "object", "required": ["secret"] } ]
                },
                "AppPage": {
                    "type": "object",
                    "required": ["data", "next_cursor"],
                    "properties": {
                        "data": { "type": "array", "items": { "$ref": "#/components/schemas/App" } },
                        "next_cursor": { "type": "string", "nullable": true, "description": "Pass as `cursor` for the next page; null on the last." }
                    }
                },
                "NewApp": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "plan": { "type": "string" },
                        "enabled": { "type": "boolean" },
                        "client_events": { "type": "boolean" },
                        "subscription_count": { "type": "boolean" },
                        "allowed_origins": { "type": "array", "items": { "type": "string" } },
                        "limits": { "$ref": "#/components/schemas/Limits" },
                        "mercure": { "$ref": "#/components/schemas/MercureInput" }
                    }
                },
                "AppChanges": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "enabled": { "type": "boolean" },
                        "client_events": { "type": "boolean" },
                        "subscription_count": { "type": "boolean" },
                        "allowed_origins": { "type": "array", "items": { "type": "string" } },
                        "limits": { "$ref": "#/components/schemas/Limits" },
                        "mercure": { "$ref": "#/components/schemas/MercureInput" }
                    }
                },
                "Rotation": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "grace_seconds": { "type": "integer", "minimum": 0, "maximum": 2_592_000,
                                           "description": "Seconds the old pair keeps working (default 86400; 0: until revoked)." }
                    }
                },
                "Revocation": {
                    "type": "object",
                    "required": ["key"],
                    "additionalProperties": false,
                    "properties": { "key": { "type": "string" } }
                },
                "Webhook": {
                    "type": "object",
                    "required": ["id", "app_id", "url", "events", "channel_prefix", "header_names", "created_at"],
                    "properties": {
                        "id": { "type": "string" },
                        "app_id": { "type": "string" },
                        "url": { "type": "string" },
                        "events": { "type": "array", "items": { "type": "string" } },
                        "channel_prefix": { "type": "string" },
                        "header_names": { "type": "array", "items": { "type": "string" } },
                        "headers_dropped": { "type": "boolean",
                                             "description": "Only after a PATCH that moved the endpoint to another origin without `headers`: the stored headers were dropped." },
                        "created_at": { "type": "integer" }
                    }
                },
                "WebhookList": {
                    "type": "object",
                    "required": ["data"],
                    "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Webhook" } } }
                },
                "NewWebhook": {
                    "type": "object",
                    "required": ["url", "events"],
                    "additionalProperties": false,
                    "properties": {
                        "url": { "type": "string" },
                        "events": { "type": "array", "items": { "type": "string" } },
                        "channel_prefix": { "type": "string" },
                        "headers": { "type": "array", "items": { "type": "string" }, "description": "`Name: value`" }
                    }
                },
                "WebhookChanges": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "url": { "type": "string" },
                        "events": { "type": "array", "items": { "type": "string" } },
                        "channel_prefix": { "type": "string" },
                        "headers": { "type": "array", "items": { "type": "string" },
                                     "description": "`Name: value`; replaces every extra header (left out: kept, unless `url` names another origin (scheme, host, port): then dropped)." }
                    }
                },
                "Day": {
                    "type": "object",
                    "required": ["date", "day", "messages", "peak_connections"],
                    "properties": {
                        "date": { "type": "string" },
                        "day": { "type": "integer" },
                        "messages": { "type": "integer", "minimum": 0 },
                        "peak_connections": { "type": "integer", "minimum": 0 }
                    }
                },
                "Usage": {
                    "type": "object",
                    "required": ["app_id", "today", "days"],
                    "properties": {
                        "app_id": { "type": "string" },
                        "today": { "$ref": "#/components/schemas/Day" },
                        "days": { "type": "array", "items": { "$ref": "#/components/schemas/Day" } }
                    }
                }
            }
        }
    })
}

fn merged(
    mut map: serde_json::Map<String, Value>,
    status: &str,
    response: Value,
) -> serde_json::Map<String, Value> {
    map.insert(status.to_owned(), response);
    map
}
