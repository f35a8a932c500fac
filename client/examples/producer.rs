//! A producer that routes each record to the worker owning its key's
//! partition, from a `ShardMap` kept current by a watch (no polling, and it
//! follows splits).
//!
//!     cargo run -p baton-client --example producer -- 127.0.0.1:7400 demo

use std::time::Duration;

use baton_client::ShardMap;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, group] = args.as_slice() else {
        return Err("usage: producer ENDPOINT GROUP".into());
    };
    let map = ShardMap::connect(std::slice::from_ref(endpoint), group).await?;
    for round in 0..3 {
        println!(
            "revision {}, {} partitions",
            map.revision(),
            map.partitions()
        );
        for i in 0..5 {
            let key = format!("account-{i}");
            let route = map.route(key.as_bytes());
            match &route.owner {
                Some(owner) => println!(
                    "  {key} -> partition {} -> {owner} (token {})",
                    route.partition, route.token
                ),
                None => println!("  {key} -> partition {} -> unassigned", route.partition),
            }
        }
        if round < 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Ok(())
}
