//! Releases over REST: uploading packages to the store, publishing,
//! listing, withdrawing and serving releases.
//!
//! An upload streams to a temporary file while it is hashed, so a 1 GB
//! package never sits in memory; it is kept only if its bytes have the sha256
//! it was announced with and it holds a valid manifest. Downloads honour
//! `Range` (resume), `If-Range` and `If-None-Match` against a strong `ETag`
//! (the sha256 itself).

use std::path::Path;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use flotilla_proto::domain::{ModuleKind, ModuleName, Version};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::db::{PackageRecord, ReleaseRecord};

fn check_sha256(text: &str) -> Result<String, ApiError> {
    let lower = text.to_ascii_lowercase();
    if lower.len() == 64 && lower.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(ApiError::BadRequest(format!(
            "\"{text}\" is not a sha256 (64 hex digits)"
        )))
    }
}

/// A stored or referenced package.
#[derive(Debug, Serialize, ToSchema)]
pub struct Package {
    pub sha256: String,
    pub module: String,
    pub version: String,
    pub kind: String,
    pub size: Option<i64>,
    /// Ed25519 signature (hex) over `flotilla-package-v1:<sha256>`.
    pub signature: String,
    /// Where agents download it: this controller, or the URL it was published with.
    pub url: String,
    /// The platform an agent package was built for (`linux-x86_64`,
    /// `windows-x86_64`); absent for a package every platform installs.
    pub platform: Option<String>,
}

impl From<PackageRecord> for Package {
    fn from(p: PackageRecord) -> Self {
        let url = p
            .url
            .unwrap_or_else(|| format!("/api/v1/packages/{}/file", p.sha256));
        Package {
            sha256: p.sha256,
            module: p.module,
            version: p.version,
            kind: p.kind,
            size: p.size,
            signature: p.signature,
            url,
            platform: Some(p.platform).filter(|p| !p.is_empty()),
        }
    }
}

/// A release: a version, its notes, its packages.
#[derive(Debug, Serialize, ToSchema)]
pub struct Release {
    pub version: String,
    /// Markdown.
    pub notes: String,
    pub created_at: DateTime<Utc>,
    pub packages: Vec<Package>,
    /// Set when an admin withdrew it: its packages are no longer offered.
    pub withdrawn: Option<Withdrawn>,
}

/// Who withdrew a release, when and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct Withdrawn {
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

impl From<ReleaseRecord> for Release {
    fn from(r: ReleaseRecord) -> Self {
        Release {
            version: r.version,
            notes: r.notes,
            created_at: r.created_at,
            packages: r.packages.into_iter().map(Package::from).collect(),
            withdrawn: r.withdrawn.map(|w| Withdrawn {
                at: w.at,
                by: w.by,
                reason: w.reason,
            }),
        }
    }
}

/// Why a release is withdrawn.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdraw {
    /// For the log, the audit trail and whoever looks at the release.
    #[schema(min_length = 1, max_length = 1000, pattern = "\\S")]
    pub reason: String,
}

/// Withdraw a release: its packages are no longer offered, agents drop
/// them and download the newest version still published, and no rollout of
/// it can start. Final; withdrawing it again changes nothing.
#[utoipa::path(post, path = "/api/v1/releases/{version}/withdraw", security(("token" = ["admin"]), ("session" = ["admin"])), tag = "releases",
    params(("version" = String, Path, description = "The release version")),
    request_body = Withdraw,
    responses(
        (status = OK, description = "Withdrawn (now or before)", body = Release),
        (status = BAD_REQUEST, description = "No reason given", body = ErrorBody),
        (status = NOT_FOUND, description = "No such release", body = ErrorBody),
        (status = CONFLICT, description = "A rollout of it is unfinished", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody),
    ))]
pub async fn withdraw(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<crate::auth::Caller>,
    UrlPath(version): UrlPath<String>,
    body: Result<Json<Withdraw>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Release>, ApiError> {
    let Json(withdraw) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let reason = withdraw.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(ApiError::BadRequest(
            "reason: say why, in 1 to 1000 characters".to_owned(),
        ));
    }
    let db = &state.fleet.db;
    if let Some(rollout) = db
        .rollouts()
        .await?
        .into_iter()
        .find(|r| r.release == version && r.state.is_live())
    {
        return Err(ApiError::Conflict(format!(
            "rollout {} of release {version} is {}: cancel it first",
            rollout.id, rollout.state
        )));
    }
    let withdrawal = crate::db::Withdrawal {
        at: Utc::now(),
        by: caller.name.clone(),
        reason: reason.to_owned(),
    };
    match db.withdraw_release(&version, &withdrawal).await? {
        None => return Err(ApiError::NotFound(format!("no release {version}"))),
        Some(false) => {}
        Some(true) => {
            tracing::warn!(by = %caller.name, release = %version, reason, "release withdrawn");
            match state.fleet.announcement().await {
                Ok(announcement) => state.fleet.push(announcement).await,
                Err(e) => tracing::error!("cannot tell agents of the withdrawal of {version}: {e}"),
            }
        }
    }
    let release = db
        .release(&version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release {version}")))?;
    Ok(Json(release.into()))
}

/// What an upload stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub sha256: String,
    pub size: u64,
    pub module: String,
    pub version: String,
    pub kind: String,
    /// False when the same bytes were already stored.
    pub created: bool,
}

/// Upload a package's bytes, addressed by their sha256 (streamed to disk).
#[utoipa::path(put, path = "/api/v1/packages/{sha256}", security(("token" = ["publisher"]), ("session" = ["publisher"])), tag = "releases",
    params(("sha256" = String, Path, description = "The sha256 of the bytes sent", pattern = "^[0-9a-fA-F]{64}$")),
    request_body(content = Vec<u8>, content_type = "application/zip"),
    responses(
        (status = CREATED, description = "Stored", body = Uploaded),
        (status = OK, description = "Already stored", body = Uploaded),
        (status = BAD_REQUEST, description = "The bytes do not have that sha256, or are not a package", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<ApiState>,
    UrlPath(sha256): UrlPath<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let sha256 = check_sha256(&sha256)?;
    let store = &state.packages;
    let target = store.path(&sha256);
    // The body is always read to its end, so the client gets a clean answer
    // even when the bytes are already stored.
    let temporary = store.upload_path(&sha256);
    let (size, actual) = match receive(&temporary, body).await {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&temporary).await;
            return Err(e);
        }
    };
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(ApiError::BadRequest(format!(
            "the {size} bytes received have sha256 {actual}, not {sha256}; nothing was stored"
        )));
    }
    let created = !target.exists();
    if created {
        tokio::fs::rename(&temporary, &target)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot store {}: {e}", target.display())))?;
    } else {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    let manifest = read_manifest(&target).await;
    let manifest = match manifest {
        Ok(manifest) => manifest,
        Err(message) => {
            if created {
                let _ = tokio::fs::remove_file(&target).await;
            }
            return Err(ApiError::BadRequest(message));
        }
    };
    let size = tokio::fs::metadata(&target)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Uploaded {
            sha256,
            size,
            module: manifest.module.to_string(),
            version: manifest.version.to_string(),
            kind: manifest.kind.to_string(),
            created,
        }),
    )
        .into_response())
}

/// Streams `body` into `path`, hashing it; returns the size and sha256.
async fn receive(path: &Path, body: Body) -> Result<(u64, String), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, digest))
}

async fn read_manifest(path: &Path) -> Result<flotilla_proto::package::Manifest, String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        flotilla_proto::package::read_manifest(&path).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Download a stored package; resumable with `Range`.
#[utoipa::path(get, path = "/api/v1/packages/{sha256}/file", security(("token" = ["viewer"]), ("session" = ["viewer"]), ("agent" = [])), tag = "releases",
    params(("sha256" = String, Path, description = "The package's sha256", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = OK, description = "The whole package", content_type = "application/zip"),
        (status = PARTIAL_CONTENT, description = "The requested range"),
        (status = NOT_MODIFIED, description = "If-None-Match matched"),
        (status = NOT_FOUND, description = "No such package stored here (one published by URL is fetched from that URL)", body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<ApiState>,
    UrlPath(sha256): UrlPath<String>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let sha256 = check_sha256(&sha256)?;
    let path = state.packages.path(&sha256);
    if !path.is_file() {
        // Never a redirect: a package published by URL is fetched from
        // that URL, which agents were given and checked.
        return Err(ApiError::NotFound(format!(
            "no package with sha256 {sha256} is stored here"
        )));
    }
    let etag = format!("\"{sha256}\"");
    let headers = request.headers();
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    // A resume against other content than this must get the whole file.
    if headers
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes() != etag.as_bytes())
    {
        request.headers_mut().remove(header::RANGE);
    }
    let served = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot serve {}: {e}", path.display())))?;
    let mut response = served.map(Body::new);
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}

/// A release holds one package per module, or, for the agent, one per
/// platform, all of the same version: a rollout installs one version of
/// each module, and each server the package built for its platform.
fn check_one_per_module(records: &[PackageRecord]) -> Result<(), ApiError> {
    for (i, package) in records.iter().enumerate() {
        for other in &records[..i] {
            if other.module != package.module {
                continue;
            }
            if other.version != package.version {
                return Err(ApiError::BadRequest(format!(
                    "packages {} and {}: a release carries one version of {}, not {} and {}",
                    other.sha256, package.sha256, package.module, other.version, package.version
                )));
            }
            if other.platform.is_empty()
                || package.platform.is_empty()
                || other.platform == package.platform
            {
                return Err(ApiError::BadRequest(format!(
                    "packages {} and {}: a release carries one package of {} {}{}",
                    other.sha256,
                    package.sha256,
                    package.module,
                    package.version,
                    match package.platform.as_str() {
                        "" => String::new(),
                        platform => format!(" for {platform}"),
                    }
                )));
            }
        }
    }
    Ok(())
}

/// One package of a release being published.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishPackage {
    pub sha256: String,
    /// Ed25519 signature (hex) over `flotilla-package-v1:<sha256>`.
    pub signature: String,
    /// Where the package lives when not uploaded here (an object store, a CDN).
    pub url: Option<String>,
    /// Required with `url`: the manifest's module, version and kind.
    pub module: Option<String>,
    pub version: Option<String>,
    pub kind: Option<String>,
    pub size: Option<i64>,
    /// With `url`, for an agent package: the platform it was built for
    /// (`linux-x86_64`, `windows-x86_64`).
    pub platform: Option<String>,
}

/// A release to publish.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Publish {
    pub version: String,
    /// Markdown.
    #[serde(default)]
    pub notes: String,
    pub packages: Vec<PublishPackage>,
}

/// Publish a release. Its packages are uploaded first (`PUT
/// /api/v1/packages/{sha256}`) or named by URL. Publishing the same release
/// again changes nothing; a module version published with other content is
/// refused.
#[utoipa::path(post, path = "/api/v1/releases", security(("token" = ["publisher"]), ("session" = ["publisher"])), tag = "releases", request_body = Publish,
    responses(
        (status = CREATED, description = "Published", body = Release),
        (status = OK, description = "Already published, identical", body = Release),
        (status = BAD_REQUEST, description = "A package is missing or invalid", body = ErrorBody),
        (status = CONFLICT, description = "A module version or the release exists with other content", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<ApiState>,
    Json(publish): Json<Publish>,
) -> Result<Response, ApiError> {
    let version = flotilla_proto::domain::Version::parse(&publish.version)
        .map_err(|e| ApiError::BadRequest(format!("release version: {e}")))?;
    if publish.packages.is_empty() {
        return Err(ApiError::BadRequest(
            "a release needs at least one package".into(),
        ));
    }
    let mut records = Vec::with_capacity(publish.packages.len());
    for package in publish.packages {
        let sha256 = check_sha256(&package.sha256)?;
        if package.signature.len() != 128
            || !package.signature.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(ApiError::BadRequest(format!(
                "package {sha256}: the signature must be 128 hex digits (an Ed25519 signature)"
            )));
        }
        let record = match package.url {
            Some(url) => {
                let (Some(module), Some(module_version), Some(kind)) =
                    (package.module, package.version, package.kind)
                else {
                    return Err(ApiError::BadRequest(format!(
                        "package {sha256} is published by URL: give its module, version and kind"
                    )));
                };
                let field = |name: &str, e: flotilla_proto::domain::ParseError| {
                    ApiError::BadRequest(format!("package {sha256}: {name}: {e}"))
                };
                let module = ModuleName::parse(&module).map_err(|e| field("module", e))?;
                let module_version =
                    Version::parse(&module_version).map_err(|e| field("version", e))?;
                let kind = ModuleKind::parse_package(&kind).map_err(|e| field("kind", e))?;
                flotilla_proto::package::check_platform(&module, kind, package.platform.as_deref())
                    .map_err(|e| ApiError::BadRequest(format!("package {sha256}: {e}")))?;
                let refused = |e| ApiError::BadRequest(format!("package {sha256}: url: {e}"));
                let (host, port) = crate::releases::check_url(
                    &url,
                    &state.package_hosts,
                    "package hosts (--package-host)",
                )
                .map_err(refused)?;
                crate::releases::check_resolves_publicly(&host, port)
                    .await
                    .map_err(refused)?;
                PackageRecord {
                    sha256,
                    module: module.to_string(),
                    version: module_version.to_string(),
                    kind: kind.to_string(),
                    size: package.size,
                    signature: package.signature.to_ascii_lowercase(),
                    url: Some(url),
                    created_at: Utc::now(),
                    platform: package.platform.unwrap_or_default(),
                }
            }
            None => {
                let path = state.packages.path(&sha256);
                if !path.is_file() {
                    return Err(ApiError::BadRequest(format!(
                        "package {sha256} has not been uploaded: PUT /api/v1/packages/{sha256} first"
                    )));
                }
                let manifest = read_manifest(&path).await.map_err(ApiError::BadRequest)?;
                let size = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len() as i64)
                    .ok();
                PackageRecord {
                    sha256,
                    module: manifest.module.to_string(),
                    version: manifest.version.to_string(),
                    kind: manifest.kind.to_string(),
                    size,
                    signature: package.signature.to_ascii_lowercase(),
                    url: None,
                    created_at: Utc::now(),
                    platform: manifest.platform.unwrap_or_default(),
                }
            }
        };
        records.push(record);
    }
    check_one_per_module(&records)?;
    let version = version.to_string();
    let created = match state
        .fleet
        .db
        .publish(&version, &publish.notes, &records, Utc::now())
        .await?
    {
        Ok(created) => created,
        Err(conflict) => return Err(ApiError::Conflict(conflict.to_string())),
    };
    let release = state.fleet.db.release(&version).await?.ok_or_else(|| {
        ApiError::Internal(format!("release {version} vanished after publishing"))
    })?;
    if created {
        // Agents learn of it now, not at their next poll.
        match state.fleet.available().await {
            Ok(available) => {
                let new: Vec<_> = available
                    .into_iter()
                    .filter(|a| release.packages.iter().any(|p| p.sha256 == a.sha256))
                    .collect();
                let announcement = flotilla_proto::link::ToAgent::Announce {
                    packages: new,
                    withdrawn: Vec::new(),
                };
                state.fleet.push(announcement).await;
            }
            Err(e) => tracing::error!("cannot announce release {version}: {e}"),
        }
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Release::from(release))).into_response())
}

/// List the releases, newest first.
#[utoipa::path(get, path = "/api/v1/releases", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "releases",
    responses((status = OK, description = "Every release", body = [Release])))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<Release>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .db
            .releases()
            .await?
            .into_iter()
            .map(Release::from)
            .collect(),
    ))
}

/// One release.
#[utoipa::path(get, path = "/api/v1/releases/{version}", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "releases",
    params(("version" = String, Path, description = "The release version")),
    responses(
        (status = OK, description = "The release", body = Release),
        (status = NOT_FOUND, description = "No such release", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    UrlPath(version): UrlPath<String>,
) -> Result<Json<Release>, ApiError> {
    match state.fleet.db.release(&version).await? {
        Some(release) => Ok(Json(release.into())),
        None => Err(ApiError::NotFound(format!("no release {version}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::releases::check_package_url;

    #[test]
    fn package_urls_are_https_from_allowed_hosts_only() {
        let hosts = vec![
            "cdn.publisher.example".to_owned(),
            "127.0.0.1:8443".to_owned(),
        ];
        assert!(check_package_url("https://cdn.publisher.example/p.zip", &hosts).is_ok());
        assert!(check_package_url("https://127.0.0.1:8443/p.zip", &hosts).is_ok());
        for (url, says) in [
            ("file:///etc/passwd", "only https://"),
            ("http://cdn.publisher.example/p.zip", "only https://"),
            ("https://evil.example/p.zip", "not on the allowlist"),
            ("https://u:p@cdn.publisher.example/p.zip", "credentials"),
            ("../../../x'; DROP TABLE releases;--", "is not a URL"),
        ] {
            let error = check_package_url(url, &hosts).unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
