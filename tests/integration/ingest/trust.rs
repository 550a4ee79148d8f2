//! Trust: tenancy by environment, one source per asset under racing
//! uploads, termination racing the final PATCH, deletion racing running
//! work, and requests without a valid key that must not reach the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    asset_claim, b64, created_asset, fixture, json, scratch_root, sha256_of, start, AUTH, TUS,
};
use crate::common::{count, create_key, eventually, fresh_db, header, http};

/// Races per scenario (the issue asks for at least 20).
const ROUNDS: usize = 20;

fn new_asset(addr: SocketAddr, auth: (&str, &str)) -> String {
    created_asset(addr, auth)["id"].as_str().unwrap().to_owned()
}

/// A tus creation: (status, upload path, body).
fn tus_create(
    addr: SocketAddr,
    auth: (&str, &str),
    length: usize,
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    let length = length.to_string();
    let mut headers = vec![auth, TUS, ("Upload-Length", length.as_str())];
    headers.extend_from_slice(extra);
    let (status, headers, body) = http(addr, "POST", "/v1/uploads", &headers, b"");
    let location = header(&headers, "location")
        .map(|l| format!("/v1/uploads/{}", l.rsplit('/').next().unwrap_or_default()))
        .unwrap_or_default();
    (status, location, body)
}

fn tus_patch(
    addr: SocketAddr,
    auth: (&str, &str),
    upload: &str,
    offset: usize,
    data: &[u8],
) -> u16 {
    let offset = offset.to_string();
    http(
        addr,
        "PATCH",
        upload,
        &[
            auth,
            TUS,
            ("Upload-Offset", &offset),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        data,
    )
    .0
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn environments_isolate_every_endpoint_and_keys_are_cached_briefly() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[("CASCADE_INGEST__KEY_CACHE_TTL", "\"300ms\"")],
    );
    let addr = server.addr;
    let other_secret = create_key(&db, "tenant-b", "tenant-b");
    let other_auth_value = format!("Bearer {other_secret}");
    let other = ("Authorization", other_auth_value.as_str());

    // Environment A (the bootstrap key's, `default`): an asset, an upload
    // with its first bytes, and a complete partial upload.
    let asset = new_asset(addr, AUTH);
    let data = std::fs::read(fixture("rotated90_1280x720_stereo.mp4")).unwrap();
    let (status, upload, body) = tus_create(addr, AUTH, data.len(), &[]);
    assert_eq!(status, 201, "{body}");
    assert_eq!(tus_patch(addr, AUTH, &upload, 0, &data[..1000]), 204);
    let (status, partial, body) = tus_create(addr, AUTH, 10, &[("Upload-Concat", "partial")]);
    assert_eq!(status, 201, "{body}");
    assert_eq!(tus_patch(addr, AUTH, &partial, 0, &[7u8; 10]), 204);

    // Environment B sees none of it, and changes nothing.
    let asset_path = format!("/v1/assets/{asset}");
    for (method, path) in [("GET", asset_path.clone()), ("DELETE", asset_path.clone())] {
        let (status, _, body) = http(addr, method, &path, &[other], b"");
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(json(&body)["code"], "not_found");
    }
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("{asset_path}/source"),
        &[other],
        &data,
    );
    assert_eq!(status, 404, "{body}");
    for (method, path) in [
        ("PUT", format!("{asset_path}/replacement")),
        ("POST", format!("{asset_path}/playback_tokens")),
    ] {
        let (status, _, body) = http(addr, method, &path, &[other], b"");
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, _, body) = http(addr, "GET", "/v1/assets?limit=100", &[other], b"");
    assert_eq!(status, 200);
    assert!(json(&body)["data"].as_array().unwrap().is_empty(), "{body}");
    let metadata = format!("asset_id {}", b64(&asset));
    let (status, _, body) = tus_create(addr, other, data.len(), &[("Upload-Metadata", &metadata)]);
    assert_eq!(status, 404, "{body}");
    assert_eq!(http(addr, "HEAD", &upload, &[other, TUS], b"").0, 404);
    assert_eq!(
        tus_patch(addr, other, &upload, 1000, &data[1000..2000]),
        404
    );
    assert_eq!(http(addr, "DELETE", &upload, &[other, TUS], b"").0, 404);
    assert_eq!(http(addr, "DELETE", &partial, &[other, TUS], b"").0, 404);
    let concat = format!("final;{partial}");
    let (status, _, body) = tus_create(addr, other, 0, &[("Upload-Concat", &concat)]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["code"], "invalid_partial_upload");

    // A's things are untouched.
    let (status, _, body) = http(addr, "GET", &asset_path, &[AUTH], b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["state"], "waiting");
    let (status, headers, _) = http(addr, "HEAD", &upload, &[AUTH, TUS], b"");
    assert_eq!(
        (status, header(&headers, "upload-offset")),
        (200, Some("1000"))
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM uploads WHERE claimed_by IS NULL AND concat = 'partial'"
        )
        .await,
        1
    );

    // B's own asset is B's alone.
    let mine = new_asset(addr, other);
    let (_, _, body) = http(addr, "GET", "/v1/assets?limit=100", &[other], b"");
    let ids: Vec<String> = json(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, vec![mine.clone()]);
    let (_, _, body) = http(addr, "GET", "/v1/assets?limit=100", &[AUTH], b"");
    assert!(!body.contains(&mine), "{body}");
    assert_eq!(
        http(addr, "GET", &format!("/v1/assets/{mine}"), &[AUTH], b"").0,
        404
    );

    // Revoking B's key takes effect once its cached lookup lapses.
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE name = 'tenant-b'",
            &[],
        )
        .await
        .unwrap();
    eventually(
        "the revoked key refused",
        Duration::from_secs(5),
        || async { (http(addr, "GET", "/v1/assets", &[other], b"").0 == 401).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_limited_before_any_lookup() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest",
        &root,
        0,
        &[
            ("CASCADE_INGEST__FAILED_AUTH_PER_MINUTE", "5"),
            ("CASCADE_INGEST__KEY_CACHE_TTL", "\"10m\""),
        ],
    );
    let addr = server.addr;
    let secret = create_key(&db, "good", "default");
    let good_value = format!("Bearer {secret}");
    let good = ("Authorization", good_value.as_str());
    // The valid key is looked up once, then cached.
    assert_eq!(http(addr, "GET", "/v1/assets", &[good], b"").0, 200);
    // Hold the keys table: from here a key lookup would hang.
    let mut locker = db.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Malformed secrets are refused without a lookup: five 401s use up the
    // address's budget.
    for _ in 0..5 {
        let (status, _, body) = http(
            addr,
            "GET",
            "/v1/assets",
            &[("Authorization", "Bearer nope")],
            b"",
        );
        assert_eq!(status, 401, "{body}");
    }
    // Then even well-formed unknown secrets, which would need a lookup, get
    // 429 at once: a flood never reaches the database.
    let started = Instant::now();
    for i in 0..100 {
        let fake = format!("Bearer csk_{:0>43}", i);
        let (status, headers, body) = http(
            addr,
            "GET",
            "/v1/assets",
            &[("Authorization", fake.as_str())],
            b"",
        );
        assert_eq!(status, 429, "{body}");
        assert!(header(&headers, "retry-after").is_some());
        assert_eq!(json(&body)["code"], "rate_limited");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // The cached valid key still works, lock or not.
    assert_eq!(http(addr, "GET", "/v1/assets", &[good], b"").0, 200);
    drop(lock);
}

#[derive(Clone, Copy, Debug)]
enum Path_ {
    Simple,
    Tus,
    Concat,
}

/// One writer's attempt at `asset`'s source with `data`: `Ok(())` when it
/// won, `Err(status)` when it was refused.
fn write_source(addr: SocketAddr, asset: &str, path: Path_, data: &[u8]) -> Result<(), u16> {
    let metadata = format!("asset_id {}", b64(asset));
    match path {
        Path_::Simple => {
            let (status, _, _) = http(
                addr,
                "PUT",
                &format!("/v1/assets/{asset}/source"),
                &[AUTH],
                data,
            );
            if status == 202 {
                Ok(())
            } else {
                Err(status)
            }
        }
        Path_::Tus => {
            let (status, upload, _) =
                tus_create(addr, AUTH, data.len(), &[("Upload-Metadata", &metadata)]);
            if status != 201 {
                return Err(status);
            }
            match tus_patch(addr, AUTH, &upload, 0, data) {
                204 => Ok(()),
                other => Err(other),
            }
        }
        Path_::Concat => {
            let half = data.len() / 2;
            let mut urls = Vec::new();
            for piece in [&data[..half], &data[half..]] {
                let (status, upload, body) =
                    tus_create(addr, AUTH, piece.len(), &[("Upload-Concat", "partial")]);
                assert_eq!(status, 201, "{body}");
                assert_eq!(tus_patch(addr, AUTH, &upload, 0, piece), 204);
                urls.push(upload);
            }
            let concat = format!("final;{}", urls.join(" "));
            let (status, _, _) = tus_create(
                addr,
                AUTH,
                0,
                &[("Upload-Concat", &concat), ("Upload-Metadata", &metadata)],
            );
            if status == 201 {
                Ok(())
            } else {
                Err(status)
            }
        }
    }
}

#[tokio::test]
async fn an_asset_gets_one_source_whichever_paths_race_for_it() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let first = std::fs::read(fixture("rotated90_1280x720_stereo.mp4")).unwrap();
    let second = std::fs::read(fixture("audio_only_stereo.m4a")).unwrap();
    let (first_sha, second_sha) = (
        sha256_of(&fixture("rotated90_1280x720_stereo.mp4")),
        sha256_of(&fixture("audio_only_stereo.m4a")),
    );
    let pairs = [
        (Path_::Simple, Path_::Simple),
        (Path_::Simple, Path_::Tus),
        (Path_::Tus, Path_::Tus),
        (Path_::Concat, Path_::Simple),
        (Path_::Concat, Path_::Tus),
    ];
    for round in 0..ROUNDS {
        let (a, b) = pairs[round % pairs.len()];
        let asset = new_asset(addr, AUTH);
        let (one, two) = std::thread::scope(|scope| {
            let one = scope.spawn(|| write_source(addr, &asset, a, &first));
            let two = scope.spawn(|| write_source(addr, &asset, b, &second));
            (one.join().unwrap(), two.join().unwrap())
        });
        let winner_sha = match (&one, &two) {
            (Ok(()), Err(status)) => {
                assert!(
                    matches!(status, 409 | 423),
                    "round {round} {a:?}/{b:?}: loser got {status}"
                );
                &first_sha
            }
            (Err(status), Ok(())) => {
                assert!(
                    matches!(status, 409 | 423),
                    "round {round} {a:?}/{b:?}: loser got {status}"
                );
                &second_sha
            }
            other => {
                panic!("round {round} {a:?}/{b:?}: exactly one writer must win, got {other:?}")
            }
        };
        let id = asset.clone();
        eventually("the winner's probe", Duration::from_secs(30), || async {
            (asset_claim(&db, &id).await.0 == "processing").then_some(())
        })
        .await;
        assert_eq!(
            &sha256_of(&root.join(format!("assets/{asset}/source"))),
            winner_sha,
            "round {round} {a:?}/{b:?}: the source is the winner's, intact"
        );
        let jobs = count(
            &db,
            &format!("SELECT count(*) FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = '{asset}'"),
        )
        .await;
        assert_eq!(jobs, 1, "round {round}");
        // And no later writer gets in.
        assert_eq!(write_source(addr, &asset, Path_::Simple, &first), Err(409));
    }
}

#[tokio::test]
async fn termination_races_the_final_patch_cleanly() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(&db, "ingest", &root, 0, &[]);
    let addr = server.addr;
    let data = std::fs::read(fixture("rotated90_1280x720_stereo.mp4")).unwrap();
    let half = data.len() / 2;
    let (mut completed, mut terminated) = (0, 0);
    for round in 0..ROUNDS {
        let (status, upload, body) = tus_create(addr, AUTH, data.len(), &[]);
        assert_eq!(status, 201, "{body}");
        assert_eq!(tus_patch(addr, AUTH, &upload, 0, &data[..half]), 204);
        let upload_id: uuid::Uuid = upload.rsplit('/').next().unwrap().parse().unwrap();
        let asset: uuid::Uuid = db
            .pool
            .get()
            .await
            .unwrap()
            .query_one("SELECT asset_id FROM uploads WHERE id = $1", &[&upload_id])
            .await
            .unwrap()
            .get(0);
        let (patched, deleted) = std::thread::scope(|scope| {
            let patch = scope.spawn(|| tus_patch(addr, AUTH, &upload, half, &data[half..]));
            let delete = scope.spawn(|| http(addr, "DELETE", &upload, &[AUTH, TUS], b"").0);
            (patch.join().unwrap(), delete.join().unwrap())
        });
        match (patched, deleted) {
            (204, 409 | 423) => {
                completed += 1;
                let id = asset.to_string();
                eventually("the probe", Duration::from_secs(30), || async {
                    (asset_claim(&db, &id).await.0 == "processing").then_some(())
                })
                .await;
                assert_eq!(
                    sha256_of(&root.join(format!("assets/{asset}/source"))),
                    sha256_of(&fixture("rotated90_1280x720_stereo.mp4"))
                );
            }
            (404 | 409 | 423, 204) => {
                terminated += 1;
                assert_eq!(
                    count(
                        &db,
                        &format!("SELECT count(*) FROM uploads WHERE id = '{upload_id}'")
                    )
                    .await,
                    0
                );
                // The asset waits for a source again, with nothing stored.
                let (state, claim) = asset_claim(&db, &asset.to_string()).await;
                assert_eq!((state.as_str(), claim), ("waiting", None), "round {round}");
                assert!(
                    files_under(&root.join(format!("assets/{asset}"))).is_empty(),
                    "round {round}"
                );
                assert!(
                    files_under(&root.join(format!("uploads/{upload_id}"))).is_empty(),
                    "round {round}"
                );
            }
            other => panic!("round {round}: PATCH and DELETE both answered {other:?}"),
        }
    }
    eprintln!("termination race: {completed} completed, {terminated} terminated");
}

#[tokio::test]
async fn deleting_an_asset_stops_its_work_and_leaves_no_object() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest,workers",
        &root,
        0,
        &[
            ("CASCADE_QUEUE__LEASE", "\"2s\""),
            ("CASCADE_QUEUE__HEARTBEAT", "\"200ms\""),
            ("CASCADE_QUEUE__RETRY_BASE", "\"200ms\""),
            ("CASCADE_QUEUE__RETRY_MAX", "\"1s\""),
            ("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\""),
        ],
    );
    let addr = server.addr;
    let data = std::fs::read(fixture("landscape_720p60_stereo.mp4")).unwrap();
    let mut assets = Vec::new();
    for round in 0..ROUNDS {
        let asset = new_asset(addr, AUTH);
        if round % 4 == 3 {
            // Deleted while its tus upload is under way.
            let metadata = format!("asset_id {}", b64(&asset));
            let (status, upload, _) =
                tus_create(addr, AUTH, data.len(), &[("Upload-Metadata", &metadata)]);
            assert_eq!(status, 201);
            assert_eq!(
                tus_patch(addr, AUTH, &upload, 0, &data[..data.len() / 2]),
                204
            );
            assert_eq!(
                http(addr, "DELETE", &format!("/v1/assets/{asset}"), &[AUTH], b"").0,
                204
            );
            let rest = tus_patch(addr, AUTH, &upload, data.len() / 2, &data[data.len() / 2..]);
            assert!(
                matches!(rest, 404 | 409),
                "round {round}: PATCH after delete got {rest}"
            );
        } else {
            let (status, _, body) = http(
                addr,
                "PUT",
                &format!("/v1/assets/{asset}/source"),
                &[AUTH],
                &data,
            );
            assert_eq!(status, 202, "{body}");
            // Deleted at a different point of its transcode each round.
            let id = asset.clone();
            if round % 4 != 0 {
                eventually("the transcode running", Duration::from_secs(30), || async {
                    let running = count(&db, &format!(
                        "SELECT count(*) FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = '{id}' AND state = 'running'"
                    )).await;
                    (running == 1).then_some(())
                })
                .await;
                tokio::time::sleep(Duration::from_millis(150 * (round as u64 % 4))).await;
            }
            assert_eq!(
                http(addr, "DELETE", &format!("/v1/assets/{asset}"), &[AUTH], b"").0,
                204
            );
        }
        // Gone from the API at once; deleting again answers the same.
        assert_eq!(
            http(addr, "GET", &format!("/v1/assets/{asset}"), &[AUTH], b"").0,
            404
        );
        assert_eq!(
            http(addr, "DELETE", &format!("/v1/assets/{asset}"), &[AUTH], b"").0,
            204
        );
        assets.push(asset);
    }
    for asset in &assets {
        let id = asset.clone();
        eventually("the purge", Duration::from_secs(60), || async {
            let purged = count(&db, &format!(
                "SELECT count(*) FROM jobs WHERE kind = 'purge_asset' AND payload->>'asset_id' = '{id}' AND state = 'succeeded'"
            )).await;
            (purged == 1).then_some(())
        })
        .await;
        let left = files_under(&root.join(format!("assets/{asset}")));
        assert!(
            left.is_empty(),
            "objects of deleted asset {asset} left: {left:?}"
        );
        let live = count(&db, &format!(
            "SELECT count(*) FROM jobs WHERE kind = 'transcode' AND payload->>'asset_id' = '{asset}' AND state IN ('queued', 'running')"
        )).await;
        assert_eq!(live, 0);
    }
    assert!(
        files_under(&root.join("uploads")).is_empty(),
        "no upload pieces left"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM uploads").await, 0);
}

fn origin_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = crate::common::http_bytes(addr, "GET", path, &[], b"");
    (status, body)
}

/// The first media segment URL a master playlist leads to, as a path.
fn first_segment(addr: SocketAddr, playback: &str) -> String {
    let (status, master) = origin_get(addr, &format!("/play/{playback}/master.m3u8"));
    assert_eq!(status, 200);
    let master = String::from_utf8(master).unwrap();
    let media = master
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .unwrap_or_else(|| panic!("no variant in {master}"))
        .to_owned();
    let (status, playlist) = origin_get(addr, &format!("/play/{playback}/{media}"));
    assert_eq!(status, 200, "{media}");
    let playlist = String::from_utf8(playlist).unwrap();
    let segment = playlist.lines().find(|l| l.ends_with(".m4s")).unwrap();
    let dir = media.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
    format!("/play/{playback}/{dir}/{segment}")
}

#[tokio::test]
async fn a_replacement_makes_a_new_version_while_the_old_one_keeps_playing() {
    let db = fresh_db().await;
    let root = scratch_root();
    let server = start(
        &db,
        "ingest,workers,origin",
        &root,
        0,
        &[("CASCADE_QUEUE__POLL_INTERVAL", "\"200ms\"")],
    );
    let addr = server.addr;
    let asset = new_asset(addr, AUTH);
    let path = format!("/v1/assets/{asset}");
    // No replacement before there is a first source.
    let first = std::fs::read(fixture("rotated90_1280x720_stereo.mp4")).unwrap();
    let (status, _, body) = http(addr, "PUT", &format!("{path}/replacement"), &[AUTH], &first);
    assert_eq!(
        (status, json(&body)["code"].as_str().unwrap()),
        (409, "replacement_not_allowed"),
        "{body}"
    );
    assert_eq!(
        http(addr, "PUT", &format!("{path}/source"), &[AUTH], &first).0,
        202
    );
    super::ready_at_version(&db, &asset, 1).await;
    let (_, _, view) = http(addr, "GET", &path, &[AUTH], b"");
    let playback = json(&view)["playback_id"].as_str().unwrap().to_owned();
    let old_segment = first_segment(addr, &playback);
    assert!(
        old_segment.contains("/v1/"),
        "media are addressed by version: {old_segment}"
    );
    let (status, old_bytes) = origin_get(addr, &old_segment);
    assert_eq!(status, 200);
    // A second first source is refused; a replacement is the explicit way.
    let (status, _, body) = http(addr, "PUT", &format!("{path}/source"), &[AUTH], &first);
    assert_eq!(
        (status, json(&body)["code"].as_str().unwrap()),
        (409, "source_already_uploaded")
    );
    let second = std::fs::read(fixture("landscape_720p60_stereo.mp4")).unwrap();
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("{path}/replacement"),
        &[AUTH],
        &second,
    );
    assert_eq!(status, 202, "{body}");
    let view = json(&body);
    assert_eq!(view["state"], "processing");
    assert!(
        view["playback"].is_object(),
        "the published version still plays: {view}"
    );
    super::ready_at_version(&db, &asset, 2).await;
    // The origin looks the asset up again within `origin.asset_ttl`.
    let new_segment = eventually("the master naming v2", Duration::from_secs(10), || async {
        let segment = first_segment(addr, &playback);
        segment.contains("/v2/").then_some(segment)
    })
    .await;
    let (status, new_bytes) = origin_get(addr, &new_segment);
    assert_eq!(status, 200);
    assert_ne!(new_bytes, old_bytes, "the new version's media are new");
    // The old version's URLs (cached by CDNs as immutable) still give the
    // same bytes: nothing was overwritten.
    assert_eq!(origin_get(addr, &old_segment), (200, old_bytes));
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/source"))),
        sha256_of(&fixture("rotated90_1280x720_stereo.mp4"))
    );
    assert_eq!(
        sha256_of(&root.join(format!("assets/{asset}/v2/source"))),
        sha256_of(&fixture("landscape_720p60_stereo.mp4"))
    );
    // A version not published is not served.
    assert_eq!(
        origin_get(addr, &new_segment.replace("/v2/", "/v3/")).0,
        404
    );
    // A refused replacement leaves the asset as it was.
    let (status, _, body) = http(
        addr,
        "PUT",
        &format!("{path}/replacement"),
        &[AUTH],
        b"not media at all",
    );
    assert_eq!(status, 422, "{body}");
    let (_, _, view) = http(addr, "GET", &path, &[AUTH], b"");
    let view = json(&view);
    assert_eq!(
        (view["state"].as_str(), view["error"].is_null()),
        (Some("ready"), true),
        "{view}"
    );
    assert!(!root.join(format!("assets/{asset}/v3/source")).exists());
    assert_eq!(first_segment(addr, &playback), new_segment);
}
