//! The OpenAPI 3.1 document of the creators' API, generated from the
//! handlers' annotations and the response types below (served at
//! `/v1/openapi.json`).

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// Why an asset errored.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetError {
    /// Stable code (`not_media`, `truncated`, ...).
    pub code: String,
    /// What the creator can do about it.
    pub message: Option<String>,
}

/// A published rendition.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenditionView {
    /// Name (`1080p`, `audio`).
    pub name: String,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codecs.
    pub codecs: String,
    /// Width in pixels (video).
    pub width: Option<i32>,
    /// Height in pixels (video).
    pub height: Option<i32>,
    /// Frame rate as a rational (video).
    pub frame_rate: Option<String>,
    /// Channels (audio).
    pub channels: Option<i32>,
    /// Sample rate (audio).
    pub sample_rate: Option<i32>,
    /// Peak bitrate, bit/s.
    pub bandwidth: i64,
    /// Average bitrate, bit/s.
    pub average_bandwidth: i64,
    /// Media segments.
    pub segment_count: i32,
    /// Encoder used.
    pub encoder: String,
    /// The storage tier holding its media (`hot`, or one of
    /// `storage.tiers`).
    pub storage_tier: String,
}

impl From<cascade_platform::assets::RenditionRow> for RenditionView {
    fn from(r: cascade_platform::assets::RenditionRow) -> Self {
        Self {
            name: r.name,
            kind: r.kind,
            codecs: r.codecs,
            width: r.width,
            height: r.height,
            frame_rate: r.frame_rate,
            channels: r.channels,
            sample_rate: r.sample_rate,
            bandwidth: r.bandwidth,
            average_bandwidth: r.average_bandwidth,
            segment_count: r.segment_count,
            encoder: r.encoder,
            storage_tier: r.tier,
        }
    }
}

/// Where players fetch a ready asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlaybackUrls {
    /// HLS master playlist.
    pub hls: String,
    /// DASH MPD.
    pub dash: String,
}

/// A simple upload target.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleUpload {
    /// Always `PUT`.
    pub method: String,
    /// Where to send the file.
    pub url: String,
}

/// A tus upload target.
#[derive(Debug, Serialize, ToSchema)]
pub struct TusUpload {
    /// The tus creation endpoint.
    pub url: String,
    /// `Upload-Metadata` to send so the upload fills this asset.
    pub upload_metadata: String,
}

/// How to upload a waiting asset's source.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadUrls {
    /// One request with the whole file.
    pub simple: SimpleUpload,
    /// Resumable (tus 1.0.0).
    pub tus: TusUpload,
}

/// An asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetView {
    /// Asset id.
    pub id: uuid::Uuid,
    /// Public playback id (distinct from the asset id).
    pub playback_id: String,
    /// `public` or `signed`.
    pub playback_policy: String,
    /// `waiting`, `processing`, `ready` or `errored`; `archived` (only the
    /// source is kept: the next play of its playback URLs restores it) or
    /// `restoring` (being rebuilt; plays get 503 with `Retry-After` until
    /// it is `ready` again, with the `asset.restored` webhook).
    pub state: String,
    /// Players can start: the asset is ready, or (progressive publish) its
    /// first segments are out while the rest is still processing. The HLS
    /// URL then serves growing playlists (`EXT-X-PLAYLIST-TYPE:EVENT`,
    /// `EXT-X-ENDLIST` once ready); the DASH MPD appears when it is ready.
    pub playable: bool,
    /// Percent transcoded.
    pub progress: f32,
    /// Title.
    pub title: Option<String>,
    /// The creator's metadata object.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Source duration, once known.
    pub duration_seconds: Option<f64>,
    /// Why it errored.
    pub error: Option<AssetError>,
    /// Published renditions.
    pub renditions: Vec<RenditionView>,
    /// The publish gate's checks of the published version
    /// (`transcode.qa_gate`): `gate` (`passed`, or `warned`: published with
    /// failed checks), `version`, `checks_passed`, `checks_failed`,
    /// `checks_skipped`, `failures` (`check`, `rendition`, `message`,
    /// `expected`, `measured`), `renditions` (per rendition: `name`, `kind`,
    /// `codecs`, `frames`, `duration_s`, `average_bitrate`, `peak_bitrate`,
    /// `target_bitrate`, `peak_bitrate_limit`, `passed`, `failed`; video
    /// also `psnr_y_mean`, `psnr_y_min`, `ssim_y_mean` and `frames_sampled`:
    /// PSNR-Y and SSIM-Y against the source on sampled frames) and
    /// `seconds`; `corrected` when the version is a corrective take of one
    /// whose rungs went over their caps (`failed_version`, `rate_scale` per
    /// rung, `failed_checks`). Absent when the version was not checked
    /// (docs/qa.md).
    #[schema(value_type = Option<Object>)]
    pub quality: Option<serde_json::Value>,
    /// Playback URLs, once playable.
    pub playback: Option<PlaybackUrls>,
    /// Upload targets, while waiting.
    pub upload: Option<UploadUrls>,
    /// Creation time.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A page of assets.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetList {
    /// Newest first.
    pub data: Vec<AssetView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// `Tus-Resumable`: the tus protocol version of a request or response; this
/// server speaks only 1.0.0 (anything else gets 412).
#[derive(Debug, ToSchema)]
pub enum TusResumable {
    /// tus 1.0.0.
    #[schema(rename = "1.0.0")]
    V1_0_0,
}

/// A request body of raw bytes (a source file, or a tus PATCH).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BinaryBody(pub Vec<u8>);

/// Request bodies that may be left out. utoipa marks a body optional only
/// when its type is an `Option`, which would also make raw bytes nullable.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // tus creation: a body is creation-with-upload, none is plain creation.
        let creation = openapi
            .paths
            .paths
            .get_mut("/v1/uploads")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut());
        if let Some(RefOr::T(body)) = creation {
            body.required = Some(Required::False);
        }
        // The same at a direct upload URL.
        let direct = openapi
            .paths
            .paths
            .get_mut("/v1/direct_uploads/{id}/{secret}")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut());
        if let Some(RefOr::T(body)) = direct {
            body.required = Some(Required::False);
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Cascade API", description = "Assets, uploads (simple and tus 1.0.0), direct upload URLs for browsers, playback URLs and signed playback tokens."),
    paths(
        crate::asset_api::create_asset,
        crate::asset_api::list_assets,
        crate::asset_api::get_asset,
        crate::asset_api::delete_asset,
        crate::simple_upload::put_source,
        crate::simple_upload::put_replacement,
        crate::playback_tokens::create,
        crate::tus::handlers::options,
        crate::tus::handlers::create,
        crate::tus::handlers::head,
        crate::tus::handlers::patch,
        crate::tus::handlers::terminate,
        crate::live_api::create,
        crate::live_api::list,
        crate::live_api::get,
        crate::live_api::delete,
        crate::live_api::reset_stream_key,
        crate::live_api::disable,
        crate::live_api::enable,
        crate::playback_tokens::create_for_live_stream,
        crate::webhook_endpoints::create,
        crate::webhook_endpoints::list,
        crate::webhook_endpoints::get,
        crate::webhook_endpoints::delete,
        crate::direct::create,
        crate::direct::get_one,
        crate::direct::cancel,
        crate::direct::url::options,
        crate::direct::url::tus_create,
        crate::direct::url::tus_head,
        crate::direct::url::tus_patch,
        crate::direct::url::tus_terminate,
        crate::direct::url::simple,
    ),
    components(schemas(ErrorBody, AssetView, AssetList, crate::asset_api::CreateAsset, TusResumable,
        crate::playback_tokens::CreatePlaybackToken, crate::playback_tokens::PlaybackTokenView,
        crate::webhook_endpoints::CreateWebhookEndpoint, crate::webhook_endpoints::WebhookEndpointView,
        crate::webhook_endpoints::WebhookEndpointList,
        crate::direct::CreateDirectUpload, crate::direct::NewAssetSettings, crate::direct::DirectUploadView,
        crate::live_api::CreateLiveStream, crate::live_api::LiveStreamView, crate::live_api::LiveStreamList,
        crate::live_api::RtmpView)),
    tags((name = "webhooks", description = "Where an environment's asset and live stream events are POSTed."),
        (name = "live", description = "Live streams: publish over RTMP with the stream key, watch live HLS and DASH, broadcasts recorded as assets."),
        (name = "tus", description = "Resumable uploads, tus 1.0.0 (core, creation, creation-with-upload, termination, checksum, expiration)."),
        (name = "direct uploads", description = "One-time upload URLs for browsers: created with an API key, used without one \
            (tus 1.0.0 or one PUT), CORS for one web origin.")),
    modifiers(&BearerAuth, &OptionalBodies),
    security(("api_key" = []))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serializes")
    }

    fn param<'a>(operation: &'a Value, name: &str) -> &'a Value {
        operation["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no parameter {name}"))
    }

    fn statuses(operation: &Value) -> Vec<&str> {
        operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn tus_operations_are_in_the_document_as_routed() {
        let doc = document();
        let paths = &doc["paths"];
        for (path, method, id) in [
            ("/v1/uploads", "options", "tus_options"),
            ("/v1/uploads", "post", "tus_create"),
            ("/v1/uploads/{id}", "head", "tus_head"),
            ("/v1/uploads/{id}", "patch", "tus_patch"),
            ("/v1/uploads/{id}", "delete", "tus_terminate"),
        ] {
            let operation = &paths[path][method];
            assert_eq!(operation["operationId"], id, "{method} {path}");
            assert_eq!(operation["tags"], json!(["tus"]), "{method} {path}");
            if path.contains("{id}") {
                let id = param(operation, "id");
                assert_eq!((&id["in"], &id["required"]), (&json!("path"), &json!(true)));
            }
            if method != "options" {
                let version = param(operation, "Tus-Resumable");
                assert_eq!(
                    (&version["in"], &version["required"]),
                    (&json!("header"), &json!(true))
                );
                // The bearer key of the whole document applies.
                assert!(operation.get("security").is_none(), "{method} {path}");
            }
        }
        assert!(paths["/v1/uploads"]["get"].is_null());
        assert!(paths["/v1/uploads/{id}"]["get"].is_null());
        // Discovery needs no key.
        assert_eq!(paths["/v1/uploads"]["options"]["security"], json!([{}]));
        assert_eq!(
            doc["components"]["schemas"]["TusResumable"]["enum"],
            json!(["1.0.0"])
        );
    }

    #[test]
    fn playback_tokens_are_documented_as_answered() {
        let doc = document();
        let operation = &doc["paths"]["/v1/assets/{id}/playback_tokens"]["post"];
        assert_eq!(operation["operationId"], "create_playback_token");
        assert_eq!(
            statuses(operation),
            ["201", "400", "401", "404", "408", "409", "413", "415", "429", "503"]
        );
        assert_eq!(
            operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PlaybackTokenView"
        );
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status != "201" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{status}"
                );
            }
        }
        assert_ne!(operation["requestBody"]["required"], json!(true));
        let view = &doc["components"]["schemas"]["PlaybackTokenView"];
        assert_eq!(
            view["required"],
            json!(["token", "key_id", "expires_at", "playback"])
        );
        assert_eq!(view["properties"]["expires_at"]["format"], "date-time");
        let request = &doc["components"]["schemas"]["CreatePlaybackToken"];
        assert_eq!(request["properties"]["ttl_seconds"]["minimum"], json!(1));
    }

    #[test]
    fn direct_upload_operations_are_documented_as_answered() {
        let doc = document();
        let paths = &doc["paths"];
        let url = "/v1/direct_uploads/{id}/{secret}";
        for (path, method, id, codes) in [
            (
                "/v1/direct_uploads",
                "post",
                "create_direct_upload",
                &["201", "400", "401", "408", "413", "429"][..],
            ),
            (
                "/v1/direct_uploads/{id}",
                "get",
                "get_direct_upload",
                &["200", "401", "404", "429"][..],
            ),
            (
                "/v1/direct_uploads/{id}/cancel",
                "put",
                "cancel_direct_upload",
                &["200", "401", "404", "409", "429"][..],
            ),
            (
                url,
                "options",
                "direct_upload_options",
                &["204", "403", "404", "410", "429"][..],
            ),
            (
                url,
                "post",
                "direct_upload_tus_create",
                &[
                    "201", "204", "400", "403", "404", "408", "409", "410", "412", "413", "415",
                    "423", "429", "460",
                ][..],
            ),
            (
                url,
                "head",
                "direct_upload_tus_head",
                &["200", "403", "404", "410", "412", "429"][..],
            ),
            (
                url,
                "patch",
                "direct_upload_tus_patch",
                &[
                    "204", "400", "403", "404", "408", "409", "410", "412", "413", "415", "423",
                    "429", "460",
                ][..],
            ),
            (
                url,
                "delete",
                "direct_upload_tus_terminate",
                &["204", "403", "404", "409", "410", "412", "423", "429"][..],
            ),
            (
                url,
                "put",
                "direct_upload_put",
                &[
                    "202", "400", "403", "404", "408", "409", "410", "413", "422", "429",
                ][..],
            ),
        ] {
            let operation = &paths[path][method];
            assert_eq!(operation["operationId"], id, "{method} {path}");
            assert_eq!(
                operation["tags"],
                json!(["direct uploads"]),
                "{method} {path}"
            );
            assert_eq!(statuses(operation), codes, "{method} {path}");
            if path == url {
                // The URL's secret is the credential: no API key.
                assert_eq!(operation["security"], json!([{}]), "{method} {path}");
                for name in ["id", "secret"] {
                    let p = param(operation, name);
                    assert_eq!((&p["in"], &p["required"]), (&json!("path"), &json!(true)));
                }
            } else {
                assert!(operation.get("security").is_none(), "{method} {path}");
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') && method != "head" {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert_eq!(
            paths[url]["post"]["requestBody"]["required"],
            json!(false),
            "creation-with-upload is optional"
        );
        assert_eq!(
            param(&paths[url]["patch"], "Upload-Offset")["required"],
            json!(true)
        );
        let view = &doc["components"]["schemas"]["DirectUploadView"];
        assert_eq!(
            view["required"],
            json!([
                "id",
                "status",
                "asset_id",
                "cors_origin",
                "max_size",
                "expires_at",
                "created_at"
            ])
        );
        let request = &doc["components"]["schemas"]["CreateDirectUpload"];
        assert_eq!(request["required"], json!(["cors_origin"]));
        assert_eq!(
            paths["/v1/direct_uploads"]["post"]["responses"]["201"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/DirectUploadView"
        );
    }

    #[test]
    fn body_limits_are_documented() {
        let doc = document();
        let create = &doc["paths"]["/v1/assets"]["post"];
        assert_eq!(
            statuses(create),
            ["201", "400", "401", "408", "413", "415", "429"]
        );
        let put = &doc["paths"]["/v1/assets/{id}/source"]["put"];
        assert_eq!(
            statuses(put),
            ["202", "400", "401", "404", "408", "409", "413", "422", "429", "507"]
        );
        for (operation, status, needle) in [
            (create, "413", "64 KiB"),
            (put, "408", "body_min_rate"),
            (put, "429", "too_many_uploads"),
        ] {
            let description = operation["responses"][status]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(description.contains(needle), "{status}: {description}");
        }
    }

    #[test]
    fn tus_headers_bodies_and_statuses_match_the_handlers() {
        let doc = document();
        let non_negative = json!({"type": "integer", "format": "int64", "minimum": 0});

        let options = &doc["paths"]["/v1/uploads"]["options"];
        assert_eq!(statuses(options), ["204"]);
        let headers = &options["responses"]["204"]["headers"];
        for name in [
            "Tus-Resumable",
            "Tus-Version",
            "Tus-Extension",
            "Tus-Checksum-Algorithm",
        ] {
            assert!(headers[name].is_object(), "{name}");
        }
        assert_eq!(headers["Tus-Max-Size"]["schema"], non_negative);

        let create = &doc["paths"]["/v1/uploads"]["post"];
        // Not required: a final upload (concatenation) has none.
        let length = param(create, "Upload-Length");
        assert_eq!(
            (&length["required"], &length["schema"]),
            (&json!(false), &non_negative)
        );
        assert_eq!(param(create, "Upload-Concat")["required"], json!(false));
        assert_eq!(param(create, "Upload-Metadata")["required"], json!(false));
        assert_eq!(
            param(create, "Upload-Metadata")["schema"],
            json!({"type": "string"})
        );
        let body = &create["requestBody"];
        assert_eq!(
            body["required"],
            json!(false),
            "creation-with-upload is optional"
        );
        assert!(body["content"]["application/offset+octet-stream"].is_object());
        assert_eq!(
            statuses(create),
            ["201", "400", "401", "404", "408", "409", "412", "413", "429", "460"]
        );
        let created = &create["responses"]["201"]["headers"];
        for name in [
            "Location",
            "Tus-Resumable",
            "Upload-Expires",
            "Cascade-Asset-Id",
        ] {
            assert!(created[name].is_object(), "{name}");
        }
        assert_eq!(created["Upload-Offset"]["schema"], non_negative);

        let head = &doc["paths"]["/v1/uploads/{id}"]["head"];
        assert_eq!(statuses(head), ["200", "401", "404", "412", "429"]);
        let state = &head["responses"]["200"]["headers"];
        assert_eq!(state["Upload-Offset"]["schema"], non_negative);
        assert_eq!(state["Upload-Length"]["schema"], non_negative);
        assert!(state["Upload-Expires"].is_object() && state["Cache-Control"].is_object());
        assert!(state["Upload-Concat"].is_object());
        // HEAD responses have no body.
        assert!(head["responses"]["404"].get("content").is_none());

        let patch = &doc["paths"]["/v1/uploads/{id}"]["patch"];
        let offset = param(patch, "Upload-Offset");
        assert_eq!(
            (&offset["required"], &offset["schema"]),
            (&json!(true), &non_negative)
        );
        assert_eq!(param(patch, "Upload-Checksum")["required"], json!(false));
        let body = &patch["requestBody"];
        assert_eq!(body["required"], json!(true));
        assert_eq!(
            body["content"]["application/offset+octet-stream"]["schema"]["$ref"],
            "#/components/schemas/BinaryBody"
        );
        assert_eq!(
            doc["components"]["schemas"]["BinaryBody"]["format"],
            json!("binary")
        );
        assert_eq!(
            statuses(patch),
            [
                "204", "400", "401", "403", "404", "408", "409", "412", "413", "415", "423", "429",
                "460", "507"
            ]
        );
        assert_eq!(
            patch["responses"]["204"]["headers"]["Upload-Offset"]["schema"],
            non_negative
        );
        assert_eq!(
            patch["responses"]["460"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );

        let terminate = &doc["paths"]["/v1/uploads/{id}"]["delete"];
        assert_eq!(
            statuses(terminate),
            ["204", "401", "404", "409", "412", "429"]
        );
        assert!(terminate.get("requestBody").is_none());
        // Every error is the JSON error body, and names the protocol version.
        for operation in [create, patch, terminate] {
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(response["headers"]["Tus-Resumable"].is_object(), "{status}");
                if status.starts_with('4') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{status}"
                    );
                }
            }
            assert!(operation["responses"]["412"]["headers"]["Tus-Version"].is_object());
            assert!(operation["responses"]["429"]["headers"]["Retry-After"].is_object());
        }
    }
}
