//! The OpenAPI 3.1 document of the creators' API, generated from the
//! handlers' annotations and the response types below (served at
//! `/v1/openapi.json`).

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    /// `waiting`, `processing`, `ready` or `errored`.
    pub state: String,
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
    /// Playback URLs, once ready.
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
    info(title = "Cascade API", description = "Assets, uploads (simple and tus 1.0.0) and playback URLs."),
    paths(
        crate::api::create_asset,
        crate::api::list_assets,
        crate::api::get_asset,
        crate::api::delete_asset,
        crate::api::put_source,
    ),
    components(schemas(ErrorBody, AssetView, AssetList, crate::api::CreateAsset)),
    modifiers(&BearerAuth),
    security(("api_key" = []))
)]
pub struct ApiDoc;
