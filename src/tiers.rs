//! `cascade tiers status`: what each storage tier holds and costs.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use cascade_platform::storage::tiers::Tiers;
use cascade_platform::{archive, db, tiering, Config};
use cascade_schemas::keys::ASSETS_PREFIX;
use cascade_workers::tiering::policy_tier;
use clap::Subcommand;

/// Storage tier subcommands.
#[derive(Debug, Subcommand)]
pub enum TiersCommand {
    /// Per tier: the assets' objects and bytes stored (listed from the
    /// store), the renditions Postgres places there, and the estimated
    /// monthly cost from `price_per_gb_month`; the archived assets; then
    /// the moves and archives the tiering policy would queue if it ran now.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one subcommand.
pub async fn run(command: TiersCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let TiersCommand::Status { json } = command;
    let pool = db::pool(&config.database)?;
    let tiers = Tiers::from_config(&config.storage)
        .await
        .context("opening the storage tiers")?;
    let client = pool.get().await?;
    let placed = tiering::renditions_per_tier(&client).await?;
    let names: Vec<String> = tiers.all().iter().map(|t| t.name.clone()).collect();
    let policy = &config.storage.policy;
    let mut next: BTreeMap<(String, String), u64> = BTreeMap::new();
    if names.len() > 1 {
        for input in tiering::policy_inputs(&client, policy.views_window).await? {
            let target = policy_tier(&input, policy, &names);
            if target != input.queued_to.as_deref().unwrap_or(&input.tier) {
                *next
                    .entry((input.tier.clone(), target.to_owned()))
                    .or_default() += 1;
            }
        }
    }
    let (archived, restoring) = archive::counts(&client).await?;
    let to_archive = match policy.archive_after {
        Some(after) if names.len() > 1 => archive::archive_candidates(&client, after, i64::MAX)
            .await?
            .len(),
        _ => 0,
    };
    let archive = serde_json::json!({
        "archived": archived,
        "restoring": restoring,
        "source_tier": config.storage.archive_source_tier(),
        "policy_next": to_archive,
    });
    let mut rows = Vec::new();
    for tier in tiers.all() {
        let objects = tier
            .store
            .list(ASSETS_PREFIX)
            .await
            .with_context(|| format!("listing tier {}", tier.name))?;
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        let renditions = placed
            .iter()
            .find(|(name, _)| *name == tier.name)
            .map_or(0, |(_, n)| *n);
        rows.push(serde_json::json!({
            "tier": tier.name,
            "store": tier.store.describe(),
            "objects": objects.len(),
            "bytes": bytes,
            "renditions": renditions,
            "monthly_cost": bytes as f64 / 1e9 * tier.price_per_gb_month,
        }));
    }
    let next: Vec<serde_json::Value> = next
        .into_iter()
        .map(|((from, to), renditions)| {
            serde_json::json!({ "from": from, "to": to, "renditions": renditions })
        })
        .collect();
    if json {
        let out = serde_json::json!({ "tiers": rows, "policy_next": next, "archive": archive });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<10} {:>10} {:>14} {:>11} {:>13}  store",
            "tier", "objects", "bytes", "renditions", "cost/month"
        );
        for r in &rows {
            println!(
                "{:<10} {:>10} {:>14} {:>11} {:>13.2}  {}",
                r["tier"].as_str().unwrap_or_default(),
                r["objects"].as_u64().unwrap_or_default(),
                r["bytes"].as_u64().unwrap_or_default(),
                r["renditions"].as_i64().unwrap_or_default(),
                r["monthly_cost"].as_f64().unwrap_or_default(),
                r["store"].as_str().unwrap_or_default()
            );
        }
        println!(
            "archive: {archived} asset(s) archived (sources in {}), {restoring} restoring",
            config.storage.archive_source_tier()
        );
        if next.is_empty() && to_archive == 0 {
            println!("the tiering policy would move nothing now");
        }
        if to_archive > 0 {
            println!("the tiering policy would archive {to_archive} asset(s)");
        }
        for n in &next {
            println!(
                "the tiering policy would move {} rendition(s) from {} to {}",
                n["renditions"],
                n["from"].as_str().unwrap_or_default(),
                n["to"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
